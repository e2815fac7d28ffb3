"""The 2 symbols x 2 dates slice through Dagster's execution API, and the CI command line.

Paths (data dir, lake, DuckDB) come from run config, so nothing is written to ./data.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from qrsdp_dagster.definitions import defs
from qrsdp_dagster.partitions import SETTINGS, range_tags, session_key
from qrsdp_dagster.resources import dbt_executable
from qrsdp_sim.engine.calendar import trading_dates

ROOT = Path(__file__).resolve().parents[1]
SYMBOLS = list(SETTINGS.symbols)[:2]
DATES = trading_dates(SETTINGS.start_date, 2)
ASSETS = [
    "session_log", "raw_events", "book_states", "staging/stg_events", "staging/stg_book_states",
    "staging/stg_sessions", "marts/fct_ohlcv_1min", "marts/fct_session_summary",
]  # fmt: skip


def run_config(tmp: Path, session_seconds: int = 300) -> dict:
    return {
        "resources": {
            "simulation": {
                "config": {"data_dir": str(tmp), "session_seconds": session_seconds, "fsync": False}
            },
            "lake": {"config": {"uri": (tmp / "lake").as_uri()}},
            "warehouse": {
                "config": {"duckdb_path": str(tmp / "warehouse.duckdb"), "min_events_per_session": 1000}
            },
        },
        "loggers": {"console": {"config": {"log_level": "WARNING"}}},
    }


def latest_metadata(instance: dg.DagsterInstance, asset: str, key: str) -> dict:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey.from_user_string(asset), asset_partitions=[key]), limit=1
    ).records
    assert records, f"{asset} {key} was not materialised"
    return records[0].asset_materialization.metadata


@pytest.fixture(scope="module")
def slice_run(tmp_path_factory):
    """One run of qrsdp_pipeline over the 2x2 rectangle on a temporary instance."""
    tmp = tmp_path_factory.mktemp("pipeline")
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("qrsdp_pipeline").execute_in_process(
            instance=instance,
            run_config=run_config(tmp),
            tags=range_tags(SYMBOLS, DATES[0], DATES[-1]),
            raise_on_error=False,
        )
        yield tmp, instance, result


def test_slice_materialises_every_asset_and_passes_every_check(slice_run):
    tmp, instance, result = slice_run
    assert result.success
    keys = {str(session_key(s, d)) for s in SYMBOLS for d in DATES}
    for asset in ASSETS:
        assert instance.get_materialized_partitions(dg.AssetKey.from_user_string(asset)) == keys, asset
    checks = [
        e.asset_check_evaluation_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    ]
    assert len(checks) == len(defs.resolve_asset_graph().asset_check_keys) == 37  # 34 dbt tests + 3 Python
    assert [c.check_name for c in checks if not c.passed] == []
    for s in SYMBOLS:
        for d in DATES:
            assert (tmp / "sessions" / s / f"{d}.qrsdp").is_file()
            assert (tmp / "lake" / "raw" / "events" / f"symbol={s}" / f"date={d}" / "_SUCCESS").is_file()
            assert (tmp / "lake" / "raw" / "book_states" / f"symbol={s}" / f"date={d}" / "_SUCCESS").is_file()


@pytest.mark.parametrize("in_process", [True, False], ids=["dbt-in-process", "dbt-subprocess"])
def test_a_failing_dbt_test_fails_the_step_with_its_check_red(slice_run, in_process):
    """dbt in the step's process (the default) or as a subprocess: the same outcome when a data
    test fails -- the step fails, that check is red, the others green, and the warehouse file is
    released (opened read-only afterwards)."""
    tmp, _instance, _result = slice_run
    config = run_config(tmp)
    config["resources"]["warehouse"]["config"]["min_events_per_session"] = 10**9  # no session has that many
    project = str(ROOT / "dbt_project")
    config["resources"]["dbt"] = {
        "config": {"project_dir": project, "profiles_dir": project, "dbt_executable": dbt_executable(),
                   "in_process": in_process}
    }  # fmt: skip
    job = defs.resolve_job_def("qrsdp_pipeline")
    dbt_keys = [k for k in job.asset_layer.executable_asset_keys if "/" in k.to_user_string()]
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(
            asset_selection=dbt_keys, instance=instance, run_config=config,
            tags=range_tags(SYMBOLS, DATES[0], DATES[-1]), raise_on_error=False,
        )  # fmt: skip
    assert not result.success
    checks = {
        e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data.passed
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }
    assert [name for name, passed in checks.items() if not passed] == ["stg_events_rows_per_session_in_range"]
    # dbt build skips what depends on a failing test: the summary (built from stg_event_checks) and
    # its 8 tests; the other 25 tests ran and passed
    assert len(checks) == 26 and not [name for name in checks if name.startswith("fct_session_summary")]
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "qrsdp_dbt" in failure.step_key
    with duckdb.connect(str(tmp / "warehouse.duckdb"), read_only=True) as con:  # released by dbt
        assert con.sql("select count(*) from marts.fct_session_summary").fetchone() == (4,)


def test_prices_chain_across_partitions_with_per_partition_metadata(slice_run):
    tmp, instance, _ = slice_run
    for s in SYMBOLS:
        first = latest_metadata(instance, "session_log", str(session_key(s, DATES[0])))
        second = latest_metadata(instance, "session_log", str(session_key(s, DATES[1])))
        assert first["open_ticks"].value == SETTINGS.symbols[s]
        assert second["open_ticks"].value == first["close_ticks"].value
        assert "previous" not in first["open_from"].value and str(DATES[0]) in second["open_from"].value
        plot = Path(second["price_plot"].value)  # a file beside the session; no image in the event log
        assert plot == tmp / "sessions" / s / f"{DATES[1]}.png" and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert not any("base64" in str(v.value) for v in second.values())
        assert second["session_seconds"].value == 300 and "session_seconds=300" in second["config"].value
        assert second["file_bytes"].value == (tmp / "sessions" / s / f"{DATES[1]}.qrsdp").stat().st_size
        assert second["compression"].value > 1
        landed = latest_metadata(instance, "raw_events", str(session_key(s, DATES[1])))
        assert landed["rows"].value == second["events"].value
    with duckdb.connect(str(tmp / "warehouse.duckdb"), read_only=True) as con:
        rows = con.sql(
            "select symbol, date, open_ticks, close_ticks, engine_close_ticks, n_events "
            "from marts.fct_session_summary order by symbol, date"
        ).fetchall()
    assert len(rows) == 4
    for (s1, _d1, _o1, c1, e1, _), (s2, _d2, o2, _c2, _e2, _) in zip(rows[::2], rows[1::2], strict=True):
        assert s1 == s2 and o2 == c1 == e1


def test_single_partition_rerun_is_idempotent(slice_run):
    tmp, instance, _ = slice_run
    key = str(session_key(SYMBOLS[1], DATES[1]))
    path = tmp / "sessions" / SYMBOLS[1] / f"{DATES[1]}.qrsdp"
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    result = defs.resolve_job_def("qrsdp_pipeline").execute_in_process(
        instance=instance, run_config=run_config(tmp), partition_key=key, raise_on_error=False
    )
    assert result.success
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before  # same seed, same open: same bytes
    with duckdb.connect(str(tmp / "warehouse.duckdb"), read_only=True) as con:
        assert con.sql("select count(*) from marts.fct_session_summary").fetchone()[0] == 4


def failure_text(result) -> str:
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    return failure.step_failure_data.error.message + str(failure.step_failure_data.user_failure_data)


def test_missing_previous_date_fails_before_simulating_naming_the_first_missing_date(slice_run):
    """The slice holds 2 dates per symbol; a range starting on the 5th date (3rd and 4th missing) stops
    at once -- no session of the range is simulated -- and names the 3rd date as where to start."""
    tmp, instance, _ = slice_run
    dates = trading_dates(SETTINGS.start_date, 6)
    result = defs.resolve_job_def("qrsdp_pipeline").execute_in_process(
        instance=instance,
        run_config=run_config(tmp),
        tags=range_tags(SYMBOLS[:1], dates[4], dates[5]),
        asset_selection=[dg.AssetKey("session_log")],
        raise_on_error=False,
    )
    assert not result.success
    text = failure_text(result)
    assert f"backfill {SYMBOLS[0]} from {dates[2]} (the first trading date without a session) to {dates[4]}" in text
    assert f"'{dates[2]}|{SYMBOLS[0]}'" in text
    assert not (tmp / "sessions" / SYMBOLS[0] / f"{dates[4]}.qrsdp").exists()
    assert not (tmp / "sessions" / SYMBOLS[0] / f"{dates[5]}.qrsdp").exists()


def test_chaining_onto_another_configuration_is_refused_unless_allowed(slice_run):
    """The slice ran 300-second sessions; the next date with 600-second sessions is refused with the
    difference named, and goes through (recorded in the metadata) when explicitly allowed."""
    tmp, instance, _ = slice_run
    nxt = trading_dates(SETTINGS.start_date, 3)[2]
    key = str(session_key(SYMBOLS[0], nxt))
    other = run_config(tmp, session_seconds=600)
    result = defs.resolve_job_def("qrsdp_pipeline").execute_in_process(
        instance=instance, run_config=other, partition_key=key,
        asset_selection=[dg.AssetKey("session_log")], raise_on_error=False,
    )  # fmt: skip
    assert not result.success
    assert "another configuration (session_seconds: 300 -> 600)" in failure_text(result)
    assert not (tmp / "sessions" / SYMBOLS[0] / f"{nxt}.qrsdp").exists()
    other["resources"]["simulation"]["config"]["allow_config_change"] = True
    result = defs.resolve_job_def("qrsdp_pipeline").execute_in_process(
        instance=instance, run_config=other, partition_key=key,
        asset_selection=[dg.AssetKey("session_log")], raise_on_error=False,
    )  # fmt: skip
    assert result.success
    meta = latest_metadata(instance, "session_log", key)
    assert meta["config_changed"].value == "session_seconds: 300 -> 600"
    assert meta["session_seconds"].value == 600


def test_ci_command_line_materializes_a_partition_range(tmp_path):
    """The CI entry point: `dagster job execute -j qrsdp_pipeline` with a partition-range tag pair -- a
    rectangle of symbols x dates as one run of the asset job, no child run."""
    env = {**os.environ, "QRSDP_DATA_DIR": str(tmp_path / "data"), "DAGSTER_HOME": str(tmp_path / "home")}
    for name in ("QRSDP_LAKE_URI", "QRSDP_DUCKDB_PATH", "QRSDP_SESSIONS_URI", "QRSDP_WAREHOUSE"):
        env.pop(name, None)
    (tmp_path / "home").mkdir()
    exe = Path(sys.executable).with_name("dagster")
    proc = subprocess.run(
        [str(exe), "job", "execute", "-m", "qrsdp_dagster.definitions", "-j", "qrsdp_pipeline",
         "--tags", json.dumps({"dagster/asset_partition_range_start": "2026-01-02|AAPL",
                               "dagster/asset_partition_range_end": "2026-01-05|MSFT"}),
         "-c", str(ROOT / "qrsdp_dagster" / "configs" / "ci_resources.yaml")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "RUN_SUCCESS" in proc.stdout + proc.stderr
    data = tmp_path / "data"
    assert len(list((data / "sessions").glob("*/*.qrsdp"))) == 4
    with duckdb.connect(str(data / "warehouse" / "qrsdp.duckdb"), read_only=True) as con:
        assert con.sql("select count(*), min(date), max(date) from marts.fct_session_summary").fetchone() == (
            4, dt.date(2026, 1, 2), dt.date(2026, 1, 5),
        )  # fmt: skip
    with dg.DagsterInstance.from_config(str(tmp_path / "home")) as instance:
        runs = instance.get_runs()
        assert len(runs) == 1  # one run over the range, no nested child run


def test_python_asset_checks_go_red_on_bad_data(tmp_path, monkeypatch):
    """Each Python asset's check fails (and, being blocking, fails the run) on data that disagrees."""
    import json

    import qrsdp_dagster.assets.simulation as simulation_assets

    key = str(session_key(SYMBOLS[0], DATES[0]))
    with dg.instance_for_test() as instance:

        def run(assets: list[str]):
            result = defs.resolve_job_def("qrsdp_pipeline").execute_in_process(
                instance=instance, run_config=run_config(tmp_path), partition_key=key,
                asset_selection=[dg.AssetKey(a) for a in assets], raise_on_error=False,
            )  # fmt: skip
            return result, {
                e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data.passed
                for e in result.all_events
                if e.event_type_value == "ASSET_CHECK_EVALUATION"
            }

        # a session file that reads back short (here: its reader hands back one record less)
        real = simulation_assets.read_records
        monkeypatch.setattr(simulation_assets, "read_records", lambda path: real(path)[:-1])
        result, checks = run(["session_log"])
        assert checks == {"session_file_intact": False} and not result.success
        monkeypatch.setattr(simulation_assets, "read_records", real)
        result, checks = run(["session_log"])
        assert checks == {"session_file_intact": True} and result.success
        # the manifest says more events than the file holds
        manifest = tmp_path / "sessions" / SYMBOLS[0] / f"{DATES[0]}.json"
        doc = json.loads(manifest.read_text())
        doc["events"] += 1
        manifest.write_text(json.dumps(doc))
        result, checks = run(["raw_events"])
        assert checks == {"raw_events_rows_match_session": False} and not result.success
        doc["events"] -= 1
        manifest.write_text(json.dumps(doc))
        result, checks = run(["raw_events"])
        assert checks == {"raw_events_rows_match_session": True}
        # the landing recorded another close than the replay ends at
        marker = tmp_path / "lake" / "raw" / "events" / f"symbol={SYMBOLS[0]}" / f"date={DATES[0]}" / "_SUCCESS"
        doc = json.loads(marker.read_text())
        doc["close_ticks"] += 3
        marker.write_text(json.dumps(doc))
        result, checks = run(["book_states"])
        assert checks == {"book_states_replay_consistent": False} and not result.success
