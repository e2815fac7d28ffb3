"""Python front end to ``infra/stack.sh``: the local Kafka (KRaft) and MinIO services.

The script does the work (install, start, health checks, topics, bucket, stop); this module runs it
with a chosen configuration and turns failures into :class:`StackError` carrying the script's output
and the tail of the service log. Tests use it through ``tests/services.py``; people use it through
``qrsdp stack up|down|status``.

    cfg = StackConfig.from_env()          # the same defaults as the script
    up(cfg)                               # idempotent
    stop_service("kafka", cfg)            # fault tests: one service down ...
    start_service("kafka", cfg)           # ... and back
    down(cfg)
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Service = Literal["kafka", "minio"]
SERVICES: tuple[Service, ...] = ("kafka", "minio")

EVENTS_TOPIC = "exchange.events"
DLQ_TOPIC = "exchange.events.dlq"
BUCKET = "exchange-data"
DEFAULT_USER = "qrsdp"
DEFAULT_PASSWORD = "qrsdp-secret"


def project_root() -> Path:
    """The project folder (the one holding ``infra/stack.sh``)."""
    here = Path(__file__).resolve().parent.parent
    if (here / "infra" / "stack.sh").is_file():
        return here
    cwd = Path.cwd()
    for d in (cwd, *cwd.parents):
        if (d / "infra" / "stack.sh").is_file():
            return d
    raise StackError("cannot find infra/stack.sh (run from the QRSDP project folder)")


class StackError(RuntimeError):
    """A stack command failed; the message holds the script's output and the service log tail."""


