"""Market-realism figures for docs/models.md: ``uv run python benchmarks/bench_realism.py [--quick]``.

1. Autocorrelation of absolute 1-minute mid-price changes (in ticks, and as log returns) at
   lags 1-10, SimpleImbalance vs Hawkes (alpha 0.5, beta 2, cap 5, over SimpleImbalance) over
   5 full days (one security, chained opens as in ``qrsdp run``); pairs never span two days.
   Also a subcritical Hawkes (alpha 0.02, beta 2) for comparison.
2. Correlation of 1-minute mid log returns between two securities over 5 days, market factor
   loadings 0, 0.25, 0.5, 0.75, 1 (SimpleImbalance; HLR for comparison).
3. Calibration error per curve: HLR with the built-in curves and the realistic layers (metaorders
   off), 5 full days written as ``qrsdp run`` does, calibrated back from the run directory
   (entries with >= 2,000 events; relative error of events / exposure against the curve).
4. Engine speed of Hawkes and HLR sessions relative to SimpleImbalance: one 23,400 s session,
   kernel only (records handed to a counting sink), thread CPU time, best of 3 after warm-up.

Sessions are simulated in memory with exactly the seeds and configuration ``qrsdp run`` uses
(``RunSpec.session_config`` / ``factor_signal``); prices come from the order-level replay.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np

from qrsdp_sim.analysis import log_returns, mid_changes, pooled_acf
from qrsdp_sim.engine import (
    HLR,
    HawkesIntensity,
    HawkesParams,
    HLRCurves,
    MarketFactor,
    SessionConfig,
    SimpleImbalance,
    simulate_session,
)
from qrsdp_sim.engine.runner import RunSpec, warm_up
from qrsdp_sim.sinks import InMemorySink

FULL_DAY = 23_400
LOADINGS = (0.0, 0.25, 0.5, 0.75, 1.0)


class CountingSink:
    def __init__(self) -> None:
        self.n = 0

    def append(self, batch) -> None:
        self.n += len(batch)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def day_returns(
    spec: RunSpec, symbol: str, p0: int, step: float = 60.0, ticks: bool = False
) -> tuple[list[np.ndarray], int]:
    """Per-date 1-minute log returns (or mid changes in ticks) of one symbol over the run's dates
    (opens chained)."""
    out, events, open_ticks = [], 0, p0
    for date in spec.dates():
        sink = InMemorySink()
        res = simulate_session(
            spec.session_config(symbol, date, open_ticks),
            sink,
            exo=spec.factor_signal(date),
            exo_step_seconds=spec.factor.step_seconds,
        )
        f = mid_changes if ticks else log_returns
        out.append(f(sink.records, step, spec.session_seconds))
        events += res.events
        open_ticks = res.close_ticks
        del sink
    return out, events


def fig_acf(days: int, seconds: int) -> list[str]:
    models = [
        ("SimpleImbalance", SimpleImbalance()),
        ("Hawkes α=0.5 β=2 (cap 5)", HawkesIntensity(SimpleImbalance(), HawkesParams(0.5, 2.0, 5.0))),
        ("Hawkes α=0.02 β=2 (cap 5)", HawkesIntensity(SimpleImbalance(), HawkesParams(0.02, 2.0, 5.0))),
    ]
    head = "| model | events/s | " + " | ".join(f"lag {k}" for k in range(1, 11)) + " |"
    rule = "|---|---:|" + "---:|" * 10
    ticks_rows, log_rows, within_rows = [], [], []
    band = 0.0
    for name, model in models:
        spec = RunSpec(base_seed=42, days=days, session_seconds=seconds, model=model)
        t0 = time.perf_counter()
        d_ticks, events = day_returns(spec, "SIM", 10_000, ticks=True)
        d_log, _ = day_returns(spec, "SIM", 10_000)
        n = sum(len(r) for r in d_ticks)
        band = 1.96 / np.sqrt(n)
        rate = f"{events / (days * seconds):.0f}"
        for rows, series in (
            (ticks_rows, [np.abs(r) for r in d_ticks]),
            (log_rows, [np.abs(r) for r in d_log]),
            (within_rows, [np.abs(r) - np.abs(r).mean() for r in d_log]),
        ):
            a = pooled_acf(series, 10)
            rows.append(f"| {name} | {rate} | " + " | ".join(f"{v:+.3f}" for v in a) + " |")
        print(f"  acf {name}: {time.perf_counter() - t0:.1f} s", flush=True)
    lines = [
        f"Autocorrelation of absolute 1-minute mid-price changes, {days} day(s) x {seconds:,} s, one security "
        "(base seed 42, symbol SIM, opens chained); pooled over the days, no pair spans two days.",
        "",
        "|Δ mid| in ticks:",
        "",
        head,
        rule,
        *ticks_rows,
        "",
        "|log return| (the same sessions):",
        "",
        head,
        rule,
        *log_rows,
        "",
        "|log return| with each day's mean removed:",
        "",
        head,
        rule,
        *within_rows,
        "",
        f"95 % band for zero autocorrelation: ±{band:.3f} ({n} returns).",
    ]
    return lines


def fig_correlation(days: int, seconds: int) -> list[str]:
    lines = [
        f"Correlation of 1-minute mid log returns between two securities (AAA, BBB; base seed 42), "
        f"{days} day(s) x {seconds:,} s:",
        "",
        "| model | " + " | ".join(f"f = {f}" for f in LOADINGS) + " |",
        "|---|" + "---:|" * len(LOADINGS),
    ]
    vols = {}
    for name, model in (("SimpleImbalance", SimpleImbalance()), ("HLR", HLR())):
        cells = []
        for f in LOADINGS:
            t0 = time.perf_counter()
            spec = RunSpec(
                base_seed=42, days=days, session_seconds=seconds, model=model, factor=MarketFactor(loading=f)
            )
            a, _ = day_returns(spec, "AAA", 10_000)
            b, _ = day_returns(spec, "BBB", 10_000)
            ra, rb = np.concatenate(a), np.concatenate(b)
            cells.append(f"{np.corrcoef(ra, rb)[0, 1]:+.3f}")
            vols[(name, f)] = float(np.std(ra) * 1e4)
            print(f"  corr {name} f={f}: {cells[-1]} ({time.perf_counter() - t0:.1f} s)", flush=True)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Standard deviation of AAA's 1-minute log returns (basis points): "
        + "; ".join(
            f"{name} " + ", ".join(f"{vols[(name, f)]:.1f}" for f in LOADINGS)
            for name in ("SimpleImbalance", "HLR")
        )
        + " (loadings in the order above).",
    ]
    return lines


def fig_calibration(days: int, seconds: int) -> list[str]:
    """HLR with the built-in curves and the realistic layers (order sizes, business clock,
    excitation; metaorders off: their sign is latent, see docs/models.md), as ``qrsdp run`` writes
    it, calibrated back from the run directory (queue unit, clock and excitation from the manifest)."""
    from qrsdp_sim.calibration import calibrate, curve_errors
    from qrsdp_sim.engine.realism import Metaorders, Realism
    from qrsdp_sim.engine.runner import Security, run

    ref = HLRCurves.default()
    realism = Realism(metaorders=Metaorders.off())
    spec = RunSpec(base_seed=42, days=days, session_seconds=seconds, model=HLR(), realism=realism)
    with tempfile.TemporaryDirectory() as tmp:
        warm_up(spec.model, spec.levels_per_side, realism)
        t0 = time.perf_counter()
        run(spec, [Security("SIM")], tmp, workers=1)
        t1 = time.perf_counter()
        _, stats = calibrate([tmp], Path(tmp) / "c.json")
        t2 = time.perf_counter()
    rows = curve_errors(stats, ref)
    lines = [
        f"Calibration closed loop: HLR with the built-in curves, realistic layers without metaorders, "
        f"{days} day(s) x {seconds:,} s ({stats.events:,} model events, queue unit {stats.queue_unit:g} "
        f"shares, {stats.business_seconds:,.0f} s of business time; simulation {t1 - t0:.1f} s, "
        f"calibration {t2 - t1:.1f} s); entries with >= 2,000 events:",
        "",
        "| curve | entries | events | max rel. error | mean rel. error (event-weighted) |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        err = f"{r.max_rel_error:.2%} | {r.mean_rel_error:.2%}" if r.points else "- | -"
        lines.append(f"| {r.curve} | {r.points} | {r.events:,} | {err} |")
    worst = max((r for r in rows if r.points), key=lambda r: r.max_rel_error)
    total, outside = 0, []
    for k in ("add", "cancel", "market"):
        ev, ref_k = stats.counts(k), getattr(ref, k)
        for idx in zip(*np.nonzero((ev >= 2000) & (ref_k > 0)), strict=True):
            total += 1
            rel = stats.raw_rates(k)[idx] / ref_k[idx] - 1
            if abs(rel) >= 0.05:  # how many Poisson standard deviations out
                name = f"{k} {('bid', 'ask')[idx[0]]}" + (f" L{idx[1]}" if len(idx) == 3 else "")
                outside.append(f"{name} n = {idx[-1]}: {rel:+.2%} with {ev[idx]:,} events, "
                               f"{abs(rel) * np.sqrt(ev[idx]):.1f} sd")  # fmt: skip
    lines += [
        "",
        f"{total - len(outside)} of {total} entries within 5 %; largest error: {worst.max_rel_error:.2%} "
        f"({worst.curve}).",
        *(f"Outside 5 %: {o}." for o in outside),
    ]
    return lines


def _cpu_best(model, seconds: int, repeats: int) -> tuple[int, float]:
    warm_up(model)
    best = float("inf")
    n = 0
    for _ in range(repeats):
        sink = CountingSink()
        c0 = time.thread_time()
        simulate_session(SessionConfig(seed=1, session_seconds=seconds, model=model), sink)
        best = min(best, time.thread_time() - c0)
        n = sink.n
    return n, best


def fig_speed(seconds: int, repeats: int) -> list[str]:
    models = [
        ("SimpleImbalance", SimpleImbalance()),
        ("Hawkes α=0 over Simple", HawkesIntensity(SimpleImbalance(), HawkesParams(0.0, 2.0, 5.0))),
        ("Hawkes α=0.02 β=2 over Simple", HawkesIntensity(SimpleImbalance(), HawkesParams(0.02, 2.0, 5.0))),
        ("Hawkes α=0.5 β=2 over Simple", HawkesIntensity(SimpleImbalance(), HawkesParams(0.5, 2.0, 5.0))),
        ("HLR (built-in curves)", HLR()),
        ("Hawkes α=0.5 β=2 over HLR", HawkesIntensity(HLR(), HawkesParams(0.5, 2.0, 5.0))),
        ("SimpleImbalance + factor 0.5", dataclasses.replace(SimpleImbalance(), exo_loading=0.5)),
    ]
    lines = [
        f"Engine speed, one {seconds:,} s session (seed 1), kernel only (counting sink), thread CPU time, "
        f"best of {repeats}:",
        "",
        "| session | records | CPU s | M records/s | ns / record | vs SimpleImbalance |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    base_rate = None
    for name, model in models:
        exo = None
        if name.endswith("factor 0.5"):
            exo = MarketFactor(loading=0.5).signal(42, RunSpec().start_date, seconds)
        if exo is None:
            n, cpu = _cpu_best(model, seconds, repeats)
        else:
            best = float("inf")
            for _ in range(repeats):
                sink = CountingSink()
                c0 = time.thread_time()
                simulate_session(SessionConfig(seed=1, session_seconds=seconds, model=model), sink, exo=exo)
                best = min(best, time.thread_time() - c0)
            n, cpu = sink.n, best
        rate = n / cpu
        base_rate = base_rate or rate
        lines.append(
            f"| {name} | {n:,} | {cpu:.3f} | {rate / 1e6:.1f} | {1e9 / rate:.0f} | {rate / base_rate:.2f} |"
        )
        print(f"  speed {name}: {rate / 1e6:.1f} M/s", flush=True)
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 day of 3,600 s per figure (smoke run)")
    ap.add_argument("--markdown", type=Path, help="also write the tables to this file")
    ap.add_argument("--only", choices=("acf", "corr", "calib", "speed"), action="append")
    args = ap.parse_args()
    days, seconds = (1, 3600) if args.quick else (5, FULL_DAY)
    only = set(args.only or ("acf", "corr", "calib", "speed"))
    started = time.perf_counter()
    out: list[str] = [f"# Market realism figures ({'quick' if args.quick else 'full'} run)", ""]
    if "speed" in only:
        out += ["## Engine speed", "", *fig_speed(seconds, 3), ""]
    if "acf" in only:
        out += ["## Volatility clustering", "", *fig_acf(days, seconds), ""]
    if "corr" in only:
        out += ["## Cross-security correlation", "", *fig_correlation(days, seconds), ""]
    if "calib" in only:
        out += ["## Calibration", "", *fig_calibration(days, seconds), ""]
    out.append(f"Total {time.perf_counter() - started:.0f} s.")
    text = "\n".join(out)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")


if __name__ == "__main__":
    main()
