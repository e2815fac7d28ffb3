"""DuckLake: the shared warehouse of the distributed profile (catalog in PostgreSQL, data on S3).

The embedded default keeps one DuckDB file guarded by a local lock; several hosts cannot share that.
A DuckLake keeps the table metadata in PostgreSQL and the Parquet data files on S3 (MinIO), so every
worker opens its own in-memory DuckDB, attaches the same lake and commits with optimistic concurrency.

The DuckDB extensions come from PyPI packages pinned to the duckdb version and are loaded by path,
never downloaded (``autoinstall``/``autoload`` off): ``duckdb-extension-httpfs`` (S3),
``duckdb-extension-postgres-scanner`` (the catalog) and ``duckdb-extension-ducklake``. (The package
``duckdb-extension-postgres`` 1.5.5 ships the same library as ``postgres.duckdb_extension``, which
``LOAD`` by path rejects: its entry point is named after ``postgres_scanner``.)

Concurrency, as measured with DuckLake 1.5.5 (tests/test_ducklake.py): two transactions that only
insert into a table both commit, as do two that only delete (different files); a transaction that
inserts into a table another one deleted from since it began -- or deletes from one another inserted
into -- fails at commit with "Transaction conflict", whatever the partitioning. Nothing is corrupted
(the loser's commit is all-or-nothing) and nobody waits for a lock, but a per-symbol replace
(delete + insert) must be retried when it loses: :func:`run_transaction`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# extension name -> the PyPI package (module) that ships it
EXTENSIONS = {
    "httpfs": "duckdb_extension_httpfs",
    "postgres_scanner": "duckdb_extension_postgres_scanner",
    "ducklake": "duckdb_extension_ducklake",
}
CONFLICT_MARKER = "Transaction conflict"


def extension_path(name: str) -> Path:
    """The ``.duckdb_extension`` file of ``name`` for the installed duckdb, from its PyPI package."""
    import importlib

    import duckdb

    module = importlib.import_module(EXTENSIONS[name])
    path = Path(module.__file__).parent / "extensions" / f"v{duckdb.__version__}" / f"{name}.duckdb_extension"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} missing: install {EXTENSIONS[name].replace('_', '-')}=={duckdb.__version__} (uv sync)"
        )
    return path


@dataclass(frozen=True)
class DuckLakeSettings:
    """Where the lake's catalog and data are. Defaults match ``infra/stack.sh``."""

    pg_host: str = "127.0.0.1"
    pg_port: int = 15432
    pg_user: str = "qrsdp"
    pg_password: str = "qrsdp-secret"
    pg_db: str = "qrsdp_lake"
    data_path: str = "s3://exchange-data/ducklake/"
    s3_endpoint: str | None = "http://127.0.0.1:9000"
    s3_access_key: str = "qrsdp"
    s3_secret_key: str = "qrsdp-secret"
    s3_region: str = "us-east-1"
    alias: str = "lake"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DuckLakeSettings:
        env = os.environ if environ is None else environ

        def get(name: str, default: str) -> str:
            return env.get(name, "").strip() or default

        return cls(
            pg_host=get("QRSDP_PG_HOST", cls.pg_host),
            pg_port=int(get("QRSDP_PG_PORT", str(cls.pg_port))),
            pg_user=get("QRSDP_PG_USER", cls.pg_user),
            pg_password=get("QRSDP_PG_PASSWORD", cls.pg_password),
            pg_db=get("QRSDP_PG_LAKE_DB", cls.pg_db),
            data_path=get(
                "QRSDP_DUCKLAKE_DATA_PATH", f"s3://{get('QRSDP_S3_BUCKET', 'exchange-data')}/ducklake/"
            ),
            s3_endpoint=env.get("QRSDP_S3_ENDPOINT", "").strip() or None,
            s3_access_key=get("QRSDP_S3_ACCESS_KEY", get("AWS_ACCESS_KEY_ID", cls.s3_access_key)),
            s3_secret_key=get("QRSDP_S3_SECRET_KEY", get("AWS_SECRET_ACCESS_KEY", cls.s3_secret_key)),
            s3_region=get("QRSDP_S3_REGION", cls.s3_region),
        )

    @property
    def catalog_without_password(self) -> str:
        """The libpq connection string of the catalog; the password then comes from ``PGPASSWORD``."""
        return f"dbname={self.pg_db} host={self.pg_host} port={self.pg_port} user={self.pg_user}"

    @property
    def catalog(self) -> str:
        """The ATTACH path: ``ducklake:postgres:<libpq connection string>``."""
        return f"ducklake:postgres:{self.catalog_without_password} password={self.pg_password}"

    def s3_secret(self) -> dict[str, Any]:
        """The S3 secret as dbt-duckdb's ``secrets`` entries take it (and :meth:`secret_sql` writes it)."""
        secret: dict[str, Any] = {
            "type": "s3",
            "key_id": self.s3_access_key,
            "secret": self.s3_secret_key,
            "region": self.s3_region,
        }
        if self.s3_endpoint:
            secret.update(
                endpoint=self.s3_endpoint.split("://", 1)[-1],
                url_style="path",
                use_ssl=self.s3_endpoint.startswith("https://"),
            )
        return secret

    def secret_sql(self, name: str = "qrsdp_ducklake_s3") -> str:
        def lit(v: Any) -> str:
            return str(v).lower() if isinstance(v, bool) else "'" + str(v).replace("'", "''") + "'"

        body = ", ".join(f"{k} {lit(v)}" for k, v in self.s3_secret().items())
        return f"create or replace secret {name} ({body})"

    def attach_sql(self) -> str:
        path = self.catalog.replace("'", "''")
        data = self.data_path.replace("'", "''")
        return f"attach if not exists '{path}' as {self.alias} (data_path '{data}')"

    def dbt_output(self, path: str = ":memory:") -> dict[str, Any]:
        """A dbt-duckdb profile output attaching this lake (models go to database ``alias``)."""
        return {
            "type": "duckdb",
            "path": path,
            "threads": 1,
            "extensions": [str(extension_path(n)) for n in EXTENSIONS],
            "settings": {"autoinstall_known_extensions": False, "autoload_known_extensions": False},
            "secrets": [self.s3_secret()],
            "attach": [{"path": self.catalog, "alias": self.alias, "options": {"data_path": self.data_path}}],
        }


