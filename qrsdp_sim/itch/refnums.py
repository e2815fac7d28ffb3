"""Order reference numbers: dense, deterministic and unique across a day's feed.

Rule (documented in docs/itch-feed.md)::

    ref = (order_id - 1) * N + locate

``N`` is the number of securities in the day's Stock Directory, ``locate`` (1..N) the stock
locate code and ``order_id`` (1, 2, 3 ...) the session's order id as written by the engine.
The session order ids of the N securities are interleaved: the k-th order of every security
gets a reference in ``[(k - 1) N + 1, k N]``. So

* references are unique across the whole feed (distinct locates never collide: ``ref mod N``
  recovers the locate, and ``(ref - locate) / N + 1`` the order id);
* they are dense: when the securities have about as many orders each, the references of the
  day fill ``1 .. N x max orders`` with few holes -- no sparse bit fields;
* like NASDAQ's sequential numbering they grow through the day, because every session's
  order ids grow with time and the sessions of a day run over the same hours;
* they depend on nothing but the locate, the order id and N, so a restarted streamer, the
  file export and any later re-run produce the same numbers.
"""

from __future__ import annotations

import numpy as np


def order_refs(order_ids: np.ndarray, locate: int, n_locates: int) -> np.ndarray:
    """Vectorised ``(order_id - 1) * n_locates + locate`` as uint64."""
    if not 1 <= locate <= n_locates <= 0xFFFF:
        raise ValueError(f"locate {locate} must lie in 1..{n_locates} (and N <= 65535)")
    ids = np.asarray(order_ids, dtype=np.uint64)
    if len(ids) and int(ids.min()) == 0:
        raise ValueError("order id 0 is reserved (engine ids start at 1)")
    return (ids - np.uint64(1)) * np.uint64(n_locates) + np.uint64(locate)


def order_ref(order_id: int, locate: int, n_locates: int) -> int:
    return int(order_refs(np.array([order_id], dtype=np.uint64), locate, n_locates)[0])


def split_ref(ref: int | np.ndarray, n_locates: int) -> tuple:
    """Inverse of the rule: (locate, order_id) from a reference number."""
    r = np.asarray(ref, dtype=np.uint64)
    n = np.uint64(n_locates)
    locate = (r - np.uint64(1)) % n + np.uint64(1)
    order_id = (r - locate) // n + np.uint64(1)
    if np.ndim(ref) == 0:
        return int(locate), int(order_id)
    return locate, order_id
