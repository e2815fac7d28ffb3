{#- One symbol's rows per run (var symbol), replacing that symbol's earlier rows: the per-symbol
    delete + insert a mart refresh does. Partitioned by symbol when first built, after the CREATE has
    committed (DuckLake refuses ALTER on a table whose rows are still transaction-local). -#}
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key='symbol',
    database='lake',
    post_hook=[{
        "sql": "{% if not is_incremental() %}alter table {{ this }} set partitioned by (symbol){% endif %}",
        "transaction": false,
    }],
) }}
select
    '{{ var("symbol") }}' as symbol,
    cast(range as bigint) as i,
    cast({{ var("rows") }} as bigint) as n
from range({{ var("rows") }})
