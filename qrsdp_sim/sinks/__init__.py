"""Event sinks: where simulated record batches go."""

from qrsdp_sim.eventlog.writer import BinaryFileSink
from qrsdp_sim.sinks.base import EventSink
from qrsdp_sim.sinks.memory import InMemorySink
from qrsdp_sim.sinks.multiplex import MultiplexReport, MultiplexSink, SinkFailure

__all__ = ["BinaryFileSink", "EventSink", "InMemorySink", "MultiplexReport", "MultiplexSink", "SinkFailure"]
