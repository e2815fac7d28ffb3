"""The engine's native library (engine/native.py): numba's machine code loaded without numba.

It is built here in a child process into a private cache folder (as ``warm_up`` builds it for a
user), then every test loads it from there. What must hold: the same bytes as numba's dispatchers for
every kind of session; a run that finds it never imports numba; a damaged or foreign library is
refused and numba used instead; wrong arguments are refused before the native code sees them; no C
compiler or ``QRSDP_NATIVE_KERNEL=0`` keeps numba."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from qrsdp_sim.engine import HLR, HawkesIntensity, HawkesParams, SessionConfig, entry_points, native
from qrsdp_sim.engine.models.factory import with_exo_loading
from qrsdp_sim.engine.realism import Excitation, Realism
from qrsdp_sim.engine.session import SessionDriver

ROOT = Path(__file__).resolve().parents[1]

BUILD = """
import sys
from qrsdp_sim.engine import entry_points, native
from qrsdp_sim.engine.realism import Realism
from qrsdp_sim.engine.models.simple_imbalance import SimpleImbalance
from qrsdp_sim.engine.runner import warm_up
warm_up(SimpleImbalance(), realism=Realism())
assert entry_points.is_native(), "warm_up did not build and load the native library"
print(native.library_dir())
"""


def _env(cache_home: Path, **extra: str) -> dict[str, str]:
    """The child's environment: a private cache home for the library, numba's cache as ours (so the
    child loads the compiled dispatchers instead of compiling them again)."""
    env = {**os.environ, "XDG_CACHE_HOME": str(cache_home), **extra}
    env["NUMBA_CACHE_DIR"] = os.environ["NUMBA_CACHE_DIR"]  # set by qrsdp_sim._numba_cache at import
    return env


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(cache home, library folder) of a freshly built library."""
    if native.compiler() is None:
        pytest.fail(
            "no C compiler on this machine: the native library cannot be built (see engine/native.py)"
        )
    home = tmp_path_factory.mktemp("cache-home")
    proc = subprocess.run(
        [sys.executable, "-c", BUILD], env=_env(home), capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    folder = Path(proc.stdout.strip().splitlines()[-1])
    assert folder.is_relative_to(home) and (folder / native.MANIFEST).is_file()
    return home, folder


@pytest.fixture
def restore_entry_points():
    before = entry_points._impl
    yield
    entry_points.use(before)


def _session(config: SessionConfig, impl: object, exo: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    entry_points.use(impl)
    driver = SessionDriver(config, exo=exo, exo_step_seconds=1.0, top_of_book=True, pool_size=64)
    parts = list(driver.batches())
    records = np.concatenate([r for r, _ in parts])
    tob = np.concatenate([t for _, t in parts])
    return records, tob, driver.rng.copy(), driver.book.ist.copy(), driver.fst.copy()


CONFIGS = {
    "realistic-simple": SessionConfig(seed=21, session_seconds=900),
    "plain-simple": SessionConfig(seed=22, session_seconds=900, realism=Realism.plain()),
    "realistic-hlr": SessionConfig(seed=23, session_seconds=900, model=HLR()),
    "hawkes-decorator": SessionConfig(
        seed=24,
        session_seconds=900,
        model=HawkesIntensity(HLR(), HawkesParams(alpha=0.02, beta=2.0)),
        realism=Realism(excitation=Excitation.off()),
    ),
    "tiny-batches": SessionConfig(seed=25, session_seconds=120, batch_records=1),
    "three-levels": SessionConfig(seed=26, session_seconds=900, levels_per_side=3, initial_depth=2),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_native_and_numba_give_the_same_bytes(library, restore_entry_points, name: str) -> None:
    loaded = native.load(library[1])
    assert isinstance(loaded, native.NativeEntryPoints)
    config = CONFIGS[name]
    ours = _session(config, loaded)
    numba = _session(config, entry_points.NumbaEntryPoints())
    assert len(ours[0]) > 1_000
    for a, b in zip(ours, numba, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert a.tobytes() == b.tobytes()


def test_native_and_numba_agree_with_the_market_signal(library, restore_entry_points) -> None:
    config = SessionConfig(seed=27, session_seconds=600, model=with_exo_loading(HLR(), 0.5))
    exo = np.random.default_rng(3).standard_normal(600).cumsum() / 10
    ours = _session(config, native.load(library[1]), exo=exo)
    numba = _session(config, entry_points.NumbaEntryPoints(), exo=exo)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(ours, numba, strict=True))
    plain = _session(config, entry_points.NumbaEntryPoints())
    assert plain[0].tobytes() != ours[0].tobytes()  # the signal did change the session


RUN = """
import sys
from qrsdp_sim.cli import main
sys.argv = ["qrsdp", "run", "--days", "2", "--seconds", "300", "--securities", "AAA:10000,BBB:20000",
            "--output", sys.argv[1]]
try:
    main()
except SystemExit as exc:
    assert not exc.code, exc.code
print("numba imported:", "numba" in sys.modules)
"""


def test_a_run_with_the_library_never_imports_numba_and_writes_the_same_files(library, tmp_path) -> None:
    home, _ = library
    outputs = {}
    for switch in ("1", "0"):
        out = tmp_path / f"run-{switch}"
        env = _env(home, QRSDP_NATIVE_KERNEL=switch)
        proc = subprocess.run([sys.executable, "-c", RUN, str(out)], env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert proc.stdout.strip().endswith(f"numba imported: {switch == '0'}"), proc.stdout[-500:]
        outputs[switch] = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*.qrsdp"))}
    assert len(outputs["1"]) == 4
    assert outputs["1"] == outputs["0"]


def _copy(folder: Path, tmp_path: Path) -> Path:
    target = tmp_path / "lib"
    shutil.copytree(folder, target)
    return target


@pytest.mark.parametrize(
    "damage",
    [
        "garbage-library",
        "truncated-library",
        "garbage-manifest",
        "manifest-missing-an-entry",
        "unknown-symbol",
    ],
)
def test_a_damaged_library_is_refused_and_numba_used(library, tmp_path, caplog, damage: str) -> None:
    folder = _copy(library[1], tmp_path)
    manifest = json.loads((folder / native.MANIFEST).read_text())
    library_file = {name: folder / entry["file"] for name, entry in manifest["entries"].items()}
    if damage == "garbage-library":
        library_file["run_kernel"].write_bytes(os.urandom(4096))
    elif damage == "truncated-library":
        data = library_file["open_book"].read_bytes()
        library_file["open_book"].write_bytes(data[: len(data) // 3])
    elif damage == "garbage-library-with-its-digest":  # past the digest: dlopen refuses it
        garbage = b"\x7fELF" + os.urandom(4092)
        library_file["run_kernel"].write_bytes(garbage)
        manifest["entries"]["run_kernel"]["digest"] = native._digest(garbage)
        (folder / native.MANIFEST).write_text(json.dumps(manifest))
    elif damage == "garbage-manifest":
        (folder / native.MANIFEST).write_text("{not json")
    elif damage == "manifest-missing-an-entry":
        del manifest["entries"]["ar1"]
        (folder / native.MANIFEST).write_text(json.dumps(manifest))
    else:  # a library of another build: its symbol is not there
        manifest["entries"]["count_types"]["symbol"] = "no_such_function"
        (folder / native.MANIFEST).write_text(json.dumps(manifest))
    with caplog.at_level(logging.WARNING, logger=native.__name__):
        assert native.load(folder) is None
    assert "using numba" in caplog.text


def test_a_missing_library_is_no_error(tmp_path) -> None:
    assert native.load(tmp_path / "nothing-here") is None


def test_wrong_arguments_are_refused_before_the_native_code_runs(library) -> None:
    loaded = native.load(library[1])
    assert loaded is not None
    counts = np.zeros(6, dtype=np.int64)
    from qrsdp_sim.records import RECORD_DTYPE

    records = np.zeros(4, dtype=RECORD_DTYPE)
    records["type"] = [0, 1, 1, 5]
    loaded.count_types(records, counts)
    assert counts.tolist() == [1, 2, 0, 0, 0, 1]
    with pytest.raises(TypeError, match="argument 1 must be a C-contiguous 1-d array of int64"):
        loaded.count_types(records, counts.astype(np.int32))
    with pytest.raises(TypeError, match="argument 0"):
        loaded.count_types(np.zeros(4, dtype=np.float64), counts)
    with pytest.raises(TypeError, match="argument 1"):
        loaded.count_types(records, np.zeros((2, 6), dtype=np.int64)[:, 0])  # not contiguous
    with pytest.raises(TypeError, match="argument 0"):
        loaded.count_types(list(records), counts)
    with pytest.raises(TypeError, match="expected 2 arguments"):
        loaded.count_types(records)
    assert counts.tolist() == [1, 2, 0, 0, 0, 1]  # nothing ran


def test_ar1_writes_the_stationary_path(library) -> None:
    loaded = native.load(library[1])
    z = np.random.default_rng(1).standard_normal(1000)
    x = np.empty_like(z)
    loaded.ar1(z, 0.9, np.sqrt(1 - 0.81), x)
    expected = np.empty_like(z)
    expected[0] = z[0]
    for k in range(1, len(z)):
        expected[k] = 0.9 * expected[k - 1] + np.sqrt(1 - 0.81) * z[k]
    assert np.allclose(x, expected, rtol=0, atol=1e-12)


def test_the_switch_keeps_numba(library, monkeypatch) -> None:
    monkeypatch.setenv(native.ENV_SWITCH, "0")
    assert native.load(library[1]) is None


def test_without_a_compiler_warm_up_stays_on_numba(tmp_path, monkeypatch, restore_entry_points) -> None:
    from qrsdp_sim.engine.models.simple_imbalance import SimpleImbalance
    from qrsdp_sim.engine.runner import warm_up

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # no library built there
    monkeypatch.setattr(native, "compiler", lambda: None)
    entry_points.use(None)  # the next call looks for a library again
    warm_up(SimpleImbalance(), realism=Realism())
    assert isinstance(entry_points.current(), entry_points.NumbaEntryPoints)
    assert not (tmp_path / "qrsdp" / "native").exists()


DEFERRED = """
import sys
from qrsdp_sim.engine import kernel, book
assert "numba" not in sys.modules, "importing the engine imported numba"
assert type(kernel.run_kernel).__name__ == "_Deferred" and type(kernel.window_depth).__name__ == "_Deferred"
name = kernel.run_kernel.py_func.__name__  # the Python function: no numba yet
assert "numba" not in sys.modules
assert kernel.run_kernel.signatures == []  # an attribute of the dispatcher: numba is set up
from numba.core.registry import CPUDispatcher
assert isinstance(kernel.run_kernel, CPUDispatcher), type(kernel.run_kernel)
assert isinstance(kernel.window_depth, CPUDispatcher) and kernel.window_depth is book.window_depth
from qrsdp_sim.engine import clock
assert isinstance(clock.ar1, CPUDispatcher)
print("ok", name)
"""


def test_numba_is_set_up_only_when_a_compiled_function_is_needed() -> None:
    proc = subprocess.run([sys.executable, "-c", DEFERRED], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "ok run_kernel"


def test_warm_up_replaces_a_damaged_library(library, tmp_path) -> None:
    home = tmp_path / "home"
    folder = home / library[1].relative_to(library[0])
    shutil.copytree(library[1], folder)
    manifest = json.loads((folder / native.MANIFEST).read_text())
    (folder / manifest["entries"]["run_kernel"]["file"]).write_bytes(os.urandom(2048))
    proc = subprocess.run([sys.executable, "-c", BUILD], env=_env(home), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert Path(proc.stdout.strip().splitlines()[-1]) == folder
    assert "using numba" in proc.stderr  # the damaged one was reported, then rebuilt
    assert native.load(folder) is not None


def test_a_cache_that_cannot_be_written_keeps_the_run_on_numba(tmp_path) -> None:
    not_a_folder = tmp_path / "cache-home"
    not_a_folder.write_text("a file where the cache folder would go")
    proc = subprocess.run([sys.executable, "-c", RUN, str(tmp_path / "out")], env=_env(not_a_folder),
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "native kernel not built" in proc.stderr and "numba is used" in proc.stderr
    assert proc.stdout.strip().endswith("numba imported: True")
    assert len(list((tmp_path / "out").rglob("*.qrsdp"))) == 4


def test_no_home_folder_is_no_error(monkeypatch, restore_entry_points) -> None:
    def no_home() -> Path:
        raise RuntimeError("Could not determine home directory")

    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setattr(Path, "home", staticmethod(no_home))
    assert native.load() is None
