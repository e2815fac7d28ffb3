"""Create the instance's pool rows (op concurrency limits) once, before any run can.

A run's first step in a pool creates the pool's row at the instance's default limit when it is
missing (``initialize_concurrency_limit_to_default``). On PostgreSQL that is a race Dagster 1.13 loses:
two runs reaching their dbt step together both find no row, both insert, and the loser's
``IntegrityError`` is caught *inside* the aborted transaction, whose next statement then fails
("current transaction is aborted"): the run fails after its sessions were simulated and landed, and
its automatic retry does them again (seen in ``benchmarks/bench_distributed.py``; the same happens to
every run whose pool row holds an older default limit). ``infra/stack.sh`` runs this module after
``dagster instance migrate`` and before the daemon and workers start, so runs always find the row at
the current default and never write it.

    python -m qrsdp_sim.distributed.pools [POOL ...]    # DAGSTER_HOME's instance; default: QRSDP_POOLS
                                                        # (comma-separated) or qrsdp_duckdb
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

# Every pool the code location's assets use (tests/test_distributed.py checks this against the
# definitions): the dbt step's pool (qrsdp_dagster.assets.dbt.DBT_POOL).
DEFAULT_POOLS: tuple[str, ...] = ("qrsdp_duckdb",)


def init_pools(instance: Any, pools: Sequence[str]) -> dict[str, str]:
    """Give each pool a row at the instance's default limit; returns pool -> what was done.

    A row set by hand (not from the default) is left alone; one at an older default is replaced (only
    call this while no run is in flight: the daemon and the workers are not started yet)."""
    storage = instance.event_log_storage
    default = instance.global_op_concurrency_default_limit
    if default is None or not storage.supports_global_concurrency_limits:
        return dict.fromkeys(pools, "no default limit: nothing to create")
    existing = {p.name: p for p in storage.get_pool_limits()}
    done = {}
    for pool in pools:
        row = existing.get(pool)
        if row is not None and (not row.from_default or row.limit == default):
            done[pool] = f"kept (limit {row.limit}{'' if row.from_default else ', set by hand'})"
            continue
        if row is not None:
            storage.delete_concurrency_limit(pool)
        storage.initialize_concurrency_limit_to_default(pool)
        done[pool] = f"created at the default limit {default}" if row is None else f"{row.limit} -> {default}"
    return done


def main(argv: Sequence[str] | None = None) -> int:
    from dagster import DagsterInstance

    args = list(sys.argv[1:] if argv is None else argv)
    if any(a.startswith("-") for a in args):
        print(__doc__, file=sys.stderr)
        return 2
    env_pools = [p.strip() for p in os.environ.get("QRSDP_POOLS", "").split(",") if p.strip()]
    pools = args or env_pools or list(DEFAULT_POOLS)
    with DagsterInstance.get() as instance:
        for pool, what in init_pools(instance, pools).items():
            print(f"pool {pool}: {what}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
