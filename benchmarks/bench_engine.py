"""Engine throughput and memory: ``uv run python benchmarks/bench_engine.py [--quick] [--markdown FILE]``.

Figures (each session is written to a ``.qrsdp`` file with the production writer, fsync on close):

1. SimpleImbalance, one 23,400 s session with the default parameters:
   *cold* -- a fresh process with an empty numba cache: the first session (compile + run),
   compile time = first session - the same session again in that process;
   *warm* -- a fresh process whose cache is populated: first session (cache load + run),
   then the best of 3 further sessions (same seed, so the same events).
2. The same for HLR with the built-in curves.
3. Aggregate: 2 securities x 5 days through the runner (two worker threads).
4. Peak memory (max RSS and tracemalloc peak) for a 2,340 s and a 23,400 s session:
   memory must not grow with session length.

Events/s are given against wall-clock time and against the CPU time of the simulating
thread (the machine is shared, so wall time includes time the thread waited for a core).
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

FULL_DAY = 23_400


# -- child processes ----------------------------------------------------------------
def _model(name: str):
    from qrsdp_sim.engine import HLR, SimpleImbalance

    return HLR() if name == "hlr" else SimpleImbalance()


def _one(model_name: str, seed: int, seconds: int, out_dir: Path) -> dict:
    from qrsdp_sim.engine import SessionConfig, simulate_to_file

    cfg = SessionConfig(seed=seed, session_seconds=seconds, model=_model(model_name))
    path = out_dir / f"{model_name}-{seed}.qrsdp"
    c0, w0 = time.thread_time(), time.perf_counter()
    res = simulate_to_file(cfg, path)
    cpu, wall = time.thread_time() - c0, time.perf_counter() - w0
    size = path.stat().st_size
    path.unlink()
    return {"events": res.events, "wall": wall, "cpu": cpu, "bytes": size}


def child_session(model_name: str, repeats: int, seconds: int) -> dict:
    """First session in this process, then ``repeats`` more (best kept)."""
    t0 = time.perf_counter()
    import qrsdp_sim.engine.session  # noqa: F401  (numba import, no compilation yet)

    import_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        first = _one(model_name, 1, seconds, Path(tmp))
        again = [_one(model_name, 1, seconds, Path(tmp)) for _ in range(repeats)]
    best = min(again, key=lambda r: r["wall"]) if again else None
    return {"import": import_s, "first": first, "best_wall": best}


def child_memory(model_name: str, seconds: int) -> dict:
    import resource
    import tracemalloc

    from qrsdp_sim.engine.runner import warm_up

    warm_up(_model(model_name))
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    with tempfile.TemporaryDirectory() as tmp:
        r = _one(model_name, 2, seconds, Path(tmp))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "events": r["events"],
        "maxrss_kib": rss,
        "maxrss_before_kib": rss_before,
        "tracemalloc_peak": peak,
    }


def child_aggregate(model_name: str, days: int, seconds: int) -> dict:
    from qrsdp_sim.engine.runner import RunSpec, Security, run, warm_up

    warm_up(_model(model_name))
    spec = RunSpec(base_seed=7, days=days, session_seconds=seconds, model=_model(model_name))
    with tempfile.TemporaryDirectory() as tmp:
        c0 = time.process_time()
        res = run(spec, [Security("AAA", 10_000), Security("BBB", 15_000)], tmp, workers=2)
        cpu = time.process_time() - c0
        total = sum(s.result.events for s in res.sessions)
        size = sum(s.result.file_bytes or 0 for s in res.sessions)
    return {
        "events": total,
        "wall": res.wall_seconds,
        "cpu": cpu,
        "bytes": size,
        "sessions": len(res.sessions),
    }


def _spawn(args: list[str], cache_dir: str) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    out = subprocess.run(
        [sys.executable, __file__, "--child", *args], env=env, capture_output=True, text=True
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- report ----------------------------------------------------------------------------
def _rate(events: int, seconds: float) -> str:
    return f"{events / seconds / 1e6:6.2f} M/s"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="shorter sessions (2,340 s) for a smoke run")
    ap.add_argument("--markdown", type=Path, help="also write the results as a markdown table")
    args = ap.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "session":
            res = child_session(rest[0], int(rest[1]), int(rest[2]))
        elif kind == "memory":
            res = child_memory(rest[0], int(rest[1]))
        else:
            res = child_aggregate(rest[0], int(rest[1]), int(rest[2]))
        print(json.dumps(res))
        return

    seconds = FULL_DAY // 10 if args.quick else FULL_DAY
    rows: list[tuple[str, str, str, str, str]] = []  # (figure, events, wall, events/s wall, events/s cpu)

    def add(label: str, r: dict) -> None:
        rows.append(
            (
                label,
                f"{r['events']:,}",
                f"{r['wall']:.3f} s",
                _rate(r["events"], r["wall"]),
                _rate(r["events"], r["cpu"]),
            )
        )
        print(
            f"{label:<58} {rows[-1][1]:>12} events {rows[-1][2]:>9}  wall {rows[-1][3]}  cpu {rows[-1][4]}",
            flush=True,
        )

    notes = []
    for model in ("simple", "hlr"):
        with tempfile.TemporaryDirectory() as cache:
            cold = _spawn(["session", model, "1", str(seconds)], cache)
            warm = _spawn(["session", model, "3", str(seconds)], cache)
        compile_s = cold["first"]["wall"] - cold["best_wall"]["wall"]
        add(f"{model}: cold, first session (compile + run)", cold["first"])
        add(f"{model}: warm, first session in a new process (cache load + run)", warm["first"])
        add(f"{model}: warm, best of 3", warm["best_wall"])
        note = (
            f"{model}: compile time {compile_s:.2f} s (cold first session - same session again); "
            f"numba import {cold['import']:.2f} s; file {warm['best_wall']['bytes'] / 2**20:.1f} MiB, "
            f"{warm['best_wall']['events'] * 26 / warm['best_wall']['bytes']:.2f}x compression"
        )
        notes.append(note)
        print("   " + note, flush=True)

    with tempfile.TemporaryDirectory() as cache:
        _spawn(["session", "simple", "0", "10"], cache)  # populate the cache
        agg = _spawn(["aggregate", "simple", "5", str(seconds)], cache)
        add(f"aggregate: 2 securities x 5 days ({agg['sessions']} sessions), 2 threads", agg)
        notes.append(
            f"aggregate: process CPU {agg['cpu']:.2f} s for {agg['wall']:.2f} s wall "
            f"= {agg['cpu'] / agg['wall']:.2f} cores busy; {_rate(agg['events'], agg['cpu']).strip()} per core"
        )
        print("   " + notes[-1], flush=True)
        mem = {s: _spawn(["memory", "simple", str(s)], cache) for s in (seconds // 10, seconds)}
    for s, m in mem.items():
        note = (
            f"memory, {s:>6} s session ({m['events']:,} events): max RSS {m['maxrss_kib'] / 1024:.0f} MiB "
            f"(after warm-up {m['maxrss_before_kib'] / 1024:.0f} MiB), "
            f"tracemalloc peak {m['tracemalloc_peak'] / 2**20:.1f} MiB"
        )
        notes.append(note)
        print(note, flush=True)

    if args.markdown:
        lines = [
            "| Figure | Events | Wall | Events/s (wall) | Events/s (thread CPU) |",
            "|---|---:|---:|---:|---:|",
        ]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        lines += [""] + [f"- {n}" for n in notes]
        args.markdown.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
