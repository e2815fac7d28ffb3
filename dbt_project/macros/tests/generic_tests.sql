{#- Generic data tests (no hub packages). Each returns the failing rows. -#}

{% test unique_combination_of_columns(model, combination_of_columns) %}
    {%- set cols = combination_of_columns | join(', ') %}
    select {{ cols }}, count(*) as n_rows
    from {{ model }}
    group by {{ cols }}
    having count(*) > 1
{% endtest %}


{% test non_decreasing_within(model, column_name, group_by, order_by) %}
    {#- column_name must never decrease along order_by inside each group -#}
    {%- set groups = group_by | join(', ') %}
    with ordered as (
        select
            {{ groups }},
            {{ order_by }} as position,
            {{ column_name }} as value,
            lag({{ column_name }}) over (partition by {{ groups }} order by {{ order_by }}) as previous_value
        from {{ model }}
    )
    select * from ordered where value < previous_value
{% endtest %}


{% test contiguous_sequence(model, column_name, group_by) %}
    {#- column_name runs 0, 1, ..., n-1 inside each group. Together with a uniqueness test
        on (group_by, column_name) this means: no gap. (A repeat alone also fails here,
        unless it exactly offsets a gap -- which the uniqueness test catches.) -#}
    {%- set groups = group_by | join(', ') %}
    select
        {{ groups }},
        min({{ column_name }}) as min_value,
        max({{ column_name }}) as max_value,
        count(*) as n_rows
    from {{ model }}
    group by {{ groups }}
    having min({{ column_name }}) <> 0
        or max({{ column_name }}) <> count(*) - 1
{% endtest %}


{% test removals_match_earlier_add(model, group_by=['symbol', 'date']) %}
    {#- every CANCEL/EXECUTE names an order ADDed earlier (lower seq) in the same session,
        on the same side and at the same price -#}
    {%- set groups = group_by | join(', ') %}
    with events as materialized (
        select {{ groups }}, seq, event_category, order_id, side, price_ticks from {{ model }}
    ),
    adds as (
        select {{ groups }}, order_id, seq as add_seq, side as add_side, price_ticks as add_price_ticks
        from events
        where event_category = 'add'
    ),
    removals as (
        select * from events where event_category in ('cancel', 'execute')
    )
    select
        r.*,
        case
            when a.order_id is null then 'no earlier ADD of this order in the session'
            when a.add_side <> r.side then 'side differs from the ADD'
            else 'price differs from the ADD'
        end as problem
    from removals as r
    left join adds as a
        on {% for g in group_by %}a.{{ g }} = r.{{ g }} and {% endfor %}a.order_id = r.order_id
        and a.add_seq < r.seq
    where a.order_id is null
       or a.add_side <> r.side
       or a.add_price_ticks <> r.price_ticks
{% endtest %}


{% test row_count_per_group_between(model, group_by, min_value, max_value) %}
    {%- set groups = group_by | join(', ') %}
    select {{ groups }}, count(*) as n_rows
    from {{ model }}
    group by {{ groups }}
    having count(*) < {{ min_value }} or count(*) > {{ max_value }}
{% endtest %}


{% test expression_is_true(model, expression, column_name=none) %}
    select * from {{ model }} where not coalesce(({{ expression }}), false)
{% endtest %}


{% test same_rows_per_group_as(model, compare_model, group_by) %}
    {#- model and compare_model have the same number of rows for each group (both limited to the
        run's partitions) -#}
    {%- set groups = group_by | join(', ') %}
    with a as (select {{ groups }}, count(*) as n from {{ model }} group by {{ groups }}),
    b as (
        select {{ groups }}, count(*) as n
        from {{ compare_model }}
        where {{ partition_filter() }}
        group by {{ groups }}
    )
    select
        {% for g in group_by %}coalesce(a.{{ g }}, b.{{ g }}) as {{ g }}, {% endfor %}
        a.n as n_model,
        b.n as n_compare
    from a
    full outer join b on {% for g in group_by %}a.{{ g }} = b.{{ g }}{% if not loop.last %} and {% endif %}{% endfor %}
    where a.n is distinct from b.n
{% endtest %}


{% test sessions_chain(model, partition_by, order_by, open_column, close_column) %}
    {#- Price chaining across trading dates: for each symbol, consecutive sessions are
        consecutive weekdays and the session's open equals the previous session's close. -#}
    with ordered as (
        select
            {{ partition_by }} as series,
            {{ order_by }} as day,
            {{ open_column }} as open_value,
            lag({{ order_by }}) over w as previous_day,
            lag({{ close_column }}) over w as previous_close
        from {{ model }}
        window w as (partition by {{ partition_by }} order by {{ order_by }})
    ),
    checked as (
        select
            *,
            previous_day
                + (case dayofweek(previous_day) when 5 then 3 when 6 then 2 else 1 end) as expected_day
        from ordered
        where previous_day is not null
    )
    select
        *,
        case
            when day <> expected_day then 'trading date(s) missing between previous_day and day'
            else 'open differs from the previous session''s close'
        end as problem
    from checked
    where day <> expected_day or open_value is distinct from previous_close
{% endtest %}
