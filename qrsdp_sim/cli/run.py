"""``qrsdp run`` and ``qrsdp cli``: simulation commands (built with the engine)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Engine commands are registered here once the engine exists."""
