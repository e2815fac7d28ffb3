"""``qrsdp stack up|down|status``: the local Kafka (KRaft) and MinIO services from ``infra/``."""

from __future__ import annotations

import dataclasses

import typer

from qrsdp_sim import stack as _stack

stack_app = typer.Typer(
    name="stack",
    help="Run the data-platform services locally without Docker: a single-node Apache Kafka broker "
    "(KRaft, 127.0.0.1:9092) and a MinIO S3 server (127.0.0.1:9000), with their data under "
    "data/stack (QRSDP_STACK_DIR). Ports: QRSDP_KAFKA_PORT, QRSDP_MINIO_PORT; credentials: "
    "MINIO_ROOT_USER / MINIO_ROOT_PASSWORD (default qrsdp / qrsdp-secret). "
    "Same as infra/stack.sh; see docs/data-platform-services.md.",
    short_help="Local Kafka (KRaft) + MinIO services without Docker: up, down, status.",
    no_args_is_help=True,
)

_SERVICE_HELP = "Only this service: kafka or minio (default: both)."


def _fail(exc: Exception) -> None:
    typer.secho(str(exc), fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


def _service(name: str | None) -> _stack.Service | None:
    if name is None:
        return None
    if name not in _stack.SERVICES:
        raise typer.BadParameter(f"expected one of {', '.join(_stack.SERVICES)}", param_hint="--service")
    return name  # type: ignore[return-value]


@stack_app.command("up")
def up_cmd(
    service: str | None = typer.Option(None, "--service", "-s", help=_SERVICE_HELP),
    itch: bool = typer.Option(
        False,
        "--itch",
        help="Also start the ITCH streamer (qrsdp itch-stream) on the multicast feed; "
        "the same as QRSDP_STACK_ITCH=1.",
    ),
) -> None:
    """Start the services (fetching Kafka jars / building MinIO the first time), wait until they are healthy, and create topics exchange.events + exchange.events.dlq and bucket exchange-data. Idempotent: running services are left alone."""
    svc = _service(service)
    cfg = _stack.StackConfig.from_env()
    if itch:
        cfg = dataclasses.replace(cfg, itch=True)
    try:
        if svc is None:
            out = _stack.up(cfg, echo_install=True)
        else:
            _stack.install(cfg, echo=True)
            out = _stack.start_service(svc, cfg)
            if itch and svc == "kafka":
                out += _stack.start_itch(cfg)
    except _stack.StackError as exc:
        _fail(exc)
    typer.echo(out.rstrip())


@stack_app.command("down")
def down_cmd(
    service: str | None = typer.Option(None, "--service", "-s", help=_SERVICE_HELP),
    kill: bool = typer.Option(False, "--kill", help="SIGKILL at once instead of a graceful stop."),
) -> None:
    """Stop the services (SIGTERM, wait, then SIGKILL). Safe when nothing runs; data is kept."""
    svc = _service(service)
    cfg = _stack.StackConfig.from_env()
    try:
        if svc is None and not kill:
            out = _stack.down(cfg)
        else:
            out = _stack.stop_itch(cfg, kill=kill) if svc in (None, "kafka") else ""
            out += "".join(
                _stack.stop_service(s, cfg, kill=kill) for s in ((svc,) if svc else _stack.SERVICES)
            )
    except _stack.StackError as exc:
        _fail(exc)
    typer.echo(out.rstrip())


@stack_app.command("status")
def status_cmd() -> None:
    """Show what runs and whether it answers. Exit code 0 only when both services are healthy."""
    try:
        st = _stack.status()
    except _stack.StackError as exc:
        _fail(exc)
    typer.echo(st.text.rstrip())
    if not st.healthy:
        raise typer.Exit(3)


def register(app: typer.Typer) -> None:
    app.add_typer(stack_app, name="stack")
