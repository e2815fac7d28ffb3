-- One row per order-book event, typed and named. At-least-once landing is harmless:
-- identical copies of an event (same symbol, date, seq and record) collapse to one row.
-- Two *different* records under one (symbol, date, seq) are kept, so the unique test fails
-- loudly instead of one of them being dropped silently.

with source as (

    select * from {{ source('lake', 'events') }}

),

deduplicated as (

    select
        symbol,
        date,
        seq,
        ts_ns,
        type,
        side,
        price_ticks,
        qty,
        order_id,
        min(_landed_at) as landed_at,
        count(*) as landed_copies
    from source
    group by all

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
    landed_copies
from deduplicated
