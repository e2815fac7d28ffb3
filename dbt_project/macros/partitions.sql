{#- Partition awareness. Dagster passes the symbol-dates of a run as
    --vars '{"partitions": [{"symbol": "AAPL", "date": "2026-01-02"}, ...]}'.
    Staging views stay unfiltered (so a later run of any subset reads the right rows);
    marts and tests filter with partition_filter(), which DuckDB pushes down to the
    hive directories of the lake (only those files are read). -#}

{% macro partitions() -%}
    {%- set parts = var('partitions', []) or [] -%}
    {%- if parts is string -%}{%- set parts = fromjson(parts) -%}{%- endif -%}
    {%- for p in parts -%}
        {%- if not modules.re.match('^[A-Z0-9]{1,8}$', p['symbol'] | string)
               or not modules.re.match('^[0-9]{4}-[0-9]{2}-[0-9]{2}$', p['date'] | string) -%}
            {{ exceptions.raise_compiler_error("invalid partition " ~ p ~ ": need symbol A-Z0-9 and date YYYY-MM-DD") }}
        {%- endif -%}
    {%- endfor -%}
    {{- return(parts) -}}
{%- endmacro %}


{% macro partition_filter(symbol_col='symbol', date_col='date') -%}
    {%- set parts = partitions() -%}
    {%- if parts | length == 0 -%}
        true
    {%- else -%}
        ({%- for p in parts %}({{ symbol_col }} = '{{ p["symbol"] }}' and {{ date_col }} = date '{{ p["date"] }}'){% if not loop.last %} or {% endif %}{% endfor -%})
    {%- endif -%}
{%- endmacro %}


{#- Incremental strategy "replace_partitions": the run's partitions are deleted and
    inserted again in one transaction (all partitions when no vars are given), so
    re-running a partition is idempotent and a partition that lost rows loses them
    in the mart too. -#}
{% macro get_incremental_replace_partitions_sql(arg_dict) -%}
    {%- set target = arg_dict['target_relation'] -%}
    {%- set source = arg_dict['temp_relation'] -%}
    {%- set cols = arg_dict['dest_columns'] | map(attribute='quoted') | join(', ') -%}
    delete from {{ target }} where {{ partition_filter() }};
    insert into {{ target }} ({{ cols }})
    select {{ cols }} from {{ source }}
{%- endmacro %}


{#- Generic tests run on the run's partitions only (the wrapped relation is filtered
    like the marts). A test that must see every partition -- e.g. the day-to-day
    continuity check -- sets `meta: {all_partitions: true}`. -#}
{% macro get_where_subquery(relation) -%}
    {%- set where = config.get('where', '') -%}
    {%- set meta = config.get('meta', {}) or {} -%}
    {%- set clauses = [] -%}
    {%- if where -%}{%- do clauses.append('(' ~ where ~ ')') -%}{%- endif -%}
    {%- if partitions() | length > 0 and not meta.get('all_partitions', false) -%}
        {%- do clauses.append(partition_filter()) -%}
    {%- endif -%}
    {%- if clauses -%}
        {%- set filtered -%}
            (select * from {{ relation }} where {{ clauses | join(' and ') }}) dbt_subquery
        {%- endset -%}
        {%- do return(filtered) -%}
    {%- else -%}
        {%- do return(relation) -%}
    {%- endif -%}
{%- endmacro %}


{#- Schemas are used as named (staging, marts), not prefixed with the target schema. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {{- (custom_schema_name or target.schema) | trim -}}
{%- endmacro %}


{#- A full refresh recreates a mart from the model's query; with partition vars that would
    keep only those partitions, so it is refused. -#}
{% macro guard_full_refresh() -%}
    {%- if execute and flags.FULL_REFRESH and partitions() | length > 0 -%}
        {{ exceptions.raise_compiler_error(
            "--full-refresh with partition vars would rebuild " ~ this ~ " from those partitions only: "
            ~ "run the full refresh without the partitions var") }}
    {%- endif -%}
{%- endmacro %}
