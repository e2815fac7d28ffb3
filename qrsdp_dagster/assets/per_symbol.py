"""Run a step's partitions one symbol per thread: symbols are independent (each its own chain of
dates, its own files), so a run over several symbols keeps both cores busy. The heavy parts of
every step release the GIL (the compiled kernel and replay, LZ4, Parquet reading and writing).

Within a symbol the dates keep their order (the simulation chains them); results come back in the
order of the partitions given, so metadata and checks are reported as before. The first failure is
raised once the other symbols' threads have stopped (each finishes the partition it is on, and
none starts another).
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

STEP_THREADS = int(os.environ.get("QRSDP_STEP_THREADS", "") or min(os.cpu_count() or 1, 4))


def map_per_symbol(
    partitions: list[tuple[str, dt.date]],
    work: Callable[[str, dt.date], T],
    *,
    threads: int = STEP_THREADS,
) -> list[T]:
    """``work(symbol, date)`` for every partition (already in chain order), symbols in parallel."""
    by_symbol = [list(group) for _, group in itertools.groupby(partitions, key=lambda p: p[0])]
    results: dict[tuple[str, dt.date], T] = {}
    failed = threading.Event()

    def run_symbol(chain: list[tuple[str, dt.date]]) -> None:
        for symbol, date in chain:
            if failed.is_set():
                return
            try:
                results[(symbol, date)] = work(symbol, date)
            except BaseException:
                failed.set()
                raise

    if min(threads, len(by_symbol)) <= 1:
        for chain in by_symbol:
            run_symbol(chain)
    else:
        with ThreadPoolExecutor(
            max_workers=min(threads, len(by_symbol)), thread_name_prefix="qrsdp-step"
        ) as pool:
            futures = [pool.submit(run_symbol, chain) for chain in by_symbol]
            errors = [f.exception() for f in futures]
        first = next((e for e in errors if e is not None), None)
        if first is not None:
            raise first
    return [results[p] for p in partitions]
