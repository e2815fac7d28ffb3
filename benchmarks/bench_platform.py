"""Data-platform throughput: land N symbols x D days of sessions, then time ``dbt build`` over them.

    uv run python benchmarks/bench_platform.py --days 5 --session-seconds 23400 [--out DIR]

Steps (the same library calls and the same dbt command the Dagster assets use):
simulate each symbol-date chained (engine), land it (raw/events + raw/sessions), replay it
into raw/book_states, then one ``dbt build`` for every partition (staging views, both marts,
every data test). Prints one JSON object with the timings and rows per second.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--symbols", default="AAPL,MSFT")
    ap.add_argument("--days", type=int, default=5)
    ap.add_argument("--session-seconds", type=int, default=23_400)
    ap.add_argument("--out", type=Path, default=None, help="work directory (default: a temporary one)")
    args = ap.parse_args()

    import datetime as dt

    from qrsdp_sim.engine.calendar import DEFAULT_START, trading_dates
    from qrsdp_sim.engine.runner import RunSpec, session_path, simulate_symbol_date
    from qrsdp_sim.lake import Lake, land_book_states, land_session_file

    out = args.out or Path(tempfile.mkdtemp(prefix="qrsdp-bench-"))
    symbols = [s.strip() for s in args.symbols.split(",")]
    dates = trading_dates(DEFAULT_START, args.days)
    spec = RunSpec(session_seconds=args.session_seconds)
    lake = Lake.from_uri(out / "lake")
    t = {"simulate": 0.0, "land_events": 0.0, "book_states": 0.0}
    events = 0
    for sym in symbols:
        open_ticks = 10_000
        for day in dates:
            path = session_path(out / "sessions", sym, day)
            t0 = time.perf_counter()
            res = simulate_symbol_date(spec, sym, day, open_ticks, path, fsync=False)
            t1 = time.perf_counter()
            land_session_file(lake, path, sym, day, close_ticks=res.close_ticks)
            t2 = time.perf_counter()
            land_book_states(lake, sym, day)
            t3 = time.perf_counter()
            t["simulate"] += t1 - t0
            t["land_events"] += t2 - t1
            t["book_states"] += t3 - t2
            events += res.events
            open_ticks = res.close_ticks

    env = {**os.environ, "QRSDP_DUCKDB_PATH": str(out / "warehouse.duckdb")}
    dbt_vars = {
        "lake_root": lake.query_root,
        "partitions": [{"symbol": s, "date": d.isoformat()} for s in symbols for d in dates],
        "max_events_per_session": 50_000_000,
    }
    dbt = Path(sys.executable).with_name("dbt")
    cmd = [str(dbt), "build", "--project-dir", str(ROOT / "dbt_project"), "--profiles-dir", str(ROOT / "dbt_project"),
           "--target-path", str(out / "dbt_target"), "--log-path", str(out / "dbt_target"),
           "--vars", json.dumps(dbt_vars)]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    dbt_wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-5000:])
        raise SystemExit(f"dbt build failed ({proc.returncode})")
    results = json.loads((out / "dbt_target" / "run_results.json").read_text())
    node_seconds = sum(r["execution_time"] for r in results["results"])
    statuses = {}
    for r in results["results"]:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    print(
        json.dumps(
            {
                "symbols": len(symbols),
                "days": len(dates),
                "session_seconds": args.session_seconds,
                "events": events,
                "rows_scanned_per_pass": 2 * events,  # raw events + book states
                "seconds": {k: round(v, 2) for k, v in t.items()},
                "dbt_build_wall_seconds": round(dbt_wall, 2),
                "dbt_elapsed_seconds": round(results["elapsed_time"], 2),
                "dbt_node_seconds_sum": round(node_seconds, 2),
                "dbt_statuses": statuses,
                "events_per_second_dbt_wall": round(events / dbt_wall),
                "lake_bytes": sum(f.stat().st_size for f in (out / "lake").rglob("*.parquet")),
                "out": str(out),
                "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
