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

Warehouse ``duckdb`` (embedded default): one writer at a time -- the dbt step runs in the
``qrsdp_duckdb`` pool, which ``qrsdp ui`` limits to 1, and takes a file lock next to the DuckDB file,
so concurrent partition runs queue for the warehouse. Warehouse ``ducklake`` (distributed profile):
builds of different workers run at once; tables are created under a catalog lock and commits lost
to a concurrent build are built again (qrsdp_dagster/ducklake_builds.py).
"""

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import dagster as dg
from dagster import AssetExecutionContext
from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings, DbtCliResource, dbt_assets

from qrsdp_dagster import ducklake_builds
from qrsdp_dagster.partitions import SETTINGS, chain_order, session_partitions
from qrsdp_dagster.resources import (
    LakeResource,
    QrsdpDbtCliResource,
    SimulationResource,
    WarehouseResource,
    dbt_executable,
)
from qrsdp_sim.distributed.ducklake import DuckLakeSettings

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
                    project_dir=str(project_dir),
                    profiles_dir=str(project_dir),
                    dbt_executable=dbt_executable(),
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
            description=description or spec.description,
            metadata={**(spec.metadata or {}), "owner": "team:qrsdp"},
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
    dbt_dir = Path(simulation.data_dir) / "dbt"
    selection = write_partitions_file(dbt_dir / "partitions" / f"{context.run_id}.csv", partitions)
    context.log.info(
        f"dbt build for {len(partitions)} partition(s) (listed in {selection}) into {warehouse.description()}"
    )
    try:
        with warehouse.environment(store, selection):
            if warehouse.is_ducklake:
                yield from _build_ducklake(context, dbt, warehouse.ducklake(store), dbt_dir)
            else:
                yield from _build_duckdb(context, dbt, Path(warehouse.duckdb_path), dbt_dir)
    finally:
        selection.unlink(missing_ok=True)


def _build_duckdb(
    context: AssetExecutionContext, dbt: DbtCliResource, path: Path, dbt_dir: Path
) -> Iterator[Any]:
    """One DuckDB file allows one writing process: serialise dbt runs on this machine whatever the
    instance's pool limits are (a second run waits here instead of failing on the lock). dbt runs
    in this process (qrsdp_dagster/dbt_in_process.py) when the resource can, else as a subprocess."""
    path.parent.mkdir(parents=True, exist_ok=True)
    target = dbt_dir / "target"
    with open(f"{path}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if isinstance(dbt, QrsdpDbtCliResource) and dbt.in_process:
            yield from dbt.cli_in_process(["build"], context=context, target_path=target).stream()
        else:
            yield from dbt.cli(["build"], context=context, target_path=target).stream()


DUCKLAKE_ATTEMPTS = int(os.environ.get("QRSDP_DUCKLAKE_BUILD_ATTEMPTS", "") or 8)


def _build_ducklake(
    context: AssetExecutionContext, dbt: DbtCliResource, settings: DuckLakeSettings, dbt_dir: Path
) -> Iterator[Any]:
    """dbt build into the shared DuckLake (qrsdp_dagster.ducklake_builds): under the table-creation
    lock while a table is missing; models that lost a commit to another worker's build, and what
    depends on them, are built again from dbt's own run results (up to DUCKLAKE_ATTEMPTS times)."""
    missing = ducklake_builds.missing_tables(settings, json.loads(DBT_MANIFEST.read_text()))
    creating = ducklake_builds.bootstrap_lock(settings) if missing else contextlib.nullcontext()
    if missing:
        context.log.info(
            f"DuckLake: creating {len(missing)} table(s) under the catalog's lock: {sorted(missing)}"
        )

    def invoke(extra: Sequence[str], target: Path) -> Any:
        return dbt.cli(["build", *extra], context=context, target_path=target, raise_on_error=False)

    with creating:
        try:
            attempts = yield from ducklake_builds.build_with_conflict_retries(
                invoke,
                dbt_dir / "target" / context.run_id,
                attempts=DUCKLAKE_ATTEMPTS,
                log=context.log.warning,
            )
        except ducklake_builds.BuildError as exc:
            raise dg.Failure(
                str(exc), metadata={"dbt_target": dg.MetadataValue.path(str(exc.target))}
            ) from None
    if attempts > 1:
        context.log.info(f"DuckLake: dbt build complete after {attempts} attempts")
