"""A symbols x dates slice materialised on the embedded default -- local sessions, local Parquet lake,
one DuckDB file, SQLite instance, no service -- through Dagster's asset CLI with a partition range
(the CI entry point). The distributed tests and benchmark compare their marts with it.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml

from qrsdp_dagster.settings import project_root

CI_RESOURCES = project_root() / "qrsdp_dagster" / "configs" / "ci_resources.yaml"


class EmbeddedSliceError(RuntimeError):
    """``dagster asset materialize`` failed (the message holds the end of its output)."""


def embedded_env(workdir: Path, settings: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without any QRSDP_/DAGSTER_/AWS_ variable (so nothing points at a
    service), plus ``settings`` and a data dir and Dagster home under ``workdir``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QRSDP_", "DAGSTER_", "AWS_"))}
    env.update(settings, QRSDP_DATA_DIR=str(workdir / "data"), DAGSTER_HOME=str(workdir / "home"))
    return env


def materialize(
    workdir: Path,
    settings: Mapping[str, str],
    symbols: Sequence[str],
    first: dt.date,
    last: dt.date,
    *,
    timeout_s: float = 3600,
) -> Path:
    """Every asset over the rectangle symbols[0]..symbols[-1] x first..last in one run; returns the
    DuckDB warehouse file. ``settings`` are the code location's QRSDP_* variables (symbols in the
    order the rectangle spans, start date, session length); the run config is CI's, with the session
    length of ``settings`` (CI's file says 600 s)."""
    (workdir / "home").mkdir(parents=True, exist_ok=True)
    resources = yaml.safe_load(CI_RESOURCES.read_text())
    if settings.get("QRSDP_SESSION_SECONDS"):
        resources["resources"]["simulation"]["config"]["session_seconds"] = int(
            settings["QRSDP_SESSION_SECONDS"]
        )
    run_config = workdir / "resources.yaml"
    run_config.write_text(yaml.safe_dump(resources))
    dagster = Path(sys.executable).with_name("dagster")
    proc = subprocess.run(
        [str(dagster), "asset", "materialize", "-m", "qrsdp_dagster.definitions", "--select", "*",
         "--partition-range", f"{first}|{symbols[0]}...{last}|{symbols[-1]}", "-c", str(run_config)],
        cwd=project_root(), env=embedded_env(workdir, settings), capture_output=True, text=True,
        timeout=timeout_s, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise EmbeddedSliceError(
            f"dagster asset materialize failed (exit {proc.returncode})\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return workdir / "data" / "warehouse" / "qrsdp.duckdb"
