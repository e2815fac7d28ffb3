-- Top of book after each event (from the compiled replay), deduplicated like stg_events.

with source as (

    select * from {{ source('lake', 'book_states') }}

),

deduplicated as (

    select
        symbol,
        date,
        seq,
        ts_ns,
        best_bid_ticks,
        best_bid_qty,
        best_ask_ticks,
        best_ask_qty,
        replay_flags,
        min(_landed_at) as landed_at
    from source
    group by all

)

select
    cast(symbol as varchar) as symbol,
    cast(date as date) as date,
    cast(seq as bigint) as seq,
    cast(ts_ns as bigint) as ts_ns,
    cast(best_bid_ticks as integer) as best_bid_ticks,
    cast(best_bid_qty as bigint) as best_bid_qty,
    cast(best_ask_ticks as integer) as best_ask_ticks,
    cast(best_ask_qty as bigint) as best_ask_qty,
    cast(best_ask_ticks - best_bid_ticks as integer) as spread_ticks,
    cast((cast(best_bid_ticks as bigint) + best_ask_ticks) // 2 as integer) as mid_floor_ticks,
    cast(replay_flags as utinyint) as replay_flags,
    landed_at
from deduplicated
