"""The progress bars of ``qrsdp run``: one per security, on a terminal (or with ``QRSDP_PROGRESS`` set)."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress


def run_progress(console: Console | None = None) -> Progress:
    """Bars with the fields ``date`` and ``events``; disabled when stderr is not a terminal."""
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[bold]{task.description:<8}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[date]}  {task.fields[events]:>12,} events"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
        disable=not sys.stderr.isatty() and not os.environ.get("QRSDP_PROGRESS"),
    )
