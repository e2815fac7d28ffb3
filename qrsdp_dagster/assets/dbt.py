"""dbt assets over ``dbt_project/`` (dbt-duckdb), partitioned like the lake.

A run writes its symbol-dates to a CSV file (``<data>/dbt/partitions/<run id>.csv``) and names it
in the environment (QRSDP_DBT_PARTITIONS_FILE); the dbt command line is always just ``dbt build``
(+ Dagster's node selection), whatever the number of partitions, and carries no ``--vars`` (new
``--vars`` would make dbt re-parse the whole project on every run). dbt reads only those
partitions' files, the incremental models replace exactly those partitions, and the tests
(Dagster asset checks) are evaluated on those partitions -- the cross-session continuity test
also reads each partition's neighbouring sessions. dbt tests failing fail the run.

The dbt sources ``lake.events``/``lake.sessions`` are the ``raw_events`` asset and
``lake.book_states`` is ``book_states`` (``meta.dagster.asset_key`` in _sources.yml).

DuckDB has one writer at a time: the dbt step runs in the ``qrsdp_duckdb`` pool, which
``qrsdp ui`` limits to 1, so concurrent partition runs queue for the warehouse.
"""

import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
from dagster import AssetExecutionContext
from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings, DbtCliResource, dbt_assets

from qrsdp_dagster.partitions import SETTINGS, chain_order, session_partitions
from qrsdp_dagster.resources import (
    LakeResource,
    QrsdpDbtCliResource,
    SimulationResource,
    WarehouseResource,
    dbt_executable,
)

DBT_POOL = "qrsdp_duckdb"
_SOURCE_SUFFIXES = {".sql", ".yml", ".yaml"}


def ensure_manifest(project_dir: Path) -> Path:
    """``target/manifest.json`` of the dbt project, running ``dbt parse`` if it is missing or
    older than any model, macro or yml file (a lock keeps concurrent loaders from racing)."""
    project_dir = Path(project_dir)
    manifest = project_dir / "target" / "manifest.json"

    def stale() -> bool:
        if not manifest.is_file():
            return True
        built = manifest.stat().st_mtime
        for path in project_dir.rglob("*"):
            rel = path.relative_to(project_dir).parts
            if rel[0] in ("target", "logs", "dbt_packages"):
                continue
            if path.suffix in _SOURCE_SUFFIXES and path.stat().st_mtime > built:
                return True
        return False

    if not stale():
        return manifest
    (project_dir / "target").mkdir(exist_ok=True)
    with open(project_dir / "target" / ".parse.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stale():
            # parse against the warehouse a run of this location uses by default: the partial parse
            # saved here (copied into each run's target) stays valid for it (a different DuckDB
            # path in the profile makes dbt parse everything again)
            saved = os.environ.get("QRSDP_DUCKDB_PATH")
            os.environ["QRSDP_DUCKDB_PATH"] = saved or str(Path(SETTINGS.duckdb_path).resolve())
            try:
                QrsdpDbtCliResource(
                    project_dir=str(project_dir), profiles_dir=str(project_dir), dbt_executable=dbt_executable()
                ).cli(["parse", "--quiet"], target_path=Path("target")).wait()
            finally:
                if saved is None:
                    os.environ.pop("QRSDP_DUCKDB_PATH", None)
    return manifest


class QrsdpDbtTranslator(DagsterDbtTranslator):
    def get_group_name(self, dbt_resource_props: dict[str, Any]) -> str | None:
        return "analytics"

    def get_owners(self, dbt_resource_props: dict[str, Any]) -> list[str]:
        return ["team:qrsdp"]

    def get_asset_check_spec(self, asset_spec, manifest, unique_id, project) -> dg.AssetCheckSpec | None:
        """dagster-dbt leaves a test's own description out of its check: put it in (checks have no
        owner field in Dagster; the owner goes to the check's metadata, like its asset's)."""
        spec = super().get_asset_check_spec(asset_spec, manifest, unique_id, project)
        if spec is None:
            return None
        description = " ".join((manifest["nodes"][unique_id].get("description") or "").split())
        return spec._replace(
            description=description or spec.description, metadata={**(spec.metadata or {}), "owner": "team:qrsdp"}
        )


def write_partitions_file(path: Path, partitions: list[tuple[str, Any]]) -> Path:
    """The run's partitions as the CSV dbt reads (header ``symbol,date``), written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as fh:
        fh.write("symbol,date\n")
        fh.writelines(f"{symbol},{date.isoformat()}\n" for symbol, date in partitions)
    os.replace(tmp, path)
    return path


DBT_MANIFEST = ensure_manifest(SETTINGS.dbt_project_dir)
TRANSLATOR = QrsdpDbtTranslator(
    settings=DagsterDbtTranslatorSettings(enable_duplicate_source_asset_keys=True)
)


@dbt_assets(
    manifest=DBT_MANIFEST,
    name="qrsdp_dbt",
    partitions_def=session_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    dagster_dbt_translator=TRANSLATOR,
    pool=DBT_POOL,
)
def qrsdp_dbt(
    context: AssetExecutionContext,
    dbt: DbtCliResource,
    warehouse: WarehouseResource,
    lake: LakeResource,
    simulation: SimulationResource,
) -> Iterator[Any]:
    store = lake.lake()
    partitions = chain_order(context.partition_keys)
    Path(warehouse.duckdb_path).parent.mkdir(parents=True, exist_ok=True)
    dbt_dir = Path(simulation.data_dir) / "dbt"
    selection = write_partitions_file(dbt_dir / "partitions" / f"{context.run_id}.csv", partitions)
    context.log.info(f"dbt build for {len(partitions)} partition(s) (listed in {selection}) into {warehouse.duckdb_path}")
    # DuckDB allows one writing process: serialise dbt runs on this machine whatever the
    # instance's pool limits are (a second run waits here instead of failing on the lock).
    try:
        with open(f"{warehouse.duckdb_path}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            with warehouse.environment(store, selection):
                invocation = dbt.cli(["build"], context=context, target_path=dbt_dir / "target")
            yield from invocation.stream()
    finally:
        selection.unlink(missing_ok=True)
