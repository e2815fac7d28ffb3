"""Live exchange mode (``qrsdp run --days 0``): ``uv run python benchmarks/bench_live.py [--quick]``.

Figures (in process, after the kernel is loaded; best of ``--repeat``):

1. Throughput: the same 2 securities x N full dates through ``run`` (``--days N``) and ``run_live``
   (stopped as its last session finishes): the cost of lockstep dates and of rewriting the manifest
   (atomic, fsynced) after every session.
2. The manifest rewrite alone (``write_manifest(fsync=True)``) with 100, 1,000 and 10,000 sessions
   listed: what each finished session costs a long live run.
3. Stop latency: from the stop request, made from the progress callback in the middle of a session,
   to ``run_live`` returning (manifest written), unpaced and paced (``--speed 1``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import threading
import time
from pathlib import Path

FULL_DAY = 23_400


def _throughput(days: int, repeat: int) -> None:
    from qrsdp_sim.engine.live import StopRequest, run_live
    from qrsdp_sim.engine.runner import RunSpec, Security, run, warm_up

    secs = [Security("AAA", 10_000), Security("BBB", 20_000)]
    warm_up(RunSpec().model)
    best_finite = best_live = float("inf")
    events = 0
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as d:
            res = run(RunSpec(days=days, session_seconds=FULL_DAY), secs, Path(d) / "f", workers=2)
            best_finite = min(best_finite, res.wall_seconds)
            events = sum(r.result.events for r in res.sessions)
        with tempfile.TemporaryDirectory() as d:
            stop = StopRequest()
            n = {"done": 0}

            def on_session(_rec, n=n, stop=stop) -> None:
                n["done"] += 1
                if n["done"] == 2 * days:
                    stop.request("bench")

            res = run_live(
                RunSpec(days=0, session_seconds=FULL_DAY), secs, Path(d) / "l", stop, on_session=on_session
            )
            best_live = min(best_live, res.wall_seconds)
    print(f"1. 2 securities x {days} full dates ({events:,} events), best of {repeat}:")
    print(f"   --days {days}: {best_finite:.2f} s ({events / best_finite / 1e6:.2f} M events/s)")
    print(
        f"   --days 0 stopped after the same sessions: {best_live:.2f} s "
        f"({events / best_live / 1e6:.2f} M events/s; {best_live / best_finite:.2f}x the finite run's time)"
    )


def _manifest_rewrite(repeat: int) -> None:
    from qrsdp_sim.engine.runner import RunSpec, Security, SessionRecord, build_manifest, write_manifest
    from qrsdp_sim.engine.session import SessionResult

    spec = RunSpec()
    secs = [Security("AAA", 10_000), Security("BBB", 20_000)]
    result = SessionResult(
        seed=2**63,
        open_ticks=10_000,
        close_ticks=10_010,
        best_bid=10_009,
        best_ask=10_011,
        events=1_630_000,
        counts=(0,) * 6,
        sim_seconds=FULL_DAY,
        wall_seconds=0.2,
        last_order_id=900_000,
    )
    print("2. manifest rewrite (build + atomic write + fsync), best of", repeat)
    with tempfile.TemporaryDirectory() as d:
        for n in (100, 1_000, 10_000):
            day0 = dt.date(2026, 1, 1)
            sessions = [
                SessionRecord(secs[i % 2].symbol, day0 + dt.timedelta(days=i // 2), result, "x.qrsdp")
                for i in range(n)
            ]
            best = float("inf")
            size = 0
            for _ in range(repeat):
                t = time.perf_counter()
                manifest = build_manifest(spec, secs, sessions, "bench")
                write_manifest(Path(d) / "manifest.json", manifest, fsync=True)
                best = min(best, time.perf_counter() - t)
                size = (Path(d) / "manifest.json").stat().st_size
            print(f"   {n:>6,} sessions: {best * 1e3:8.1f} ms, {size / 1024:8.0f} KiB")


def _stop_latency(repeat: int) -> None:
    from qrsdp_sim.engine.live import StopRequest, run_live
    from qrsdp_sim.engine.runner import RunSpec, Security, warm_up

    warm_up(RunSpec().model)
    print(
        "3. stop latency (request in the middle of the first session -> run_live returned), best of", repeat
    )
    for speed in (None, 1.0):
        best = float("inf")
        for _ in range(repeat):
            with tempfile.TemporaryDirectory() as d:
                stop = StopRequest()
                asked: dict[str, float] = {}
                calls = {"n": 0}

                def progress(_s, _d, _t, _n, stop=stop, asked=asked, calls=calls) -> None:
                    calls["n"] += 1
                    if calls["n"] == 2 and not stop.is_set():  # after the opening book and one batch
                        asked["t"] = time.perf_counter()
                        stop.request("bench")

                if speed is not None:  # paced: a batch takes hours to hand over, so ask from a timer

                    def ask_later(stop=stop, asked=asked) -> None:
                        time.sleep(0.5)
                        asked["t"] = time.perf_counter()
                        stop.request("bench")

                    threading.Thread(target=ask_later, daemon=True).start()
                res = run_live(
                    RunSpec(days=0, session_seconds=FULL_DAY, batch_records=65_536),
                    [Security("AAA", 10_000)],
                    Path(d),
                    stop,
                    realtime_speed=speed,
                    progress=None if speed is not None else progress,
                )
                best = min(best, time.perf_counter() - asked["t"])
                assert res.interrupted, "the stop should have interrupted the session"
        label = "unpaced" if speed is None else f"paced at --speed {speed:g}"
        print(f"   {label}: {best * 1e3:.1f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer dates and repeats")
    ap.add_argument("--repeat", type=int, default=None)
    args = ap.parse_args()
    repeat = args.repeat or (1 if args.quick else 3)
    _throughput(2 if args.quick else 5, repeat)
    _manifest_rewrite(repeat)
    _stop_latency(repeat)


if __name__ == "__main__":
    main()
