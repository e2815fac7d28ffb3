"""A small counter-free PRNG (xoshiro256**) with an explicit ``uint64[4]`` state.

Why not ``np.random`` inside numba: numba's generator state is global and per
thread, so sessions run in worker threads would share or race on it and a
session's output would depend on which thread ran it. Here every session owns
its four-word state array, seeded from its session seed, and every draw is a
pure function of that state.
"""

from __future__ import annotations

import numpy as np
from numba import njit

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
