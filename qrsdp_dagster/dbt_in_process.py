"""``dbt build`` inside the run's own process (dbtRunner) instead of a dbt subprocess.

A dbt subprocess starts a second Python, imports dbt again and loads the partial parse: seconds
of CPU before the first query on a 2-core machine, for a process that is already running
dagster-dbt (which imports dbt). Here dbt runs on a thread of the step's process; its events go
through a queue to dagster-dbt's own ``DbtCliInvocation``, which turns them into Dagster events
exactly as it does for a subprocess's JSON log lines (``msg_to_dict`` is what dbt's JSON logger
writes). Models, tests, selection, artifacts and failures are dbt's, unchanged.

Used for the embedded DuckDB warehouse. The DuckLake build keeps the subprocess: dbt-duckdb keeps
an in-memory database (the attached lake) alive for the life of the process, and each retried
build must start from nothing.

One in-process dbt at a time per process (dbt's flags and adapters are process-wide).

The first dbt command of a process also pays one-time costs that no later one does: dbt builds
the JSON schemas and (de)serialisers of its manifest classes on first use (about 1 s of CPU here).
:func:`warm_up_in_background` pays them on a background thread while a run's earlier steps
(simulation, landing, replay: numba and Arrow, which release the GIL) keep the cores busy, so the
run's ``dbt build`` starts warm.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dagster import AssetExecutionContext, get_dagster_logger
from dagster_dbt.asset_utils import (
    extract_runtime_selection_from_args,
    get_updated_cli_invocation_params_for_context,
)
from dagster_dbt.core.dbt_cli_invocation import PARTIAL_PARSE_FILE_NAME, DbtCliInvocation
from dagster_dbt.dagster_dbt_translator import DagsterDbtTranslator
from dagster_dbt.dbt_manifest import validate_manifest

_ONE_AT_A_TIME = threading.Lock()
_WARM_UP_STARTED = threading.Event()
_END = object()
_FORWARDED_LEVELS = {"info", "warn", "error"}  # what a dbt process prints at its default log level
logger = get_dagster_logger()


class InProcessDbt:
    """The part of ``subprocess.Popen`` that ``DbtCliInvocation`` uses (``args``, ``wait``,
    ``returncode``, ``send_signal``), for a dbtRunner invocation on a thread of this process."""

    def __init__(self, args: Sequence[str]) -> None:
        self.args = ["dbt", *args]
        self.returncode: int | None = None
        self.events: queue.Queue[Any] = queue.Queue()
        self._done = threading.Event()
        self._drained = False
        self._thread = threading.Thread(
            target=self._run, args=(list(args),), name="dbt-in-process", daemon=True
        )
        self._thread.start()

    def _run(self, args: list[str]) -> None:
        from dbt.cli.main import dbtRunner
        from dbt_common.events.functions import msg_to_dict

        def forward(msg: Any) -> None:
            if msg.info.level in _FORWARDED_LEVELS:
                self.events.put(msg_to_dict(msg))

        code = 2
        with _ONE_AT_A_TIME:
            try:
                result = dbtRunner(callbacks=[forward]).invoke(args)
                code = 0 if result.success else (2 if result.exception is not None else 1)
                if result.exception is not None:
                    self.events.put(_error_event(f"dbt: {result.exception}"))
            except BaseException as exc:  # reported as an error of dbt, never lost on the thread
                self.events.put(_error_event(f"dbt raised {type(exc).__name__}: {exc}"))
            finally:
                _release_duckdb()
                self.returncode = code
                self._done.set()
                self.events.put(_END)

    def stream(self) -> Iterator[dict[str, Any]]:
        """dbt's events until it returns; nothing once they have been read (dagster-dbt reads the
        stream again to learn whether the command succeeded, like a closed stdout)."""
        while not self._drained and (event := self.events.get()) is not _END:
            yield event
        self._drained = True

    def wait(self, timeout: float | None = None) -> int | None:
        self._done.wait(timeout)
        return self.returncode

    def send_signal(self, _signum: int) -> None:
        """An interrupted step: cancel dbt's running queries (its nodes then fail and it returns)."""
        from dbt.adapters.factory import FACTORY

        for adapter in list(FACTORY.adapters.values()):
            try:
                adapter.cancel_open_connections()
            except Exception as exc:  # best effort while the step is being stopped
                logger.warning(f"cancelling dbt's queries: {exc}")


