"""``qrsdp run``'s progress bars: shown on a terminal or with QRSDP_PROGRESS, and when none is shown
(scripts, pipes, CI) rich's progress module is not even imported. Checked in fresh interpreters."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = r"""
import json, sys
import qrsdp_sim.engine.runner as runner
seen = {}
real_run = runner.run

def run(*a, **k):
    seen["rich_progress_loaded"] = "rich.progress" in sys.modules
    return real_run(*a, **k)

runner.run = run
sys.argv = ["qrsdp", "run", "--days", "1", "--seconds", "5", "--output", sys.argv[1]]
from qrsdp_sim.cli import main
try:
    main()
except SystemExit as exc:
    seen["exit"] = exc.code
print(json.dumps(seen))
"""


@pytest.mark.parametrize("shown", [False, True], ids=["piped", "QRSDP_PROGRESS"])
def test_progress_module_loaded_only_when_a_bar_is_shown(tmp_path: Path, shown: bool):
    env = {k: v for k, v in os.environ.items() if k != "QRSDP_PROGRESS"}
    if shown:
        env["QRSDP_PROGRESS"] = "1"
    out = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path / "run")], check=True, capture_output=True,
                         text=True, env=env)  # fmt: skip
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["exit"] in (None, 0)
    assert seen["rich_progress_loaded"] is shown
    assert bool(re.search(r"\d events +\d+:\d\d:\d\d", out.stdout)) is shown  # the bar's line
    assert (tmp_path / "run" / "manifest.json").exists()
