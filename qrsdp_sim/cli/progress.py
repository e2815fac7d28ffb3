"""The progress bars of ``qrsdp run``: one per security, on a terminal (or with ``QRSDP_PROGRESS`` set)."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress


class NoProgress:
    """What :func:`run_progress` returns when no bar is shown: the same calls, doing nothing, without
    importing rich's progress module (≈ 45 ms of every scripted ``qrsdp run``'s start-up)."""

    def __enter__(self) -> NoProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, description: str, **fields: Any) -> int:
        return 0

    def update(self, task: int, **fields: Any) -> None:
        return None


def progress_shown() -> bool:
    return sys.stderr.isatty() or bool(os.environ.get("QRSDP_PROGRESS"))


def run_progress(console: Console | None = None) -> Progress | NoProgress:
    """Bars with the fields ``date`` and ``events``; none when stderr is not a terminal."""
    if not progress_shown():
        return NoProgress()
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[bold]{task.description:<8}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[date]}  {task.fields[events]:>12,} events"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
