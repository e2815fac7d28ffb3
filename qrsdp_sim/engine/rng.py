"""A small counter-free PRNG (xoshiro256**) with an explicit ``uint64[4]`` state.

Why not ``np.random`` inside numba: numba's generator state is global and per
thread, so sessions run in worker threads would share or race on it and a
session's output would depend on which thread ran it. Here every session owns
its four-word state array, seeded from its session seed, and every draw is a
pure function of that state.
"""

from __future__ import annotations

import numpy as np

from qrsdp_sim.engine._jit import njit

STATE_WORDS = 4
_TWO_M53 = 1.0 / 9007199254740992.0  # 2**-53


def seed_state(seed: int) -> np.ndarray:
    """Expand a 64-bit session seed into a fresh generator state (never all zero)."""
    if not 0 <= int(seed) < 2**64:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    state = np.random.SeedSequence(int(seed)).generate_state(STATE_WORDS, dtype=np.uint64)
    if not state.any():  # the single forbidden state of xoshiro; astronomically unlikely
        state[0] = np.uint64(0x9E3779B97F4A7C15)
    return state


@njit(inline="always", nogil=True, cache=True, error_model="numpy")
def _rotl(x, k):
    return (x << np.uint64(k)) | (x >> np.uint64(64 - k))


@njit(inline="always", nogil=True, cache=True, error_model="numpy")
def next_u64(st):
    """Advance the state and return the next 64-bit output."""
    s0 = st[0]
    s1 = st[1]
    s2 = st[2]
    s3 = st[3]
    result = _rotl(s1 * np.uint64(5), 7) * np.uint64(9)
    t = s1 << np.uint64(17)
    s2 ^= s0
    s3 ^= s1
    s1 ^= s2
    s0 ^= s3
    s2 ^= t
    s3 = _rotl(s3, 45)
    st[0] = s0
    st[1] = s1
    st[2] = s2
    st[3] = s3
    return result


@njit(inline="always", nogil=True, cache=True, error_model="numpy")
def uniform(st):
    """Uniform double in [0, 1) with 53 random bits."""
    return float(next_u64(st) >> np.uint64(11)) * _TWO_M53


@njit(inline="always", nogil=True, cache=True, error_model="numpy")
def uniform_pos(st):
    """Uniform double in (0, 1]: safe to take the logarithm of."""
    return float((next_u64(st) >> np.uint64(11)) + np.uint64(1)) * _TWO_M53


@njit(inline="always", nogil=True, cache=True, error_model="numpy")
def exponential(st):
    """Standard exponential variate (mean 1) by inversion."""
    return -np.log(uniform_pos(st))


@njit(inline="always", nogil=True, cache=True, error_model="numpy")
def below(st, n):
    """Uniform integer in [0, n) for 1 <= n < 2**32, by Lemire's multiply-shift (bias < n / 2**32)."""
    x = next_u64(st) >> np.uint64(32)
    return np.int64((x * np.uint64(n)) >> np.uint64(32))


@njit(nogil=True, cache=True, error_model="numpy")
def fill_uniform(st, out):
    """Fill ``out`` with uniforms in [0, 1) (for tests of the generator)."""
    for i in range(out.shape[0]):
        out[i] = uniform(st)


# -- exponential variates by the ziggurat method (Marsaglia & Tsang 2000) ---------------------------
# 256 layers of equal area under exp(-x); a draw lands inside its layer's rectangle (no
# transcendental function) about 98.9 % of the time. Tables as in the paper's setup, for 32-bit
# integers; the layer index and the 32-bit abscissa come from disjoint bits of one 64-bit output.
_ZIG_R = 7.697117470131487
_ZIG_V = 3.949659822581572e-3
_ZIG_M = 4294967296.0  # 2 ** 32


def _ziggurat_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    import math

    ke = np.zeros(256, dtype=np.uint64)
    we = np.zeros(256, dtype=np.float64)
    fe = np.zeros(256, dtype=np.float64)
    de = _ZIG_R
    te = de
    q = _ZIG_V / math.exp(-de)
    ke[0] = np.uint64(int((de / q) * _ZIG_M))
    ke[1] = 0
    we[0] = q / _ZIG_M
    we[255] = de / _ZIG_M
    fe[0] = 1.0
    fe[255] = math.exp(-de)
    for i in range(254, 0, -1):
        de = -math.log(_ZIG_V / de + math.exp(-de))
        ke[i + 1] = np.uint64(int((de / te) * _ZIG_M))
        te = de
        fe[i] = math.exp(-de)
        we[i] = de / _ZIG_M
    return ke, we, fe


_ZIG_KE, _ZIG_WE, _ZIG_FE = _ziggurat_tables()


@njit(inline="always", nogil=True, cache=True, error_model="numpy")
def exponential_zig(st):
    """Standard exponential variate (mean 1) by the ziggurat method: exact in distribution, about
    three times cheaper than inversion (no logarithm on the fast path)."""
    while True:
        u = next_u64(st)
        iz = np.int64(u & np.uint64(255))
        jz = u >> np.uint64(32)
        if jz < _ZIG_KE[iz]:
            return float(jz) * _ZIG_WE[iz]
        if iz == 0:  # the tail beyond r: r + an exponential (memorylessness)
            return _ZIG_R - np.log(uniform_pos(st))
        x = float(jz) * _ZIG_WE[iz]
        if _ZIG_FE[iz] + uniform(st) * (_ZIG_FE[iz - 1] - _ZIG_FE[iz]) < np.exp(-x):
            return x
