"""The engine's generator, seeds, calendar and real-time pacing."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from scipy import stats

from qrsdp_sim.engine.calendar import parse_date, parse_market_open, previous_trading_date, trading_dates
from qrsdp_sim.engine.pacing import Pacer
from qrsdp_sim.engine.rng import below, exponential, fill_uniform, next_u64, seed_state
from qrsdp_sim.engine.seeds import session_seed, symbol_int
from qrsdp_sim.records import RECORD_DTYPE

M64 = (1 << 64) - 1


def xoshiro_reference(state: list[int], n: int) -> list[int]:
    """xoshiro256** written from its definition, in plain Python integers."""
    s = list(state)
    rotl = lambda x, k: ((x << k) | (x >> (64 - k))) & M64  # noqa: E731
    out = []
    for _ in range(n):
        out.append((rotl((s[1] * 5) & M64, 7) * 9) & M64)
        t = (s[1] << 17) & M64
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = rotl(s[3], 45)
    return out


def test_generator_matches_the_reference_algorithm():
    start = [int(x) for x in seed_state(2024)]
    st = np.array(start, dtype=np.uint64)
    got = [int(next_u64(st)) for _ in range(1000)]
    assert got == xoshiro_reference(start, 1000)
    assert [int(next_u64(np.array([1, 2, 3, 4], dtype=np.uint64))) for _ in range(1)] == [11520]


def test_uniforms_and_exponentials():
    st = seed_state(7)
    u = np.empty(200_000)
    fill_uniform(st, u)
    assert u.min() >= 0 and u.max() < 1
    assert stats.kstest(u, "uniform").pvalue > 1e-3
    e = np.array([exponential(st) for _ in range(20_000)])
    assert stats.kstest(e, "expon").pvalue > 1e-3
    k = np.array([below(st, 6) for _ in range(60_000)])
    assert k.min() == 0 and k.max() == 5
    assert stats.chisquare(np.bincount(k)).pvalue > 1e-3


def test_states_are_private_to_each_session():
    a, b = seed_state(1), seed_state(1)
    x = [int(next_u64(a)) for _ in range(5)]
    assert [int(next_u64(b)) for _ in range(5)] == x  # same seed, same stream; no shared global state
    assert [int(next_u64(seed_state(2))) for _ in range(5)] != x
    with pytest.raises(ValueError):
        seed_state(-1)


def test_session_seeds_depend_on_base_symbol_and_date_only():
    d = dt.date(2026, 1, 5)
    s = session_seed(42, "AAPL", d)
    assert s == session_seed(42, "AAPL", d)
    assert 0 <= s < 2**64
    others = {
        session_seed(43, "AAPL", d),
        session_seed(42, "MSFT", d),
        session_seed(42, "AAPL", d + dt.timedelta(days=1)),
        session_seed(42, "AAPL0", d),
    }
    assert s not in others and len(others) == 4
    assert symbol_int("A") != symbol_int("A0")
    for bad in ("aapl", "", "ABCDEFGHI", "A B"):
        with pytest.raises(ValueError):
            session_seed(1, bad, d)


def test_weekday_calendar():
    days = trading_dates(dt.date(2026, 1, 2), 4)  # Friday
    assert days == [dt.date(2026, 1, 2), dt.date(2026, 1, 5), dt.date(2026, 1, 6), dt.date(2026, 1, 7)]
    assert trading_dates(dt.date(2026, 1, 3), 1) == [dt.date(2026, 1, 5)]  # Saturday rolls to Monday
    assert previous_trading_date(dt.date(2026, 1, 5)) == dt.date(2026, 1, 2)
    assert parse_market_open("09:30") == 34_200 * 10**9
    for bad in ("9:30", "24:00", "09:60", "0930", "ab:cd"):
        with pytest.raises(ValueError):
            parse_market_open(bad)
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        parse_date("2026-02-30")


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept = 0.0

    def clock(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.now += s
        self.slept += s


class Collect:
    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.deliveries: list[tuple[float, np.ndarray]] = []

    def append(self, batch: np.ndarray) -> None:
        self.deliveries.append((self.clock.now, batch.copy()))

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_realtime_pacing_delivers_no_record_before_its_time():
    clock = FakeClock()
    open_ns = 1_000 * 10**9
    batch = np.zeros(400, dtype=RECORD_DTYPE)
    batch["ts_ns"] = open_ns + (np.arange(400) * 0.025 * 1e9).astype(np.uint64)  # 10 s of events
    sink = Collect(clock)
    Pacer(speed=2.0, open_ns=open_ns, clock=clock.clock, sleep=clock.sleep).deliver(sink, batch)
    got = np.concatenate([b for _, b in sink.deliveries])
    assert np.array_equal(got, batch)
    assert len(sink.deliveries) > 50  # delivered in small slices, not at once
    for when, part in sink.deliveries:
        due = (part["ts_ns"].astype(np.float64) - open_ns) / 1e9 / 2.0
        assert np.all(due <= when + 0.05 + 1e-9)
    assert clock.now == pytest.approx(399 * 0.025 / 2, abs=0.06)


def test_ziggurat_exponentials_are_exponential_in_the_body_and_the_tail():
    """The kernel draws waiting times by the ziggurat method: the whole distribution (KS on 1 M
    draws), its tail beyond the ziggurat's base r (memoryless), and the first two moments."""
    from numba import njit

    from qrsdp_sim.engine.rng import _ZIG_R, exponential_zig

    @njit
    def draws(st, n):
        out = np.empty(n)
        for i in range(n):
            out[i] = exponential_zig(st)
        return out

    x = draws(seed_state(17), 1_000_000)
    assert stats.kstest(x, "expon").pvalue > 1e-3
    assert abs(x.mean() - 1) < 5e-3 and abs(x.var() - 1) < 1e-2
    tail = x[x > 3.0] - 3.0  # memoryless: the excess over 3 is Exp(1) again
    assert stats.kstest(tail, "expon").pvalue > 1e-3 and len(tail) > 40_000
    assert np.count_nonzero(x > _ZIG_R) > 200  # the slow path beyond r is exercised
    # power: a 2 % error in the scale is rejected
    assert stats.kstest(x * 1.02, "expon").pvalue < 1e-6