def _error_event(message: str) -> dict[str, Any]:
    return {"info": {"level": "error", "msg": message, "name": "QrsdpInProcessError"}, "data": {}}


def _release_duckdb() -> None:
    """Close dbt-duckdb's database like the end of a dbt process would, so this process (or
    another) can open the DuckDB file afterwards with another configuration (read-only)."""
    try:
        from dbt.adapters.duckdb.connections import DuckDBConnectionManager
    except ImportError:  # not the DuckDB adapter
        return
    with DuckDBConnectionManager._LOCK:
        env = DuckDBConnectionManager._ENV
        DuckDBConnectionManager._ENV = None
        if env is not None:
            env.close()


@dataclass
class InProcessDbtInvocation(DbtCliInvocation):
    """dagster-dbt's invocation, reading events from :class:`InProcessDbt` instead of stdout."""

    def _stream_stdout(self) -> Iterator[str | dict[str, Any]]:
        process: InProcessDbt = self.process  # type: ignore[assignment]
        for event in process.stream():
            if event["info"].get("level") == "error":
                self._error_messages.append(event["info"]["msg"])
            yield event
        process.wait()


def invoke_in_process(
    resource: Any,
    args: Sequence[str],
    *,
    context: AssetExecutionContext,
    target_path: Path,
    manifest: Any = None,
    dagster_dbt_translator: DagsterDbtTranslator | None = None,
    raise_on_error: bool = True,
) -> DbtCliInvocation:
    """What ``DbtCliResource.cli(args, context=..., target_path=...)`` does, with dbt in process:
    the same node selection for the context (asset and check subsets), the same target path and
    partial-parse reuse, the same events."""
    cleaned_args, selects, excludes = extract_runtime_selection_from_args(args)
    params = get_updated_cli_invocation_params_for_context(
        context=context,
        manifest=validate_manifest(manifest) if manifest else {},
        dagster_dbt_translator=dagster_dbt_translator or DagsterDbtTranslator(),
        runtime_selects=selects,
        runtime_excludes=excludes,
    )
    project_dir = Path(
        params.dbt_project.project_dir if params.dbt_project else resource.project_dir
    ).resolve()
    target_path = Path(target_path)
    if not target_path.is_absolute():
        target_path = project_dir / target_path
    _reuse_partial_parse(project_dir, target_path)
    flags = [
        "--project-dir", str(project_dir), "--target-path", str(target_path), "--log-path", str(target_path),
        "--no-send-anonymous-usage-stats", "--log-level", "none", "--log-format-file", "json",
    ]  # fmt: skip
    if resource.profiles_dir:
        flags += ["--profiles-dir", str(resource.profiles_dir)]
    if resource.profile:
        flags += ["--profile", resource.profile]
    if resource.target:
        flags += ["--target", resource.target]
    if params.indirect_selection:
        flags += ["--indirect-selection", params.indirect_selection]
    dbt_args = [*resource.global_config_flags, *cleaned_args, *flags, *params.selection_args]
    logger.info(f"Running dbt in process: `dbt {' '.join(dbt_args)}`.")
    return InProcessDbtInvocation(
        process=InProcessDbt(dbt_args),  # type: ignore[arg-type]
        manifest=params.manifest,
        dagster_dbt_translator=params.dagster_dbt_translator,
        project_dir=project_dir,
        target_path=target_path,
        raise_on_error=raise_on_error,
        context=context,
        adapter=None,
        cli_version=resource._cli_version,
        project=params.dbt_project,
    )


