"""``qrsdp run``'s start-up: the collector is off until the kernel is loaded and on for the simulation,
and numba's first kernel load does not import scipy.linalg (its BLAS probe) while compiled code can
still use np.dot. Checked in a fresh interpreter, as a user starts the command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PROBE = r"""
import gc, json, sys
import qrsdp_sim.engine.runner as runner
seen = {}
real_warm_up, real_run = runner.warm_up, runner.run

def warm_up(*a, **k):
    seen.setdefault("gc_enabled_at_load", gc.isenabled())
    return real_warm_up(*a, **k)

def run(*a, **k):
    seen["gc_enabled_in_run"] = gc.isenabled()
    seen["frozen_objects"] = gc.get_freeze_count()
    seen["scipy_linalg_loaded"] = "scipy.linalg" in sys.modules
    return real_run(*a, **k)

runner.warm_up, runner.run = warm_up, run
sys.argv = ["qrsdp", "run", "--days", "1", "--seconds", "5", "--output", sys.argv[1]]
from qrsdp_sim.cli import main
try:
    main()
except SystemExit as exc:
    seen["exit"] = exc.code
import numba, numpy as np
seen["njit_dot"] = float(numba.njit(lambda a, b: np.dot(a, b))(np.ones(3), np.arange(3.0)))
print(json.dumps(seen))
"""


def test_run_starts_with_the_collector_off_and_simulates_with_it_on(tmp_path: Path):
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(tmp_path / "run")], check=True, capture_output=True, text=True
    )
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["exit"] in (None, 0)
    assert seen["gc_enabled_at_load"] is False  # start-up: no collections over numba's registries
    assert seen["gc_enabled_in_run"] is True  # the simulation (and a live run) collects as usual
    assert seen["frozen_objects"] > 10_000  # the start-up's objects are out of the collector's way
    assert seen["scipy_linalg_loaded"] is False  # numba's BLAS probe skipped at the first load
    assert seen["njit_dot"] == 3.0  # compiled linear algebra still works (it imports BLAS itself)
    assert (tmp_path / "run" / "manifest.json").exists()


def test_an_in_process_run_leaves_the_collector_alone(tmp_path: Path):
    """The CLI runner of the tests (no ``main``): nothing is deferred, so nothing is frozen."""
    import gc

    from typer.testing import CliRunner

    from qrsdp_sim.cli import app

    before = gc.get_freeze_count()
    res = CliRunner().invoke(app, ["run", "--days", "1", "--seconds", "5", "--output", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    assert gc.isenabled()
    assert gc.get_freeze_count() == before
