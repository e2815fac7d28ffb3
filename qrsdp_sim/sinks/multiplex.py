"""``MultiplexSink``: best-effort fan-out to several sinks.

A sink that raises is logged, counted and isolated (it receives nothing more);
the others keep receiving every batch. Failures are reported in ``failures`` and
``report()`` -- never swallowed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from qrsdp_sim.sinks.base import EventSink

log = logging.getLogger(__name__)


@dataclass
class SinkFailure:
    sink: str
    operation: str
    error: str
    records_lost: int = 0


@dataclass
class MultiplexReport:
    sinks: list[str]
    failed_sinks: list[str]
    failures: list[SinkFailure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


class MultiplexSink:
    """Fan one stream out to several sinks, isolating failing ones.

    ``required`` names sinks whose failure must propagate (e.g. the ``.qrsdp`` file,
    the source of truth): their exceptions are re-raised after the others were fed.
    """

    def __init__(self, sinks: list[EventSink], names: list[str] | None = None, required: set[str] | None = None):
        self.sinks = list(sinks)
        self.names = names or [type(s).__name__ + f"#{i}" for i, s in enumerate(self.sinks)]
        if len(self.names) != len(self.sinks):
            raise ValueError("one name per sink")
        self.required = set(required or ())
        self._dead: set[int] = set()
        self.failures: list[SinkFailure] = []

    def _call(self, op: str, batch: np.ndarray | None = None) -> None:
        first_required_error: BaseException | None = None
        for i, sink in enumerate(self.sinks):
            if i in self._dead:
                if batch is not None:
                    self._lost(i, len(batch))
                continue
            try:
                if op == "append":
                    sink.append(batch)
                else:
                    getattr(sink, op)()
            except Exception as exc:
                name = self.names[i]
                self._dead.add(i)
                self.failures.append(
                    SinkFailure(name, op, f"{type(exc).__name__}: {exc}", len(batch) if batch is not None else 0)
                )
                log.warning("sink %s failed on %s and is isolated: %s", name, op, exc)
                if name in self.required and first_required_error is None:
                    first_required_error = exc
        if first_required_error is not None:
            raise first_required_error

    def _lost(self, i: int, n: int) -> None:
        name = self.names[i]
        for f in reversed(self.failures):
            if f.sink == name:
                f.records_lost += n
                return

    def append(self, batch: np.ndarray) -> None:
        self._call("append", batch)

    def flush(self) -> None:
        self._call("flush")

    def close(self) -> None:
        self._call("close")

    def report(self) -> MultiplexReport:
        return MultiplexReport(
            sinks=list(self.names),
            failed_sinks=[self.names[i] for i in sorted(self._dead)],
            failures=list(self.failures),
        )
