"""``qrsdp log-info``: describe and verify ``.qrsdp`` files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from qrsdp_sim.eventlog.errors import EventLogError
from qrsdp_sim.eventlog.inspect import summarize, verify
from qrsdp_sim.timefmt import format_ts_ns


def log_info(
    files: Annotated[list[Path], typer.Argument(help="One or more .qrsdp files.", show_default=False)],
    do_verify: Annotated[
        bool,
        typer.Option(
            "--verify",
            help="Check every invariant (header, chunks, LZ4 payloads, timestamps, index, record fields); "
            "exit 1 with the reason if any file fails.",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object per file instead of tables.")] = False,
) -> None:
    """Show header fields, chunks, record counts by event type, time range and compression of .qrsdp files."""
    console = Console()
    failed = 0
    for path in files:
        if not path.is_file():
            console.print(f"[red]error:[/red] {path}: no such file")
            failed += 1
            continue
        try:
            summary = summarize(path)
        except EventLogError as exc:
            console.print(f"[red]error:[/red] {exc}")
            failed += 1
            continue
        check = verify(path) if do_verify else None
        if as_json:
            d = summary.to_dict()
            if check is not None:
                d["verify"] = {"ok": check.ok, "problems": check.problems}
            print(json.dumps(d))
        else:
            _print_summary(console, summary)
        if check is not None:
            if check.ok:
                if not as_json:
                    console.print(f"[green]verify OK[/green]: {check.records:,} records, every invariant holds")
            else:
                failed += 1
                for problem in check.problems:
                    console.print(f"[red]verify FAILED:[/red] {problem}")
    if failed:
        raise typer.Exit(1)


def _print_summary(console: Console, s) -> None:
    table = Table(title=str(s.path), show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value")
    h = s.header
    table.add_row("format", f"{h['version_major']}.{h['version_minor']}  record_size={h['record_size']}")
    for key in ("seed", "p0_ticks", "tick_size", "session_seconds", "levels_per_side", "initial_spread_ticks",
                "initial_depth", "chunk_capacity"):
        table.add_row(key, str(h[key]))
    table.add_row("index", "yes" if s.has_index else "no (file not closed, or cut short)")
    table.add_row("chunks", f"{s.chunk_count:,}")
    table.add_row("records", f"{s.records:,}")
    if s.records:
        table.add_row("time range", f"{format_ts_ns(s.first_ts_ns)} - {format_ts_ns(s.last_ts_ns)}")
    for name, count in s.counts_by_type.items():
        share = count / s.records if s.records else 0
        table.add_row(f"  {name}", f"{count:,}  ({share:.1%})")
    table.add_row("raw size", f"{s.raw_bytes:,} B")
    table.add_row("file size", f"{s.file_bytes:,} B")
    table.add_row("compression", f"{s.compression_ratio:.2f}x")
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("log-info")(log_info)
