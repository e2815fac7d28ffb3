"""The numba engine against a straightforward C++ baseline of the same loop.

``uv run python benchmarks/bench_cpp_baseline.py [--rounds 5] [--seeds 16] [--seconds 23400]``

Builds ``benchmarks/cpp_baseline`` (``make``: g++ -O2, and -O3 -march=native) and measures
SimpleImbalance sessions with the default parameters, seed 1, each written to a ``.qrsdp``
file (LZ4 chunks, index, fsync on close) -- the C++ binary writes the same format with the
same LZ4 library settings -- and also into a null sink (simulation only). Each round runs
every configuration three times in turn (the C++ binaries in-process with ``--repeat 3``, the
Python engine in this process after a warm-up session that loads the compiled kernel), so
load from other processes on the shared machine falls on all of them alike; best and median
over all sessions are reported, against wall-clock and against thread CPU time.

Then the model check: sessions with seeds 1..N from both implementations, each file read
back with the Python reader and replayed through the independent replay book
(``qrsdp_sim.book.replay``): record counts by type, records per simulated second and the
spread distribution, mean and standard deviation over the seeds for each.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from qrsdp_sim.book.replay import replay_book
from qrsdp_sim.engine import SessionConfig, simulate_session, simulate_to_file
from qrsdp_sim.eventlog.reader import EventLogReader
from qrsdp_sim.records import EVENT_TYPE_NAMES

CPP_DIR = Path(__file__).resolve().parent / "cpp_baseline"
BINARIES = {"C++ -O2": "qrsdp_baseline_O2", "C++ -O3 -march=native": "qrsdp_baseline_O3_native"}
NUMBA = "numba (warm)"
PER_ROUND = 3


class NullSink:
    """Discards every batch: the simulation alone (the driver still counts types per batch)."""

    def append(self, batch: np.ndarray) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def build() -> None:
    subprocess.run(["make", "-s", "-C", str(CPP_DIR)], check=True)


def run_cpp(binary: str, seed: int, seconds: int, out: Path | None, repeat: int = 1) -> list[dict]:
    cmd = [str(CPP_DIR / "build" / binary), "--seed", str(seed), "--seconds", str(seconds)]
    cmd += ["--repeat", str(repeat)] + (["--out", str(out)] if out else ["--sink", "none"])
    res = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return [json.loads(line) for line in res.stdout.splitlines()]


def run_numba(seed: int, seconds: int, out: Path | None) -> dict:
    cfg = SessionConfig(seed=seed, session_seconds=seconds)
    c0, w0 = time.thread_time(), time.perf_counter()
    res = simulate_to_file(cfg, out) if out else simulate_session(cfg, NullSink())
    cpu, wall = time.thread_time() - c0, time.perf_counter() - w0
    return {"events": res.events, "wall": wall, "cpu": cpu, "counts": list(res.counts)}


# -- throughput ---------------------------------------------------------------------------
def throughput(rounds: int, seconds: int, tmp: Path) -> dict[tuple[str, str], list[dict]]:
    """{(implementation, sink): [session results]}; every configuration PER_ROUND times per round."""
    runs: dict[tuple[str, str], list[dict]] = {}
    for _ in range(rounds):
        for sink in ("file", "none"):
            out = tmp / "bench.qrsdp" if sink == "file" else None
            for label, binary in BINARIES.items():
                runs.setdefault((label, sink), []).extend(run_cpp(binary, 1, seconds, out, PER_ROUND))
            for _ in range(PER_ROUND):
                if out:  # as the C++ binary does: no old file for the rename to unlink inside the timing
                    out.unlink(missing_ok=True)
                runs.setdefault((NUMBA, sink), []).append(run_numba(1, seconds, out))
    return runs


def report_throughput(runs: dict[tuple[str, str], list[dict]]) -> None:
    def rate(events: int, seconds: float) -> float:
        return events / seconds / 1e6

    for sink, title in (
        ("file", "written to a .qrsdp file (LZ4, fsync)"),
        ("none", "null sink (simulation only)"),
    ):
        print(f"\nSimpleImbalance, seed 1, {title}; M events/s")
        print(
            f"{'':<24}{'events':>11}{'best wall':>11}{'median wall':>13}{'best cpu':>10}{'median cpu':>12}  n"
        )
        best: dict[str, float] = {}
        median: dict[str, float] = {}
        for label in (*BINARIES, NUMBA):
            rs = runs[(label, sink)]
            walls = [rate(r["events"], r["wall"]) for r in rs]
            cpus = [rate(r["events"], r["cpu"]) for r in rs]
            best[label], median[label] = max(walls), statistics.median(walls)
            print(
                f"{label:<24}{rs[0]['events']:>11,}{max(walls):>11.2f}{statistics.median(walls):>13.2f}"
                f"{max(cpus):>10.2f}{statistics.median(cpus):>12.2f}  {len(rs)}"
            )
        for label in BINARIES:
            print(
                f"  ratio numba / {label}: {best[NUMBA] / best[label]:.2f} (best), "
                f"{median[NUMBA] / median[label]:.2f} (median)"
            )


# -- model check --------------------------------------------------------------------------
def session_stats(path: Path, seconds: int) -> dict[str, float]:
    recs = EventLogReader(path).read_all()
    n = len(recs)
    counts = np.bincount(recs["type"], minlength=6)[:6]
    states = replay_book(recs)  # strict: raises on any record the book cannot apply
    spread = states.spread[states.two_sided]
    stats = {"records / simulated s": n / seconds}
    stats |= {f"share {name}": counts[i] / n for i, name in enumerate(EVENT_TYPE_NAMES)}
    stats |= {
        "share spread = 1": float(np.mean(spread == 1)),
        "share spread = 2": float(np.mean(spread == 2)),
        "share spread >= 3": float(np.mean(spread >= 3)),
        "mean best bid qty": float(np.mean(states.bid_qty)),
    }
    return stats


def model_check(n_seeds: int, seconds: int, tmp: Path) -> None:
    per_impl: dict[str, list[dict[str, float]]] = {"C++": [], "numba": []}
    for seed in range(1, n_seeds + 1):
        cpp_path, py_path = tmp / f"cpp-{seed}.qrsdp", tmp / f"py-{seed}.qrsdp"
        run_cpp(BINARIES["C++ -O2"], seed, seconds, cpp_path)
        run_numba(seed, seconds, py_path)
        per_impl["C++"].append(session_stats(cpp_path, seconds))
        per_impl["numba"].append(session_stats(py_path, seconds))
        cpp_path.unlink()
        py_path.unlink()
    print(
        f"\nModel check: seeds 1..{n_seeds}, {seconds:,} s sessions, mean (sd over seeds); every file replays cleanly"
    )
    print(f"{'':<26}{'C++':>22}{'numba':>22}{'diff / se':>11}")
    for key in per_impl["C++"][0]:
        a = np.array([s[key] for s in per_impl["C++"]])
        b = np.array([s[key] for s in per_impl["numba"]])
        se = np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)) if n_seeds > 1 else 0.0
        z = f"{(a.mean() - b.mean()) / se:+.1f}" if se > 0 else "-"
        fmt = (lambda v: f"{v:.3f}") if a.mean() > 1 else (lambda v: f"{v:.5f}")
        print(
            f"{key:<26}{fmt(a.mean()) + ' (' + fmt(a.std(ddof=1) if n_seeds > 1 else 0) + ')':>22}"
            f"{fmt(b.mean()) + ' (' + fmt(b.std(ddof=1) if n_seeds > 1 else 0) + ')':>22}{z:>11}"
        )
    print(
        "diff / se: difference of the means over its standard error; independent random streams give mostly\n"
        "|diff / se| < 2, now and then up to 3 among these correlated figures (rerun with more --seeds to tell)."
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--rounds", type=int, default=5, help="throughput rounds (each: 3 sessions per configuration)"
    )
    ap.add_argument("--seeds", type=int, default=16, help="sessions per implementation for the model check")
    ap.add_argument("--seconds", type=int, default=23_400, help="session length (simulated seconds)")
    args = ap.parse_args()

    build()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        # the same binary built twice must simulate the same session (no FP contraction differences)
        run_cpp(BINARIES["C++ -O2"], 1, args.seconds, tmp / "o2.qrsdp")
        run_cpp(BINARIES["C++ -O3 -march=native"], 1, args.seconds, tmp / "o3.qrsdp")
        same = (tmp / "o2.qrsdp").read_bytes() == (tmp / "o3.qrsdp").read_bytes()
        print(f"C++ -O2 and -O3 -march=native write identical files for seed 1: {same}")
        run_numba(1, args.seconds, tmp / "warm.qrsdp")  # loads (or compiles) the kernel
        report_throughput(throughput(args.rounds, args.seconds, tmp))
        model_check(args.seeds, args.seconds, tmp)


if __name__ == "__main__":
    main()
