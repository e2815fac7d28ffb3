{#- Generic data tests (no hub packages). Each returns the failing rows. The tested relation is
    limited to the run's partitions by get_where_subquery (macros/partitions.sql). -#}

{% test unique_combination_of_columns(model, combination_of_columns) %}
    {%- set cols = combination_of_columns | join(', ') %}
    select {{ cols }}, count(*) as n_rows
    from {{ model }}
    group by {{ cols }}
    having count(*) > 1
{% endtest %}


{% test expression_is_true(model, expression, column_name=none) %}
    select * from {{ model }} where not coalesce(({{ expression }}), false)
{% endtest %}


{% test partition_totals_match(model, total_column, compare_model, compare_column) %}
    {#- per (symbol, date) of the run, sum(total_column) of model = sum(compare_column) of
        compare_model (a partition missing on one side counts as 0 there) -#}
    with a as (select symbol, date, sum({{ total_column }}) as total from {{ model }} group by all),
    b as (
        select symbol, date, sum({{ compare_column }}) as total
        from {{ compare_model }}
        where {{ partition_filter() }}
        group by all
    )
    select
        coalesce(a.symbol, b.symbol) as symbol,
        coalesce(a.date, b.date) as date,
        coalesce(a.total, 0) as model_total,
        coalesce(b.total, 0) as compare_total
    from a
    full outer join b on a.symbol = b.symbol and a.date = b.date
    where coalesce(a.total, 0) <> coalesce(b.total, 0)
{% endtest %}


{% test sessions_chain(model, open_column, close_column) %}
    {#- Price chaining across trading dates: for each session of the run, the symbol's previous
        session (the latest earlier one in the model) is the previous weekday and closed at this
        session's open; likewise for the next session. So a re-simulated date that no longer
        chains with an existing neighbour fails, and so does a missing date. Reads the run's
        sessions and one neighbour on each side of each (ASOF joins), not the history.
        Set meta: {neighbours: true} so the model is not limited to the run's partitions. -#}
    with run as (
        select symbol, date, {{ open_column }} as open_value, {{ close_column }} as close_value
        from {{ model }}
        where {{ partition_filter() }}
    ),
    neighbours as (
        select symbol, date, {{ open_column }} as open_value, {{ close_column }} as close_value
        from {{ model }}
        where symbol in (select symbol from run)
    ),
    pairs as (
        select r.symbol, p.date as previous_day, r.date as day, p.close_value as previous_close, r.open_value
        from run as r
        asof inner join neighbours as p on r.symbol = p.symbol and r.date > p.date
        union
        select r.symbol, r.date as previous_day, n.date as day, r.close_value as previous_close, n.open_value
        from run as r
        asof inner join neighbours as n on r.symbol = n.symbol and r.date < n.date
    ),
    checked as (
        select
            *,
            previous_day
                + (case dayofweek(previous_day) when 5 then 3 when 6 then 2 else 1 end) as expected_day
        from pairs
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
