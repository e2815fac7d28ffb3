"""The Dagster UI: the webserver (started here, on 127.0.0.1) lists the asset graph over GraphQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from qrsdp_sim import stack

ROOT = Path(__file__).resolve().parents[1]
STARTUP_SECONDS = 120
QUERY = "{ assetNodes { assetKey { path } dependencyKeys { path } } }"


def _free_port() -> int:
    return stack.free_port()


def _graphql(port: int, query: str) -> dict:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def test_webserver_graphql_lists_the_asset_graph(tmp_path):
    port = _free_port()
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "home"), "QRSDP_DATA_DIR": str(tmp_path / "data")}
    (tmp_path / "home").mkdir()
    log = open(tmp_path / "webserver.log", "w")  # noqa: SIM115 -- closed in finally
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("dagster-webserver")), "-h", "127.0.0.1", "-p", str(port),
         "-w", str(ROOT / "workspace.yaml")],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        nodes = None
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "webserver.log").read_text()[-3000:]
            try:
                data = _graphql(port, QUERY).get("data") or {}
                nodes = data.get("assetNodes") or None
                if nodes:
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(1)
        assert nodes, (
            f"no asset graph within {STARTUP_SECONDS}s:\n" + (tmp_path / "webserver.log").read_text()[-3000:]
        )
        graph = {
            "/".join(n["assetKey"]["path"]): {"/".join(d["path"]) for d in n["dependencyKeys"]} for n in nodes
        }
        assert {
            "session_log",
            "raw_events",
            "book_states",
            "marts/fct_session_summary",
            "marts/fct_ohlcv_1min",
        } <= set(graph)
        assert graph["raw_events"] == {"session_log"}
        assert "staging/stg_events" in graph["marts/fct_ohlcv_1min"]
        # bound to the loopback interface only
        assert f"127.0.0.1:{port}" in (tmp_path / "webserver.log").read_text()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
