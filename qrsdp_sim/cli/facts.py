"""``qrsdp facts``: score sessions against the stylized facts of real equity order books."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def facts_command(
    paths: Annotated[
        list[Path],
        typer.Argument(
            metavar="RUN_DIR|FILE...",
            help="Run directories (with their manifest.json) and/or .qrsdp files; every session is scored "
            "and the statistics are pooled over them.",
            show_default=False,
        ),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print the scorecard as JSON instead of a table.")] = False,
    plot: Annotated[
        Path | None,
        typer.Option("--plot", help="Also draw each fact against the literature into this PNG file."),
    ] = None,
    strict: Annotated[
        bool, typer.Option("--strict", help="Exit with status 1 when any applicable fact is not met.")
    ] = False,
) -> None:
    """Score sessions against the stylized facts of real equity order books.

    For each fact: our figure, the range reported for real equity order books with its source, and
    whether it is met (message mix, order lifecycle, order sizes, return autocorrelation, volatility
    clustering, fat tails, intraday U shape, inter-arrival dispersion, trade-sign memory, spread,
    cross-security correlation). Definitions and sources: docs/realism.md.
    """
    from rich.console import Console
    from rich.progress import Progress

    from qrsdp_sim.eventlog.errors import EventLogError
    from qrsdp_sim.facts import discover, measure_files, scorecard

    err = Console(stderr=True)
    try:
        sources, loading = discover(paths)
    except ValueError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(2) from None
    if not sources:
        typer.echo("Error: no sessions found in the given paths", err=True)
        raise typer.Exit(2)
    if plot is not None and plot.suffix.lower() != ".png":
        typer.echo(f"Error: --plot {plot}: expected a .png file name", err=True)
        raise typer.Exit(2)
    with Progress(console=err, transient=True, disable=not err.is_terminal) as bar:
        task = bar.add_task("measuring sessions", total=len(sources))
        try:
            sessions = measure_files(sources, progress=lambda _src: bar.advance(task))
        except (EventLogError, OSError) as exc:
            typer.echo(f"Error: {exc}", err=True)
            raise typer.Exit(1) from None
    results = scorecard(sessions, factor_loading=loading)
    if as_json:
        doc = {
            "sessions": len(sessions),
            "events": sum(s.events for s in sessions),
            "factor_loading": loading,
            "facts": [r.to_dict() for r in results],
        }
        typer.echo(json.dumps(doc, indent=1))
    else:
        _print_table(results, len(sessions), sum(s.events for s in sessions))
    if plot is not None:
        from qrsdp_sim.facts_plot import plot_facts

        plot_facts(sessions, plot, factor_loading=loading)
        err.print(f"plot: {plot}")
    if strict and any(r.met is False for r in results):
        raise typer.Exit(1)


def _print_table(results, n_sessions: int, n_events: int) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Stylized facts: {n_sessions} sessions, {n_events:,} events")
    table.add_column("fact")
    table.add_column("QRSDP", justify="right")
    table.add_column("real equity order books")
    table.add_column("source")
    table.add_column("met", justify="center")
    for r in results:
        mark = "[green]yes[/green]" if r.met else "[red]no[/red]" if r.met is False else "-"
        table.add_row(r.fact, r.value, r.real, r.source, mark)
    console = Console()
    console.print(table)
    met = sum(1 for r in results if r.met)
    applicable = sum(1 for r in results if r.met is not None)
    console.print(f"{met} of {applicable} applicable facts met")


def register(app: typer.Typer) -> None:
    app.command("facts", help="Score sessions against the stylized facts of real equity order books.")(
        facts_command
    )
