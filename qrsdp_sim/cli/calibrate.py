"""``qrsdp calibrate`` (alias ``qrsdp_calibrate``): HLR curves from ``.qrsdp`` logs.

Replays the logs, estimates lambda^L_i(n), lambda^C_i(n) and lambda^M(n) (events at queue
size n / exposure at n, see ``qrsdp_sim.calibration``), writes the curves JSON that
``qrsdp run --model hlr --hlr-curves`` reads, a PNG of estimated vs reference curves, and
prints which queue unit and which time each session was calibrated with, and the error
against the reference per curve.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, NoReturn

import typer


def _fail(message: str) -> NoReturn:
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(2)


def calibrate_command(
    logs: Annotated[
        list[Path],
        typer.Argument(
            metavar="LOGS...",
            help=".qrsdp files, run directories (with manifest.json) or directories searched for *.qrsdp. "
            "A log of a run (OUTPUT/SYMBOL/DATE.qrsdp next to OUTPUT/manifest.json) is calibrated with its "
            "session's queue unit, business clock and excitation, rebuilt from the manifest; any other log "
            "in calendar time.",
        ),
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Curves JSON to write (input of --hlr-curves).")
    ] = Path("hlr_curves.json"),
    plot: Annotated[
        Path | None,
        typer.Option("--plot", help="PNG of estimated vs reference curves (default: OUTPUT with .png)."),
    ] = None,
    no_plot: Annotated[bool, typer.Option("--no-plot", help="Do not draw the plot.")] = False,
    reference: Annotated[
        Path | None,
        typer.Option(
            "--reference",
            help="Reference curves JSON to compare with (default: the built-in HLR curves); its spread and "
            "imbalance sensitivities are the defaults of the two options below.",
        ),
    ] = None,
    n_max: Annotated[
        int, typer.Option("--n-max", help="Largest queue size with its own entry (larger ones are pooled).")
    ] = 100,
    spread_sens: Annotated[
        float | None,
        typer.Option(
            "--spread-sens",
            help="Spread sensitivity sS assumed for the exposure weights (default: reference's).",
        ),
    ] = None,
    imbalance_sens: Annotated[
        float | None,
        typer.Option(
            "--imbalance-sens",
            help="Imbalance sensitivity iS assumed for market orders (default: reference's).",
        ),
    ] = None,
    improve: Annotated[
        float, typer.Option("--improve", help="Improving-add probability per tick of spread beyond one.")
    ] = 0.5,
    queue_unit: Annotated[
        float | None,
        typer.Option(
            "--queue-unit",
            metavar="SHARES",
            help="Shares per queue unit (queue size n = ceil(shares / unit)) for logs without a manifest "
            "(default: their mean ADD size, rounded). Logs of a run use the run's unit.",
        ),
    ] = None,
    no_manifest: Annotated[
        bool,
        typer.Option(
            "--no-manifest",
            help="Ignore run manifests: every log in calendar time, without excitation, with --queue-unit "
            "or the mean ADD size.",
        ),
    ] = False,
    min_events: Annotated[
        int,
        typer.Option(
            "--min-events", help="Entries with fewer events are interpolated from their neighbours."
        ),
    ] = 10,
    error_min_events: Annotated[
        int,
        typer.Option(
            "--error-min-events", help="Entries compared with the reference need at least this many events."
        ),
    ] = 2000,
) -> None:
    """Estimate HLR intensity curves from .qrsdp logs by replaying the book.

    Queue sizes are in queue units; a market order (the EXECUTE records of one aggressive order) is
    one event. Exposure is business time weighted by the excitation multiplier for logs of a run,
    calendar time otherwise. Metaorders cannot be undone from a log (their sign is latent): calibrate
    runs made without them (--metaorder-share 0) to recover the curves exactly.
    """
    from qrsdp_sim.calibration import calibrate, curve_errors, log_files
    from qrsdp_sim.engine.models.hlr import HLRCurves, HLRCurvesError

    if n_max < 1:
        _fail(f"--n-max must be >= 1, got {n_max}")
    if min_events < 1 or error_min_events < 1:
        _fail("--min-events and --error-min-events must be >= 1")
    if not improve >= 0:
        _fail(f"--improve must be >= 0, got {improve}")
    if queue_unit is not None and not (math.isfinite(queue_unit) and queue_unit > 0):
        _fail(f"--queue-unit must be a number of shares > 0, got {queue_unit}")
    files = log_files(logs)
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        _fail(f"no such log file: {missing[0]}")
    if not files:
        _fail("no .qrsdp files found")
    try:
        ref = HLRCurves.load(reference) if reference is not None else None
    except HLRCurvesError as exc:
        _fail(f"--reference: {exc}")
    ref_ss = ref.spread_sensitivity if ref is not None else 0.3
    ref_is = ref.imbalance_sensitivity if ref is not None else 1.0
    plot_path = None if no_plot else (plot or output.with_suffix(".png"))
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        curves, stats = calibrate(
            files,
            output,
            n_max=n_max,
            spread_sensitivity=ref_ss if spread_sens is None else spread_sens,
            imbalance_sensitivity=ref_is if imbalance_sens is None else imbalance_sens,
            improve_per_tick=improve,
            min_events=min_events,
            queue_unit=queue_unit,
            use_manifests=not no_manifest,
        )
        if ref is None:
            ref = HLRCurves.default(stats.levels)
        if plot_path is not None:
            from qrsdp_sim.calibration import plot_curves

            plot_curves(stats, curves, ref, plot_path, min_events=min_events)
    except (OSError, ValueError) as exc:
        _fail(str(exc))
    typer.echo(
        f"{stats.sessions} session(s), {stats.events:,} model events over {stats.seconds:,.0f} s "
        f"({stats.business_seconds:,.0f} s of business time; {stats.improving_adds:,} improving adds, "
        f"{stats.unattributed:,} outside the windows)"
    )
    for line in stats.describe():
        typer.echo(line)
    typer.echo(f"curves: {output}" + (f"   plot: {plot_path}" if plot_path else ""))
    try:
        rows = curve_errors(stats, ref, min_events=error_min_events)
    except ValueError as exc:
        typer.echo(f"(no comparison with the reference: {exc})")
        return
    typer.echo(f"relative error vs reference, entries with >= {error_min_events:,} events:")
    typer.echo(f"  {'curve':<16}{'entries':>8}{'events':>12}{'max':>9}{'mean':>9}")
    for r in rows:
        if r.points:
            typer.echo(
                f"  {r.curve:<16}{r.points:>8}{r.events:>12,}{r.max_rel_error:>9.2%}{r.mean_rel_error:>9.2%}"
            )
        else:
            typer.echo(f"  {r.curve:<16}{0:>8}{0:>12}{'-':>9}{'-':>9}")


def register(app: typer.Typer) -> None:
    app.command(
        "calibrate",
        help="Estimate HLR intensity curves from .qrsdp logs (curves JSON for --hlr-curves + plot). "
        "Queue sizes are in queue units (n = ceil(shares / unit)); a market order that walks the queue is "
        "one event. Logs of a run are calibrated in business time weighted by the excitation multiplier, "
        "both rebuilt from the run's manifest.json; other logs in calendar time. Metaorders cannot be undone "
        "from a log (their sign is latent): calibrate runs made with --metaorder-share 0 for exact curves.",
    )(calibrate_command)
