"""Sinks: InMemorySink, and MultiplexSink's best-effort fan-out with failure reporting."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from qrsdp_log_testutil import make_records, same_records

from qrsdp_sim.eventlog import LogHeader
from qrsdp_sim.eventlog.reader import EventLogReader
from qrsdp_sim.records import RECORD_DTYPE
from qrsdp_sim.sinks import BinaryFileSink, EventSink, InMemorySink, MultiplexSink


class SinkDown(RuntimeError):
    pass


class AlwaysFails:
    """Raises on every call, and counts the calls it got."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def append(self, batch: np.ndarray) -> None:
        self.calls.append("append")
        raise SinkDown("broker unreachable")

    def flush(self) -> None:
        self.calls.append("flush")
        raise SinkDown("flush failed")

    def close(self) -> None:
        self.calls.append("close")
        raise SinkDown("close failed")


class FailsAfter(InMemorySink):
    """Accepts ``ok_batches`` batches, then raises on every append."""

    def __init__(self, ok_batches: int) -> None:
        super().__init__()
        self.ok_batches = ok_batches

    def append(self, batch: np.ndarray) -> None:
        if self.ok_batches <= 0:
            raise SinkDown("disk full")
        self.ok_batches -= 1
        super().append(batch)


class CloseCounter(InMemorySink):
    def __init__(self) -> None:
        super().__init__()
        self.close_calls = 0
        self.flush_calls = 0

    def flush(self) -> None:
        self.flush_calls += 1

    def close(self) -> None:
        self.close_calls += 1
        super().close()


def batches(seed: int = 0, sizes=(5, 1, 17, 0, 40, 3)) -> list[np.ndarray]:
    recs = make_records(sum(sizes), seed=seed)
    out, pos = [], 0
    for n in sizes:
        out.append(recs[pos : pos + n])
        pos += n
    return out


# --- InMemorySink --------------------------------------------------------------------
def test_in_memory_sink_keeps_copies_of_every_batch() -> None:
    bs = batches(1)
    expected = np.concatenate(bs).copy()
    sink = InMemorySink()
    assert len(sink) == 0 and len(sink.records) == 0 and sink.records.dtype == RECORD_DTYPE
    for b in bs:
        sink.append(b)
    for b in bs:  # the producer reuses its buffers: the sink must not alias them
        b["qty"] = 0
    assert len(sink) == len(expected)
    assert same_records(sink.records, expected)
    sink.append(expected[:2])
    assert same_records(sink.records, np.concatenate([expected, expected[:2]]))
    sink.flush()
    assert not sink.closed
    sink.close()
    sink.close()
    assert sink.closed


def test_in_memory_sink_rejects_wrong_dtype() -> None:
    sink = InMemorySink()
    with pytest.raises(TypeError):
        sink.append(np.zeros(3, dtype=np.uint64))
    assert len(sink) == 0


def test_sinks_implement_the_interface(tmp_path: Path) -> None:
    file_sink = BinaryFileSink(tmp_path / "x.qrsdp", LogHeader(), fsync=False)
    for s in (InMemorySink(), MultiplexSink([]), file_sink):
        assert isinstance(s, EventSink)
    file_sink.abort()


# --- MultiplexSink -------------------------------------------------------------------
def test_healthy_sinks_receive_every_record_while_one_fails_on_every_call(caplog) -> None:
    bs = batches(2)
    total = sum(len(b) for b in bs)
    a, bad, c = InMemorySink(), AlwaysFails(), InMemorySink()
    mux = MultiplexSink([a, bad, c], names=["memory-a", "kafka", "memory-c"])
    with caplog.at_level(logging.WARNING):
        for b in bs:
            mux.append(b)
            mux.flush()
        mux.close()
    expected = np.concatenate(bs)
    assert same_records(a.records, expected)
    assert same_records(c.records, expected)
    assert a.closed and c.closed
    rep = mux.report()
    assert not rep.ok
    assert rep.sinks == ["memory-a", "kafka", "memory-c"]
    assert rep.failed_sinks == ["kafka"]
    assert rep.failures, "the failure must be reported, not swallowed"
    assert {f.sink for f in rep.failures} == {"kafka"}
    assert rep.failures[0].operation == "append"
    assert "SinkDown" in rep.failures[0].error and "broker unreachable" in rep.failures[0].error
    # every record the failing sink did not take is accounted for
    assert sum(f.records_lost for f in rep.failures) == total
    assert any("kafka" in r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)


def test_sink_failing_midway_loses_only_later_records() -> None:
    bs = batches(3)
    healthy, flaky = InMemorySink(), FailsAfter(ok_batches=2)
    mux = MultiplexSink([flaky, healthy], names=["flaky", "healthy"])
    for b in bs:
        mux.append(b)
    mux.close()
    assert same_records(healthy.records, np.concatenate(bs))
    assert same_records(flaky.records, np.concatenate(bs[:2]))
    rep = mux.report()
    assert rep.failed_sinks == ["flaky"]
    assert sum(f.records_lost for f in rep.failures) == sum(len(b) for b in bs[2:])
    assert healthy.closed


