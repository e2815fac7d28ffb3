"""Python front end to ``infra/stack.sh``: the local Kafka (KRaft) and MinIO services, and the
distributed profile's PostgreSQL, Redis and Dagster processes (code server, webserver, daemon, workers).

The script does the work (install, start, health checks, topics, bucket, stop); this module runs it
with a chosen configuration and turns failures into :class:`StackError` carrying the script's output
and the tail of the service log. Tests use it through ``tests/services.py``; people use it through
``qrsdp stack up [--distributed]|down|status``.

    cfg = StackConfig.from_env()          # the same defaults as the script
    up(cfg)                               # idempotent
    stop_service("kafka", cfg)            # fault tests: one service down ...
    start_service("kafka", cfg)           # ... and back
    stop_worker(1, cfg, kill=True)        # a Celery worker's process group gets SIGKILL
    down(cfg)
"""

from __future__ import annotations

import os
import random
import re
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Service = Literal["kafka", "minio", "postgres", "redis"]
SERVICES: tuple[Service, ...] = ("kafka", "minio")  # the default stack
DISTRIBUTED_SERVICES: tuple[Service, ...] = ("postgres", "redis")  # added by the distributed profile
ALL_SERVICES: tuple[Service, ...] = SERVICES + DISTRIBUTED_SERVICES

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


_EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST_PRIVATE_PORT = 20000  # above the services' default ports (9092, 9000/9001, 5432, 6379, 3000, 4000, 16379)


