"""``BinaryFileSink`` with a compressor: chunks compressed on other threads, written in order.

The file must be byte for byte the one written with compression on the appending thread, for any
batch sizes (partial chunks carried between appends, many chunks per append). A compression error
surfaces from the writer and leaves no file. A writer more than ``MAX_IN_FLIGHT`` appends ahead of
its compressor waits for it (memory stays bounded)."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qrsdp_sim.engine import SessionConfig, simulate_to_file
from qrsdp_sim.engine.session import SessionDriver
from qrsdp_sim.eventlog import writer as writer_module
from qrsdp_sim.eventlog.reader import read_records
from qrsdp_sim.eventlog.writer import MAX_IN_FLIGHT, BinaryFileSink

CONFIG = SessionConfig(seed=31, session_seconds=600, chunk_capacity=512)


@pytest.fixture(scope="module")
def records() -> np.ndarray:
    return np.concatenate([r for r, _ in SessionDriver(CONFIG).batches()])


def _write(path: Path, records: np.ndarray, sizes: list[int], compressor: Executor | None) -> bytes:
    sink = BinaryFileSink(path, CONFIG.header(), fsync=False, compressor=compressor)
    pos, i = 0, 0
    while pos < len(records):
        n = sizes[i % len(sizes)]
        sink.append(records[pos : pos + n].copy())  # a batch of its own, as the engine hands over
        pos, i = pos + n, i + 1
    sink.close()
    return path.read_bytes()


@pytest.mark.parametrize("sizes", [[7], [512], [513], [5_000], [1, 1_023, 3, 40_000, 511]], ids=str)
def test_the_file_is_the_same_with_a_compressor(records, tmp_path, sizes) -> None:
    inline = _write(tmp_path / "inline.qrsdp", records, sizes, None)
    with ThreadPoolExecutor(max_workers=2) as pool:
        shared = _write(tmp_path / "pool.qrsdp", records, sizes, pool)
    assert len(records) > 20_000
    assert shared == inline
    assert np.array_equal(read_records(tmp_path / "pool.qrsdp"), records)


def test_a_run_session_is_the_same_with_a_compressor(tmp_path) -> None:
    config = SessionConfig(seed=32, session_seconds=900)
    simulate_to_file(config, tmp_path / "inline.qrsdp", fsync=False)
    with ThreadPoolExecutor(max_workers=2) as pool:
        simulate_to_file(config, tmp_path / "pool.qrsdp", fsync=False, compressor=pool)
    assert (tmp_path / "pool.qrsdp").read_bytes() == (tmp_path / "inline.qrsdp").read_bytes()


def test_a_compression_error_surfaces_and_leaves_no_file(tmp_path, monkeypatch) -> None:
    def broken(chunks: list[np.ndarray]) -> list[bytes]:
        raise MemoryError("compression failed")

    monkeypatch.setattr(writer_module, "compress_chunks", broken)
    with ThreadPoolExecutor(max_workers=2) as pool, pytest.raises(MemoryError, match="compression failed"):
        simulate_to_file(SessionConfig(seed=33, session_seconds=300), tmp_path / "s.qrsdp", compressor=pool)
    assert list(tmp_path.iterdir()) == []


class GatedExecutor(Executor):
    """Runs each task on a thread of its own once ``gate`` is set."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.submitted = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        self.submitted += 1

        def work() -> None:
            self.gate.wait()
            future.set_result(fn(*args, **kwargs))

        threading.Thread(target=work, daemon=True).start()
        return future


def test_a_writer_ahead_of_its_compressor_waits(records, tmp_path) -> None:
    gated = GatedExecutor()
    sink = BinaryFileSink(tmp_path / "s.qrsdp", CONFIG.header(), fsync=False, compressor=gated)
    appended = []

    def producer() -> None:
        for k in range(MAX_IN_FLIGHT + 3):
            sink.append(records[k * 1024 : (k + 1) * 1024].copy())  # two chunks each
            appended.append(k)

    thread = threading.Thread(target=producer)
    thread.start()
    deadline = time.monotonic() + 60
    while gated.submitted < MAX_IN_FLIGHT + 1 and time.monotonic() < deadline:
        time.sleep(0.01)  # polls the observed progress: the appends submitted so far
    thread.join(timeout=1.0)
    assert gated.submitted == MAX_IN_FLIGHT + 1
    assert thread.is_alive() and len(appended) == MAX_IN_FLIGHT  # the next append waits
    gated.gate.set()
    thread.join(timeout=60)
    assert not thread.is_alive() and len(appended) == MAX_IN_FLIGHT + 3
    sink.close()
    assert np.array_equal(read_records(tmp_path / "s.qrsdp"), records[: (MAX_IN_FLIGHT + 3) * 1024])


def test_a_file_that_turns_to_the_compressor_midway_is_the_same(records, tmp_path) -> None:
    from qrsdp_sim.engine.runner import TailCompression

    inline = _write(tmp_path / "inline.qrsdp", records, [3_000], None)
    tail = TailCompression(2)
    sink = BinaryFileSink(tmp_path / "tail.qrsdp", CONFIG.header(), fsync=False, compressor=tail)
    for k, start in enumerate(range(0, len(records), 3_000)):
        if k == 3:
            assert sink._in_flight == deque() and sink.records_written > 0  # inline so far
            tail.activate()  # as when the run's first chain ends
        sink.append(records[start : start + 3_000].copy())
    sink.close()
    tail.shutdown()
    assert (tmp_path / "tail.qrsdp").read_bytes() == inline
