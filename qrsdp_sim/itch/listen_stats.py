"""The listener's counters, its timestamp-order check and its ``--stats`` line."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Stats:
    packets: int = 0
    bytes: int = 0
    messages: int = 0  # delivered in order
    duplicates: int = 0  # messages received more than once
    malformed_packets: int = 0
    bad_messages: int = 0  # unknown type or wrong length for its type (sequence number consumed)
    other_session: int = 0
    heartbeats: int = 0
    eos_packets: int = 0
    gaps: int = 0  # missing ranges detected
    recovered: int = 0  # missing ranges filled (by retransmission or a late original)
    requests: int = 0
    retransmitted: int = 0  # messages received from the re-request server and delivered
    unrecovered: int = 0  # messages given up
    implausible_seq: int = 0  # packets whose sequence numbers lie beyond the plausibility window (dropped)
    pending_dropped: int = 0  # out-of-order packets dropped to keep the reorder store within its bound
    unconfirmed_claims: int = 0  # heartbeat claims of later messages that no data ever backed (dropped)
    eos_conflicts: int = 0  # end-of-session packets contradicted by the session's data (ignored)
    reanchors: int = 0  # times the listener accepted that the session is far ahead of it (late join)
    ts_order_violations: int = 0  # messages whose timestamp is earlier than the previous message's
    book_errors: int = 0  # messages that could not apply to the books, and crossed books (kinds below)
    book_error_kinds: dict[str, int] = field(default_factory=dict)
    by_type: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {k: dict(v) if isinstance(v, dict) else v for k, v in self.__dict__.items()}


class TimeOrder:
    """Counts messages whose timestamp is below the previous message's (across batches)."""

    def __init__(self) -> None:
        self.last: int | None = None

    def violations(self, ts: np.ndarray) -> int:
        if len(ts) == 0:
            return 0
        n = int(np.count_nonzero(ts[1:] < ts[:-1]))
        if self.last is not None and int(ts[0]) < self.last:
            n += 1
        self.last = int(ts[-1])
        return n


def stats_line(st: Stats, rate: float) -> str:
    """The ``--stats`` line printed every interval."""
    return (f"itch-listen: {rate:,.0f} msg/s total={st.messages:,} gaps={st.gaps} recovered={st.recovered} "
            f"unrecovered={st.unrecovered} dup={st.duplicates} malformed={st.malformed_packets} "
            f"implausible={st.implausible_seq} ts_order_violations={st.ts_order_violations} "
            f"book_errors={st.book_errors}\n")
