"""A per-symbol backfill through the distributed profile, verified against the embedded default.

    uv run python benchmarks/bench_distributed.py                    # 20 symbols x 10 dates x 600 s
    uv run python benchmarks/bench_distributed.py --symbols 4 --dates 2 --session-seconds 60   # a quick look
    uv run python benchmarks/bench_distributed.py --keep             # leave the stack up to look at it

What it does, all on real services started for this run only (free ports, a temp folder; a developer's
stack is never touched):

1. starts a private distributed stack -- MinIO, PostgreSQL, Redis, the Dagster code server, webserver
   and daemon, two Celery workers -- serving the real code location (``qrsdp_dagster.definitions``)
   with N symbols, a start date N trading dates before the newest one, and sessions of the given
   length (sessions on S3, marts in the DuckLake: the profile's defaults);
2. launches ``qrsdp backfill``'s per-symbol backfills (one run per symbol, its dates in order) through
   the webserver and waits for every run;
3. verifies and prints: runs per worker; every partition of every partitioned asset materialised
   exactly once (read from the Dagster event log in PostgreSQL, over every run of the instance); every
   asset check (the dbt tests and the Python checks) evaluated in every run and passed; the stack is
   stopped (unless ``--keep``);
4. materialises the same slice on the embedded default (local files, SQLite, one DuckDB file) with
   ``dagster asset materialize --partition-range`` in one process, and compares the marts' checksums.

Figures: wall time from the launch to the last run's end; per worker its runs, events (from
``fct_session_summary``), busy time (sum of its runs' start-to-end) and events/s over its busy time
and over the wall time; overall events/s (all events / wall time); the embedded slice's wall time and
events/s (whole process: interpreter, imports, one run). The last line is the same as one JSON object.
Exit status 1 when any verification fails.

The machine is shared in development: figures are indicative; run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BASE_SYMBOLS = (
    "AAPL", "MSFT", "IBM", "ORCL", "INTC", "AMD", "NVDA", "CSCO", "QCOM", "TXN",
    "AVGO", "ADBE", "CRM", "AMZN", "GOOG", "META", "NFLX", "PYPL", "SBUX", "COST",
)  # fmt: skip
FINISHED = ("SUCCESS", "FAILURE", "CANCELED")
RETRY_GRACE_S = 120  # a failed run's retry is launched by the daemon within seconds


def symbol_list(n: int) -> list[str]:
    """``n`` distinct symbols: well-known tickers first, then Q0021, Q0022, ..."""
    return [*BASE_SYMBOLS[:n], *(f"Q{i:04d}" for i in range(len(BASE_SYMBOLS) + 1, n + 1))]


def date_range(n: int) -> list[dt.date]:
    """The ``n`` trading dates ending at the newest one (the code location's partitions are exactly these)."""
    from qrsdp_sim.distributed.private_stack import newest_trading_date
    from qrsdp_sim.engine.calendar import previous_trading_date

    dates = [newest_trading_date()]
    while len(dates) < n:
        dates.append(previous_trading_date(dates[-1]))
    return dates[::-1]


def log(text: str) -> None:
    print(text, flush=True)


@dataclass
class SymbolRuns:
    """The runs of one symbol, as seen on the last poll."""

    runs: list[Any]  # DagsterRun, newest first
    settled_at: float | None = None  # when its newest run was seen finished


def wait_for_runs(instance: Any, symbols: list[str], timeout_s: float) -> dict[str, list[Any]]:
    """Poll until each symbol's newest run succeeded, or failed with no retry for RETRY_GRACE_S."""
    from qrsdp_dagster.run_audit import symbol_runs

    state = {s: SymbolRuns([]) for s in symbols}
    deadline = time.monotonic() + timeout_s
    last_report = 0.0
    while True:
        now = time.monotonic()
        for symbol, st in state.items():
            runs = symbol_runs(instance, symbol)
            if [r.run_id for r in runs] != [r.run_id for r in st.runs]:
                st.settled_at = None
            st.runs = runs
            if runs and runs[0].status.value in FINISHED and st.settled_at is None:
                st.settled_at = now
        done = [
            s for s, st in state.items()
            if st.runs and st.settled_at is not None
            and (st.runs[0].status.value == "SUCCESS" or now - st.settled_at >= RETRY_GRACE_S)
        ]  # fmt: skip
        if now - last_report >= 30 or len(done) == len(symbols):
            statuses = Counter(
                st.runs[0].status.value if st.runs else "NOT_LAUNCHED" for st in state.values()
            )
            log(f"  runs: {len(done)}/{len(symbols)} symbols done; newest run per symbol: {dict(statuses)}")
            last_report = now
        if len(done) == len(symbols):
            return {s: st.runs for s, st in state.items()}
        if now > deadline:
            raise TimeoutError(f"not every symbol's run finished within {timeout_s:.0f} s")
        time.sleep(2)


def partitioned_assets() -> list[str]:
    """Every partitioned asset of the code location (all of them take the symbol x date partitions)."""
    from qrsdp_dagster.definitions import defs

    graph = defs.resolve_asset_graph()
    return sorted(k.to_user_string() for k in graph.get_all_asset_keys() if graph.get(k).is_partitioned)


def defined_checks() -> int:
    from qrsdp_dagster.definitions import defs

    return len(defs.resolve_asset_graph().asset_check_keys)


def asset_key_paths() -> list[list[str]]:
    from qrsdp_dagster.definitions import defs

    return [k.path for k in defs.resolve_asset_graph().get_all_asset_keys()]


def distributed_part(args, dist, symbols: list[str], dates: list[dt.date]) -> dict[str, Any]:
    """Launch, wait, verify; returns the figures and the problems found (empty: all verified)."""
    from dagster import RunsFilter

    from qrsdp_dagster import backfill as backfills
    from qrsdp_dagster import run_audit
    from qrsdp_dagster.mart_checksums import mart_checksums
    from qrsdp_sim.distributed.launcher import WORKER_TAG

    problems: list[str] = []
    instance = dist.instance()
    plan = backfills.plan(symbols, dates[0], dates[-1])
    launched = time.time()
    ids = backfills.launch(dist.graphql(), plan, asset_key_paths(), {"qrsdp/trigger": "bench_distributed"})
    log(f"launched {len(ids)} backfills (one per symbol) in {time.time() - launched:.1f} s")
    by_symbol = wait_for_runs(instance, symbols, args.timeout_s)

    all_runs = instance.get_runs()
    records = {
        r.dagster_run.run_id: r
        for r in instance.get_run_records(RunsFilter(run_ids=[r.run_id for r in all_runs]))
    }
    final = {s: runs[0] for s, runs in by_symbol.items()}
    failed_runs = [r for r in all_runs if r.status.value != "SUCCESS"]
    for s, run in final.items():
        if run.status.value != "SUCCESS":
            problems.append(f"{s}: newest run {run.run_id} is {run.status.value}")
    pipeline_runs = [r for r in all_runs if r.job_name in run_audit.PIPELINE_JOBS]
    if len(pipeline_runs) != len(symbols):
        problems.append(f"{len(pipeline_runs)} pipeline runs for {len(symbols)} symbols (one each expected)")
    ends = [records[r.run_id].end_time for r in final.values() if records[r.run_id].end_time]
    wall_s = (max(ends) if ends else time.time()) - launched

    # exactly once, over every run the instance has (sensor-requested ones included)
    seen = run_audit.materializations(instance, [r.run_id for r in all_runs])
    assets = partitioned_assets()
    expected = {(a, f"{d}|{s}") for a in assets for s in symbols for d in dates}
    missing = sorted(k for k in expected if seen[k] == 0)
    repeated = sorted((k, n) for k, n in seen.items() if n > 1)
    unexpected = sorted(k for k in seen if k not in expected)
    if missing:
        problems.append(f"{len(missing)} partitions never materialised, e.g. {missing[:3]}")
    if repeated:
        problems.append(f"{len(repeated)} partitions materialised more than once, e.g. {repeated[:3]}")
    if unexpected:
        problems.append(f"{len(unexpected)} materialisations outside the slice, e.g. {unexpected[:3]}")

    tally = run_audit.checks(instance, [r.run_id for r in final.values()])
    n_checks = defined_checks()
    short = {rid: n for rid, n in tally.evaluated.items() if n < n_checks}
    if tally.failed:
        problems.append(f"{len(tally.failed)} failed checks, e.g. {tally.failed[:3]}")
    if short:
        problems.append(f"{len(short)} runs evaluated fewer than the {n_checks} defined checks: {short}")

    marts = dist.marts()
    events = dict(
        marts.sql(
            "select symbol, sum(n_events) from marts.fct_session_summary "
            f"where symbol in ({', '.join(repr(s) for s in symbols)}) group by 1"
        ).fetchall()
    )
    checksums = mart_checksums(marts, symbols)
    marts.close()

    workers: dict[str, dict[str, Any]] = {}
    for symbol, run in final.items():
        w = workers.setdefault(
            run.tags.get(WORKER_TAG, "?"), {"runs": 0, "events": 0, "busy_s": 0.0, "symbols": []}
        )
        rec = records[run.run_id]
        w["runs"] += 1
        w["events"] += int(events.get(symbol, 0))
        w["busy_s"] += (rec.end_time or 0) - (rec.start_time or 0)
        w["symbols"].append(symbol)
    for w in workers.values():
        w["events_per_s_busy"] = w["events"] / w["busy_s"] if w["busy_s"] else 0.0
        w["events_per_s_wall"] = w["events"] / wall_s
    if len(workers) < min(2, len(symbols)):
        problems.append(f"runs did not spread over the workers: {sorted(workers)}")
    total_events = sum(int(v) for v in events.values())
    run_s = [(records[r.run_id].end_time or 0) - (records[r.run_id].start_time or 0) for r in final.values()]
    return {
        "wall_s": wall_s,
        "events": total_events,
        "events_per_s": total_events / wall_s,
        "workers": workers,
        "run_s": {"min": min(run_s), "median": sorted(run_s)[len(run_s) // 2], "max": max(run_s)},
        "runs_total": len(all_runs),
        "runs_not_success": [(r.run_id, r.job_name, r.status.value) for r in failed_runs],
        "partitions": len({p for _, p in expected}),
        "assets": len(assets),
        "materializations": sum(seen.values()),
        "checks": {"defined": n_checks, "evaluated": tally.total, "failed": len(tally.failed)},
        "checksums": checksums,
        "problems": problems,
    }


def embedded_part(workdir: Path, settings: dict[str, str], symbols: list[str], dates: list[dt.date]) -> dict:
    import duckdb

    from qrsdp_dagster import embedded_slice
    from qrsdp_dagster.mart_checksums import mart_checksums

    started = time.perf_counter()
    warehouse = embedded_slice.materialize(
        workdir, settings, symbols, dates[0], dates[-1], timeout_s=4 * 3600
    )
    wall_s = time.perf_counter() - started
    con = duckdb.connect(str(warehouse), read_only=True)
    checksums = mart_checksums(con, symbols)
    events = con.sql("select sum(n_events) from marts.fct_session_summary").fetchone()[0]
    con.close()
    return {
        "wall_s": wall_s,
        "events": int(events or 0),
        "events_per_s": int(events or 0) / wall_s,
        "checksums": checksums,
    }


def print_distributed(dist: dict[str, Any], symbols: list[str], dates: list[dt.date]) -> None:
    """The distributed figures and checks (printed before the embedded slice runs: it takes a while)."""
    log("")
    log(
        f"== distributed: {len(symbols)} symbols x {len(dates)} dates ({dates[0]}..{dates[-1]}), {dist['partitions']} partitions"
    )
    log(f"wall time (launch -> last run ended): {dist['wall_s']:.1f} s; {dist['events']:,} events; "
        f"{dist['events_per_s']:,.0f} events/s overall")  # fmt: skip
    log(
        f"run time per symbol: min {dist['run_s']['min']:.0f} s, median {dist['run_s']['median']:.0f} s, max {dist['run_s']['max']:.0f} s"
    )
    for name, w in sorted(dist["workers"].items()):
        log(f"  {name}: {w['runs']} runs, {w['events']:,} events, busy {w['busy_s']:.0f} s -> "
            f"{w['events_per_s_busy']:,.0f} events/s busy, {w['events_per_s_wall']:,.0f} events/s over the wall time "
            f"({', '.join(w['symbols'])})")  # fmt: skip
    log(f"materialisations: {dist['materializations']} = {dist['assets']} partitioned assets x {dist['partitions']} partitions "
        f"-> {'each exactly once' if not any('materialis' in p for p in dist['problems']) else 'NOT exactly once'}")  # fmt: skip
    c = dist["checks"]
    log(
        f"asset checks (dbt tests + Python checks): {c['defined']} defined, {c['evaluated']} evaluations, {c['failed']} failed"
    )
    log(f"runs in the instance: {dist['runs_total']}; not successful: {dist['runs_not_success'] or 'none'}")


def print_comparison(dist: dict[str, Any], embedded: dict[str, Any]) -> None:
    """The embedded slice's figures, the checksum comparison and every problem found."""
    if embedded:
        log(f"== embedded default, same slice, one process: {embedded['wall_s']:.1f} s, {embedded['events']:,} events, "
            f"{embedded['events_per_s']:,.0f} events/s")  # fmt: skip
        for table, (rows, digest) in dist["checksums"].items():
            other = embedded["checksums"].get(table)
            same = "equal" if other == (rows, digest) else f"DIFFERENT (embedded {other})"
            log(f"  {table}: {rows} rows md5 {digest}: {same}")
    for p in dist["problems"]:
        log(f"PROBLEM: {p}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--symbols", type=int, default=20, metavar="N", help="symbols, one run each (default 20)")
    ap.add_argument(
        "--dates",
        type=int,
        default=10,
        metavar="N",
        help="trading dates per symbol, ending at the newest (default 10)",
    )
    ap.add_argument(
        "--session-seconds", type=int, default=600, help="simulated length of each session (default 600)"
    )
    ap.add_argument("--workers", type=int, default=2, help="Celery workers (default 2)")
    ap.add_argument(
        "--keep", action="store_true", help="leave the stack running (prints how to reach and stop it)"
    )
    ap.add_argument(
        "--timeout-s",
        type=float,
        default=4 * 3600,
        help="give up waiting for the runs after this (default 4 h)",
    )
    ap.add_argument("--tmp", default=None, help="parent of the temp folder (default: the system's)")
    args = ap.parse_args()
    if args.symbols < 1 or args.dates < 1 or args.session_seconds < 1 or args.workers < 1:
        ap.error("--symbols, --dates, --session-seconds and --workers must be >= 1")

    symbols, dates = symbol_list(args.symbols), date_range(args.dates)
    settings = {
        "QRSDP_SYMBOLS": ",".join(symbols),
        "QRSDP_START_DATE": dates[0].isoformat(),
        "QRSDP_SESSION_SECONDS": str(args.session_seconds),
    }
    import os

    os.environ.update(settings)  # this process imports the definitions too (asset keys, checks)
    from qrsdp_sim.distributed import private_stack

    workdir = Path(tempfile.mkdtemp(prefix="qrsdp-bench-dist-", dir=args.tmp))
    pg_root = private_stack.postgres_root("qrsdp-bench-pg-")
    cfg = private_stack.distributed_config(
        private_stack.private_config(workdir / "stack"),
        pg_root=pg_root, code_location="-m qrsdp_dagster.definitions", extra_env=settings, workers=args.workers,
    )  # fmt: skip
    log(f"stack in {workdir}/stack (PostgreSQL in {pg_root}); webserver {cfg.webserver_url}")
    started = time.perf_counter()
    try:
        with private_stack.running(cfg, stop=not args.keep) as dist:
            log(f"stack up in {time.perf_counter() - started:.0f} s; {args.workers} workers")
            figures = distributed_part(args, dist, symbols, dates)
            if args.keep:
                env = " ".join(f"{k}={v}" for k, v in cfg.env().items() if k.startswith(("QRSDP_", "MINIO_")))
                log(f"kept running: UI {cfg.webserver_url}; stop with: env {env} bash infra/stack.sh down")
        print_distributed(figures, symbols, dates)
        log("\nrunning the same slice on the embedded default ...")
        embedded = embedded_part(workdir / "embedded", settings, symbols, dates)
        if embedded["checksums"] != figures["checksums"]:
            figures["problems"].append("mart checksums differ from the embedded default's")
        print_comparison(figures, embedded)
        print(json.dumps({"symbols": len(symbols), "dates": len(dates), "session_seconds": args.session_seconds,
                          "distributed": figures, "embedded": embedded}, default=str))  # fmt: skip
        return 1 if figures["problems"] else 0
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
            shutil.rmtree(pg_root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
