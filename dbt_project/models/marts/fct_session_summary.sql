{{ guard_full_refresh() }}
-- One row per session (symbol, date).
--   * event counts by type, trades, volume, VWAP, first/last/high/low trade price
--   * open/high/low/close of the session's *reference price*: open is the opening price the
--     engine used (the header's p0, chained from the previous session's close); high/low/close
--     are taken on floor((best bid + best ask) / 2) after each event, close being its value
--     after the last event -- the engine's close rule -- so close(N) = open(N+1) per symbol.
--   * spread: simple mean over events, time-weighted mean (each book state weighted by how
--     long it lasted, the last one until the market close) and max, over two-sided states.
-- Incremental: the run's partitions are replaced.

with sessions as (

    select * from {{ ref('stg_sessions') }}
    where {{ partition_filter() }}

),

events as (

    select * from {{ ref('stg_events') }}
    where {{ partition_filter() }}

),

books as (

    select * from {{ ref('stg_book_states') }}
    where {{ partition_filter() }}

),

event_stats as (

    select
        symbol,
        date,
        count(*) as n_events,
        count(*) filter (where event_type = 0) as n_add_bid,
        count(*) filter (where event_type = 1) as n_add_ask,
        count(*) filter (where event_type = 2) as n_cancel_bid,
        count(*) filter (where event_type = 3) as n_cancel_ask,
        count(*) filter (where event_type = 4) as n_execute_buy,
        count(*) filter (where event_type = 5) as n_execute_sell,
        count(*) filter (where is_trade) as n_trades,
        coalesce(sum(qty) filter (where is_trade), 0) as volume,
        arg_min(price_ticks, seq) filter (where is_trade) as first_trade_ticks,
        arg_max(price_ticks, seq) filter (where is_trade) as last_trade_ticks,
        max(price_ticks) filter (where is_trade) as high_trade_ticks,
        min(price_ticks) filter (where is_trade) as low_trade_ticks,
        sum(cast(price_ticks as hugeint) * qty) filter (where is_trade)
            / sum(qty) filter (where is_trade) as vwap_ticks,
        min(ts_ns) as first_ts_ns,
        max(ts_ns) as last_ts_ns
    from events
    group by symbol, date

),

book_durations as (

    select
        books.symbol,
        books.date,
        books.seq,
        books.spread_ticks,
        books.mid_floor_ticks,
        greatest(
            coalesce(lead(books.ts_ns) over w, sessions.market_close_ns) - books.ts_ns, 0
        ) as dwell_ns
    from books
    inner join sessions using (symbol, date)
    window w as (partition by books.symbol, books.date order by books.seq)

),

book_stats as (

    select
        symbol,
        date,
        avg(spread_ticks) as mean_spread_ticks,
        sum(spread_ticks * dwell_ns) / nullif(sum(dwell_ns) filter (where spread_ticks is not null), 0)
            as time_weighted_spread_ticks,
        max(spread_ticks) as max_spread_ticks,
        max(mid_floor_ticks) as high_ticks,
        min(mid_floor_ticks) as low_ticks,
        arg_max(mid_floor_ticks, seq) as close_ticks,
        count(*) filter (where spread_ticks is null) as n_one_sided_states
    from book_durations
    group by symbol, date

)

select
    sessions.symbol,
    sessions.date,
    sessions.seed,
    sessions.tick_size,
    sessions.session_seconds,
    event_stats.n_events,
    event_stats.n_add_bid,
    event_stats.n_add_ask,
    event_stats.n_cancel_bid,
    event_stats.n_cancel_ask,
    event_stats.n_execute_buy,
    event_stats.n_execute_sell,
    event_stats.n_trades,
    cast(event_stats.volume as bigint) as volume,
    event_stats.n_events / sessions.session_seconds as events_per_second,
    sessions.open_ticks,
    book_stats.high_ticks,
    book_stats.low_ticks,
    book_stats.close_ticks,
    sessions.engine_close_ticks,
    sessions.open_ticks * sessions.tick_size / 10000.0 as open,
    book_stats.high_ticks * sessions.tick_size / 10000.0 as high,
    book_stats.low_ticks * sessions.tick_size / 10000.0 as low,
    book_stats.close_ticks * sessions.tick_size / 10000.0 as close,
    event_stats.first_trade_ticks * sessions.tick_size / 10000.0 as first_trade,
    event_stats.last_trade_ticks * sessions.tick_size / 10000.0 as last_trade,
    event_stats.high_trade_ticks * sessions.tick_size / 10000.0 as high_trade,
    event_stats.low_trade_ticks * sessions.tick_size / 10000.0 as low_trade,
    cast(event_stats.vwap_ticks as double) * sessions.tick_size / 10000.0 as vwap,
    book_stats.mean_spread_ticks,
    cast(book_stats.time_weighted_spread_ticks as double) as time_weighted_spread_ticks,
    book_stats.max_spread_ticks,
    book_stats.mean_spread_ticks * sessions.tick_size / 10000.0 as mean_spread,
    cast(book_stats.time_weighted_spread_ticks as double) * sessions.tick_size / 10000.0
        as time_weighted_spread,
    book_stats.max_spread_ticks * sessions.tick_size / 10000.0 as max_spread,
    book_stats.n_one_sided_states,
    sessions.landed_events,
    event_stats.first_ts_ns,
    event_stats.last_ts_ns
from sessions
left join event_stats using (symbol, date)
left join book_stats using (symbol, date)