def connect(settings: DuckLakeSettings | None = None) -> Any:
    """An in-memory DuckDB with the lake attached as ``settings.alias`` (extensions loaded offline)."""
    import duckdb

    s = settings or DuckLakeSettings.from_env()
    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    for name in EXTENSIONS:
        con.execute(f"load '{extension_path(name)}'")
    con.execute(s.secret_sql())
    con.execute(s.attach_sql())
    return con


def is_conflict(exc: BaseException) -> bool:
    """A DuckLake commit that lost to a concurrent one (retrying is safe: nothing was committed)."""
    return CONFLICT_MARKER in str(exc)


def run_transaction(
    con: Any,
    statements: Sequence[str],
    *,
    attempts: int = 8,
    backoff_s: float = 0.2,
    before_commit: Callable[[int], None] | None = None,
) -> int:
    """Run ``statements`` in one transaction, again from the start when the commit loses a DuckLake
    conflict (up to ``attempts`` times, jittered exponential backoff). Returns the attempts used.

    ``before_commit(attempt)`` runs just before each COMMIT (tests use it to order two writers)."""
    for attempt in range(1, attempts + 1):
        con.execute("begin")
        try:
            for sql in statements:
                con.execute(sql)
            if before_commit is not None:
                before_commit(attempt)
            con.execute("commit")
            return attempt
        except Exception as exc:
            with contextlib.suppress(Exception):  # a failed commit has already ended the transaction
                con.execute("rollback")
            if not is_conflict(exc) or attempt == attempts:
                raise
            log.warning("DuckLake conflict (attempt %d of %d), retrying: %s", attempt, attempts, exc)
            time.sleep(backoff_s * (2 ** (attempt - 1)) * (0.5 + random.random()))
    raise AssertionError("unreachable")