def test_several_failing_sinks_are_each_reported() -> None:
    bs = batches(4)
    total = sum(len(b) for b in bs)
    good = InMemorySink()
    mux = MultiplexSink([AlwaysFails(), good, FailsAfter(1)], names=["x", "good", "y"])
    for b in bs:
        mux.append(b)
    rep = mux.report()
    assert sorted(rep.failed_sinks) == ["x", "y"]
    lost = {}
    for f in rep.failures:
        lost[f.sink] = lost.get(f.sink, 0) + f.records_lost
    assert lost == {"x": total, "y": total - len(bs[0])}
    assert same_records(good.records, np.concatenate(bs))


def test_required_sink_failure_propagates_after_others_were_fed() -> None:
    bs = batches(5)
    before, after = InMemorySink(), InMemorySink()
    bad = FailsAfter(ok_batches=1)
    mux = MultiplexSink([before, bad, after], names=["before", "journal", "after"], required={"journal"})
    mux.append(bs[0])
    with pytest.raises(SinkDown, match="disk full"):
        mux.append(bs[1])
    # the batch that failed the required sink still reached every other sink
    assert same_records(before.records, np.concatenate(bs[:2]))
    assert same_records(after.records, np.concatenate(bs[:2]))
    rep = mux.report()
    assert rep.failed_sinks == ["journal"] and not rep.ok
    assert rep.failures[0].records_lost == len(bs[1])


def test_optional_failure_does_not_propagate_but_required_one_does() -> None:
    mux = MultiplexSink([AlwaysFails(), InMemorySink()], names=["optional", "mem"], required={"mem"})
    b = batches(6)[0]
    mux.append(b)  # optional failure: no exception
    assert mux.report().failed_sinks == ["optional"]


def test_failed_sink_is_isolated() -> None:
    bad = AlwaysFails()
    mux = MultiplexSink([bad, InMemorySink()])
    for b in batches(7):
        mux.append(b)
    mux.flush()
    mux.close()
    assert bad.calls == ["append"]  # never called again once it failed
    assert mux.report().failed_sinks == [mux.names[0]]


def test_close_semantics() -> None:
    a, b = CloseCounter(), CloseCounter()
    mux = MultiplexSink([a, b])
    bs = batches(8)
    for batch in bs:
        mux.append(batch)
    mux.flush()
    assert (a.flush_calls, b.flush_calls) == (1, 1)
    assert not a.closed and not b.closed
    mux.close()
    assert (a.close_calls, b.close_calls) == (1, 1)
    assert a.closed and b.closed
    assert mux.report().ok and mux.report().failures == []


def test_failure_on_close_is_reported_and_others_still_closed() -> None:
    first_bad = AlwaysFails()
    good = CloseCounter()
    mux = MultiplexSink([first_bad, good], names=["bad", "good"])
    mux.close()
    assert good.close_calls == 1
    rep = mux.report()
    assert rep.failed_sinks == ["bad"]
    assert rep.failures[0].operation == "close" and rep.failures[0].records_lost == 0


def test_required_failure_on_close_propagates_after_others_closed() -> None:
    good = CloseCounter()
    mux = MultiplexSink([AlwaysFails(), good], names=["journal", "good"], required={"journal"})
    with pytest.raises(SinkDown):
        mux.close()
    assert good.close_calls == 1 and good.closed


def test_names_must_match_sinks() -> None:
    with pytest.raises(ValueError):
        MultiplexSink([InMemorySink(), InMemorySink()], names=["only-one"])
    mux = MultiplexSink([InMemorySink(), InMemorySink()])
    assert len(set(mux.names)) == 2  # default names are distinct


def test_multiplex_into_file_and_memory_with_a_broken_sink(tmp_path: Path) -> None:
    bs = batches(9, sizes=(100, 7, 300, 1, 50))
    path = tmp_path / "s.qrsdp"
    mem = InMemorySink()
    fsink = BinaryFileSink(path, LogHeader(chunk_capacity=64), fsync=False)
    mux = MultiplexSink(
        [AlwaysFails(), fsink, mem], names=["kafka", "journal", "memory"], required={"journal"}
    )
    for b in bs:
        mux.append(b)
    mux.close()
    expected = np.concatenate(bs)
    assert same_records(EventLogReader(path).read_all(), expected)
    assert same_records(mem.records, expected)
    rep = mux.report()
    assert rep.failed_sinks == ["kafka"]
    assert sum(f.records_lost for f in rep.failures) == len(expected)
