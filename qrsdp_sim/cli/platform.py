"""``qrsdp demo`` and ``qrsdp ui``: the data platform (Dagster + Parquet lake + dbt/DuckDB).

``qrsdp demo`` runs the pipeline (simulate -> land -> replay -> dbt build + tests) for a
few symbols and trading dates on the embedded default and prints where everything went.
``qrsdp ui`` starts the Dagster webserver and daemon on 127.0.0.1 with a persistent
DAGSTER_HOME under the data dir (the demo's runs show up there too).
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

DAGSTER_YAML = """\
# Written by `qrsdp ui` / `qrsdp demo`. Local, persistent Dagster instance for QRSDP.
telemetry:
  enabled: false
# Dagster's queued run coordinator, which also refuses (cancels before queuing, with the reason)
# a run whose sessions cannot chain: see qrsdp_dagster/run_coordinator.py
run_coordinator:
  module: qrsdp_dagster.run_coordinator
  class: ChainCheckingRunCoordinator
  config:
    max_concurrent_runs: 4
concurrency:
  pools:
    # the dbt step (pool qrsdp_duckdb) writes the DuckDB file: one at a time
    default_limit: 1
"""

# What earlier versions wrote; replaced by the above when found unchanged.
_FORMER_DAGSTER_YAMLS = (
    DAGSTER_YAML.split("# Dagster's queued")[0]
    + "concurrency:\n  runs:\n    max_concurrent_runs: 4\n  pools:\n"
    "    # the dbt step (pool qrsdp_duckdb) writes the DuckDB file: one at a time\n    default_limit: 1\n",
)

EXAMPLE_QUERY = """\
select symbol, date, n_events, n_trades, open, close,
       round(time_weighted_spread_ticks, 3) as twa_spread_ticks,
       round(events_per_second, 1) as events_per_s
