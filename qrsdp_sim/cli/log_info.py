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
            help="Check the container (header, chunks, LZ4 payloads, index) and, separately, the stream: "
            "record fields and a replay of the order book (unknown orders, overfills, crossed book, executions "
            "away from the best or behind older orders). Prints the first violation with its record number; "
            "exit 1 if any file fails.",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object per file instead of tables.")] = False,
) -> None:
    """Show header fields, chunks, record counts by event type, time range and compression of .qrsdp files."""
    console = Console()
    failed = 0
    for path in files:
        if not path.is_file():
            what = "a directory, not a .qrsdp file" if path.is_dir() else "no such file"
            console.print(f"[red]error:[/red] {path}: {what}")
            failed += 1
            continue
        try:
            summary = summarize(path)
        except (EventLogError, OSError) as exc:
            failed += 1
            message = str(exc) if isinstance(exc, EventLogError) else f"{path}: cannot read the file: {exc}"
            check = verify(path) if do_verify else None
            if as_json:
                print(json.dumps({"path": str(path), "error": message,
                                  **({"verify": check.to_dict()} if check else {})}))
            else:
                console.print(f"[red]error:[/red] {message}")
                if check is not None:
                    _print_verify(console, check)
            continue
        check = verify(path) if do_verify else None
        if as_json:
            d = summary.to_dict()
            if check is not None:
                d["verify"] = check.to_dict()
            print(json.dumps(d))
        else:
            _print_summary(console, summary)
        if check is not None:
            if not as_json:
                _print_verify(console, check)
            if not check.ok:
                failed += 1
    if failed:
        raise typer.Exit(1)


def _print_verify(console: Console, check) -> None:
    """Two lines: the container's checks, then the stream's (first violation with its record number)."""
    if check.container_ok:
        console.print(f"[green]container OK[/green]: {', '.join(check.container_checks)}")
    else:
        for problem in check.container_problems:
            console.print(f"[red]container FAILED:[/red] {problem}")
    stream = check.stream
    if stream is None:
        console.print("[yellow]stream not checked[/yellow]: the records could not be read")
        return
    if stream.ok:
        console.print(f"[green]stream OK[/green]: {stream.records:,} records, {len(stream.checks)} checks "
                      f"({', '.join(stream.checks)})")
        return
    first = stream.first
    console.print(f"[red]stream FAILED[/red] ({first.check}): {first.message}")
    others = [f"{v.check} x{v.count:,} (first record {v.record})" for v in stream.violations if v is not first]
    if others:
        console.print(f"  also: {'; '.join(others)}")
    if stream.skipped:
        console.print(f"  not checked: {'; '.join(f'{k} ({why})' for k, why in stream.skipped.items())}")


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
