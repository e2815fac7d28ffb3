"""The ``qrsdp`` command line (typer). Each subcommand lives in its own module.

The ``qrsdp_*`` aliases from the original plan (``qrsdp_run``, ``qrsdp_log_info`` ...)
are entry points that call the same subcommand.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable

# Before numpy is loaded: numba loads scipy's BLAS and numpy its own, and each OpenBLAS starts a
# worker thread per extra core that busy-waits for a while -- stealing the second core from the
# command's own start-up. No command does large linear algebra; the engine's threads are its
# parallelism. An explicit setting in the environment is respected.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import typer

# command -> the module that registers it (``qrsdp COMMAND`` imports only that module: the
# platform's commands pull in Kafka, ITCH and lake libraries that ``qrsdp run`` never needs)
COMMAND_MODULES = {
    "log-info": "log_info",
    "run": "run",
    "cli": "run",
    "facts": "facts",
    "stack": "stack",
    "demo": "platform",
    "backfill": "platform",
    "ui": "platform",
    "republish": "kafka",
    "parquet-consumer": "kafka",
    "calibrate": "calibrate",
    "itch-stream": "itch",
    "listen": "itch",
    "itch-export": "itch",
}
_MODULE_ORDER = ("log_info", "run", "facts", "stack", "platform", "kafka", "calibrate", "itch")  # as --help lists them


def _root(
    version: bool = typer.Option(False, "--version", help="Print the QRSDP version and exit.", is_eager=True),
) -> None:
    """QRSDP: synthetic exchange data (simulation, event logs, data platform, ITCH feed)."""
    if version:
        from importlib.metadata import version as pkg_version

        typer.echo(f"qrsdp {pkg_version('qrsdp')}")
        raise typer.Exit()


def build_app(command: str | None = None) -> typer.Typer:
    """The ``qrsdp`` app with every command, or only the commands of ``command``'s module."""
    app = typer.Typer(
        name="qrsdp",
        help="QRSDP: synthetic exchange data. Simulate limit-order-book sessions, inspect .qrsdp event logs, "
        "and run the data platform around them.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_show_locals=False,
        rich_markup_mode="markdown",
    )
    app.callback()(_root)
    names = [COMMAND_MODULES[command]] if command in COMMAND_MODULES else _MODULE_ORDER
    for name in names:
        importlib.import_module(f"qrsdp_sim.cli.{name}").register(app)
    return app


def __getattr__(name: str) -> typer.Typer:
    """``app``: the full app, built on first use (``from qrsdp_sim.cli import app``)."""
    if name == "app":
        full = build_app()
        globals()["app"] = full
        return full
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _app_for(argv: list[str]) -> typer.Typer:
    first = next((a for a in argv if not a.startswith("-")), None)
    return build_app(first) if first in COMMAND_MODULES else build_app()


# commands whose start-up loads the compiled kernels: the collector is off until they are loaded
# (qrsdp_sim.cli.startup; the command turns it back on)
DEFERRED_GC_COMMANDS = frozenset({"run"})


def _invoke(app_for: Callable[[], typer.Typer], command: str | None) -> None:
    from qrsdp_sim.cli import startup

    if command in DEFERRED_GC_COMMANDS:
        startup.defer_collection()
    try:
        app_for()()
    finally:
        startup.freeze_for_exit()


def main() -> None:
    argv = sys.argv[1:]
    _invoke(lambda: _app_for(argv), next((a for a in argv if not a.startswith("-")), None))


def _alias(command: str) -> Callable[[], None]:
    def entry() -> None:
        sys.argv[1:1] = [command]
        _invoke(lambda: build_app(command), command)

    entry.__name__ = f"{command.replace('-', '_')}_alias"
    return entry


run_alias = _alias("run")
cli_alias = _alias("cli")
log_info_alias = _alias("log-info")
calibrate_alias = _alias("calibrate")
itch_stream_alias = _alias("itch-stream")
listen_alias = _alias("listen")
