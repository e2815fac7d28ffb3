{{ guard_full_refresh() }}
{%- set lineage = source('lake', 'sessions') %}
-- One row per session: the simulation parameters that the events do not carry. Incremental:
-- a run reads and replaces only its own partitions' raw/sessions rows.

select
    cast(symbol as varchar) as symbol,
    cast(date as date) as date,
    cast(seed as ubigint) as seed,
    cast(open_ticks as integer) as open_ticks,
    cast(close_ticks as integer) as engine_close_ticks,
    cast(tick_size as integer) as tick_size,
    cast(market_open_ns as bigint) as market_open_ns,
    cast(session_seconds as integer) as session_seconds,
    cast(market_open_ns as bigint) + cast(session_seconds as bigint) * 1000000000 as market_close_ns,
    cast(events as bigint) as landed_events,
    source as source_file,
    _landed_at as landed_at
from {{ lake_table('sessions') }}
qualify row_number() over (partition by symbol, date order by _landed_at desc) = 1
