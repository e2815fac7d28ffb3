"""The compiled pass of the queue-priority check (:func:`qrsdp_sim.eventlog.consistency.check_stream`).

Walks the events the book replay accepted, keeping each order's remaining shares; for every EXECUTE
it moves its price level's head past the orders that are gone and flags the EXECUTE unless it names
the order at the head (the oldest still resting there). Levels are linked lists of ADD indices in
stream order (``next_in_level``, ``head``), built with numpy by the caller.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def priority_pass(types, qtys, add_index, ref, level, next_in_level, head, add_ids, behind, front):
    remaining = np.zeros(len(level), dtype=np.int64)
    gone = np.zeros(len(level), dtype=np.bool_)
    for e in range(len(types)):
        a = add_index[e]
        if a >= 0:
            remaining[a] = qtys[e]
            continue
        a = ref[e]
        if a < 0:
            continue
        if types[e] >= 4:  # EXECUTE: the oldest order still resting at this price must be the one
            lv = level[a]
            h = head[lv]
            while h >= 0 and gone[h]:
                h = next_in_level[h]
            head[lv] = h
            if h != a:
                behind[e] = True
                front[e] = add_ids[h] if h >= 0 else 0
        remaining[a] -= qtys[e]
        if remaining[a] <= 0:
            gone[a] = True
