{#- The book-state statistics of fct_session_summary, shared by its stored-order and sorted paths. -#}
{% macro book_state_stats() -%}
        avg(spread_ticks) as mean_spread_ticks,
        max(spread_ticks) as max_spread_ticks,
        max(mid_floor_ticks) as high_ticks,
        min(mid_floor_ticks) as low_ticks,
        arg_max(mid_floor_ticks, seq) as close_ticks,
        count(*) filter (where spread_ticks is null) as n_one_sided_states
{%- endmacro %}
