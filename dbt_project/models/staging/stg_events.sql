{%- set lineage = source('lake', 'events') %}
{%- set reordered = partitions_where(ref('stg_event_landings'), 'not in_seq_order') %}
-- One row per order-book event of the run's partitions, typed and named (a view: the events are
-- read where they are, in the lake, never copied). At-least-once landing is harmless: identical
-- copies of an event (same symbol, date, seq and record) collapse to one row. Two *different*
-- records under one (symbol, date, seq) are both kept, so the uniqueness test fails loudly.
-- Only partitions not stored as seq 0..n-1 (stg_event_landings.in_seq_order) can hold copies,
-- so only those pay for the deduplicating GROUP BY; the view is written for the run's list.

with deduplicated as (

    {%- if has_run_partitions_besides(reordered) %}

    select
        symbol, date, seq, ts_ns, type, side, price_ticks, qty, order_id,
        _landed_at as landed_at,
        1 as landed_copies
    from {{ lake_table('events', exclude=reordered) }}
    {%- endif %}

    {%- if reordered %}
    {%- if has_run_partitions_besides(reordered) %}

    union all
    {%- endif %}

    select
        symbol, date, seq, ts_ns, type, side, price_ticks, qty, order_id,
        min(_landed_at) as landed_at,
        count(*) as landed_copies
    from {{ lake_table('events', parts=reordered) }}
    group by all
    {%- endif %}

)

select
    cast(symbol as varchar) as symbol,
    cast(date as date) as date,
    cast(seq as bigint) as seq,
    cast(ts_ns as bigint) as ts_ns,
    cast(ts_ns as double) / 1e9 as time_seconds,
    cast(date as timestamp) + to_microseconds(cast(ts_ns // 1000 as bigint)) as event_at,
    cast(type as utinyint) as event_type,
    case type
        when 0 then 'ADD_BID' when 1 then 'ADD_ASK'
        when 2 then 'CANCEL_BID' when 3 then 'CANCEL_ASK'
        when 4 then 'EXECUTE_BUY' when 5 then 'EXECUTE_SELL'
    end as event_name,
    case
        when type in (0, 1) then 'add'
        when type in (2, 3) then 'cancel'
        when type in (4, 5) then 'execute'
        else 'unknown'
    end as event_category,
    type in (4, 5) as is_trade,
    cast(side as utinyint) as side,
    case side when 0 then 'bid' when 1 then 'ask' else 'na' end as side_name,
    cast(price_ticks as integer) as price_ticks,
    cast(qty as bigint) as qty,
    cast(order_id as ubigint) as order_id,
    landed_at,
    cast(landed_copies as bigint) as landed_copies
from deduplicated
