{#- Where the lake is. The sources (models/staging/_sources.yml) read
    read_parquet('<lake_root>/raw/<table>/*/*/*.parquet', hive_partitioning = true):
    lake_root is a local directory or s3://bucket/prefix (not a file:// URI). -#}

{% macro lake_root() -%}
    {{- return(var('lake_root', env_var('QRSDP_LAKE_ROOT', '../data/lake')) | string) -}}
{%- endmacro %}


{% macro configure_lake() -%}
    {#- Local lakes need nothing. For s3://, load httpfs from the path Dagster exports
        (QRSDP_DUCKDB_HTTPFS) and register the endpoint and keys as a DuckDB secret. -#}
    {%- if lake_root().startswith('s3://') -%}
        {%- set endpoint = env_var('QRSDP_S3_ENDPOINT', '') -%}
        {%- set host = endpoint.replace('https://', '').replace('http://', '') -%}
        load '{{ env_var("QRSDP_DUCKDB_HTTPFS", "httpfs") }}';
        create or replace secret qrsdp_lake (
            type s3,
            key_id '{{ env_var("QRSDP_S3_ACCESS_KEY", "") }}',
            secret '{{ env_var("QRSDP_S3_SECRET_KEY", "") }}',
            region '{{ env_var("QRSDP_S3_REGION", "us-east-1") }}'
            {%- if host %},
            endpoint '{{ host }}',
            url_style 'path',
            use_ssl {{ 'false' if endpoint.startswith('http://') else 'true' }}
            {%- endif %}
        )
    {%- else -%}
        select 1 as lake_is_local
    {%- endif -%}
{%- endmacro %}
