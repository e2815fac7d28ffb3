{{ guard_full_refresh() }}
-- One row per session (symbol, date) with a count for every rule the book states must obey; the
-- data tests on stg_book_states read these counts. Incremental. Two scans of stg_book_states:
--   * stored_order, one streaming pass in stored order (`over ()`, one thread) with only what
--     needs the previous row: whether the partition is stored as seq 0..n-1 (then seq is unique
--     without a hash table; partitions stored otherwise are counted with a hash aggregate) and
--     the time weights of the spread (each row closes the previous state, which lasted until
--     this row's timestamp);
--   * per_partition, everything order-free, on every core: counts, the book statistics of
--     fct_session_summary (spreads, high/low/close of the floor mid) and the last state's spread
--     and timestamp (one arg_max of a struct instead of one per value).
-- The statistics are valid for partitions stored in seq order (in_seq_order); the mart sorts the
-- other partitions itself.

with stored_order as (

    select
        symbol,
        date,
        count(*) filter (where seq = previous_seq + 1) as seq_steps,
        -- sum over states of spread * (next state's ts - ts): each row closes the previous state
        -- (seq > 0: a partition stored in seq order starts at 0, so its first row never closes
        -- the row stored before it, another partition's)
        coalesce(sum(previous_spread_ticks * greatest(ts_ns - previous_ts_ns, 0))
            filter (where seq = previous_seq + 1 and seq > 0), 0) as inner_spread_ns,
        coalesce(sum(greatest(ts_ns - previous_ts_ns, 0))
            filter (where seq = previous_seq + 1 and seq > 0 and previous_spread_ticks is not null), 0) as inner_dwell_ns
    from (
        select
            symbol,
            date,
            seq,
            ts_ns,
            -- stored order (see stg_event_landings): a partition's first row follows another
            -- partition's last, whose seq is never this seq - 1 when this seq is 0
            lag(seq) over () as previous_seq,
            lag(ts_ns) over () as previous_ts_ns,
            lag(spread_ticks) over () as previous_spread_ticks
        from {{ ref('stg_book_states') }}
    )
    group by all

),

per_partition as (

    select
        symbol,
        date,
        count(*) as n_states,
        min(seq) as min_seq,
        max(seq) as max_seq,
        count(*) - count(seq) as null_seq,
        count(*) filter (where spread_ticks <= 0) as crossed_states,
        count(*) filter (where replay_flags is distinct from 0) as flagged_states,
        {{ book_state_stats() }},
        -- the close: the last floor mid there is (arg_max skips nulls), as in the mart's sorted path
        arg_max(mid_floor_ticks, seq) as close_ticks,
        -- the last state as it is (a struct is never null): its spread, null when it is one-sided,
        -- weighs nothing in the time-weighted spread, as in the mart's sorted path
        arg_max({'spread': spread_ticks, 'ts': ts_ns}, seq) as last_state
    from {{ ref('stg_book_states') }}
    group by all

),

reordered_stats as (

    select symbol, date, count(seq) - count(distinct seq) as duplicate_seq
    from {{ ref('stg_book_states') }}
    where (symbol, date) in (
        select symbol, date from per_partition inner join stored_order using (symbol, date)
        where not (min_seq = 0 and seq_steps = n_states - 1 and null_seq = 0)
    )
    group by all

)

select
    per_partition.symbol,
    per_partition.date,
    per_partition.n_states,
    per_partition.min_seq,
    per_partition.max_seq,
    per_partition.min_seq = 0 and stored_order.seq_steps = per_partition.n_states - 1
        and per_partition.null_seq = 0 as in_seq_order,
    per_partition.null_seq,
    per_partition.crossed_states,
    per_partition.flagged_states,
    per_partition.mean_spread_ticks,
    per_partition.max_spread_ticks,
    per_partition.high_ticks,
    per_partition.low_ticks,
    per_partition.close_ticks,
    per_partition.n_one_sided_states,
    stored_order.inner_spread_ns,
    stored_order.inner_dwell_ns,
    per_partition.last_state.spread as last_spread_ticks,
    per_partition.last_state.ts as last_state_ts_ns,
    cast(case when in_seq_order then 0 else coalesce(reordered_stats.duplicate_seq, 0) end as bigint) as duplicate_seq
from per_partition
inner join stored_order using (symbol, date)
left join reordered_stats using (symbol, date)
