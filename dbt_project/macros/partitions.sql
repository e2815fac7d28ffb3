{#- Partition awareness.

    A run names its symbol-dates in a CSV file (header `symbol,date`) whose path is in the
    environment variable QRSDP_DBT_PARTITIONS_FILE (Dagster writes one per run). The file keeps
    the command line short and constant whatever the selection (a 100,000-partition backfill is a
    100,000-line file, not a 3 MB argument), and `--vars` unchanged between runs keeps dbt's
    partial parsing valid. By hand, `--vars '{"partitions": [{"symbol": "AAPL", "date": "2026-01-02"}]}'`
    does the same for a few partitions. Neither: everything in the lake.

    The file is read only while executing (`execute`), so parsing never depends on it. -#}

{% macro partitions_file() -%}
    {#- Read only while executing: an environment variable read at parse time is recorded by dbt,
        and a new value on every run would throw partial parsing away. -#}
    {%- if not execute -%}{{ return('') }}{%- endif -%}
    {{- return(env_var('QRSDP_DBT_PARTITIONS_FILE', '') | trim) -}}
{%- endmacro %}


{% macro _check_partition(symbol, date) -%}
    {%- if not modules.re.match('^[A-Z0-9]{1,8}$', symbol | string)
           or not modules.re.match('^[0-9]{4}-[0-9]{2}-[0-9]{2}$', date | string) -%}
        {{ exceptions.raise_compiler_error("invalid partition " ~ symbol ~ " " ~ date ~ ": need symbol A-Z0-9 and date YYYY-MM-DD") }}
    {%- endif -%}
{%- endmacro %}


{% macro partitions() -%}
    {#- The run's partitions as a list of {symbol, date} (dates as YYYY-MM-DD strings); [] = all. -#}
    {%- set path = partitions_file() -%}
    {%- if path -%}
        {%- set rows = run_query("select symbol, strftime(date, '%Y-%m-%d') as date from " ~ _partitions_csv(path) ~ " order by symbol, date") -%}
        {%- set parts = [] -%}
        {%- for r in rows.rows -%}
            {%- do _check_partition(r[0], r[1]) -%}
            {%- do parts.append({'symbol': r[0], 'date': r[1]}) -%}
        {%- endfor -%}
        {%- if parts | length == 0 -%}
            {{ exceptions.raise_compiler_error("partitions file " ~ path ~ " names no partition") }}
        {%- endif -%}
        {{- return(parts) -}}
    {%- endif -%}
    {%- set parts = var('partitions', []) or [] -%}
    {%- if parts is string -%}{%- set parts = fromjson(parts) -%}{%- endif -%}
    {%- for p in parts -%}{%- do _check_partition(p['symbol'], p['date']) -%}{%- endfor -%}
    {{- return(parts) -}}
{%- endmacro %}


{% macro has_partitions() -%}
    {{- return(partitions_file() != '' or (var('partitions', []) or []) | length > 0) -}}
{%- endmacro %}


{% macro _partitions_csv(path) -%}
    read_csv('{{ path }}', header = true, columns = {'symbol': 'VARCHAR', 'date': 'DATE'})
{%- endmacro %}


{% macro partitions_relation() -%}
    {#- The run's partitions as a relation (symbol, date): the file itself, or a VALUES list. -#}
    {%- if partitions_file() -%}
        (select symbol, date from {{ _partitions_csv(partitions_file()) }})
    {%- else -%}
        (select * from (values
        {%- for p in partitions() %}
            ('{{ p["symbol"] }}', date '{{ p["date"] }}'){% if not loop.last %},{% endif %}
        {%- endfor %}
        ) as run_partitions(symbol, date))
    {%- endif -%}
{%- endmacro %}


{% macro partition_filter(symbol_col='symbol', date_col='date') -%}
    {#- true for rows of the run's partitions (all rows when the run names none): a semi-join on
        the partitions relation, so its size never depends on how many partitions there are. -#}
    {%- if not has_partitions() -%}
        true
    {%- else -%}
        (({{ symbol_col }}, {{ date_col }}) in (select symbol, date from {{ partitions_relation() }}))
    {%- endif -%}
{%- endmacro %}


{% macro lake_table(table, parts=none, exclude=[]) -%}
    {#- read_parquet over explicit partition directories of raw/<table>: `parts` (default: the run's
        partitions), never a listing of the rest of the lake. When the run names no partition,
        the whole table (minus `exclude`, a list of partitions). -#}
    {%- set base = lake_root() ~ '/raw/' ~ table -%}
    {%- if parts is none and not has_partitions() -%}
        (select * from read_parquet('{{ base }}/*/*/*.parquet', hive_partitioning = true, union_by_name = true)
        {%- if exclude %}
         where (symbol, cast(date as date)) not in ({% for p in exclude %}('{{ p["symbol"] }}', date '{{ p["date"] }}'){% if not loop.last %}, {% endif %}{% endfor %})
        {%- endif %})
    {%- else -%}
        {%- set skip = [] -%}
        {%- for p in exclude -%}{%- do skip.append(p['symbol'] ~ '|' ~ p['date']) -%}{%- endfor -%}
        {%- set chosen = [] -%}
        {%- for p in (partitions() if parts is none else parts) -%}
            {%- if (p['symbol'] ~ '|' ~ p['date']) not in skip -%}{%- do chosen.append(p) -%}{%- endif -%}
        {%- endfor -%}
        read_parquet([
        {%- for p in chosen -%}
            '{{ base }}/symbol={{ p["symbol"] }}/date={{ p["date"] }}/*.parquet'{% if not loop.last %}, {% endif %}
        {%- endfor -%}
        ], hive_partitioning = true, union_by_name = true)
    {%- endif -%}
{%- endmacro %}


{% macro partitions_where(relation, condition) -%}
    {#- The run's partitions (all partitions without a selection) of a per-partition relation that
        satisfy `condition`, as a list of {symbol, date}; [] while parsing. -#}
    {%- if not execute -%}{{ return([]) }}{%- endif -%}
    {%- set rows = run_query(
        "select symbol, strftime(date, '%Y-%m-%d') from " ~ relation
        ~ " where " ~ partition_filter() ~ " and (" ~ condition ~ ") order by 1, 2") -%}
    {%- set out = [] -%}
    {%- for r in rows.rows -%}{%- do out.append({'symbol': r[0], 'date': r[1]}) -%}{%- endfor -%}
    {{- return(out) -}}
{%- endmacro %}


{% macro has_run_partitions_besides(exclude) -%}
    {#- Whether the run (or the whole lake, without a selection) has partitions outside `exclude`. -#}
    {{- return(not has_partitions() or partitions() | length > exclude | length) -}}
{%- endmacro %}


{#- Incremental strategy "replace_partitions": the run's partitions are deleted and inserted
    again in one transaction (all partitions when the run names none), so re-running a partition
    is idempotent and a partition that lost rows loses them in the table too. -#}
{% macro get_incremental_replace_partitions_sql(arg_dict) -%}
    {%- set target = arg_dict['target_relation'] -%}
    {%- set source = arg_dict['temp_relation'] -%}
    {%- set cols = arg_dict['dest_columns'] | map(attribute='quoted') | join(', ') -%}
    delete from {{ target }} where {{ partition_filter() }};
    insert into {{ target }} ({{ cols }})
    select {{ cols }} from {{ source }}
{%- endmacro %}


{#- Generic tests run on the run's partitions only (the tested relation is filtered like the
    incremental models). A test that needs more sets `meta: {neighbours: true}` and filters itself. -#}
{% macro get_where_subquery(relation) -%}
    {%- set where = config.get('where', '') -%}
    {%- set meta = config.get('meta', {}) or {} -%}
    {%- set clauses = [] -%}
    {%- if where -%}{%- do clauses.append('(' ~ where ~ ')') -%}{%- endif -%}
    {%- if has_partitions() and not meta.get('neighbours', false) -%}
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


{#- A full refresh recreates an incremental table from the model's query; with a partition
    selection that would keep only those partitions, so it is refused. -#}
{% macro guard_full_refresh() -%}
    {%- if execute and flags.FULL_REFRESH and has_partitions() -%}
        {{ exceptions.raise_compiler_error(
            "--full-refresh with a partition selection would rebuild " ~ this ~ " from those partitions only: "
            ~ "run the full refresh without partitions (no QRSDP_DBT_PARTITIONS_FILE, no partitions var)") }}
    {%- endif -%}
{%- endmacro %}
