{{ guard_full_refresh() }}
{%- set reordered = partitions_where(ref('stg_event_landings'), 'not in_seq_order') %}
-- One row per session (symbol, date) with a count for every rule the events must obey, computed
-- once per partition when it is built; the data tests on stg_events read these counts (a test
-- fails when its count is not 0), and fct_session_summary reads the event statistics here
-- (counts by type, trades) instead of scanning the events again. Incremental: a run computes
-- and replaces its partitions only.
--
-- Sequence rules (seq unique and 0..n-1, ts never decreasing along seq), the executed shares and
-- the sweep steps come from stg_event_landings' streaming pass for partitions stored in seq
-- order; partitions stored otherwise are sorted here (the `reordered` part, written only when
-- the run has such partitions).
-- Order rules come from one aggregate per order id (no join of every removal to its ADD):
--   * an ADD id is added once per session;
--   * every CANCEL/EXECUTE names an order ADDed earlier in the session, on its side and price;
--   * the shares removed from an order (cancelled + executed) never exceed what its ADD rested;
--   * an aggressive order's executions are consecutive EXECUTE records of one type sharing one
--     timestamp, oldest resting order first, so every one of them but the last fills its resting
--     order completely: an execution that is not its order's last removal, or after which the
--     order keeps shares, followed by the next seq executing the same way at the same timestamp,
--     is a sweep that moved past an order it did not finish.

with landings as (

    select * from {{ ref('stg_event_landings') }}
    where {{ partition_filter() }}

),

{%- if reordered %}

reordered as (

    select
        symbol,
        date,
        seq,
        ts_ns,
        event_type,
        price_ticks,
        qty,
        order_id,
        lag(seq) over w as previous_seq,
        lag(ts_ns) over w as previous_ts_ns,
        lag(event_type) over w as previous_event_type,
        lag(order_id) over w as previous_order_id
    from {{ ref('stg_events') }}
    where (symbol, date) in ({% for p in reordered %}('{{ p["symbol"] }}', date '{{ p["date"] }}'){% if not loop.last %}, {% endif %}{% endfor %})
    window w as (partition by symbol, date order by seq, ts_ns)

),

reordered_stats as (

    select
        symbol,
        date,
        count(*) as n_events,
        min(seq) as min_seq,
        max(seq) as max_seq,
        count(*) filter (where seq = previous_seq) as duplicate_seq,
        count(*) filter (where seq <> previous_seq and ts_ns < previous_ts_ns) as ts_backwards,
        count(*) filter (where event_type in (4, 5)) as executions,
        coalesce(sum(qty) filter (where event_type in (4, 5)), 0) as executed_shares,
        list({'seq': previous_seq, 'order_id': previous_order_id}) filter (
            where seq = previous_seq + 1 and event_type in (4, 5) and previous_event_type = event_type
                and ts_ns = previous_ts_ns
        ) as sweep_steps
    from reordered
    group by all

),

reordered_types as (

    select symbol, date, {{ event_type_summary('event_type') }}
    from (
        select symbol, date, event_type, count(*) as n, min(ts_ns) as first_ts_ns, max(ts_ns) as last_ts_ns
        from reordered
        group by all
    )
    group by all

),

reordered_trades as (

    select symbol, date, {{ trade_summary() }}
    from reordered
    where event_type in (4, 5)
    group by all

),

{%- endif %}

sequence_stats as materialized (

    select
        symbol,
        date,
        landed_rows as n_events,
        min_seq,
        max_seq,
        0 as duplicate_seq,
        ts_backwards_in_stored_order as ts_backwards,
        landed_executions as executions,
        landed_executed_shares as executed_shares,
        sweep_steps,
        n_add_bid, n_add_ask, n_cancel_bid, n_cancel_ask, n_execute_buy, n_execute_sell,
        first_ts_ns, last_ts_ns,
        first_trade_ticks, last_trade_ticks, high_trade_ticks, low_trade_ticks, trade_notional_ticks
    from landings
    where in_seq_order
    {%- if reordered %}
    union all by name
    select *
    from reordered_stats
    inner join reordered_types using (symbol, date)
    left join reordered_trades using (symbol, date)
    {%- endif %}

),

sweep_steps as (

    select symbol, date, step.seq, step.order_id
    from (select symbol, date, unnest(sweep_steps) as step from sequence_stats)

),

