{#- The book-state statistics of fct_session_summary, shared by its stored-order and sorted paths. -#}
{% macro book_state_stats() -%}
        avg(spread_ticks) as mean_spread_ticks,
        max(spread_ticks) as max_spread_ticks,
        max(mid_floor_ticks) as high_ticks,
        min(mid_floor_ticks) as low_ticks,
        arg_max(mid_floor_ticks, seq) as close_ticks,
        count(*) filter (where spread_ticks is null) as n_one_sided_states
{%- endmacro %}


{#- The per-session event statistics of fct_session_summary (counts by type, first/last time,
    trades), computed once per partition where the events are scanned anyway: in
    stg_event_landings' streaming pass (stored rows = the events, for partitions stored in seq
    order) and over the deduplicated stg_events for the others (stg_event_checks). -#}
{% macro event_summary_stats(type_column) -%}
        count(*) filter (where {{ type_column }} = 0) as n_add_bid,
        count(*) filter (where {{ type_column }} = 1) as n_add_ask,
        count(*) filter (where {{ type_column }} = 2) as n_cancel_bid,
        count(*) filter (where {{ type_column }} = 3) as n_cancel_ask,
        count(*) filter (where {{ type_column }} = 4) as n_execute_buy,
        count(*) filter (where {{ type_column }} = 5) as n_execute_sell,
        min(ts_ns) as first_ts_ns,
        max(ts_ns) as last_ts_ns,
        arg_min(price_ticks, seq) filter (where {{ type_column }} in (4, 5)) as first_trade_ticks,
        arg_max(price_ticks, seq) filter (where {{ type_column }} in (4, 5)) as last_trade_ticks,
        max(price_ticks) filter (where {{ type_column }} in (4, 5)) as high_trade_ticks,
        min(price_ticks) filter (where {{ type_column }} in (4, 5)) as low_trade_ticks,
        sum(cast(price_ticks as hugeint) * qty) filter (where {{ type_column }} in (4, 5)) as trade_notional_ticks
{%- endmacro %}
