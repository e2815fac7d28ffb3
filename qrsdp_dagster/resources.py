"""Resources, configured from environment variables with embedded defaults (see settings.py).

Field defaults are the environment's settings, so a run config may override any single
field (e.g. ``resources: {simulation: {config: {session_seconds: 600}}}``).

* ``simulation`` -- the engine settings and where ``.qrsdp`` files and their manifests live
* ``lake``       -- the Parquet lake (local directory or S3 via pyarrow.fs, same code path)
* ``warehouse``  -- the DuckDB file and the dbt project; exports what dbt needs to its environment
* ``kafka``      -- Kafka brokers (full stack only; unused on the embedded default)
* ``dbt``        -- dagster-dbt's CLI resource over ``dbt_project/`` (profiles.yml inside it)
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import importlib.metadata
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DbtCliResource
from packaging.version import Version

from qrsdp_dagster.sessions import LocalSessionStore, S3SessionStore, SessionStore
from qrsdp_dagster.settings import SETTINGS, Settings, local_sessions_dir
from qrsdp_sim.distributed.ducklake import DuckLakeSettings, extension_path
from qrsdp_sim.engine.factor import MarketFactor
from qrsdp_sim.engine.models import HawkesParams, IntensityModel, build_model
from qrsdp_sim.engine.runner import RunSpec, session_description, session_path, simulate_symbol_date
from qrsdp_sim.engine.session import SessionResult
from qrsdp_sim.lake import Lake, S3Options

_DUCKLAKE = DuckLakeSettings.from_env()  # defaults of the warehouse resource's DuckLake fields


class SimulationResource(dg.ConfigurableResource):
    """Engine settings shared by every partition, and where sessions are kept.

    Sessions (``SYMBOL/YYYY-MM-DD.qrsdp`` and, beside it, a ``.json`` manifest with the session's
    open and close -- the next date's open) are in ``sessions_uri``: empty for ``<data_dir>/sessions``
    (the embedded default), a directory, or ``s3://bucket/prefix`` (shared by every worker; written
    and read through dagster-aws's S3 resource, local copies in ``<data_dir>/sessions``). See
    :mod:`qrsdp_dagster.sessions`.
    """

    data_dir: str = str(SETTINGS.data_dir)
    sessions_uri: str = SETTINGS.sessions_uri
    s3_endpoint: str | None = SETTINGS.s3_endpoint
    s3_access_key: str | None = SETTINGS.s3_access_key
    s3_secret_key: str | None = None
    s3_region: str = SETTINGS.s3_region
    symbols: dict[str, int] = dict(SETTINGS.symbols)  # noqa: RUF012 -- pydantic copies it. symbol -> open on first_date
    first_date: str = SETTINGS.start_date.isoformat()  # sessions on this date open at the symbol's p0
    base_seed: int = SETTINGS.base_seed
    session_seconds: int = SETTINGS.session_seconds
    market_open: str = "09:30"
    fsync: bool = True
    # intensity model, as `qrsdp run --model`: simple | hlr | hawkes (over hawkes_base: simple | hlr);
    # hlr_curves: a curves JSON for hlr (default: built-in curves); factor_loading: market factor (0: off)
    model: str = "simple"
    hlr_curves: str | None = None
    hawkes_alpha: float = 0.0
    hawkes_beta: float = 1.0
    hawkes_cap: float = 5.0
    hawkes_base: str = "simple"
    factor_loading: float = 0.0
    # chaining onto a session simulated with another configuration is refused unless this is set
    allow_config_change: bool = False
    # a trade-price plot per session, written beside the file (PNG) and referenced in the metadata
    price_plots: bool = True

    @property
    def sessions_dir(self) -> Path:
        """Local sessions: the sessions directory, or this process's copies of S3 sessions."""
        return local_sessions_dir(self.sessions_uri, Path(self.data_dir))

    @property
    def shared(self) -> bool:
        """Sessions on S3 (readable by every worker) rather than on this machine's disk."""
        return self.sessions_uri.startswith("s3://")

    def store(self) -> SessionStore:
        if not self.shared:
            return LocalSessionStore(self.sessions_dir)
        secret = self.s3_secret_key or os.environ.get("QRSDP_S3_SECRET_KEY") or None
        return _s3_session_store(
            self.sessions_uri, self.s3_endpoint or None, self.s3_access_key or None, secret, self.s3_region,
            str(self.sessions_dir),
        )  # fmt: skip

    def spec(self) -> RunSpec:
        return RunSpec(
            base_seed=self.base_seed,
            start_date=dt.date.fromisoformat(self.first_date),
            session_seconds=self.session_seconds,
            market_open=self.market_open,
            model=self._model(),
            factor=MarketFactor(loading=self.factor_loading),
        )

    def _model(self) -> IntensityModel:
        """simple | hlr (hlr_curves, else the built-in curves) | hawkes over hawkes_base (same rule)."""
        hawkes = (
            HawkesParams(self.hawkes_alpha, self.hawkes_beta, self.hawkes_cap)
            if self.model == "hawkes"
            else None
        )
        return build_model(
            self.model, hlr_curves=self.hlr_curves, hawkes=hawkes, hawkes_base=self.hawkes_base
        )

    def local_file(self, symbol: str, date: dt.date) -> Path:
        """Where this process writes (or keeps its copy of) a session's file."""
        return session_path(self.sessions_dir, symbol, date)

    def session_file(self, symbol: str, date: dt.date) -> Path:
        """A local, readable path of the session's file (fetched from S3 when the sessions are there
        and this process has no copy of it yet). The path does not exist when the session does not."""
        return self.store().fetch(symbol, date)

    def location(self, symbol: str, date: dt.date, suffix: str = ".qrsdp") -> str:
        """Where the session's object is for everyone (a path, or an s3:// URL)."""
        return self.store().location(symbol, date, suffix)

    def plot_file(self, symbol: str, date: dt.date) -> Path:
        return self.local_file(symbol, date).with_suffix(".png")

    def read_manifest(self, symbol: str, date: dt.date) -> dict[str, Any] | None:
        return self.store().read_manifest(symbol, date)

    def simulate(
        self, symbol: str, date: dt.date, open_ticks: int, *, publisher: Any = None, run_id: str = ""
    ) -> tuple[SessionResult, dict[str, Any]]:
        """Simulate one symbol-date into its local file; returns the result and its manifest, which
        :meth:`publish` makes visible (last) once the caller has checked the file.

        With a ``publisher`` (KafkaPublisher) the session is dual-written, best effort.
        """
        spec = self.spec()
        path = self.local_file(symbol, date)
        path.parent.mkdir(parents=True, exist_ok=True)
        extra = [publisher.open_session(symbol, date, run_id)] if publisher is not None else None
        result = simulate_symbol_date(
            spec, symbol, date, open_ticks, path, fsync=self.fsync, extra_sinks=extra
        )
        if publisher is not None and extra:
            publisher.end_session(extra[0], session_description(spec, symbol, date, result))
        config = spec.session_config(symbol, date, open_ticks)
        manifest = {
            "symbol": symbol,
            "date": date.isoformat(),
            "seed": result.seed,
            "base_seed": self.base_seed,
            "open_ticks": result.open_ticks,
            "close_ticks": result.close_ticks,
            "best_bid": result.best_bid,
            "best_ask": result.best_ask,
            "events": result.events,
            "counts": list(result.counts),
            "file": path.name,
            "file_bytes": result.file_bytes,
            "compression": result.compression,
            "wall_seconds": result.wall_seconds,
            "session_seconds": config.session_seconds,
            "market_open_ns": config.market_open_ns,
            "tick_size": config.tick_size,
            **{k: v for k, v in spec.manifest_fields().items() if k not in ("session_seconds", "tick_size")},
        }
        return result, manifest

    def publish(self, symbol: str, date: dt.date, manifest: dict[str, Any], plot: Path | None = None) -> str:
        """Make a simulated session visible: file (and plot) first, manifest last. Returns its location."""
        store = self.store()
        store.publish(symbol, date, manifest, plot)
        return store.location(symbol, date)


@functools.lru_cache(maxsize=8)
def _s3_session_store(
    uri: str,
    endpoint: str | None,
    access_key: str | None,
    secret_key: str | None,
    region: str,
    cache_dir: str,
) -> S3SessionStore:
    """One S3 client per configuration and process (dagster-aws's S3 resource makes it)."""
    from dagster_aws.s3 import S3Resource

    client = S3Resource(
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=region,
        use_ssl=not (endpoint or "").startswith("http://"),
        max_attempts=5,
    ).get_client()
    return S3SessionStore.from_uri(uri, client, Path(cache_dir))


class LakeResource(dg.ConfigurableResource):
    """The Parquet lake. ``uri``: ``file:///dir``, a path, or ``s3://bucket/prefix`` (then the s3_* fields)."""

    uri: str = SETTINGS.lake_uri
    s3_endpoint: str | None = SETTINGS.s3_endpoint
    s3_access_key: str | None = SETTINGS.s3_access_key
    s3_secret_key: str | None = None
    s3_region: str = SETTINGS.s3_region

    def lake(self) -> Lake:
        s3 = S3Options(
            endpoint=self.s3_endpoint, access_key=self.s3_access_key, secret_key=self.s3_secret_key,
            region=self.s3_region,
        )  # fmt: skip
        return Lake.from_uri(self.uri, s3)


class KafkaResource(dg.ConfigurableResource):
    """Kafka for dual-writing sessions. Empty ``brokers`` (the embedded default) means no Kafka."""

    brokers: str = SETTINGS.kafka_brokers
    topic: str = os.environ.get("QRSDP_KAFKA_TOPIC", "") or "exchange.events"
    close_timeout: float = 60.0

    @property
    def enabled(self) -> bool:
        return bool(self.brokers.strip())

    def publisher(self):
        """A run-wide publisher (one producer; files never depend on it), or None without Kafka."""
        if not self.enabled:
            return None
        from qrsdp_sim.kafka.publisher import KafkaPublisher

        return KafkaPublisher(self.brokers, self.topic, close_timeout=self.close_timeout)


class WarehouseResource(dg.ConfigurableResource):
    """Where dbt builds the marts, and the dbt project's data-quality bounds.

    ``kind`` ``duckdb`` (the embedded default): one DuckDB file, one writer at a time. ``ducklake``
    (the distributed profile): a DuckLake -- catalog in PostgreSQL, Parquet data on S3 -- that the
    dbt process of every worker attaches and writes at once (qrsdp_sim/distributed/ducklake.py;
    the password comes from ``QRSDP_PG_PASSWORD``, the S3 credentials from the lake's).
    """

    kind: str = SETTINGS.warehouse
    duckdb_path: str = str(SETTINGS.duckdb_path)
    dbt_project_dir: str = str(SETTINGS.dbt_project_dir)
    ducklake_pg_host: str = _DUCKLAKE.pg_host
    ducklake_pg_port: int = _DUCKLAKE.pg_port
    ducklake_pg_user: str = _DUCKLAKE.pg_user
    ducklake_pg_db: str = _DUCKLAKE.pg_db
    ducklake_data_path: str = _DUCKLAKE.data_path
    min_events_per_session: int = 1000
    max_events_per_session: int = 20_000_000

    @property
    def is_ducklake(self) -> bool:
        return self.kind == "ducklake"

    def ducklake(self, lake: Lake | None = None) -> DuckLakeSettings:
        """The DuckLake's settings (S3 credentials of an s3:// lake, else from the environment)."""
        base = DuckLakeSettings.from_env()
        s3 = lake.s3 if lake is not None and not lake.is_local else None
        return dataclasses.replace(
            base,
            pg_host=self.ducklake_pg_host, pg_port=self.ducklake_pg_port, pg_user=self.ducklake_pg_user,
            pg_db=self.ducklake_pg_db, data_path=self.ducklake_data_path,
            **(
                {"s3_endpoint": s3.endpoint, "s3_access_key": s3.access_key or base.s3_access_key,
                 "s3_secret_key": s3.secret_key or base.s3_secret_key, "s3_region": s3.region}
                if s3 is not None else {}
            ),
        )  # fmt: skip

    def description(self) -> str:
        if self.is_ducklake:
            return (
                f"DuckLake (catalog postgres://{self.ducklake_pg_host}:{self.ducklake_pg_port}/"
                f"{self.ducklake_pg_db}, data {self.ducklake_data_path})"
            )
        return str(self.duckdb_path)

    def dbt_env(self, lake: Lake, partitions_file: Path | None = None) -> dict[str, str]:
        """Environment the dbt subprocess needs: the target and where the warehouse is, the lake, the
        run's partitions file, the data-quality bounds, and for an s3:// lake httpfs and the S3
        secret. Everything per run goes here rather than into ``--vars`` (which would make dbt
        re-parse the project)."""
        env = {
            "QRSDP_DBT_TARGET": "ducklake" if self.is_ducklake else "embedded",
            "QRSDP_DUCKDB_PATH": str(Path(self.duckdb_path).resolve()),
            "QRSDP_LAKE_ROOT": lake.query_root,
            "QRSDP_MIN_EVENTS_PER_SESSION": str(self.min_events_per_session),
            "QRSDP_MAX_EVENTS_PER_SESSION": str(self.max_events_per_session),
            "QRSDP_DBT_PARTITIONS_FILE": str(partitions_file) if partitions_file else "",
        }
        if not lake.is_local and lake.s3 is not None:
            env.update(
                QRSDP_DUCKDB_HTTPFS=str(extension_path("httpfs")),
                QRSDP_S3_ENDPOINT=lake.s3.endpoint or "",
                QRSDP_S3_ACCESS_KEY=lake.s3.access_key or "",
                QRSDP_S3_SECRET_KEY=lake.s3.secret_key or "",
                QRSDP_S3_REGION=lake.s3.region,
            )
        if self.is_ducklake:
            env.update(ducklake_dbt_env(self.ducklake(lake)))
        return env

    @contextlib.contextmanager
    def environment(self, lake: Lake, partitions_file: Path | None = None) -> Iterator[None]:
        """Export dbt_env() to os.environ for the duration (dbt runs as a subprocess that inherits it)."""
        env = self.dbt_env(lake, partitions_file)
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def connect(self, *, read_only: bool = True, lake: Lake | None = None):
        """A DuckDB connection to the marts: the file, or an in-memory DuckDB with the DuckLake
        attached and used as the default database (so ``marts.fct_…`` resolves either way)."""
        if self.is_ducklake:
            from qrsdp_sim.distributed import ducklake

            settings = self.ducklake(lake)
            con = ducklake.connect(settings)
            con.execute(f"use {settings.alias}")
            return con
        import duckdb

        return duckdb.connect(str(self.duckdb_path), read_only=read_only)


def ducklake_dbt_env(settings: DuckLakeSettings) -> dict[str, str]:
    """What ``profiles.yml``'s ``ducklake`` target reads: extension files, the catalog (its password
    as libpq's PGPASSWORD, never in a connection string dbt might log), data path and S3 secret."""
    secret = settings.s3_secret()
    return {
        "QRSDP_DUCKDB_HTTPFS": str(extension_path("httpfs")),
        "QRSDP_DUCKDB_POSTGRES_SCANNER": str(extension_path("postgres_scanner")),
        "QRSDP_DUCKDB_DUCKLAKE": str(extension_path("ducklake")),
        "QRSDP_DUCKLAKE_CATALOG": settings.catalog_without_password,
        "PGPASSWORD": settings.pg_password,
        "QRSDP_DUCKLAKE_DATA_PATH": settings.data_path,
        "QRSDP_DUCKLAKE_S3_KEY_ID": str(secret["key_id"]),
        "QRSDP_DUCKLAKE_S3_SECRET": str(secret["secret"]),
        "QRSDP_DUCKLAKE_S3_REGION": str(secret["region"]),
        "QRSDP_DUCKLAKE_S3_ENDPOINT": str(secret.get("endpoint", "s3.amazonaws.com")),
        "QRSDP_DUCKLAKE_S3_URL_STYLE": str(secret.get("url_style", "vhost")),
        "QRSDP_DUCKLAKE_S3_USE_SSL": str(secret.get("use_ssl", True)).lower(),
    }


class QrsdpDbtCliResource(DbtCliResource):
    """dagster-dbt's CLI resource, optionally with dbt in process (:meth:`cli_in_process`), and
    without two start-up costs it pays on every invocation: a
    ``dbt --version`` subprocess (a whole dbt start, several seconds on 2 cores) to learn the
    version -- here read from the installed dbt-core, which is the dbt next to this Python -- and an
    in-process dbt adapter, used only to fetch extra metadata (row counts, column schemas) that
    these assets do not ask for. ``tests/test_dagster_pipeline.py`` runs the real dbt through it.

    ``in_process`` (default on; env ``QRSDP_DBT_IN_PROCESS=0`` turns it off): the embedded
    warehouse's build runs dbt in the step's process, saving a Python start, dbt's imports and the
    partial-parse load (seconds on 2 cores). The DuckLake build always uses a subprocess."""

    in_process: bool = os.environ.get("QRSDP_DBT_IN_PROCESS", "1").strip() not in ("0", "false", "no")
    # pay dbt's one-time start-up costs on a background thread as soon as a run that builds in
    # process starts (build_resources: the embedded warehouse on a machine with cores to spare;
    # env QRSDP_DBT_WARM_UP=1/0 forces it): qrsdp_dagster/dbt_in_process.py
    warm_up: bool = False

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """The in-process executor sets up a run's resources once, before its first step: the
        warm-up then overlaps the simulation, landing and replay steps."""
        super().setup_for_execution(context)
        if self.in_process and self.warm_up:
            from qrsdp_dagster.dbt_in_process import warm_up_in_background

            warm_up_in_background(self)

    @functools.cached_property
    def _cli_version(self) -> Version:
        return Version(importlib.metadata.version("dbt-core"))

    def _initialize_dbt_core_adapter(self, args: Any) -> Any:
        return None

    def cli_in_process(
        self, args: list[str], *, context: Any, target_path: Path, raise_on_error: bool = True
    ) -> Any:
        """``cli()`` with dbt on a thread of this process instead of a dbt subprocess (no second
        interpreter, no second import of dbt): qrsdp_dagster/dbt_in_process.py."""
        from qrsdp_dagster.dbt_in_process import invoke_in_process

        return invoke_in_process(
            self, args, context=context, target_path=target_path, raise_on_error=raise_on_error
        )


WARM_UP_MIN_CORES = 4


def dbt_warm_up_wanted() -> bool:
    """Whether to warm dbt up in the background (env QRSDP_DBT_WARM_UP=1/0, else by cores): on 2
    cores the warm-up only moves its CPU from the dbt step into the simulation step, which it slows
    by as much (the steps keep both cores busy; measured in docs/data-platform.md), so it is on
    only where a core is usually free."""
    forced = os.environ.get("QRSDP_DBT_WARM_UP", "").strip().lower()
    if forced:
        return forced not in ("0", "false", "no")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return cores >= WARM_UP_MIN_CORES


def dbt_executable() -> str:
    """The dbt next to this Python (so dbt is found without the virtualenv on PATH)."""
    beside = Path(sys.executable).with_name("dbt")
    return str(beside) if beside.exists() else "dbt"


def _secret(name: str, value: str) -> str | dg.EnvVar:
    """A secret shows in the UI as its variable's name when it comes from the environment."""
    return dg.EnvVar(name) if os.environ.get(name) else value


def build_resources(settings: Settings | None = None) -> dict[str, Any]:
    s = settings or Settings.from_env()
    return {
        "simulation": SimulationResource(
            data_dir=str(s.data_dir),
            sessions_uri=s.sessions_uri,
            s3_endpoint=s.s3_endpoint,
            s3_access_key=s.s3_access_key,
            s3_secret_key=_secret("QRSDP_S3_SECRET_KEY", s.s3_secret_key),
            s3_region=s.s3_region,
            symbols=s.symbols,
            first_date=s.start_date.isoformat(),
            base_seed=s.base_seed,
            session_seconds=s.session_seconds,
        ),
        "lake": LakeResource(
            uri=s.lake_uri,
            s3_endpoint=s.s3_endpoint,
            s3_access_key=s.s3_access_key,
            s3_secret_key=_secret("QRSDP_S3_SECRET_KEY", s.s3_secret_key),
            s3_region=s.s3_region,
        ),
        "kafka": KafkaResource(brokers=s.kafka_brokers),  # empty: embedded default, no Kafka
        "warehouse": WarehouseResource(
            kind=s.warehouse, duckdb_path=str(s.duckdb_path), dbt_project_dir=str(s.dbt_project_dir)
        ),
        "dbt": QrsdpDbtCliResource(
            project_dir=str(s.dbt_project_dir),
            profiles_dir=str(s.dbt_project_dir),
            dbt_executable=dbt_executable(),
            warm_up=s.warehouse == "duckdb" and dbt_warm_up_wanted(),
        ),
    }
