"""Chaos soak of the data platform (issue 12): a multi-session, multi-symbol dual-write on the real
services (Kafka, MinIO, the Parquet consumer, the ITCH streamer, listeners) while a seeded schedule
SIGKILLs and restarts the broker, MinIO, the consumer, the streamer and Kafka bridges, and injects
poison Kafka messages and hostile UDP datagrams -- each fault triggered by observed progress (messages
on the topic, the consumer's or the streamer's committed offsets), never by a sleep.

At the end: the lake holds every event of the .qrsdp files exactly once (after stg_events' dedup) and
dbt build is green, every listener received every message of its day in order, every poison message
was dead-lettered, every service is up. Prints the figures; exit status 0 only if nothing was lost.

    python3.11 -m uv run python benchmarks/chaos.py                 # the full soak (>= 20 faults, >= 10 sessions)
    python3.11 -m uv run python benchmarks/chaos.py --short         # the short mode (the slow-marked test)
    python3.11 -m uv run python benchmarks/chaos.py --seed 3 --json out.json

Runs its own private stack (free ports, a temporary folder); needs `infra/stack.sh install` done.
See docs/chaos.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from qrsdp_sim.chaos.figures import render
from qrsdp_sim.chaos.soak import SoakConfig, run_soak

FULL = {"sessions": 12, "symbols": 3, "faults": 24, "session_seconds": 600, "producer_seconds": 240.0}
SHORT = {"sessions": 10, "symbols": 2, "faults": 20, "session_seconds": 300, "producer_seconds": 120.0}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Defaults: full mode " + json.dumps(FULL) + "; --short " + json.dumps(SHORT))
    ap.add_argument("--seed", type=int, default=7, help="seed of the fault schedule, the poison and the simulation")
    ap.add_argument("--short", action="store_true", help="the short mode (the slow-marked test's)")
    ap.add_argument("--sessions", type=int, help="at least this many (symbol, date) sessions (whole days)")
    ap.add_argument("--symbols", type=int, help="symbols traded each day")
    ap.add_argument("--faults", type=int, help="faults in the schedule")
    ap.add_argument("--session-seconds", type=int, help="simulated seconds per session")
    ap.add_argument("--producer-seconds", type=float, help="wall time of the paced dual-write (sets its --speed)")
    ap.add_argument("--timeout", type=float, default=1800.0, help="give up after this many seconds")
    ap.add_argument("--work-dir", type=Path, help="keep everything here (default: a temporary folder, removed)")
    ap.add_argument("--json", type=Path, help="also write the figures as JSON to this file")
    ap.add_argument("-v", "--verbose", action="store_true", help="log the soak's internals")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    base = dict(SHORT if args.short else FULL)
    for name in base:
        value = getattr(args, name)
        if value is not None:
            base[name] = value
    try:
        cfg = SoakConfig(seed=args.seed, timeout=args.timeout, work_dir=args.work_dir, keep=args.work_dir is not None,
                         **base)
    except ValueError as exc:
        print(f"chaos: error: {exc}", file=sys.stderr)
        return 2
    figures = run_soak(cfg, echo=lambda line: print(line, file=sys.stderr, flush=True))
    print(render(figures))
    if args.json:
        args.json.write_text(json.dumps(figures.to_dict(), indent=2, default=str) + "\n")
    return 0 if figures.ok else 1


if __name__ == "__main__":
    sys.exit(main())
