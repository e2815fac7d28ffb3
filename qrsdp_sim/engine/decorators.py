"""Intensity decorators: a common, time-varying multiplier on every rate of the base model.

The kernel samples event times by thinning against ``dec_bound`` so that a decorator
whose multiplier decays between events (Hawkes excitation) is sampled exactly, not
frozen at the last event:

* ``dec_bound(t)`` must be >= the multiplier at every time after ``t`` until the next
  event that changes the state (a decaying multiplier: its value at ``t``); the kernel
  computes it at the start of a session, after every event that called ``dec_on_event`` with
  ``trigger`` (every event for ``DEC_HAWKES``) and after a step of the exogenous signal, and
  otherwise keeps the bound it has (still a bound: the multiplier only decayed since);
* a candidate time ``tc`` is accepted with probability ``dec_multiplier(tc) / bound``: the
  kernel draws a uniform u and accepts when u x bound < ``dec_lower(tc)`` (a cheap lower bound
  of the multiplier) or else u x bound < ``dec_multiplier(tc)``, the same decision as with the
  multiplier alone; for ``DEC_HAWKES``, when the multiplier equals its bound no uniform is
  drawn; a decorator that is switched off is ``DEC_NONE`` and consumes exactly the random
  numbers of the base model (byte-identical output);
* after a rejection the kernel continues from ``tc`` with the multiplier it just
  computed there as the new bound (for a non-increasing multiplier that *is* the
  bound at ``tc``);
* ``dec_on_event`` updates the decorator's state (``dec_state``, float64) after each event.

Kinds:

``DEC_NONE``
    multiplier 1.
``DEC_HAWKES``
    exponential self-excitation. ``params = [alpha, beta, cap]``, ``state = [E, t_E]``:
    the excitation E just after the last event, at time t_E. Between events
    E(t) = E e^(-beta (t - t_E)); at an event at time t, E <- E(t) + alpha and t_E <- t
    (O(1) per event). Multiplier 1 + min(E(t), cap): non-increasing between events,
    so its value at t bounds it until the next event.

``DEC_EXCITE``
    normalised multi-timescale excitation (``realism.Excitation``), excited by *trigger*
    events only (market orders and events that move the mid price). ``params = [J, n, cap,
    lambda0, prior_seconds, beta_0 .. beta_J-1, w_0 .. w_J-1, k_0 .. k_J-1]``, the scales sorted
    by increasing beta; k_i > 0 when beta_i = k_i beta_(i-1) for a whole k_i, and then
    e^(-beta_i t) is computed as (e^(-beta_(i-1) t))^k_i by squaring instead of with another
    exponential (the default scales 30 s, 1 s, 0.05 s need one exponential per evaluation); ``state = [E_0 .. E_J-1, t_E,
    N, M, D_0 .. D_J-1, t_D]``. Multiplier 1 + min(sum_j E_j e^(-beta_j (t - t_E)), cap), with E_j
    the components just after the last *trigger*, at t_E: events that do not trigger leave the
    state alone (the multiplier only decays until the next trigger), so they cost nothing. At a
    trigger, E_j += n w_j beta_j / lambda_hat, where lambda_hat = (N + lambda0 prior) / (M + prior)
    estimates the base trigger rate (N triggers so far, M = integral of the multiplier up to the
    last trigger, cap ignored): each trigger then raises the expected number of later triggers by
    n (the branching ratio), whatever the base model's rates, so the excitation is stationary for
    any n < 1 and its mean multiplier is 1 / (1 - n). ``D_j``, ``t_D``: the decayed components at
    the last time the multiplier was evaluated exactly; ``dec_lower`` bounds the multiplier from
    below from them without an exponential (the kernel's thinning accepts most candidates on
    that bound alone), and a trigger at t_D reuses them.

A new decorator adds a kind code and a branch in ``dec_bound``, ``dec_multiplier`` and
``dec_on_event`` (and in ``dec_integral``, which the kernel does not use: calibration replays a
session's multiplier with it). The kernel calls ``dec_on_event`` at triggers only (every event
for ``DEC_HAWKES``) and uses ``dec_lower`` for ``DEC_EXCITE`` only: a new kind is thinned like
``DEC_HAWKES`` (the multiplier at every candidate) until the kernel's branches name it.
"""

