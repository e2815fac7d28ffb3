"""A stray or forged end-of-session marker never ends a stock's live session (found by the chaos soak,
benchmarks/chaos.py): the streamer used to take any empty message with a date and an 8-byte seq header
as the stock's end, whatever its ``eos`` header said, so one poison message -- which the Parquet consumer
dead-letters -- cut the ITCH feed of that stock short (the rest counted as duplicates, never sent).
Now only a marker as the producers write it (a valid ``eos`` header whose count the seq header repeats,
not below the events already received) ends the stock; the others are dead-lettered as ``bad_marker``."""

from __future__ import annotations

import pytest
from itch_streamer_harness import DATE, TOPIC, MemKafka, dead_letters, drive, renumber, streamer, topic_of
from itch_streams import sweep_session

from qrsdp_sim.itch.streamer import StreamerConfig
from qrsdp_sim.kafka.bridge import RawMessage
from qrsdp_sim.kafka.message import H_DATE, H_EOS, H_RUN_ID, H_SEQ
from qrsdp_sim.kafka.message import EndOfSession as Eos

N = 3_000


def _marker(seq: int, eos: bytes | None) -> RawMessage:
    return RawMessage(TOPIC, 0, 0, b"AAPL", b"", [(H_DATE, DATE.encode()), (H_SEQ, seq.to_bytes(8, "big")),
                                                  (H_RUN_ID, b"forged"), (H_EOS, eos)])


FORGED = {
    "eos header 7 bytes": _marker(3, b"\0" * 7),
    "eos header null": _marker(3, None),
    "eos count 0": _marker(0, Eos(0, 10_000).encode()),
    "seq header disagrees with the eos count": _marker(3, Eos(N, 10_000).encode()),
    "count below the events received": _marker(3, Eos(3, 10_000).encode()),
}


@pytest.mark.parametrize("case", sorted(FORGED))
def test_forged_marker_mid_session_is_dead_lettered_and_the_session_goes_on(case) -> None:
    recs = sweep_session(N, 5)
    log = topic_of({"AAPL": (0, recs)})
    log[0].insert(N // 2, FORGED[case])
    log[0] = renumber(log[0])
    cfg = StreamerConfig(symbols=["AAPL"], merge_window=3600.0)
    st = streamer(cfg, MemKafka(cfg, log, seed=1))
    drive(st, 1000)
    c = st.counters
    assert c.events == N and c.duplicates == 0, c.to_dict()  # every event sent, none taken for a duplicate
    assert c.sessions_ended == 1 and c.rejected == {"bad_marker": 1}, c.to_dict()
    (dead,) = dead_letters(st)
    assert dead[3]["dlq_kind"] == b"bad_marker"