def _reuse_partial_parse(project_dir: Path, target_path: Path) -> None:
    """As dagster-dbt does for a subprocess: start from the project's saved partial parse."""
    saved = Path(os.environ.get("DBT_TARGET_PATH", "target"))
    saved = (saved if saved.is_absolute() else project_dir / saved) / PARTIAL_PARSE_FILE_NAME
    destination = target_path / PARTIAL_PARSE_FILE_NAME
    if saved.exists() and not destination.exists():
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(saved, destination)


# The warm-up parses with a profile of its own, the same on every run: dbt's partial parsing
# starts over from nothing whenever the profile's connection values change (the embedded profile's
# DuckDB path differs per data dir), so a constant profile keeps the warm-up's saved partial parse
# (WARM_UP_CACHE under the project's target) valid from run to run: after the first run the warm-up
# re-parses no file and costs only dbt's one-time costs. Parsing never connects to the database.
WARM_UP_CACHE = Path("target") / "warm-up"
_WARM_UP_PROFILE = """{profile}:
  target: warm_up
  outputs:
    warm_up:
      type: duckdb
      path: ":memory:"
"""


def warm_up_in_background(resource: Any) -> None:
    """Start, once per process, a ``dbt parse`` of ``resource``'s project on a daemon thread, into
    a scratch target path with the warm-up's own profile (the run's target, partial parse and
    warehouse are never touched). The build waits for it (one dbt at a time); a failure only logs:
    the build then pays the costs itself."""
    if _WARM_UP_STARTED.is_set():
        return
    _WARM_UP_STARTED.set()
    threading.Thread(
        target=_warm_up,
        args=(Path(resource.project_dir).resolve(), resource.profile, list(resource.global_config_flags)),
        name="dbt-warm-up",
        daemon=True,
    ).start()


def _warm_up(project_dir: Path, profile: str | None = None, flags: Sequence[str] = ()) -> int | None:
    """The warm-up itself (run on the background thread): how many files dbt parsed (0: all from
    the saved partial parse), None if it failed. Its partial parse is kept in
    ``project_dir / WARM_UP_CACHE`` for the next process (replaced atomically: processes may warm
    up at once)."""
    with _ONE_AT_A_TIME, tempfile.TemporaryDirectory(prefix="qrsdp-dbt-warm-up-") as tmp:
        scratch = Path(tmp)
        cache = project_dir / WARM_UP_CACHE / PARTIAL_PARSE_FILE_NAME
        try:
            from dbt.cli.main import dbtRunner

            name = profile or _project_profile(project_dir)
            (scratch / "profiles.yml").write_text(_WARM_UP_PROFILE.format(profile=name))
            if cache.is_file():
                shutil.copy(cache, scratch / PARTIAL_PARSE_FILE_NAME)
            args = [
                "parse", "--project-dir", str(project_dir), "--profiles-dir", tmp, "--profile", name,
                "--target", "warm_up", "--target-path", tmp, "--log-path", tmp,
                "--no-send-anonymous-usage-stats", "--log-level", "none", "--quiet",
            ]  # fmt: skip
            result = dbtRunner().invoke([*flags, *args])
            if not result.success:
                logger.debug(f"dbt warm-up did not succeed: {result.exception}")
                return None
            cache.parent.mkdir(parents=True, exist_ok=True)
            kept = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
            shutil.copy(scratch / PARTIAL_PARSE_FILE_NAME, kept)
            os.replace(kept, cache)
            parsed = int(json.loads((scratch / "perf_info.json").read_text())["parsed_path_count"])
            logger.debug(f"dbt warm-up: {parsed} file(s) parsed")
            return parsed
        except Exception as exc:  # the build pays the one-time costs itself
            logger.debug(f"dbt warm-up failed: {type(exc).__name__}: {exc}")
            return None
        finally:
            _release_duckdb()


def _project_profile(project_dir: Path) -> str:
    import yaml

    return str(yaml.safe_load((project_dir / "dbt_project.yml").read_text())["profile"])
