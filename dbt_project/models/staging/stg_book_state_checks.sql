{{ guard_full_refresh() }}
-- One row per session (symbol, date) with a count for every rule the book states must obey,
-- from one streaming pass over stg_book_states in stored order (a partition stored as seq
-- 0..n-1 is proven unique without a hash table); partitions stored otherwise are counted with
-- a hash aggregate. The data tests on stg_book_states read these counts. Incremental.
--
-- The same pass takes the book statistics of fct_session_summary (spreads, high/low/close of
-- the floor mid, and the time-weighted spread: each row closes the previous state, which lasted
-- until this row's timestamp), valid for partitions stored in seq order (in_seq_order); the mart
-- sorts the other partitions itself.

with states as (

    select
        symbol,
        date,
        seq,
        ts_ns,
        spread_ticks,
        mid_floor_ticks,
        replay_flags,
        -- stored order (see stg_event_landings): a partition's first row follows another
        -- partition's last, whose seq is never this seq - 1 when this seq is 0
        lag(seq) over () as previous_seq,
        lag(ts_ns) over () as previous_ts_ns,
        lag(spread_ticks) over () as previous_spread_ticks
    from {{ ref('stg_book_states') }}

),

per_partition as (

    select
        symbol,
        date,
        count(*) as n_states,
        min(seq) as min_seq,
        max(seq) as max_seq,
        min(seq) = 0
            and count(*) filter (where seq = previous_seq + 1) = count(*) - 1
            and count(seq) = count(*) as in_seq_order,
        count(*) - count(seq) as null_seq,
        count(*) filter (where spread_ticks <= 0) as crossed_states,
        count(*) filter (where replay_flags is distinct from 0) as flagged_states,
        {{ book_state_stats() }},
        -- sum over states of spread * (next state's ts - ts): each row closes the previous state
        -- (seq > 0: a partition stored in seq order starts at 0, so its first row never closes
        -- the row stored before it, another partition's)
        coalesce(sum(previous_spread_ticks * greatest(ts_ns - previous_ts_ns, 0))
            filter (where seq = previous_seq + 1 and seq > 0), 0) as inner_spread_ns,
        coalesce(sum(greatest(ts_ns - previous_ts_ns, 0))
            filter (where seq = previous_seq + 1 and seq > 0 and previous_spread_ticks is not null), 0) as inner_dwell_ns,
        arg_max(spread_ticks, seq) as last_spread_ticks,
        arg_max(ts_ns, seq) as last_state_ts_ns
    from states
    group by all

),

reordered_stats as (

    select symbol, date, count(seq) - count(distinct seq) as duplicate_seq
    from {{ ref('stg_book_states') }}
    where (symbol, date) in (select symbol, date from per_partition where not in_seq_order)
    group by all

)

select
    per_partition.*,
    cast(case when in_seq_order then 0 else coalesce(reordered_stats.duplicate_seq, 0) end as bigint) as duplicate_seq
from per_partition
left join reordered_stats using (symbol, date)
