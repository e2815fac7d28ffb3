{%- set lineage = source('lake', 'book_states') %}
-- Top of book after each event of the run's partitions (from the compiled replay), as a view
-- over the lake in stored order. book_states is written by one replay per partition, whole and
-- in seq order; a repeated seq is a defect the uniqueness test reports (not collapsed).

select
    cast(symbol as varchar) as symbol,
    cast(date as date) as date,
    cast(seq as bigint) as seq,
    cast(ts_ns as bigint) as ts_ns,
    cast(best_bid_ticks as integer) as best_bid_ticks,
    cast(best_bid_qty as bigint) as best_bid_qty,
    cast(best_ask_ticks as integer) as best_ask_ticks,
    cast(best_ask_qty as bigint) as best_ask_qty,
    cast(best_ask_ticks - best_bid_ticks as integer) as spread_ticks,
    cast((cast(best_bid_ticks as bigint) + best_ask_ticks) // 2 as integer) as mid_floor_ticks,
    cast(replay_flags as utinyint) as replay_flags,
    _landed_at as landed_at
from {{ lake_table('book_states') }}
