"""dbt builds into a DuckLake shared by several workers: tables first, then conflicts retried.

DuckLake (1.5.5) lets writers commit concurrently, with one rule that matters for the marts: a
transaction that inserts into a table another transaction deleted from since it began (or deletes
after a concurrent insert) fails at COMMIT with "Transaction conflict", whatever the partitioning
(tests/test_ducklake.py). Every incremental model replaces its run's partitions (delete + insert),
so two workers building different symbols can conflict on a table. Nothing is corrupted -- the losing
commit changes nothing, nobody waits for a lock -- and the loser builds again:

* :func:`conflicted` reads the dbt invocation's ``run_results.json``: the nodes that failed, and
  whether every failure is such a conflict (then a retry is safe; anything else is a real failure);
* the dbt asset then runs ``dbt build --select result:error+ --state <previous target>``: only the
  models that lost and what depends on them (dagster-dbt yields nothing for errored models and
  skipped tests, so no event is reported twice).

Creating the tables is different: two first builds would both CREATE (and the second conflicts on
the schema or table, outside any model). :func:`missing_tables` lists the project's tables the
catalog does not have; while any is missing the build runs under a PostgreSQL advisory lock
(:func:`bootstrap_lock`), so the first builds run one after the other and every later one runs
unlocked. The lock belongs to the build's database session: a killed worker releases it.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from qrsdp_sim.distributed.ducklake import CONFLICT_MARKER, DuckLakeSettings

BOOTSTRAP_LOCK_KEY = "qrsdp:ducklake:create-tables"


def lake_tables(manifest: Mapping[str, Any]) -> set[tuple[str, str]]:
    """(schema, table) of every model the project materialises as a table in the lake."""
    out = set()
    for node in manifest["nodes"].values():
        if node.get("resource_type") != "model":
            continue
        if node.get("config", {}).get("materialized") in ("table", "incremental"):
            out.add((node["schema"], node.get("alias") or node["name"]))
    return out


def _connect(settings: DuckLakeSettings) -> Any:
    import psycopg2

    return psycopg2.connect(
        host=settings.pg_host, port=settings.pg_port, user=settings.pg_user,
        password=settings.pg_password, dbname=settings.pg_db, connect_timeout=30,
    )  # fmt: skip


def existing_tables(settings: DuckLakeSettings) -> set[tuple[str, str]]:
    """(schema, table) of the tables in the DuckLake catalog now (empty before its first use)."""
    with contextlib.closing(_connect(settings)) as conn, conn.cursor() as cur:
        cur.execute("select to_regclass('ducklake_table') is not null")
        if not cur.fetchone()[0]:
            return set()
        cur.execute(
            "select s.schema_name, t.table_name from ducklake_table t "
            "join ducklake_schema s on s.schema_id = t.schema_id "
            "where t.end_snapshot is null and s.end_snapshot is null"
        )
        return {(schema, table) for schema, table in cur.fetchall()}


def missing_tables(settings: DuckLakeSettings, manifest: Mapping[str, Any]) -> set[tuple[str, str]]:
    return lake_tables(manifest) - existing_tables(settings)


@contextlib.contextmanager
def bootstrap_lock(settings: DuckLakeSettings) -> Iterator[None]:
    """Hold the catalog's advisory lock for creating tables (waits while another build holds it)."""
    with contextlib.closing(_connect(settings)) as conn:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("select pg_advisory_lock(hashtext(%s))", (BOOTSTRAP_LOCK_KEY,))
        try:
            yield
        finally:
            with contextlib.suppress(Exception), conn.cursor() as cur:
                cur.execute("select pg_advisory_unlock(hashtext(%s))", (BOOTSTRAP_LOCK_KEY,))


@dataclass(frozen=True)
class BuildFailures:
    """Failed nodes of one dbt invocation."""

    conflicts: list[str]  # unique ids of nodes that lost a DuckLake commit
    others: list[str]  # "unique_id: status: message" of every other failure

    @property
    def retryable(self) -> bool:
        """Only lost commits: building those nodes again is safe."""
        return bool(self.conflicts) and not self.others


def conflicted(target_path: Path) -> BuildFailures:
    """The failures recorded in ``target_path/run_results.json`` (none when it is missing)."""
    path = Path(target_path) / "run_results.json"
    if not path.is_file():
        return BuildFailures([], [])
    conflicts, others = [], []
    for result in json.loads(path.read_text()).get("results", []):
        status = result.get("status")
        if status in ("success", "pass", "skipped", "warn"):
            continue
        message = str(result.get("message") or "")
        if status == "error" and CONFLICT_MARKER in message:
            conflicts.append(result["unique_id"])
        else:
            others.append(f"{result['unique_id']}: {status}: {message[:300]}")
    return BuildFailures(conflicts, others)


class Invocation(Protocol):
    """What the retry loop needs of a dbt invocation (dagster-dbt's ``DbtCliInvocation`` has it)."""

    def stream(self) -> Iterator[Any]: ...

    def is_successful(self) -> bool: ...


class BuildError(RuntimeError):
    """A dbt build failed for another reason than a lost commit, or kept losing."""

    def __init__(self, message: str, target: Path):
        super().__init__(message)
        self.target = target


def build_with_conflict_retries(
    invoke: Callable[[Sequence[str], Path], Invocation],
    target_root: Path,
    *,
    attempts: int = 8,
    log: Callable[[str], None] = lambda _: None,
    sleep: Callable[[float], None] = time.sleep,
) -> Generator[Any, None, int]:
    """Run a dbt build; while its only failures are lost DuckLake commits, build those nodes and
    their dependants again (``--select result:error+ --state <previous target>``). Yields the
    invocations' events; returns the attempts used. ``invoke(extra_args, target_path)`` starts one
    dbt invocation writing its artifacts to ``target_path``."""
    previous: Path | None = None
    for attempt in range(1, attempts + 1):
        target = Path(target_root) / f"attempt-{attempt}"
        extra = ["--select", "result:error+", "--state", str(previous)] if previous is not None else []
        invocation = invoke(extra, target)
        yield from invocation.stream()
        if invocation.is_successful():
            return attempt
        failures = conflicted(target)
        if not failures.retryable:
            detail = "; ".join(failures.others) if failures.others else f"see the dbt log in {target}"
            raise BuildError(f"dbt build failed: {detail}", target)
        log(
            f"DuckLake: {len(failures.conflicts)} model(s) lost a commit to a concurrent build (attempt "
            f"{attempt} of {attempts}); building them and their dependants again: {', '.join(failures.conflicts)}"
        )
        if attempt < attempts:
            sleep(min(30.0, 0.5 * 2 ** (attempt - 1)) * (0.5 + random.random()))
        previous = target
    raise BuildError(
        f"dbt build still losing DuckLake commits after {attempts} attempts; run it again", target
    )