{%- set order_aggregates %}
        -- the order's first record, and whether it is a removal (low bit): a removal first means
        -- a CANCEL/EXECUTE with no ADD before it
        min(cast(seq as bigint) * 2 + (event_type >= 2)::int) as first_record,
        count(*) filter (where event_type <= 1) as adds,
        max(seq) as last_seq,
        -- shares the ADD rested minus every share cancelled or executed since
        sum(case when event_type <= 1 then cast(qty as bigint) else -cast(qty as bigint) end) as open_qty,
        -- side and price of every record, packed: min <> max when a removal disagrees with its ADD
        min(cast(side as bigint) * 4294967296 + price_ticks) as min_side_price,
        max(cast(side as bigint) * 4294967296 + price_ticks) as max_side_price
{%- endset %}
{#- A sweep step is fine only as its order's last record, leaving the order with no shares: the
    orders for which that holds are counted after aggregating (a semi-join of the few sweep steps
    against the aggregated orders, not of every event: sweeps_ending_their_order), and every other
    sweep step is a sweep past a partial fill. -#}
{%- set order_counts %}
        count(*) filter (where adds > 1) as duplicate_add_ids,
        count(*) filter (where first_record % 2 = 1) as removals_without_earlier_add,
        count(*) filter (where adds > 0 and first_record % 2 = 0 and min_side_price <> max_side_price)
            as removals_off_side_or_price,
        count(*) filter (where adds > 0 and open_qty < 0) as overfilled_orders,
{%- endset %}
{#- One hash table per partition (grouped by order_id alone) costs 40 % less CPU than one table
    keyed by (symbol, date, order_id) for the whole run: a session's orders fit the caches better.
    The SQL grows with the run's partitions, so above orders_per_partition_max (default 64) -- a
    backfill of short sessions -- or without a selection, one grouped table. Either way the orders
    are counted where they are aggregated (nothing per order is stored). -#}
{%- set run_parts = partitions() if has_partitions() else [] %}
{%- set per_partition = 0 < run_parts | length <= var('orders_per_partition_max', 64) | int %}

order_stats as (

    -- six plain integer aggregates per order (one hash table entry per order), then per session
    {%- if per_partition %}
    {%- for p in run_parts %}
    {%- set this_partition = "symbol = '" ~ p["symbol"] ~ "' and date = date '" ~ p["date"] ~ "'" %}
    select '{{ p["symbol"] }}' as symbol, date '{{ p["date"] }}' as date, {{- order_counts }}
        count(*) filter (where open_qty = 0 and (order_id, last_seq) in (
            select (order_id, seq) from sweep_steps where {{ this_partition }}
        )) as sweeps_ending_their_order
    from (
        select order_id, {{- order_aggregates }}
        from {{ ref('stg_events') }}
        where {{ this_partition }}
        group by order_id
    )
    {%- if not loop.last %}
    union all
    {%- endif %}
    {%- endfor %}
    {%- else %}
    select symbol, date, {{- order_counts }}
        count(*) filter (where open_qty = 0 and (symbol, date, order_id, last_seq) in (
            select (symbol, date, order_id, seq) from sweep_steps
        )) as sweeps_ending_their_order
    from (
        select symbol, date, order_id, {{- order_aggregates }}
        from {{ ref('stg_events') }}
        group by all
    )
    group by all
    {%- endif %}

)

select
    landings.symbol,
    landings.date,
    cast(coalesce(sequence_stats.n_events, 0) as bigint) as n_events,
    landings.landed_rows,
    landings.in_seq_order,
    cast(sequence_stats.min_seq as bigint) as min_seq,
    cast(sequence_stats.max_seq as bigint) as max_seq,
    cast(coalesce(sequence_stats.duplicate_seq, 0) as bigint) as duplicate_seq,
    cast(coalesce(sequence_stats.ts_backwards, 0) as bigint) as ts_backwards,
    landings.null_seq,
    landings.null_ts_ns,
    landings.null_event_type,
    landings.null_price_ticks,
    landings.null_order_id,
    landings.unknown_event_types,
    landings.nonpositive_qty,
    coalesce(order_stats.duplicate_add_ids, 0) as duplicate_add_ids,
    coalesce(order_stats.removals_without_earlier_add, 0) as removals_without_earlier_add,
    coalesce(order_stats.removals_off_side_or_price, 0) as removals_off_side_or_price,
    coalesce(order_stats.overfilled_orders, 0) as overfilled_orders,
    -- every sweep step but those that end their order (see order_counts)
    cast(coalesce(len(sequence_stats.sweep_steps), 0) - coalesce(order_stats.sweeps_ending_their_order, 0)
        as hugeint) as sweeps_past_partial_fill,
    cast(coalesce(sequence_stats.executions, 0) as bigint) as executions,
    cast(coalesce(sequence_stats.executed_shares, 0) as bigint) as executed_shares,
    -- for fct_session_summary: counts by type, time range and trades of the (deduplicated) events
    {%- for name in ['n_add_bid', 'n_add_ask', 'n_cancel_bid', 'n_cancel_ask', 'n_execute_buy', 'n_execute_sell'] %}
    cast(coalesce(sequence_stats.{{ name }}, 0) as bigint) as {{ name }},
    {%- endfor %}
    cast(sequence_stats.first_ts_ns as bigint) as first_ts_ns,
    cast(sequence_stats.last_ts_ns as bigint) as last_ts_ns,
    cast(sequence_stats.first_trade_ticks as integer) as first_trade_ticks,
    cast(sequence_stats.last_trade_ticks as integer) as last_trade_ticks,
    cast(sequence_stats.high_trade_ticks as integer) as high_trade_ticks,
    cast(sequence_stats.low_trade_ticks as integer) as low_trade_ticks,
    sequence_stats.trade_notional_ticks
from landings
left join sequence_stats using (symbol, date)
left join order_stats using (symbol, date)
