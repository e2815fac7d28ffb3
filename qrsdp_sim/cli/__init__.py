"""The ``qrsdp`` command line (typer). Each subcommand lives in its own module.

The ``qrsdp_*`` aliases from the original plan (``qrsdp_run``, ``qrsdp_log_info`` ...)
are entry points that call the same subcommand.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import typer

app = typer.Typer(
    name="qrsdp",
    help="QRSDP: synthetic exchange data. Simulate limit-order-book sessions, inspect .qrsdp event logs, "
    "and run the data platform around them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode="markdown",
)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", help="Print the QRSDP version and exit.", is_eager=True),
) -> None:
    """QRSDP: synthetic exchange data (simulation, event logs, data platform, ITCH feed)."""
    if version:
        from importlib.metadata import version as pkg_version

        typer.echo(f"qrsdp {pkg_version('qrsdp')}")
        raise typer.Exit()


def _register() -> None:
    from qrsdp_sim.cli import calibrate, facts, itch, kafka, log_info, platform, run, stack

    for module in (log_info, run, facts, stack, platform, kafka, calibrate, itch):
        module.register(app)


_register()


def main() -> None:
    app()


def _alias(command: str) -> Callable[[], None]:
    def entry() -> None:
        sys.argv[1:1] = [command]
        app()

    entry.__name__ = f"{command.replace('-', '_')}_alias"
    return entry


run_alias = _alias("run")
cli_alias = _alias("cli")
log_info_alias = _alias("log-info")
calibrate_alias = _alias("calibrate")
itch_stream_alias = _alias("itch-stream")
listen_alias = _alias("listen")
