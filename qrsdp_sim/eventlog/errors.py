"""The one error type raised for unreadable or inconsistent ``.qrsdp`` files."""

from __future__ import annotations

from pathlib import Path


class EventLogError(ValueError):
    """A ``.qrsdp`` file is corrupt, truncated or inconsistent.

    Attributes ``path`` and ``offset`` name the file and the byte offset where the
    problem was found; ``reason`` is the bare explanation. ``str(err)`` combines all three.
    """

    def __init__(self, path: str | Path, offset: int, reason: str) -> None:
        self.path = str(path)
        self.offset = int(offset)
        self.reason = reason
        super().__init__(f"{self.path}: at byte {self.offset}: {reason}")


class TruncatedLogError(EventLogError):
    """The file ends inside a chunk or before its index: a session cut short.

    Every complete chunk before ``offset`` is still valid and has been returned.
    """