def private_port_range() -> range:
    """The ports a private stack listens on: outside the kernel's ephemeral range.

    Every outgoing connection and every ``bind(port 0)`` on the machine takes its port from the ephemeral
    range, so a port picked there can be taken by a client socket or another process's listener between
    the pick and the service's start (a chaos soak restarting MinIO found its port "in use"), and a
    connection to it while the service is down can even connect to itself (TCP simultaneous open). Below
    the range neither happens."""
    try:
        low, high = (int(x) for x in _EPHEMERAL_RANGE_FILE.read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999  # Linux's default
    if low - _LOWEST_PRIVATE_PORT >= 1000:
        return range(_LOWEST_PRIVATE_PORT, low)
    if 65535 - high >= 1000:
        return range(high + 1, 65535)
    raise StackError(f"no room outside the ephemeral port range {low}-{high} for a private stack's ports")


def _bindable(port: int, kind: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(taken: set[int] | None = None, kind: int = socket.SOCK_STREAM, *, pair: bool = False) -> int:
    """A port on 127.0.0.1 that is free now, outside the ephemeral range (see :func:`private_port_range`)
    and not in ``taken`` (it is added to it); with ``pair`` the one above it too (MinIO's console address).

    For private stacks, test listeners and addresses where nothing listens. The pick is random, so
    processes picking at once rarely try the same port, and a port found bound is skipped."""
    taken = taken if taken is not None else set()
    ports = private_port_range()
    pick = random.SystemRandom()
    wanted = 2 if pair else 1
    for _ in range(500):
        port = pick.randrange(ports.start, ports.stop - wanted + 1)  # the whole block inside the range
        block = range(port, port + wanted)
        if any(p in taken for p in block) or not all(_bindable(p, kind) for p in block):
            continue
        taken.update(block)
        return port
    raise StackError(f"no free port in {ports.start}-{ports.stop - 1} on 127.0.0.1 after 500 tries")


def free_port_pair(taken: set[int], kind: int = socket.SOCK_STREAM) -> int:
    """:func:`free_port` with the port above it free too (MinIO listens on it for its console)."""
    return free_port(taken, kind, pair=True)


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
    # distributed profile (QRSDP_STACK_DISTRIBUTED=1): PostgreSQL, Redis, Dagster processes
    distributed: bool = False
    pg_port: int = 15432
    pg_dir: Path | None = None  # None: <data dir>/postgres (as root: must be reachable by user postgres)
    pg_user: str = DEFAULT_USER
    pg_password: str = DEFAULT_PASSWORD
    redis_port: int = 16379
    dagster_port: int = 3000
    code_server_port: int = 4000
    workers: int = 2
    dagster_code: str | None = None  # code location arguments; None: -m qrsdp_dagster.definitions
    worker_host: str = field(default_factory=socket.gethostname)
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
            distributed=env.get("QRSDP_STACK_DISTRIBUTED", "0").strip().lower() in ("1", "true", "yes"),
            pg_port=int(env.get("QRSDP_PG_PORT", 15432)),
            pg_dir=Path(env["QRSDP_PG_DIR"]) if env.get("QRSDP_PG_DIR") else None,
            pg_user=env.get("QRSDP_PG_USER", DEFAULT_USER),
            pg_password=env.get("QRSDP_PG_PASSWORD", DEFAULT_PASSWORD),
            redis_port=int(env.get("QRSDP_REDIS_PORT", 16379)),
            dagster_port=int(env.get("QRSDP_DAGSTER_PORT", 3000)),
            code_server_port=int(env.get("QRSDP_CODE_SERVER_PORT", 4000)),
            workers=int(env.get("QRSDP_WORKERS", 2)),
            dagster_code=env.get("QRSDP_DAGSTER_CODE") or None,
            worker_host=env.get("QRSDP_WORKER_HOST") or socket.gethostname(),
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

    @property
    def postgres_dir(self) -> Path:
        return self.pg_dir if self.pg_dir is not None else self.data_dir / "postgres"

    def pg_url(self, db: str = "qrsdp_dagster") -> str:
        return f"postgresql://{self.pg_user}:{self.pg_password}@127.0.0.1:{self.pg_port}/{db}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}"

    @property
    def dagster_home(self) -> Path:
        """DAGSTER_HOME of the webserver and daemon (each worker has its own, with the same dagster.yaml)."""
        return self.data_dir / "dagster" / "home"

    @property
    def webserver_url(self) -> str:
        return f"http://127.0.0.1:{self.dagster_port}"

    def worker_dir(self, i: int) -> Path:
        return self.data_dir / "workers" / f"w{i}"

    def worker_name(self, i: int) -> str:
        return f"qrsdp-w{i}@{self.worker_host}"

    def log_file(self, service: str) -> Path:
        logs = {
            "kafka": self.data_dir / "kafka" / "logs" / "kafka.out",
            "minio": self.data_dir / "minio" / "logs" / "minio.log",
            "postgres": self.postgres_dir / "logs" / "postgres.log",
            "redis": self.data_dir / "redis" / "logs" / "redis.log",
            "code-server": self.data_dir / "dagster" / "logs" / "code-server.log",
            "webserver": self.data_dir / "dagster" / "logs" / "webserver.log",
            "daemon": self.data_dir / "dagster" / "logs" / "daemon.log",
        }
        if service in logs:
            return logs[service]
        m = re.fullmatch(r"worker-(\d+)", service)
        if m:
            return self.worker_dir(int(m[1])) / "worker.log"
        raise ValueError(f"no log for {service!r}")

    def distributed_env(self) -> dict[str, str]:
        """What a client of the distributed profile needs (the script gives its processes the same)."""
        return {
            "DAGSTER_HOME": str(self.dagster_home),
            "QRSDP_PG_HOST": "127.0.0.1",
            "QRSDP_PG_PORT": str(self.pg_port),
            "QRSDP_PG_USER": self.pg_user,
            "QRSDP_PG_PASSWORD": self.pg_password,
            "QRSDP_REDIS_URL": self.redis_url,
            "QRSDP_S3_ENDPOINT": self.s3_endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": "us-east-1",
        }

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
            QRSDP_PG_PORT=str(self.pg_port),
            QRSDP_PG_USER=self.pg_user,
            QRSDP_PG_PASSWORD=self.pg_password,
            QRSDP_REDIS_PORT=str(self.redis_port),
            QRSDP_DAGSTER_PORT=str(self.dagster_port),
            QRSDP_CODE_SERVER_PORT=str(self.code_server_port),
            QRSDP_WORKERS=str(self.workers),
            QRSDP_WORKER_HOST=self.worker_host,
            # The probes need confluent_kafka and boto3: this interpreter has them.
            QRSDP_PYTHON=e.get("QRSDP_PYTHON", sys.executable),
        )
        if self.stack_dir is not None:
            e["QRSDP_STACK_DIR"] = str(self.stack_dir)
        if self.controller_port is not None:
            e["QRSDP_KAFKA_CONTROLLER_PORT"] = str(self.controller_port)
        # Distributed: say so. Otherwise leave it to the data folder's profile file, which
        # `up --distributed` writes and `down` removes, so a later `status` lists the whole profile.
        if self.distributed:
            e["QRSDP_STACK_DISTRIBUTED"] = "1"
        else:
            e.pop("QRSDP_STACK_DISTRIBUTED", None)
        if self.pg_dir is not None:
            e["QRSDP_PG_DIR"] = str(self.pg_dir)
        if self.dagster_code:
            e["QRSDP_DAGSTER_CODE"] = self.dagster_code
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
    name: str  # a Service, or code-server / webserver / daemon / worker-N
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
    # every service the script reported, kafka and minio included, in its order
    services: dict[str, ServiceStatus] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        """Every reported service runs and answers (the script's exit code 0)."""
        if not self.services:
            return self.kafka.healthy and self.minio.healthy
        return all(s.healthy for s in self.services.values())

    def service(self, name: str) -> ServiceStatus:
        try:
            return self.services[name]
        except KeyError:
            raise StackError(f"status has no line for {name!r}:\n{self.text}") from None


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
    services: tuple[str, ...] = SERVICES,
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


def _tails(cfg: StackConfig, services: tuple[str, ...]) -> str:
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


def _dagster_processes(cfg: StackConfig) -> tuple[str, ...]:
    return ("code-server", "webserver", "daemon", *(f"worker-{i}" for i in range(1, cfg.workers + 1)))


def _dagster_timeout(cfg: StackConfig) -> float:
    """Each Dagster process has its own bounded health wait."""
    return cfg.timeout_s * (3 + cfg.workers) + 120


def up(config: StackConfig | None = None, *, echo_install: bool = False) -> str:
    """Start Kafka and MinIO (installing first if needed), wait until healthy, create topics and bucket;
    with ``distributed`` also PostgreSQL, Redis and the Dagster processes."""
    cfg = config or StackConfig.from_env()
    install(cfg, echo=echo_install)
    if not cfg.distributed:
        return run_script("up", config=cfg).stdout
    return run_script(
        "up",
        config=cfg,
        timeout_s=cfg.timeout_s * 4 + _dagster_timeout(cfg),
        services=(*ALL_SERVICES, *_dagster_processes(cfg)),
    ).stdout


def down(config: StackConfig | None = None) -> str:
    """Stop everything that runs (SIGTERM, then SIGKILL after a grace period). Safe when nothing runs."""
    cfg = config or StackConfig.from_env()
    return run_script("down", config=cfg, timeout_s=cfg.timeout_s * 2 + 240).stdout


def start_dagster(config: StackConfig | None = None) -> str:
    """Start the distributed Dagster processes (PostgreSQL, Redis and MinIO must run)."""
    cfg = config or StackConfig.from_env()
    return run_script(
        "dagster-start", config=cfg, timeout_s=_dagster_timeout(cfg), services=_dagster_processes(cfg)
    ).stdout


def stop_dagster(config: StackConfig | None = None, *, kill: bool = False) -> str:
    """Stop daemon, workers, webserver and code server (graceful, or SIGKILL at once with ``kill``)."""
    cfg = config or StackConfig.from_env()
    args = ("dagster-stop", "kill") if kill else ("dagster-stop",)
    return run_script(*args, config=cfg, timeout_s=60 * (3 + cfg.workers), services=()).stdout


def start_worker(i: int, config: StackConfig | None = None) -> str:
    """Start Celery worker ``i`` and wait for its first heartbeat."""
    cfg = config or StackConfig.from_env()
    return run_script("worker-start", str(i), config=cfg, services=(f"worker-{i}",)).stdout


def stop_worker(i: int, config: StackConfig | None = None, *, kill: bool = False) -> str:
    """Stop Celery worker ``i``: warm shutdown (its run may finish within 30 s), or with ``kill`` a
    SIGKILL to its whole process group at once, as when its machine dies."""
    args = ("worker-stop", str(i), "kill") if kill else ("worker-stop", str(i))
    return run_script(*args, config=config, services=(), timeout_s=90).stdout


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
    r"^(?P<name>[a-z][a-z0-9-]*) (?P<state>running|stopped)(?: pid=(?P<pid>\d+))? address=(?P<addr>\S+)"
    r"(?: health=(?P<health>\w+))?(?: .*)?$"
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
            running = m["state"] == "running"
            found[m["name"]] = ServiceStatus(
                name=m["name"],
                running=running,
                # a line without a health check (itch) is healthy when it runs
                healthy=m["health"] == "healthy" if m["health"] else running,
                pid=int(m["pid"]) if m["pid"] else None,
                address=m["addr"],
            )
    missing = [s for s in SERVICES if s not in found]
    if missing:
        raise StackError(f"unexpected output from infra/stack.sh status:\n{proc.stdout}")
    return StackStatus(
        kafka=found["kafka"], minio=found["minio"], data_dir=cfg.data_dir, text=proc.stdout, services=found
    )


def _check_service(service: str) -> None:
    if service not in ALL_SERVICES:
        raise ValueError(f"unknown service {service!r}; expected one of {', '.join(ALL_SERVICES)}")