@dataclass(frozen=True)
class StackConfig:
    """Where the services live and listen. Defaults match ``infra/stack.sh``."""

    stack_dir: Path | None = None  # None: <project>/data/stack
    kafka_port: int = 9092
    controller_port: int | None = None  # None: kafka_port + 1
    minio_port: int = 9000
    access_key: str = DEFAULT_USER
    secret_key: str = DEFAULT_PASSWORD
    timeout_s: float = 90.0
    itch: bool = False  # up/down/status include the ITCH streamer (QRSDP_STACK_ITCH=1); opt-in
    extra_env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> StackConfig:
        env = os.environ if environ is None else environ
        sd = env.get("QRSDP_STACK_DIR")
        cp = env.get("QRSDP_KAFKA_CONTROLLER_PORT")
        return cls(
            stack_dir=Path(sd) if sd else None,
            kafka_port=int(env.get("QRSDP_KAFKA_PORT", 9092)),
            controller_port=int(cp) if cp else None,
            minio_port=int(env.get("QRSDP_MINIO_PORT", 9000)),
            access_key=env.get("MINIO_ROOT_USER", DEFAULT_USER),
            secret_key=env.get("MINIO_ROOT_PASSWORD", DEFAULT_PASSWORD),
            timeout_s=float(env.get("QRSDP_STACK_TIMEOUT", 90)),
            itch=env.get("QRSDP_STACK_ITCH", "0").strip().lower() in ("1", "true", "yes"),
        )

    @property
    def data_dir(self) -> Path:
        return self.stack_dir if self.stack_dir is not None else project_root() / "data" / "stack"

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def s3_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.minio_port}"

    def log_file(self, service: Service) -> Path:
        if service == "kafka":
            return self.data_dir / "kafka" / "logs" / "kafka.out"
        return self.data_dir / "minio" / "logs" / "minio.log"

    def env(self) -> dict[str, str]:
        """Environment for the script: this process's, plus this configuration."""
        e = dict(os.environ)
        e.update(
            QRSDP_KAFKA_PORT=str(self.kafka_port),
            QRSDP_MINIO_PORT=str(self.minio_port),
            MINIO_ROOT_USER=self.access_key,
            MINIO_ROOT_PASSWORD=self.secret_key,
            QRSDP_STACK_TIMEOUT=str(int(self.timeout_s)),
            # Explicit, so a private (test) stack never starts a streamer because of the caller's env.
            QRSDP_STACK_ITCH="1" if self.itch else "0",
            # The probes need confluent_kafka and boto3: this interpreter has them.
            QRSDP_PYTHON=e.get("QRSDP_PYTHON", sys.executable),
        )
        if self.stack_dir is not None:
            e["QRSDP_STACK_DIR"] = str(self.stack_dir)
        if self.controller_port is not None:
            e["QRSDP_KAFKA_CONTROLLER_PORT"] = str(self.controller_port)
        e.update(self.extra_env)
        return e

    def s3_client(self):  # -> botocore S3 client (untyped library)
        """A boto3 S3 client for this MinIO (path-style addressing)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.s3_endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3, "mode": "standard"}),
        )


@dataclass(frozen=True)
class ServiceStatus:
    name: Service
    running: bool
    healthy: bool
    pid: int | None
    address: str


@dataclass(frozen=True)
class StackStatus:
    kafka: ServiceStatus
    minio: ServiceStatus
    data_dir: Path
    text: str

    @property
    def healthy(self) -> bool:
        return self.kafka.healthy and self.minio.healthy


def _log_tail(path: Path, lines: int = 40) -> str:
    """The last lines of a service log, from its most recent start only."""
    try:
        content = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    starts = [i for i, line in enumerate(content) if line.startswith("=== start ")]
    if starts:
        content = content[starts[-1] :]
    return "\n".join(content[-lines:])


def run_script(
    *args: str,
    config: StackConfig | None = None,
    check: bool = True,
    timeout_s: float | None = None,
    services: tuple[Service, ...] = SERVICES,
    capture: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run ``infra/stack.sh ARGS``; on failure raise :class:`StackError` with output and log tails.

    With ``capture=False`` the script writes to this process's terminal (progress of long installs)
    and the returned ``stdout`` is empty."""
    cfg = config or StackConfig.from_env()
    script = project_root() / "infra" / "stack.sh"
    # Bounded: the health waits are bounded by cfg.timeout_s; a first install (MinIO build) is not.
    limit = timeout_s if timeout_s is not None else cfg.timeout_s * 2 + 120
    try:
        proc = subprocess.run(
            ["bash", str(script), *args],
            env=cfg.env(),
            capture_output=capture,
            text=True,
            timeout=limit,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise StackError(
            f"infra/stack.sh {' '.join(args)} did not finish within {limit:.0f}s" + _tails(cfg, services)
        ) from exc
    if not capture:
        proc = subprocess.CompletedProcess(proc.args, proc.returncode, "", "")
    if check and proc.returncode != 0:
        raise StackError(
            f"infra/stack.sh {' '.join(args)} failed (exit {proc.returncode})\n"
            f"{proc.stdout.strip()}\n{proc.stderr.strip()}" + _tails(cfg, services)
        )
    return proc


def _tails(cfg: StackConfig, services: tuple[Service, ...]) -> str:
    out = ""
    for s in services:
        tail = _log_tail(cfg.log_file(s))
        if tail:
            out += f"\n--- {s} log tail ({cfg.log_file(s)}) ---\n{tail}"
    return out


def install(config: StackConfig | None = None, *, echo: bool = False) -> str:
    """Fetch the Kafka jars and build MinIO if missing (the first MinIO build takes minutes).

    ``echo`` lets the script print its progress straight to the terminal."""
    return run_script("install", config=config, timeout_s=3600, capture=not echo).stdout


def up(config: StackConfig | None = None, *, echo_install: bool = False) -> str:
    """Start Kafka and MinIO (installing first if needed), wait until healthy, create topics and bucket."""
    cfg = config or StackConfig.from_env()
    install(cfg, echo=echo_install)
    return run_script("up", config=cfg).stdout


def down(config: StackConfig | None = None) -> str:
    """Stop both services (SIGTERM, then SIGKILL after a grace period). Safe when nothing runs."""
    return run_script("down", config=config).stdout


def start_itch(config: StackConfig | None = None) -> str:
    """Start the ITCH streamer (``qrsdp itch-stream``) against the stack's Kafka; idempotent."""
    return run_script("itch-start", config=config, services=("kafka",), timeout_s=120).stdout


def stop_itch(config: StackConfig | None = None, *, kill: bool = False) -> str:
    """Stop the ITCH streamer (SIGTERM: it commits and exits; SIGKILL after 20 s, or at once with ``kill``)."""
    args = ("itch-stop", "kill") if kill else ("itch-stop",)
    return run_script(*args, config=config, services=("kafka",), timeout_s=120).stdout


def start_service(service: Service, config: StackConfig | None = None) -> str:
    """Start one service and wait until it is healthy."""
    _check_service(service)
    return run_script(f"{service}-start", config=config, services=(service,)).stdout


def stop_service(service: Service, config: StackConfig | None = None, *, kill: bool = False) -> str:
    """Stop one service: gracefully, or with SIGKILL at once when ``kill``."""
    _check_service(service)
    args = (f"{service}-stop", "kill") if kill else (f"{service}-stop",)
    return run_script(*args, config=config, services=(service,)).stdout


_STATUS_RE = re.compile(
    r"^(?P<name>kafka|minio) (?P<state>running|stopped)(?: pid=(?P<pid>\d+))? address=(?P<addr>\S+)"
    r"(?: health=(?P<health>\w+))?$"
)


def status(config: StackConfig | None = None) -> StackStatus:
    """What runs and whether it answers."""
    cfg = config or StackConfig.from_env()
    proc = run_script("status", config=cfg, check=False, timeout_s=60)
    if proc.returncode not in (0, 3):
        raise StackError(f"infra/stack.sh status failed (exit {proc.returncode})\n{proc.stderr.strip()}")
    found: dict[str, ServiceStatus] = {}
    for line in proc.stdout.splitlines():
        m = _STATUS_RE.match(line.strip())
        if m:
            found[m["name"]] = ServiceStatus(
                name=m["name"],  # type: ignore[arg-type]
                running=m["state"] == "running",
                healthy=m["health"] == "healthy",
                pid=int(m["pid"]) if m["pid"] else None,
                address=m["addr"],
            )
    missing = [s for s in SERVICES if s not in found]
    if missing:
        raise StackError(f"unexpected output from infra/stack.sh status:\n{proc.stdout}")
    return StackStatus(kafka=found["kafka"], minio=found["minio"], data_dir=cfg.data_dir, text=proc.stdout)


def _check_service(service: str) -> None:
    if service not in SERVICES:
        raise ValueError(f"unknown service {service!r}; expected one of {', '.join(SERVICES)}")