from __future__ import annotations

import numpy as np

from qrsdp_sim.engine._jit import njit

DEC_NONE = 0
DEC_HAWKES = 1
DEC_EXCITE = 2

# DEC_HAWKES slots
H_ALPHA = 0
H_BETA = 1
H_CAP = 2
H_E = 0  # state: excitation just after the last event
H_T = 1  # state: time of the last event (seconds since the open)

# DEC_EXCITE slots
X_J = 0
X_N = 1
X_CAP = 2
X_LAMBDA0 = 3
X_PRIOR = 4
X_BETA = 5  # then J betas, then J weights
MAX_SCALES = 8


def no_decorator() -> tuple[int, np.ndarray, np.ndarray]:
    """(kind, params, state) for an undecorated model."""
    return DEC_NONE, np.zeros(1, dtype=np.float64), np.zeros(1, dtype=np.float64)


def hawkes_decorator(alpha: float, beta: float, cap: float) -> tuple[int, np.ndarray, np.ndarray]:
    """(kind, params, fresh state) for Hawkes excitation; E = 0 at the open."""
    params = np.array([alpha, beta, cap], dtype=np.float64)
    return DEC_HAWKES, params, np.zeros(2, dtype=np.float64)


def excite_decorator(
    branching: float, betas: list[float], weights: list[float], lambda0: float, prior_seconds: float, cap: float
) -> tuple[int, np.ndarray, np.ndarray]:
    """(kind, params, fresh state) for the normalised excitation; E = 0 at the open."""
    j = len(betas)
    order = sorted(range(j), key=lambda i: betas[i])
    betas = [betas[i] for i in order]
    weights = [weights[i] for i in order]
    powers = [0.0] * j
    for i in range(1, j):
        k = betas[i] / betas[i - 1]
        if abs(k - round(k)) < 1e-9 * k and 2 <= round(k) <= 1024:
            powers[i] = float(round(k))
    params = np.array([j, branching, cap, lambda0, prior_seconds, *betas, *weights, *powers], dtype=np.float64)
    state = np.zeros(2 * j + 4, dtype=np.float64)
    state[2 * j + 3] = -1.0  # no cached candidate yet
    return DEC_EXCITE, params, state


@njit(inline="always", nogil=True, cache=True, error_model="numpy")
def _excite_multiplier(params, state, t):
    """Multiplier at ``t``; caches the decayed components for ``t`` (reused by the event update)."""
    j = int(params[X_J])
    dt = t - state[j]
    tot = 0.0
    if dt == 0.0:  # just after an event (the kernel's next bound): nothing has decayed
        for i in range(j):
            state[j + 3 + i] = state[i]
            tot += state[i]
    else:
        f = 1.0
        for i in range(j):
            k = params[X_BETA + 2 * j + i]
            f = _ipow(f, int(k)) if k > 0.0 else np.exp(-params[X_BETA + i] * dt)
            d = state[i] * f
            state[j + 3 + i] = d
            tot += d
    state[2 * j + 3] = t
    return 1.0 + min(tot, params[X_CAP])


@njit(inline="always", nogil=True, cache=True, error_model="numpy")
def _ipow(x, k):
    """x ** k for a whole k >= 1, by squaring."""
    out = 1.0
    while k > 0:
        if k & 1:
            out *= x
        x *= x
        k >>= 1
    return out


@njit(inline="always", nogil=True, cache=True, error_model="numpy")
def _excite_lower(params, state, t):
    """A lower bound of the multiplier at ``t`` (>= t_D) without an exponential: e^(-x) >= 1 - x
    applied to the decay since the components were last evaluated (``D_j`` at ``t_D``)."""
    j = int(params[X_J])
    dt = t - state[2 * j + 3]
    tot = 0.0
    for i in range(j):  # branch-free: which components have decayed past the line is unpredictable
        tot += state[j + 3 + i] * max(1.0 - params[X_BETA + i] * dt, 0.0)
    return 1.0 + min(tot, params[X_CAP])


