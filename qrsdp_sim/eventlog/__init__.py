"""The ``.qrsdp`` event log: format, writer, reader, verification."""

from qrsdp_sim.eventlog.errors import EventLogError, TruncatedLogError
from qrsdp_sim.eventlog.format import ChunkInfo, IndexEntry, LogHeader
from qrsdp_sim.eventlog.writer import BinaryFileSink

__all__ = ["BinaryFileSink", "ChunkInfo", "EventLogError", "IndexEntry", "LogHeader", "TruncatedLogError"]
