"""The background warm-up of the in-process dbt (qrsdp_dagster/dbt_in_process.py): it parses into
a scratch directory, never the project's target, starts once per process, and a failing warm-up
only logs (the build then pays dbt's one-time costs itself)."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import pytest

from qrsdp_dagster import dbt_in_process
from qrsdp_dagster.resources import QrsdpDbtCliResource, build_resources
from qrsdp_dagster.settings import Settings

PROJECT = Path(__file__).resolve().parents[1] / "dbt_project"
FLAGS = ["--no-send-anonymous-usage-stats", "--log-level", "none", "--quiet", "--profiles-dir", str(PROJECT)]


def scratch_dirs() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("qrsdp-dbt-warm-up-*")}


def test_warm_up_parses_in_a_scratch_dir_and_leaves_the_project_target_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("QRSDP_DUCKDB_PATH", str(tmp_path / "wh.duckdb"))
    target = PROJECT / "target"
    before = {p.name: p.stat().st_mtime_ns for p in target.iterdir()} if target.exists() else {}
    parsed: list[Path] = []
    reuse = dbt_in_process._reuse_partial_parse

    def spy(project_dir: Path, scratch: Path) -> None:
        parsed.append(scratch)
        reuse(project_dir, scratch)

    monkeypatch.setattr(dbt_in_process, "_reuse_partial_parse", spy)
    leftovers = scratch_dirs()
    assert dbt_in_process._warm_up(PROJECT, FLAGS)
    assert len(parsed) == 1 and parsed[0].parent == Path(tempfile.gettempdir())
    assert not parsed[0].exists() and scratch_dirs() == leftovers  # the scratch target is gone
    after = {p.name: p.stat().st_mtime_ns for p in target.iterdir()} if target.exists() else {}
    assert after == before
    assert not (tmp_path / "wh.duckdb").exists()  # parsing never opens the warehouse
    assert dbt_in_process._ONE_AT_A_TIME.acquire(blocking=False)  # released for the build
    dbt_in_process._ONE_AT_A_TIME.release()


def test_a_failing_warm_up_only_logs(tmp_path):
    assert not dbt_in_process._warm_up(tmp_path / "no-such-project", FLAGS)  # no dbt_project.yml
    assert dbt_in_process._ONE_AT_A_TIME.acquire(blocking=False)
    dbt_in_process._ONE_AT_A_TIME.release()


def test_warm_up_starts_once_per_process_and_only_for_the_embedded_warehouse(monkeypatch):
    started: list[tuple[Path, list[str]]] = []
    monkeypatch.setattr(dbt_in_process, "_WARM_UP_STARTED", type(dbt_in_process._WARM_UP_STARTED)())
    monkeypatch.setattr(dbt_in_process, "_warm_up", lambda project, flags: started.append((project, flags)))
    resource = QrsdpDbtCliResource(project_dir=str(PROJECT), profiles_dir=str(PROJECT), warm_up=True)
    dbt_in_process.warm_up_in_background(resource)
    dbt_in_process.warm_up_in_background(resource)
    for _ in range(100):  # the thread runs the (recording) warm-up at once
        if started:
            break
        dbt_in_process._WARM_UP_STARTED.wait(0.01)
    assert [project for project, _flags in started] == [PROJECT.resolve()]
    assert "--profiles-dir" in started[0][1]

    for warehouse, expected in (("duckdb", True), ("ducklake", False)):
        settings = dataclasses.replace(Settings.from_env(), warehouse=warehouse)
        assert build_resources(settings)["dbt"].warm_up is expected
    monkeypatch.setenv("QRSDP_DBT_WARM_UP", "0")
    assert build_resources(dataclasses.replace(Settings.from_env(), warehouse="duckdb"))["dbt"].warm_up is False


@pytest.mark.parametrize("in_process", [True, False])
def test_setup_starts_the_warm_up_only_for_an_in_process_build(monkeypatch, in_process):
    calls: list[object] = []
    monkeypatch.setattr(dbt_in_process, "warm_up_in_background", calls.append)
    import dagster as dg

    resource = QrsdpDbtCliResource(project_dir=str(PROJECT), profiles_dir=str(PROJECT), warm_up=True,
                                   in_process=in_process)  # fmt: skip
    resource.setup_for_execution(dg.build_init_resource_context())
    assert len(calls) == (1 if in_process else 0)
