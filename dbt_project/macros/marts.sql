{#- The book-state statistics of fct_session_summary, shared by its stored-order and sorted paths
    (the close is the last state's floor mid: each caller takes it with the other last-state values). -#}
{% macro book_state_stats() -%}
        avg(spread_ticks) as mean_spread_ticks,
        max(spread_ticks) as max_spread_ticks,
        max(mid_floor_ticks) as high_ticks,
        min(mid_floor_ticks) as low_ticks,
        count(*) filter (where spread_ticks is null) as n_one_sided_states
{%- endmacro %}


{#- The per-session event statistics of fct_session_summary, computed once per partition where
    the events are scanned anyway (stg_event_landings for partitions stored in seq order,
    stg_event_checks over the deduplicated stg_events for the others), in two pieces that each
    read as little as they can:

    event_type_summary: counts by type and time range, aggregating rows already grouped by
    (symbol, date, <type_column>) with columns n (rows), first_ts_ns and last_ts_ns. Grouping by
    type first costs a third of six filtered counts over every event. -#}
{% macro event_type_summary(type_column) -%}
        {%- for name in ['n_add_bid', 'n_add_ask', 'n_cancel_bid', 'n_cancel_ask', 'n_execute_buy', 'n_execute_sell'] %}
        cast(coalesce(sum(n) filter (where {{ type_column }} = {{ loop.index0 }}), 0) as bigint) as {{ name }},
        {%- endfor %}
        min(first_ts_ns) as first_ts_ns,
        max(last_ts_ns) as last_ts_ns
{%- endmacro %}


{#- trade_summary: the trade statistics, aggregating a session's executions only. -#}
{% macro trade_summary() -%}
        arg_min(price_ticks, seq) as first_trade_ticks,
        arg_max(price_ticks, seq) as last_trade_ticks,
        max(price_ticks) as high_trade_ticks,
        min(price_ticks) as low_trade_ticks,
        sum(cast(price_ticks as hugeint) * qty) as trade_notional_ticks
{%- endmacro %}
