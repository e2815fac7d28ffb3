"""The background warm-up of the in-process dbt (qrsdp_dagster/dbt_in_process.py): it parses with
a profile of its own into a scratch directory (never the run's target or warehouse), keeps its
partial parse so the next process re-parses nothing, starts once per process, and a failing
warm-up only logs (the build then pays dbt's one-time costs itself)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from qrsdp_dagster import dbt_in_process
from qrsdp_dagster.resources import QrsdpDbtCliResource, build_resources
from qrsdp_dagster.settings import Settings

PROJECT = Path(__file__).resolve().parents[1] / "dbt_project"


def scratch_dirs() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("qrsdp-dbt-warm-up-*")}


def lock_is_free() -> bool:
    if not dbt_in_process._ONE_AT_A_TIME.acquire(blocking=False):
        return False
    dbt_in_process._ONE_AT_A_TIME.release()
    return True


def test_warm_up_keeps_its_partial_parse_and_touches_nothing_of_the_runs(tmp_path, monkeypatch):
    project = tmp_path / "dbt_project"
    shutil.copytree(PROJECT, project, ignore=shutil.ignore_patterns("target", "logs"))
    (project / "target").mkdir()
    (project / "target" / "manifest.json").write_text("{}")  # the run's artifacts stay as they are
    monkeypatch.setenv("QRSDP_DUCKDB_PATH", str(tmp_path / "wh.duckdb"))
    leftovers = scratch_dirs()

    first = dbt_in_process._warm_up(project)
    assert first is not None and first > 0  # nothing saved yet: a full parse
    assert (project / dbt_in_process.WARM_UP_CACHE / "partial_parse.msgpack").is_file()
    # another process, another warehouse: the warm-up's own profile keeps the saved parse valid
    monkeypatch.setenv("QRSDP_DUCKDB_PATH", str(tmp_path / "elsewhere.duckdb"))
    assert dbt_in_process._warm_up(project) == 0
    # a damaged saved parse costs one full parse, never the warm-up
    (project / dbt_in_process.WARM_UP_CACHE / "partial_parse.msgpack").write_bytes(b"\x00garbage" * 100)
    assert dbt_in_process._warm_up(project) == first

    assert (project / "target" / "manifest.json").read_text() == "{}"
    assert sorted(p.name for p in (project / "target").iterdir()) == ["manifest.json", "warm-up"]
    assert not (tmp_path / "wh.duckdb").exists() and not (tmp_path / "elsewhere.duckdb").exists()
    assert scratch_dirs() == leftovers and lock_is_free()


def test_a_failing_warm_up_only_logs(tmp_path):
    (tmp_path / "dbt_project.yml").write_text("name: [broken\nprofile: qrsdp\n")  # not YAML
    assert dbt_in_process._warm_up(tmp_path) is None  # dbt refuses the project
    assert dbt_in_process._warm_up(tmp_path / "no-such-project") is None  # no project at all
    assert not (tmp_path / dbt_in_process.WARM_UP_CACHE).exists() and lock_is_free()


def test_warm_up_starts_once_per_process_and_only_for_the_embedded_warehouse(monkeypatch):
    started: list[Path] = []
    monkeypatch.setattr(dbt_in_process, "_WARM_UP_STARTED", type(dbt_in_process._WARM_UP_STARTED)())
    monkeypatch.setattr(dbt_in_process, "_warm_up", lambda project, profile, flags: started.append(project))
    resource = QrsdpDbtCliResource(project_dir=str(PROJECT), profiles_dir=str(PROJECT), warm_up=True)
    dbt_in_process.warm_up_in_background(resource)
    dbt_in_process.warm_up_in_background(resource)
    for _ in range(100):  # the thread runs the (recording) warm-up at once
        if started:
            break
        dbt_in_process._WARM_UP_STARTED.wait(0.01)
    assert started == [PROJECT.resolve()]

    def wanted(warehouse: str) -> bool:
        return build_resources(dataclasses.replace(Settings.from_env(), warehouse=warehouse))["dbt"].warm_up

    monkeypatch.setenv("QRSDP_DBT_WARM_UP", "1")
    assert wanted("duckdb") and not wanted("ducklake")  # DuckLake builds in a dbt subprocess
    monkeypatch.setenv("QRSDP_DBT_WARM_UP", "0")
    assert not wanted("duckdb")
    monkeypatch.delenv("QRSDP_DBT_WARM_UP")
    for cores, expected in ((2, False), (4, True), (16, True)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda _pid, n=cores: set(range(n)))
        assert wanted("duckdb") is expected


@pytest.mark.parametrize("in_process", [True, False])
def test_setup_starts_the_warm_up_only_for_an_in_process_build(monkeypatch, in_process):
    calls: list[object] = []
    monkeypatch.setattr(dbt_in_process, "warm_up_in_background", calls.append)
    import dagster as dg

    resource = QrsdpDbtCliResource(project_dir=str(PROJECT), profiles_dir=str(PROJECT), warm_up=True,
                                   in_process=in_process)  # fmt: skip
    resource.setup_for_execution(dg.build_init_resource_context())
    assert len(calls) == (1 if in_process else 0)
