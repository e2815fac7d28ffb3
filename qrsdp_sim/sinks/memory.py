"""``InMemorySink``: keeps every batch; for tests and small interactive runs."""

from __future__ import annotations

import numpy as np

from qrsdp_sim.records import RECORD_DTYPE


class InMemorySink:
    def __init__(self) -> None:
        self._batches: list[np.ndarray] = []
        self.closed = False

    def append(self, batch: np.ndarray) -> None:
        if batch.dtype != RECORD_DTYPE:
            raise TypeError(f"expected records of RECORD_DTYPE, got {batch.dtype}")
        self._batches.append(batch.copy())

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    @property
    def records(self) -> np.ndarray:
        """Every record received, concatenated."""
        if not self._batches:
            return np.empty(0, dtype=RECORD_DTYPE)
        if len(self._batches) > 1:
            self._batches = [np.concatenate(self._batches)]
        return self._batches[0]

    def __len__(self) -> int:
        return sum(len(b) for b in self._batches)