@njit(inline="always", nogil=True, cache=True, error_model="numpy")
def _excite_on_event(params, state, t, trigger):
    """A trigger at ``t``: the integral of the multiplier since the last trigger, the new estimate
    of the base trigger rate, and the jump. Other events change nothing (the multiplier decays
    from the last trigger on, whatever happens in between)."""
    if not trigger:
        return
    j = int(params[X_J])
    if state[2 * j + 3] != t:
        _excite_multiplier(params, state, t)
    # integral of the multiplier since the last trigger (cap ignored: an estimate's denominator)
    m = t - state[j]
    for i in range(j):
        m += (state[i] - state[j + 3 + i]) / params[X_BETA + i]
    state[j + 2] += m
    prior = params[X_PRIOR]
    lam = (state[j + 1] + params[X_LAMBDA0] * prior) / (state[j + 2] + prior)
    k = params[X_N] / lam
    for i in range(j):
        e = state[j + 3 + i] + k * params[X_BETA + j + i] * params[X_BETA + i]
        state[i] = e
        state[j + 3 + i] = e  # the evaluation cache now holds the components at t (= t_D)
    state[j + 1] += 1.0
    state[j] = t


@njit(inline="always", nogil=True, cache=True, error_model="numpy")
def _hawkes_multiplier(params, state, t):
    e = state[H_E] * np.exp(-params[H_BETA] * (t - state[H_T]))
    return 1.0 + min(e, params[H_CAP])


@njit(inline="always", nogil=True, cache=True, error_model="numpy")
def dec_bound(kind, params, state, t):
    if kind == DEC_HAWKES:
        return _hawkes_multiplier(params, state, t)
    if kind == DEC_EXCITE:
        return _excite_multiplier(params, state, t)
    return 1.0


@njit(inline="always", nogil=True, cache=True, error_model="numpy")
def dec_multiplier(kind, params, state, t):
    if kind == DEC_HAWKES:
        return _hawkes_multiplier(params, state, t)
    if kind == DEC_EXCITE:
        return _excite_multiplier(params, state, t)
    return 1.0


@njit(inline="always", nogil=True, cache=True, error_model="numpy")
def dec_lower(kind, params, state, t):
    """A cheap lower bound of ``dec_multiplier(t)`` (1 when the kind has none); for the kernel's
    thinning, which accepts a candidate on it without evaluating the multiplier."""
    if kind == DEC_EXCITE:
        return _excite_lower(params, state, t)
    return 1.0


@njit(inline="always", nogil=True, cache=True, error_model="numpy")
def dec_on_event(kind, params, state, t, etype, trigger=True):
    """Update after an event at ``t``; ``trigger``: the event is a market order or moved the mid."""
    if kind == DEC_HAWKES:
        state[H_E] = state[H_E] * np.exp(-params[H_BETA] * (t - state[H_T])) + params[H_ALPHA]
        state[H_T] = t
    elif kind == DEC_EXCITE:
        _excite_on_event(params, state, t, trigger)


@njit(inline="always", nogil=True, cache=True, error_model="numpy")
def _capped_decay_integral(e, betas, j, off, cap, dt):
    """Exact integral over [0, dt] of min(S(s), cap), S(s) = sum_i d_i e^(-betas[i] s) with
    d_i = e[i] e^(-betas[i] off) >= 0 (the components ``off`` after their last update).

    S decreases, so min(S, cap) is cap until S reaches the cap at s* and S after it: the
    integral is cap s* + sum_i d_i e^(-beta_i s*) (1 - e^(-beta_i (dt - s*))) / beta_i. s* solves
    S(s*) = cap by Newton's method from s = 0; S is convex, so the iterates rise monotonically to s*.
    """
    s0 = 0.0
    tot = 0.0
    for i in range(j):
        d = e[i] * np.exp(-betas[i] * off)
        s0 += d
        tot += d * -np.expm1(-betas[i] * dt) / betas[i]
    if s0 <= cap:  # below the cap throughout (the usual case)
        return tot
    s_end = 0.0
    for i in range(j):
        s_end += e[i] * np.exp(-betas[i] * (off + dt))
    if s_end >= cap:
        return cap * dt
    x = 0.0
    for _ in range(200):
        f = -cap
        df = 0.0
        for i in range(j):
            v = e[i] * np.exp(-betas[i] * (off + x))
            f += v
            df += betas[i] * v
        if f <= 0.0 or df <= 0.0:
            break
        step = f / df
        x += step
        if step <= 1e-15 * (1.0 + x):
            break
    x = min(x, dt)
    tot = cap * x
    for i in range(j):
        tot += e[i] * np.exp(-betas[i] * (off + x)) * -np.expm1(-betas[i] * (dt - x)) / betas[i]
    return tot