from marts.fct_session_summary
order by symbol, date"""


def _set_data_dir(data_dir: Path | None) -> None:
    """Must run before qrsdp_dagster is imported (it reads the environment once)."""
    if data_dir is not None:
        os.environ["QRSDP_DATA_DIR"] = str(data_dir.expanduser().resolve())


def _project_root() -> Path:
    """The checkout holding workspace.yaml and dbt_project/ (same rule as qrsdp_dagster.settings,
    without importing the Dagster definitions)."""
    here = Path(__file__).resolve().parents[2]
    return here if (here / "pyproject.toml").is_file() else Path.cwd()


def ensure_dagster_home(data_dir: Path) -> Path:
    """``<data_dir>/dagster`` with a dagster.yaml (created once; later edits are kept)."""
    home = data_dir / "dagster"
    home.mkdir(parents=True, exist_ok=True)
    cfg = home / "dagster.yaml"
    if not cfg.exists() or cfg.read_text() in _FORMER_DAGSTER_YAMLS:
        cfg.write_text(DAGSTER_YAML)
    return home


def demo(
    days: Annotated[int, typer.Option(min=1, max=5, help="Trading dates per symbol (2-5 recommended).")] = 3,
    session_seconds: Annotated[int, typer.Option(min=60, help="Simulated seconds per session.")] = 3600,
    symbols: Annotated[
        str | None, typer.Option(help="Comma-separated symbols (default: QRSDP_SYMBOLS, i.e. AAPL,MSFT).")
    ] = None,
    start_date: Annotated[
        str | None, typer.Option(help="First trading date YYYY-MM-DD (default: QRSDP_START_DATE).")
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Data directory (default: QRSDP_DATA_DIR or ./data).")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show the Dagster and dbt logs.")] = False,
) -> None:
    """Run the data pipeline on the embedded default and show where the files, lake and marts are."""
    from rich.console import Console

    console = Console(width=max(100, Console().width))
    _set_data_dir(data_dir)
    if symbols:
        os.environ["QRSDP_SYMBOLS"] = symbols
    if start_date:
        os.environ["QRSDP_START_DATE"] = start_date
    started = time.perf_counter()
    from qrsdp_dagster.settings import SETTINGS

    os.environ["DAGSTER_HOME"] = str(ensure_dagster_home(SETTINGS.data_dir))
    import dagster as dg

    from qrsdp_dagster.definitions import defs
    from qrsdp_sim.engine.calendar import trading_dates

    syms = list(SETTINGS.symbols)
    dates = trading_dates(SETTINGS.start_date, days)
    console.print(
        f"[bold]QRSDP demo[/bold]: {len(syms)} symbols x {days} trading dates "
        f"({dates[0]} .. {dates[-1]}), {session_seconds:,} s sessions, data in {SETTINGS.data_dir}"
    )
    instance = dg.DagsterInstance.get()
    # dagster-dbt echoes every dbt log line to stdout; keep it for --verbose only
    quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with quiet:
        result = _run_pipeline(defs, instance, syms, dates, session_seconds, verbose)
    checks = [
        e.asset_check_evaluation_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    ]
    passed = sum(1 for c in checks if c.passed)
    if not result.success:
        failures = [e.message for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
        console.print(f"[red]pipeline run {result.run_id} failed[/red]")
        for msg in failures:
            console.print(f"  {msg}")
        raise typer.Exit(1)
    wall = time.perf_counter() - started
    _print_locations(console, SETTINGS, syms, dates)
    console.print(f"dbt tests: [green]{passed}/{len(checks)} passed[/green]; Dagster run {result.run_id}")
    console.print(f"\n[bold]Example query[/bold] (duckdb {SETTINGS.duckdb_path}):\n{EXAMPLE_QUERY}\n")
    import duckdb

    with duckdb.connect(str(SETTINGS.duckdb_path), read_only=True) as con:
        print(con.sql(EXAMPLE_QUERY), flush=True)
    console.print(f"done in {wall:.1f} s. Browse the runs and the asset graph with: [bold]uv run qrsdp ui[/bold]")


def _run_pipeline(defs, instance, symbols, dates, session_seconds: int, verbose: bool):
    from qrsdp_dagster.partitions import range_tags

    return defs.resolve_job_def("qrsdp_pipeline").execute_in_process(
        instance=instance,
        tags={**range_tags(symbols, dates[0], dates[-1]), "qrsdp/trigger": "qrsdp demo"},
        run_config={
            "resources": {"simulation": {"config": {"session_seconds": session_seconds}}},
            "loggers": {"console": {"config": {"log_level": "DEBUG" if verbose else "WARNING"}}},
        },
        raise_on_error=False,
    )


def _print_locations(console, settings, symbols: list[str], dates: list) -> None:
    from qrsdp_sim.lake import Lake

    files = sorted(settings.sessions_dir.glob("*/*.qrsdp"))
    size = sum(f.stat().st_size for f in files)
    console.print(
        f"\n[bold].qrsdp event logs[/bold]: {settings.sessions_dir}  ({len(files)} files, {size:,} bytes)"
    )
    for sym in symbols:
        console.print(
            f"  {settings.sessions_dir / sym}/{{{','.join(d.isoformat() for d in dates)}}}.qrsdp (+ .json)"
        )
    lake = Lake.from_uri(settings.lake_uri)
    console.print(f"[bold]Parquet lake[/bold]: {lake.uri}")
    for table in ("events", "book_states", "sessions"):
        markers = lake.complete_partitions(table)
        rows = sum(m.rows for m in markers)
        console.print(f"  raw/{table}/symbol=*/date=*/  {len(markers)} complete partitions, {rows:,} rows")
    import duckdb

    console.print(f"[bold]DuckDB marts[/bold]: {settings.duckdb_path}")
    with duckdb.connect(str(settings.duckdb_path), read_only=True) as con:
        for schema, name, kind in con.sql(
            "select schema_name, table_name, 'table' from duckdb_tables() "
            "union all select schema_name, view_name, 'view' from duckdb_views() where not internal "
            "order by 1, 2"
        ).fetchall():
            n = (
                con.sql(f'select count(*) from "{schema}"."{name}"').fetchone()[0]
                if kind == "table"
                else None
            )
            console.print(f"  {schema}.{name} ({kind}{f', {n:,} rows' if n is not None else ''})")


def ui(
    port: Annotated[int, typer.Option(help="Port of the web UI (bound to 127.0.0.1 only).")] = 3000,
    data_dir: Annotated[
        Path | None, typer.Option(help="Data directory (default: QRSDP_DATA_DIR or ./data).")
    ] = None,
) -> None:
    """Start the Dagster web UI and daemon (sensor, schedule, backfills) on 127.0.0.1; Ctrl-C stops both."""
    _set_data_dir(data_dir)
    root = _project_root()
    data = Path(os.environ.get("QRSDP_DATA_DIR", "").strip() or root / "data").expanduser().resolve()
    env = dict(os.environ)
    env["DAGSTER_HOME"] = str(ensure_dagster_home(data))
    env["QRSDP_DATA_DIR"] = str(data)
    exe = Path(sys.executable).with_name("dagster")
    cmd = [str(exe) if exe.exists() else "dagster", "dev", "-w", str(root / "workspace.yaml"),
           "-h", "127.0.0.1", "-p", str(port)]  # fmt: skip
    typer.echo(f"Dagster UI on http://127.0.0.1:{port} (DAGSTER_HOME={env['DAGSTER_HOME']}); Ctrl-C to stop")
    proc = subprocess.Popen(cmd, cwd=root, env=env, start_new_session=True)
    stop_requested: list[float] = []

    def forward(signum, frame) -> None:
        # dagster dev stops its webserver, daemon and code servers on SIGINT; forward any way
        # we are asked to stop (Ctrl-C, SIGTERM, hang-up). No waiting here: the loop below reaps.
        if not stop_requested:
            stop_requested.append(time.monotonic())
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    while True:
        try:
            code = proc.wait(timeout=1)
            break
        except subprocess.TimeoutExpired:
            if stop_requested and time.monotonic() - stop_requested[0] > 30:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
    raise typer.Exit(0 if stop_requested else code)


def backfill(
    first: Annotated[str, typer.Option("--from", help="First trading date YYYY-MM-DD.")],
    last: Annotated[str, typer.Option("--to", help="Last trading date YYYY-MM-DD.")],
    symbols: Annotated[
        str | None, typer.Option(help="Comma-separated symbols (default: every configured symbol).")
    ] = None,
    url: Annotated[
        str, typer.Option(help="The Dagster webserver (the distributed stack's, or `qrsdp ui`'s).")
    ] = "http://127.0.0.1:3000",
) -> None:
    """Launch one backfill per symbol (each one run over its dates, in order) through the webserver."""
    import datetime as dt
    from urllib.parse import urlparse

    from dagster_graphql import DagsterGraphQLClient

    from qrsdp_dagster import backfill as backfills
    from qrsdp_dagster.definitions import defs
    from qrsdp_dagster.settings import SETTINGS

    configured = list(SETTINGS.symbols)
    chosen = [s.strip() for s in symbols.split(",") if s.strip()] if symbols else configured
    unknown = sorted(set(chosen) - set(configured))
    if unknown:
        raise typer.BadParameter(f"{unknown} not configured (QRSDP_SYMBOLS={','.join(configured)})", param_hint="--symbols")
    try:
        plan = backfills.plan(chosen, dt.date.fromisoformat(first), dt.date.fromisoformat(last))
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    parsed = urlparse(url if "://" in url else f"http://{url}")
    client = DagsterGraphQLClient(parsed.hostname or "127.0.0.1", port_number=parsed.port, timeout=120)
    keys = [k.path for k in defs.resolve_asset_graph().get_all_asset_keys()]
    try:
        ids = backfills.launch(client, plan, keys, {"qrsdp/trigger": "qrsdp backfill"})
    except backfills.BackfillError as exc:
        typer.echo(f"backfill: error: {exc}", err=True)
        raise typer.Exit(1) from None
    for symbol, backfill_id in ids.items():
        typer.echo(f"{symbol}: backfill {backfill_id} ({len(plan[0].dates)} trading dates, one run)")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
    app.command("backfill")(backfill)
    app.command("ui")(ui)
