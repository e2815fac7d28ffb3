"""The sink interface every event consumer implements."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class EventSink(Protocol):
    """Receives batches of records (numpy arrays of ``RECORD_DTYPE``).

    ``append`` takes a whole batch: producers never call a sink once per event.
    ``close`` publishes whatever the sink produces (a file, a topic's last
    messages) and must be safe to call twice.
    """

    def append(self, batch: np.ndarray) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...
