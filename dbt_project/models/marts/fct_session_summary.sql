{{ guard_full_refresh() }}
{%- set reordered = partitions_where(ref('stg_book_state_checks'), 'not in_seq_order') %}
-- depends_on: {{ ref('stg_book_states') }}  (read below only for partitions not stored in seq order)
-- One row per session (symbol, date).
--   * event counts by type, trades, volume (executed shares), VWAP, first/last/high/low trade price
--   * open/high/low/close of the session's *reference price*: open is the opening price the
--     engine used (the header's p0, chained from the previous session's close); high/low/close
--     are taken on floor((best bid + best ask) / 2) after each event, close being its value
--     after the last event -- the engine's close rule -- so close(N) = open(N+1) per symbol.
--   * spread: simple mean over events, time-weighted mean (each book state weighted by how
--     long it lasted, the last one until the market close) and max, over two-sided states.
-- Incremental: the run's partitions are replaced. The staging views hold the run's partitions.
--
-- Nothing here scans the events or the book states of partitions stored in seq order (what the
-- landing and the replay write): their statistics come from the staging passes that test them
-- (stg_event_checks, stg_book_state_checks: one streaming pass each, the time weights from each
-- state lasting until the next row's timestamp). Book states of other partitions are sorted by
-- seq here.

with sessions as (

    select * from {{ ref('stg_sessions') }}
    where {{ partition_filter() }}

),

event_stats as (

    -- counts, time range and trades of each session's (deduplicated) events, computed once per
    -- partition by the staging pass over the events
    select
        symbol,
        date,
        n_events,
        n_add_bid,
        n_add_ask,
        n_cancel_bid,
        n_cancel_ask,
        n_execute_buy,
        n_execute_sell,
        n_execute_buy + n_execute_sell as n_trades,
        executed_shares as volume,
        first_trade_ticks,
        last_trade_ticks,
        high_trade_ticks,
        low_trade_ticks,
        trade_notional_ticks / nullif(executed_shares, 0) as vwap_ticks,
        first_ts_ns,
        last_ts_ns
    from {{ ref('stg_event_checks') }}
    where {{ partition_filter() }} and n_events > 0

),

book_stats_stored as (

    -- book statistics of the partitions stored in seq order, from stg_book_state_checks' pass
    select * from {{ ref('stg_book_state_checks') }}
    where {{ partition_filter() }} and in_seq_order

),

book_stats_in_order as (

    select
        b.symbol,
        b.date,
        b.mean_spread_ticks,
        b.max_spread_ticks,
        b.high_ticks,
        b.low_ticks,
        b.close_ticks,
        b.n_one_sided_states,
        (b.inner_spread_ns + coalesce(b.last_spread_ticks * last_dwell.ns, 0))
            / nullif(b.inner_dwell_ns + case when b.last_spread_ticks is null then 0 else last_dwell.ns end, 0)
            as time_weighted_spread_ticks
    from book_stats_stored as b
    inner join sessions using (symbol, date)
    cross join lateral (
        select greatest(sessions.market_close_ns - b.last_state_ts_ns, 0) as ns
    ) as last_dwell

),
{%- if reordered %}

reordered_durations as (

    select
        books.symbol,
        books.date,
        books.seq,
        books.spread_ticks,
        books.mid_floor_ticks,
        greatest(
            coalesce(lead(books.ts_ns) over w, sessions.market_close_ns) - books.ts_ns, 0
        ) as dwell_ns
    from {{ ref('stg_book_states') }} as books
    inner join sessions using (symbol, date)
    where (books.symbol, books.date) in ({% for p in reordered %}('{{ p["symbol"] }}', date '{{ p["date"] }}'){% if not loop.last %}, {% endif %}{% endfor %})
    window w as (partition by books.symbol, books.date order by books.seq)

),

book_stats_reordered as (

    select
        symbol,
        date,
        {{ book_state_stats() }},
        arg_max(mid_floor_ticks, seq) as close_ticks,
        sum(spread_ticks * dwell_ns) / nullif(sum(dwell_ns) filter (where spread_ticks is not null), 0)
            as time_weighted_spread_ticks
    from reordered_durations
    group by symbol, date

),

{%- endif %}

book_stats as (

    select * from book_stats_in_order
    {%- if reordered %}
    union all by name
    select * from book_stats_reordered
    {%- endif %}

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
