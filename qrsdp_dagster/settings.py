"""Platform settings from environment variables, with embedded defaults.

Every setting has a default that works on a clean checkout with no services: local
``.qrsdp`` files, a local Parquet lake and a DuckDB file, all under ``./data``.

========================  =====================================================  ==============================
variable                  meaning                                                default
========================  =====================================================  ==============================
QRSDP_DATA_DIR            root of everything the platform writes                 ``<project root>/data``
QRSDP_LAKE_URI            the Parquet lake: ``file://...``, a path, ``s3://b/p``  ``file://<data dir>/lake``
QRSDP_S3_ENDPOINT         S3 endpoint for an ``s3://`` lake (MinIO)               ``http://127.0.0.1:9000``
QRSDP_S3_ACCESS_KEY       S3 access key                                          ``$MINIO_ROOT_USER`` or qrsdp
QRSDP_S3_SECRET_KEY       S3 secret key                                          ``$MINIO_ROOT_PASSWORD`` or ...
QRSDP_S3_REGION           S3 region                                              ``us-east-1``
QRSDP_KAFKA_BROKERS       Kafka bootstrap servers; set: session_log dual-writes   unset (embedded: no Kafka)
QRSDP_KAFKA_TOPIC         topic the sessions are published to                    ``exchange.events``
QRSDP_SESSIONS_URI        where sessions (.qrsdp + manifest) are kept:           ``<data dir>/sessions``
                          a directory, or ``s3://bucket/prefix`` (shared)
QRSDP_WAREHOUSE           the marts: ``duckdb`` (one local file) or ``ducklake``  ``duckdb``
                          (catalog in PostgreSQL, data on S3: see
                          qrsdp_sim/distributed/ducklake.py for its variables)
QRSDP_DUCKDB_PATH         the DuckDB warehouse file the dbt marts live in        ``<data dir>/warehouse/qrsdp.duckdb``
QRSDP_DBT_PROJECT_DIR     the dbt project                                        ``<project root>/dbt_project``
QRSDP_SYMBOLS             symbols, optionally with their first open in ticks     ``AAPL,MSFT``
                          (``AAPL:18000,MSFT:40000``)
QRSDP_P0_TICKS            first open of a symbol listed without one              ``10000``
QRSDP_START_DATE          first trading date (opens at p0); partitions start     ``2026-01-02``
QRSDP_BASE_SEED           base seed (session seed = f(base, symbol, date))       ``42``
QRSDP_SESSION_SECONDS     simulated session length                               ``23400``
========================  =====================================================  ==============================
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from qrsdp_sim.engine.seeds import validate_symbol

DEFAULT_SYMBOLS = "AAPL,MSFT"
DEFAULT_START_DATE = "2026-01-02"
DEFAULT_P0_TICKS = 10_000
DEFAULT_BASE_SEED = 42
DEFAULT_SESSION_SECONDS = 23_400


def project_root() -> Path:
    """The source checkout (where pyproject.toml is); the working directory when installed elsewhere."""
    here = Path(__file__).resolve().parents[1]
    return here if (here / "pyproject.toml").is_file() else Path.cwd()


def _env(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value or default


def parse_symbols(text: str, default_p0: int = DEFAULT_P0_TICKS) -> dict[str, int]:
    """``"AAPL,MSFT"`` or ``"AAPL:18000,MSFT:40000"`` -> {symbol: first open in ticks}, in order."""
    out: dict[str, int] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        sym, sep, p0 = item.partition(":")
        sym = validate_symbol(sym.strip())
        if sym in out:
            raise ValueError(f"symbol {sym} listed twice in {text!r}")
        try:
            out[sym] = int(p0) if sep else default_p0
        except ValueError:
            raise ValueError(
                f"invalid opening price in {item!r}: expected SYMBOL or SYMBOL:P0_TICKS"
            ) from None
        if out[sym] < 1:
            raise ValueError(f"{sym}: opening price must be >= 1 tick")
    if not out:
        raise ValueError(f"no symbols in {text!r}")
    return out


def local_sessions_dir(sessions_uri: str, data_dir: Path) -> Path:
    """The local sessions directory for a sessions URI ("" or s3://...: ``<data dir>/sessions``)."""
    if sessions_uri and not sessions_uri.startswith("s3://"):
        return Path(sessions_uri.removeprefix("file://")).expanduser().resolve()
    return data_dir / "sessions"


WAREHOUSES = ("duckdb", "ducklake")


def parse_warehouse(text: str) -> str:
    kind = text.strip().lower()
    if kind not in WAREHOUSES:
        raise ValueError(f"QRSDP_WAREHOUSE={text!r}: expected one of {', '.join(WAREHOUSES)}")
    return kind


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    lake_uri: str
    s3_endpoint: str
    s3_access_key: str
    s3_secret_key: str
    s3_region: str
    kafka_brokers: str
    sessions_uri: str  # "" = <data dir>/sessions; else a directory or s3://bucket/prefix
    warehouse: str  # duckdb | ducklake
    duckdb_path: Path
    dbt_project_dir: Path
    symbols: dict[str, int]  # symbol -> first open (ticks)
    start_date: dt.date
    base_seed: int
    session_seconds: int

    @classmethod
    def from_env(cls) -> Settings:
        root = project_root()
        data_dir = Path(_env("QRSDP_DATA_DIR", str(root / "data"))).expanduser().resolve()
        p0 = int(_env("QRSDP_P0_TICKS", str(DEFAULT_P0_TICKS)))
        return cls(
            data_dir=data_dir,
            lake_uri=_env("QRSDP_LAKE_URI", (data_dir / "lake").as_uri()),
            s3_endpoint=_env("QRSDP_S3_ENDPOINT", "http://127.0.0.1:9000"),
            s3_access_key=_env("QRSDP_S3_ACCESS_KEY", _env("MINIO_ROOT_USER", "qrsdp")),
            s3_secret_key=_env("QRSDP_S3_SECRET_KEY", _env("MINIO_ROOT_PASSWORD", "qrsdp-secret")),
            s3_region=_env("QRSDP_S3_REGION", "us-east-1"),
            kafka_brokers=_env("QRSDP_KAFKA_BROKERS", ""),
            sessions_uri=_env("QRSDP_SESSIONS_URI", ""),
            warehouse=parse_warehouse(_env("QRSDP_WAREHOUSE", "duckdb")),
            duckdb_path=Path(
                _env("QRSDP_DUCKDB_PATH", str(data_dir / "warehouse" / "qrsdp.duckdb"))
            ).resolve(),
            dbt_project_dir=Path(_env("QRSDP_DBT_PROJECT_DIR", str(root / "dbt_project"))).resolve(),
            symbols=parse_symbols(_env("QRSDP_SYMBOLS", DEFAULT_SYMBOLS), p0),
            start_date=dt.date.fromisoformat(_env("QRSDP_START_DATE", DEFAULT_START_DATE)),
            base_seed=int(_env("QRSDP_BASE_SEED", str(DEFAULT_BASE_SEED))),
            session_seconds=int(_env("QRSDP_SESSION_SECONDS", str(DEFAULT_SESSION_SECONDS))),
        )

    @property
    def sessions_dir(self) -> Path:
        """Where sessions are on this machine: the sessions directory, or (sessions on S3) this
        process's local copies."""
        return local_sessions_dir(self.sessions_uri, self.data_dir)

    @property
    def dagster_home(self) -> Path:
        return self.data_dir / "dagster"

    @property
    def symbols_spec(self) -> str:
        return ",".join(f"{s}:{p}" for s, p in self.symbols.items())


SETTINGS = Settings.from_env()
"""The settings of this process (read once, at import)."""
