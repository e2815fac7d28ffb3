{{ guard_full_refresh() }}
{%- set lineage = source('lake', 'events') %}
-- One row per landed events partition: how many rows, whether the rows are stored in seq order
-- 0, 1, ..., n-1 (what raw_events writes), and the per-row rules that need no ordering. For a
-- partition stored in seq order this also proves seq unique and gap-free, checks the timestamps
-- along seq, counts the executed shares and lists the sweep steps (an execution followed by the
-- next seq executing the same way at the same timestamp: one aggressive order walking the queue)
-- for stg_event_checks; stg_events and stg_event_checks sort and deduplicate only the partitions
-- that are not stored in seq order (e.g. landed twice by the Kafka consumer).
--
-- Three scans, each as cheap as its question allows:
--   * stored_order: the only part that needs the stored order, one streaming pass (`over ()`
--     keeps the scan's order, so it runs on one thread) with nothing in it but the two lags;
--   * by_type: everything order-free (counts, nulls, quantities, the session summary's counts
--     by type and time range), grouped by partition and event type on every core;
--   * the executions alone (a few per cent of the rows, filtered in the Parquet reader): the
--     summary's trade statistics, and the sweep steps as a join of each execution to the next seq.
-- (24 M events: 4.1-4.5 s when everything was in the streaming pass.)

with stored_order as (

    select
        symbol,
        date,
        count(*) filter (where seq = previous_seq + 1) as seq_steps,
        count(*) filter (where seq = previous_seq + 1 and ts_ns < previous_ts_ns) as ts_backwards_in_stored_order
    from (
        select
            symbol,
            date,
            seq,
            ts_ns,
            -- the previous stored row. A partition's rows are stored together; its first row
            -- follows another partition's last, which never has seq = this seq - 1 when this seq
            -- is 0, so `seq = previous_seq + 1` also says "same partition".
            lag(seq) over () as previous_seq,
            lag(ts_ns) over () as previous_ts_ns
        from {{ lake_table('events') }}
    )
    group by all

),

by_type as (

    select
        symbol,
        date,
        type,
        count(*) as n,
        min(seq) as min_seq,
        max(seq) as max_seq,
        count(*) - count(seq) as null_seq,
        count(*) - count(ts_ns) as null_ts_ns,
        count(*) - count(price_ticks) as null_price_ticks,
        count(*) - count(order_id) as null_order_id,
        count_if(not coalesce(qty > 0, false)) as nonpositive_qty,
        sum(qty) as qty,
        min(ts_ns) as first_ts_ns,
        max(ts_ns) as last_ts_ns
    from {{ lake_table('events') }}
    group by all

),

per_partition as (

    select
        symbol,
        date,
        cast(sum(n) as bigint) as landed_rows,
        min(min_seq) as min_seq,
        max(max_seq) as max_seq,
        cast(sum(null_seq) as bigint) as null_seq,
        cast(sum(null_ts_ns) as bigint) as null_ts_ns,
        cast(coalesce(sum(n) filter (where type is null), 0) as bigint) as null_event_type,
        cast(sum(null_price_ticks) as bigint) as null_price_ticks,
        cast(sum(null_order_id) as bigint) as null_order_id,
        cast(coalesce(sum(n) filter (where type not in (0, 1, 2, 3, 4, 5)), 0) as bigint) as unknown_event_types,
        cast(sum(nonpositive_qty) as bigint) as nonpositive_qty,
        cast(coalesce(sum(n) filter (where type in (4, 5)), 0) as bigint) as landed_executions,
        cast(coalesce(sum(qty) filter (where type in (4, 5)), 0) as hugeint) as landed_executed_shares,
        {{ event_type_summary('type') }}
    from by_type
    group by all

),

executions as (

    select symbol, date, seq, ts_ns, type, price_ticks, qty, order_id
    from {{ lake_table('events') }}
    where type in (4, 5)

),

trades as (

    select symbol, date, {{ trade_summary() }}
    from executions
    group by all

),

sweeps as (

    select
        step.symbol,
        step.date,
        list({'seq': step.seq, 'order_id': step.order_id}) as sweep_steps
    from executions as step
    inner join executions as next_execution
        on next_execution.symbol = step.symbol
        and next_execution.date = step.date
        and next_execution.seq = step.seq + 1
        and next_execution.type = step.type
        and next_execution.ts_ns = step.ts_ns
    group by all

)

select
    cast(per_partition.symbol as varchar) as symbol,
    cast(per_partition.date as date) as date,
    per_partition.landed_rows,
    stored_order.seq_steps,
    stored_order.ts_backwards_in_stored_order,
    per_partition.* exclude (symbol, date, landed_rows),
    trades.* exclude (symbol, date),
    sweeps.sweep_steps,
    -- stored as exactly 0, 1, ..., n-1: unique, gap-free, and the stored order is the seq order
    per_partition.min_seq = 0 and stored_order.seq_steps = per_partition.landed_rows - 1
        and per_partition.null_seq = 0 as in_seq_order
from per_partition
inner join stored_order using (symbol, date)
left join trades using (symbol, date)
left join sweeps using (symbol, date)
