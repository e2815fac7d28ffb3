{{ guard_full_refresh() }}
-- 1-minute OHLCV bars per symbol and trading date, from executions (one bar per minute
-- that traded; minute 0 starts at the market open). Prices in currency units
-- (ticks * tick_size / 10,000) and in ticks; volume = executed shares. Incremental: the run's
-- partitions are replaced.

with sessions as (

    select * from {{ ref('stg_sessions') }}
    where {{ partition_filter() }}

),

trades as (

    select
        symbol,
        date,
        seq,
        ts_ns,
        price_ticks,
        qty
    from {{ ref('stg_events') }}
    where is_trade

),

bucketed as (

    select
        trades.*,
        sessions.tick_size,
        sessions.market_open_ns,
        (trades.ts_ns - sessions.market_open_ns) // 60000000000 as minute_index
    from trades
    inner join sessions using (symbol, date)

),

bars as (

    select
        symbol,
        date,
        minute_index,
        any_value(tick_size) as tick_size,
        any_value(market_open_ns) as market_open_ns,
        arg_min(price_ticks, seq) as open_ticks,
        max(price_ticks) as high_ticks,
        min(price_ticks) as low_ticks,
        arg_max(price_ticks, seq) as close_ticks,
        sum(qty) as volume,
        count(*) as trade_count,
        sum(cast(price_ticks as hugeint) * qty) / sum(qty) as vwap_ticks
    from bucketed
    group by symbol, date, minute_index

)

select
    symbol,
    date,
    cast(minute_index as integer) as minute_index,
    cast(date as timestamp)
        + to_microseconds(cast((market_open_ns + minute_index * 60000000000) // 1000 as bigint)) as bar_start,
    open_ticks * tick_size / 10000.0 as open,
    high_ticks * tick_size / 10000.0 as high,
    low_ticks * tick_size / 10000.0 as low,
    close_ticks * tick_size / 10000.0 as close,
    cast(vwap_ticks as double) * tick_size / 10000.0 as vwap,
    cast(volume as bigint) as volume,
    cast(trade_count as bigint) as trade_count,
    open_ticks,
    high_ticks,
    low_ticks,
    close_ticks,
    cast(vwap_ticks as double) as vwap_ticks
from bars
