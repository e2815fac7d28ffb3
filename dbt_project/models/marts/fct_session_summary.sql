{{ guard_full_refresh() }}
{%- set reordered = partitions_where(ref('stg_book_state_checks'), 'not in_seq_order') %}
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
-- The time weights come from one streaming pass over the book states in stored order (the
-- state before each row lasted until this row's timestamp), valid for partitions stored in seq
-- order (stg_book_state_checks.in_seq_order, what the replay writes); other partitions are
-- sorted by seq instead.

with sessions as (

    select * from {{ ref('stg_sessions') }}
    where {{ partition_filter() }}

),

type_stats as (

    select symbol, date, event_type, count(*) as n, min(ts_ns) as first_ts_ns, max(ts_ns) as last_ts_ns
    from {{ ref('stg_events') }}
    group by all

),

trade_stats as (

    select
        symbol,
        date,
        sum(qty) as volume,
        arg_min(price_ticks, seq) as first_trade_ticks,
        arg_max(price_ticks, seq) as last_trade_ticks,
        max(price_ticks) as high_trade_ticks,
        min(price_ticks) as low_trade_ticks,
        sum(cast(price_ticks as hugeint) * qty) / sum(qty) as vwap_ticks
    from {{ ref('stg_events') }}
    where is_trade
    group by all

),

event_stats as (

    select
        type_stats.symbol,
        type_stats.date,
        cast(sum(n) as bigint) as n_events,
        cast(coalesce(sum(n) filter (where event_type = 0), 0) as bigint) as n_add_bid,
        cast(coalesce(sum(n) filter (where event_type = 1), 0) as bigint) as n_add_ask,
        cast(coalesce(sum(n) filter (where event_type = 2), 0) as bigint) as n_cancel_bid,
        cast(coalesce(sum(n) filter (where event_type = 3), 0) as bigint) as n_cancel_ask,
        cast(coalesce(sum(n) filter (where event_type = 4), 0) as bigint) as n_execute_buy,
        cast(coalesce(sum(n) filter (where event_type = 5), 0) as bigint) as n_execute_sell,
        cast(coalesce(sum(n) filter (where event_type in (4, 5)), 0) as bigint) as n_trades,
        coalesce(any_value(trade_stats.volume), 0) as volume,
        any_value(trade_stats.first_trade_ticks) as first_trade_ticks,
        any_value(trade_stats.last_trade_ticks) as last_trade_ticks,
        any_value(trade_stats.high_trade_ticks) as high_trade_ticks,
        any_value(trade_stats.low_trade_ticks) as low_trade_ticks,
        any_value(trade_stats.vwap_ticks) as vwap_ticks,
        min(type_stats.first_ts_ns) as first_ts_ns,
        max(type_stats.last_ts_ns) as last_ts_ns
    from type_stats
    left join trade_stats using (symbol, date)
    group by all

),

stored_order as (

    select
        symbol,
        date,
        seq,
        ts_ns,
        spread_ticks,
        mid_floor_ticks,
        seq = lag(seq) over () + 1 as continues_partition,  -- partitions here are stored in seq order
        lag(ts_ns) over () as previous_ts_ns,
        lag(spread_ticks) over () as previous_spread_ticks
    from {{ ref('stg_book_states') }}
    {%- if reordered %}
    where (symbol, date) not in ({% for p in reordered %}('{{ p["symbol"] }}', date '{{ p["date"] }}'){% if not loop.last %}, {% endif %}{% endfor %})
    {%- endif %}

),

book_stats_stored as (

    -- sum over states of spread * (next state's ts - ts): each row closes the previous state
    select
        symbol,
        date,
        {{ book_state_stats() }},
        coalesce(sum(previous_spread_ticks * greatest(ts_ns - previous_ts_ns, 0))
            filter (where continues_partition), 0) as inner_spread_ns,
        coalesce(sum(greatest(ts_ns - previous_ts_ns, 0))
            filter (where continues_partition and previous_spread_ticks is not null), 0) as inner_dwell_ns,
        arg_max(spread_ticks, seq) as last_spread_ticks,
        arg_max(ts_ns, seq) as last_state_ts_ns
    from stored_order
    group by symbol, date

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
        sum(spread_ticks * dwell_ns) / nullif(sum(dwell_ns) filter (where spread_ticks is not null), 0)
            as time_weighted_spread_ticks
    from reordered_durations
    group by symbol, date

),

{%- endif %}

book_stats as (

    select * from book_stats_in_order
    {%- if reordered %}
    union all
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