@njit(nogil=True, cache=True, error_model="numpy")
def dec_integral(kind, params, state, t0, t1):
    """Exact integral of the multiplier over [t0, t1] when no event falls inside (the state is the one
    after the last event, at or before t0), cap included. Reads ``state``, never writes it.

    Not used by the kernel (its thinning needs no integral); calibration weights exposure with it
    (``qrsdp_sim.calibration``), replaying the state with ``dec_on_event`` between intervals.
    ``replay_integrals`` is the uncapped form of the same integral.
    """
    dt = t1 - t0
    if dt <= 0.0:
        return 0.0
    if kind == DEC_HAWKES:
        return dt + _capped_decay_integral(
            state[H_E : H_E + 1], params[H_BETA : H_BETA + 1], 1, t0 - state[H_T], params[H_CAP], dt
        )
    if kind == DEC_EXCITE:
        j = int(params[X_J])
        return dt + _capped_decay_integral(
            state[:j], params[X_BETA : X_BETA + j], j, t0 - state[j], params[X_CAP], dt
        )
    return dt


@njit(nogil=True, cache=True, error_model="numpy")
def replay_decorator(kind, params, state, event_times, probe_times, out_event, out_probe):
    """Drive a decorator through ``event_times`` (sorted) and record, for tests and analysis:
    ``out_event[i]`` the multiplier just *after* event i, ``out_probe[j]`` the multiplier at
    ``probe_times[j]`` (sorted) given the events strictly before it. Same code as the kernel."""
    j = 0
    n_probe = probe_times.shape[0]
    for i in range(event_times.shape[0]):
        t = event_times[i]
        while j < n_probe and probe_times[j] <= t:
            out_probe[j] = dec_multiplier(kind, params, state, probe_times[j])
            j += 1
        dec_on_event(kind, params, state, t, 0)
        out_event[i] = dec_multiplier(kind, params, state, t)
    while j < n_probe:
        out_probe[j] = dec_multiplier(kind, params, state, probe_times[j])
        j += 1


@njit(nogil=True, cache=True, error_model="numpy")
def replay_integrals(kind, params, state, event_times, triggers, out):
    """Drive a decorator through model events (sorted times, trigger flags) as the kernel does, and
    write ``out[i]`` = integral of the multiplier over (t_(i-1), t_i] (t_(-1) = 0), in closed form.

    The cap is not applied to the integral (exact while the excitation stays below it; check with
    the returned maximum); returns the largest multiplier seen just after an event. For tests
    (time-rescaling) and calibration (multiplier-weighted exposure).
    """
    t_prev = 0.0
    top = 1.0
    for i in range(event_times.shape[0]):
        t = event_times[i]
        dt = t - t_prev
        if kind == DEC_EXCITE:
            j = int(params[X_J])
            acc = dt
            for k in range(j):
                e = state[k] * np.exp(-params[X_BETA + k] * (t_prev - state[j]))
                acc += e * (1.0 - np.exp(-params[X_BETA + k] * dt)) / params[X_BETA + k]
            out[i] = acc
        elif kind == DEC_HAWKES:
            e = state[H_E] * np.exp(-params[H_BETA] * (t_prev - state[H_T]))
            out[i] = dt + e * (1.0 - np.exp(-params[H_BETA] * dt)) / params[H_BETA]
        else:
            out[i] = dt
        dec_on_event(kind, params, state, t, 0, triggers[i])
        top = max(top, dec_multiplier(kind, params, state, t))
        t_prev = t
    return top
