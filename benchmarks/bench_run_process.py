"""Whole-process speed of the engine's headline command, and where the time goes.

``uv run python benchmarks/bench_run_process.py [--days 10] [--repeat 3] [--plain]``

1. **Whole process** (what a user waits for): ``qrsdp run --days N --securities AAA:10000,BBB:20000``
   as a fresh process, from ``exec`` to exit (interpreter, imports, kernel load: the engine's native
   library, or numba's cache with ``QRSDP_NATIVE_KERNEL=0``,
   20 sessions on two threads, LZ4, fsync, manifest). Best and median of ``--repeat`` runs; events/s
   = records written / wall seconds. The caches are populated first (one short run), as they are
   after the first run on any machine. ``--plain`` adds the same command with ``--plain`` (the seed's
   one-share models) for comparison with the C++ baseline (benchmarks/bench_cpp_baseline.py).
2. **Breakdown**, measured in one more process: interpreter + imports, kernel load (``warm_up``), the
   simulation (wall, and CPU of the whole process: two threads when two cores are free), and the
   share of that CPU spent compressing: the written files are re-compressed chunk by chunk with the
   writer's own LZ4 settings and timed on one thread.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SECURITIES = "AAA:10000,BBB:20000"


def _count_records(out: Path) -> int:
    manifest = json.loads((out / "manifest.json").read_text())
    return sum(int(s["events"]) for sec in manifest["securities"] for s in sec["sessions"])


def whole_process(days: int, extra: list[str], tmp: Path) -> tuple[float, int]:
    out = tmp / "run"
    qrsdp = Path(sys.executable).with_name("qrsdp")  # the installed entry point, as a user runs it
    cmd = [str(qrsdp), "run", "--days", str(days), "--securities", SECURITIES, "--output", str(out), *extra]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    events = _count_records(out)
    subprocess.run(["rm", "-rf", str(out)], check=True)
    return wall, events


def child_breakdown(days: int, out: str) -> dict:
    t0 = time.perf_counter()
    # as ``qrsdp run`` does: the garbage collector off until the kernel is loaded
    from qrsdp_sim.cli import startup

    startup.defer_collection()
    import qrsdp_sim.cli  # noqa: F401  (what the command imports before it simulates)
    from qrsdp_sim.engine.realism import Realism
    from qrsdp_sim.engine.runner import RunSpec, parse_securities, run, warm_up

    t_import = time.perf_counter() - t0
    spec = RunSpec(base_seed=42, days=days, realism=Realism())
    t1 = time.perf_counter()
    warm_up(spec.model, 5, spec.realism)
    startup.collection_resumed()
    t_warm = time.perf_counter() - t1
    from qrsdp_sim.engine import entry_points

    loaded_from = "native library" if entry_points.is_native() else "numba's cache"
    c0 = time.process_time()
    res = run(spec, parse_securities(SECURITIES), out, workers=2)
    cpu = time.process_time() - c0
    events = sum(s.result.events for s in res.sessions)
    return {
        "import": t_import,
        "warm": t_warm,
        "loaded_from": loaded_from,
        "loop_wall": res.wall_seconds,
        "loop_cpu": cpu,
        "events": events,
    }


def compression_seconds(run_dir: Path) -> tuple[float, int]:
    """Thread CPU to LZ4-compress every written session again, chunk by chunk, as the writer does."""
    import lz4.block

    from qrsdp_sim.eventlog.reader import EventLogReader
    from qrsdp_sim.eventlog.writer import LZ4_ACCELERATION

    total, n = 0.0, 0
    for path in sorted(run_dir.glob("*/*.qrsdp")):
        reader = EventLogReader(path)
        for chunk in reader.iter_chunks():
            raw = chunk.tobytes()
            c = time.thread_time()
            lz4.block.compress(raw, store_size=False, mode="fast", acceleration=LZ4_ACCELERATION)
            total += time.thread_time() - c
            n += len(chunk)
    return total, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--days", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--plain", action="store_true", help="also time the command with --plain")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child_breakdown(int(args.child[0]), args.child[1])), flush=True)
        from qrsdp_sim.cli import startup

        startup.freeze_for_exit()
        return
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        whole_process(1, ["--seconds", "10"], tmp)  # numba's cache and the native library built
        variants = [("realistic (default)", [])] + ([("--plain", ["--plain"])] if args.plain else [])
        for label, extra in variants:
            walls, events = [], 0
            for _ in range(args.repeat):
                wall, events = whole_process(args.days, extra, tmp)
                walls.append(wall)
            best, med = min(walls), statistics.median(walls)
            print(
                f"whole process, {label:<20} {events:>12,} records  best {best:6.2f} s "
                f"({events / best / 1e6:5.2f} M/s)  median {med:6.2f} s ({events / med / 1e6:5.2f} M/s)",
                flush=True,
            )
        out = tmp / "breakdown"
        t0 = time.perf_counter()
        child = subprocess.run(
            [sys.executable, __file__, "--child", str(args.days), str(out)],
            check=True,
            capture_output=True,
            text=True,
        )
        total = time.perf_counter() - t0
        b = json.loads(child.stdout.strip().splitlines()[-1])
        lz4_s, n = compression_seconds(out)
        ev = b["events"]
        rest = total - b["import"] - b["warm"] - b["loop_wall"]
        print(f"breakdown ({ev:,} records, one process, {total:.2f} s from exec to exit):")
        print(f"  interpreter start + exit, manifest      {rest:6.2f} s")
        print(f"  imports                                 {b['import']:6.2f} s")
        print(f"  kernel load ({b['loaded_from']:<27s}) {b['warm']:6.2f} s")
        print(
            f"  simulation + files, 2 threads           {b['loop_wall']:6.2f} s wall, {b['loop_cpu']:.2f} s CPU "
            f"({b['loop_cpu'] / b['loop_wall']:.2f} cores busy, {b['loop_cpu'] / ev * 1e9:.0f} ns CPU per record)"
        )
        print(
            f"    of which LZ4 compression (re-timed)   {lz4_s:6.2f} s CPU ({lz4_s / n * 1e9:.0f} ns per record); "
            f"kernel, writer and the rest {(b['loop_cpu'] - lz4_s) / ev * 1e9:.0f} ns per record"
        )


if __name__ == "__main__":
    main()
