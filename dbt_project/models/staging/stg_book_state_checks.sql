{{ guard_full_refresh() }}
-- One row per session (symbol, date) with a count for every rule the book states must obey,
-- from one streaming pass over stg_book_states in stored order (a partition stored as seq
-- 0..n-1 is proven unique without a hash table); partitions stored otherwise are counted with
-- a hash aggregate. The data tests on stg_book_states read these counts. Incremental.

with states as (

    select
        symbol,
        date,
        seq,
        spread_ticks,
        replay_flags,
        lag(seq) over () as previous_seq  -- stored order; see stg_event_landings
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
        count(*) filter (where replay_flags is distinct from 0) as flagged_states
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
