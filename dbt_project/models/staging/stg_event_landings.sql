{{ guard_full_refresh() }}
{%- set lineage = source('lake', 'events') %}
-- One row per landed events partition, from one streaming pass over its Parquet files in the
-- order they are stored (no sort, no hash table): how many rows, whether the rows are stored in
-- seq order 0, 1, ..., n-1 (what raw_events writes), and the per-row rules that need no
-- ordering. For a partition stored in seq order the pass also proves seq unique and gap-free and
-- checks the timestamps, counts the executed shares and lists the sweep steps (an execution
-- followed by the next seq executing the same way at the same timestamp: one aggressive order
-- walking the queue) for stg_event_checks; stg_events and stg_event_checks sort and deduplicate
-- only the partitions that are not stored in seq order (e.g. landed twice by the Kafka consumer).
-- The counts by type and the trade statistics of the session summary (macros/marts.sql) need no
-- previous row: they come from a second, parallel scan grouped by partition and are joined here,
-- so the mart never scans the events again. Kept out of the streaming pass on purpose: that pass
-- runs on one thread (`over ()` keeps the stored order) and these aggregates cost it more than
-- the pass itself (24 M events: 4.1-4.5 s with them, 1.5-1.7 s without; the split model 2.6-2.7 s).

with landed as (

    select
        symbol,
        date,
        seq,
        ts_ns,
        type,
        qty,
        price_ticks,
        order_id,
        -- the previous stored row (streaming window: the scan's own order). A partition's rows are
        -- stored together; its first row follows another partition's last, which never has
        -- seq = this seq - 1 when this seq is 0, so `seq = previous_seq + 1` also says "same partition".
        lag(seq) over () as previous_seq,
        lag(ts_ns) over () as previous_ts_ns,
        lag(type) over () as previous_type,
        lag(order_id) over () as previous_order_id
    from {{ lake_table('events') }}

),

per_partition as (

    select
        cast(symbol as varchar) as symbol,
        cast(date as date) as date,
        count(*) as landed_rows,
        count(*) filter (where seq = previous_seq + 1) as seq_steps,
        count(*) filter (where seq = previous_seq + 1 and ts_ns < previous_ts_ns) as ts_backwards_in_stored_order,
        min(seq) as min_seq,
        max(seq) as max_seq,
        count(*) - count(seq) as null_seq,
        count(*) - count(ts_ns) as null_ts_ns,
        count(*) - count(type) as null_event_type,
        count(*) - count(price_ticks) as null_price_ticks,
        count(*) - count(order_id) as null_order_id,
        count(*) filter (where type not in (0, 1, 2, 3, 4, 5)) as unknown_event_types,
        count(*) filter (where not coalesce(qty > 0, false)) as nonpositive_qty,
        count(*) filter (where type in (4, 5)) as landed_executions,
        coalesce(sum(qty) filter (where type in (4, 5)), 0) as landed_executed_shares,
        list({'seq': previous_seq, 'order_id': previous_order_id}) filter (
            where seq = previous_seq + 1 and type in (4, 5) and previous_type = type and ts_ns = previous_ts_ns
        ) as sweep_steps
    from landed
    group by all

),

-- what fct_session_summary reports about the events (order-free aggregates: a parallel scan)
event_stats as (

    select
        cast(symbol as varchar) as symbol,
        cast(date as date) as date,
        {{ event_summary_stats('type') }}
    from {{ lake_table('events') }}
    group by all

)

select
    per_partition.* exclude (sweep_steps),
    event_stats.* exclude (symbol, date),
    per_partition.sweep_steps,
    -- stored as exactly 0, 1, ..., n-1: unique, gap-free, and the stored order is the seq order
    min_seq = 0 and seq_steps = landed_rows - 1 and null_seq = 0 as in_seq_order
from per_partition
join event_stats using (symbol, date)
