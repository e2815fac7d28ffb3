"""``qrsdp stack up|down|status``: the local Kafka (KRaft) and MinIO services from ``infra/``, and with
``--distributed`` PostgreSQL, Redis and the Dagster processes (code server, webserver, daemon, Celery
workers) of the distributed profile."""

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
    "With --distributed also PostgreSQL (127.0.0.1:15432), Redis (127.0.0.1:16379), a Dagster code "
    "server, webserver (http://127.0.0.1:3000), daemon and Celery workers. "
    "Same as infra/stack.sh; see docs/data-platform-services.md.",
    short_help="Local Kafka (KRaft) + MinIO (+ PostgreSQL, Redis, Dagster workers) without Docker.",
    no_args_is_help=True,
)

_SERVICE_HELP = "Only this service: kafka, minio, postgres or redis (default: all of the profile)."


def _fail(exc: Exception) -> None:
    typer.secho(str(exc), fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


def _service(name: str | None) -> _stack.Service | None:
    if name is None:
        return None
    if name not in _stack.ALL_SERVICES:
        raise typer.BadParameter(f"expected one of {', '.join(_stack.ALL_SERVICES)}", param_hint="--service")
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
    distributed: bool = typer.Option(
        False,
        "--distributed",
        help="The distributed profile: also PostgreSQL, Redis, the Dagster code server, webserver and "
        "daemon, and Celery workers that run the Dagster runs (QRSDP_STACK_DISTRIBUTED=1). Remembered "
        "until `qrsdp stack down`.",
    ),
    workers: int | None = typer.Option(
        None, "--workers", min=1, help="Celery worker processes of the distributed profile (default 2)."
    ),
) -> None:
    """Start the services (fetching Kafka jars / building MinIO the first time; apt-get installs PostgreSQL and Redis for --distributed), wait until they are healthy, and create topics exchange.events + exchange.events.dlq and bucket exchange-data (and databases qrsdp_dagster, qrsdp_lake). Idempotent: running services are left alone."""
    svc = _service(service)
    cfg = _stack.StackConfig.from_env()
    if itch:
        cfg = dataclasses.replace(cfg, itch=True)
    if distributed:
        cfg = dataclasses.replace(cfg, distributed=True)
    if workers is not None:
        cfg = dataclasses.replace(cfg, workers=workers)
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
            out = _stack.stop_dagster(cfg, kill=kill) if svc is None else ""
            out += _stack.stop_itch(cfg, kill=kill) if svc in (None, "kafka") else ""
            out += "".join(
                _stack.stop_service(s, cfg, kill=kill) for s in ((svc,) if svc else _stack.ALL_SERVICES)
            )
    except _stack.StackError as exc:
        _fail(exc)
    typer.echo(out.rstrip())


@stack_app.command("status")
def status_cmd() -> None:
    """Show what runs and whether it answers: one line per service (with the distributed profile also postgres, redis, code-server, webserver, daemon and worker-N). Exit code 0 only when every listed service is healthy, else 3."""
    try:
        st = _stack.status()
    except _stack.StackError as exc:
        _fail(exc)
    typer.echo(st.text.rstrip())
    if not st.healthy:
        raise typer.Exit(3)


def register(app: typer.Typer) -> None:
    app.add_typer(stack_app, name="stack")
