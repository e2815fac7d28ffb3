"""The seeded fault plan of the chaos soak.

Every fault fires on *observed progress*, never after a sleep: when the metric it watches reaches a
fraction of that metric's known final value (the run's messages are known in advance from a files-only
simulation of the same seed). Three metrics, each read from outside the services:

* ``produced`` -- messages on the events topic (the sum of its high watermarks): the producer's progress;
* ``landed`` -- the Parquet consumer group's committed offsets (committed only after the objects are
  written): the lake's progress;
* ``streamed`` -- the ITCH streamer group's committed offsets (committed after sending).

Faults are taken one after the other, in the order of their fractions (the producer's bridge, beside
them); the same seed gives the same plan (kinds, targets, fractions).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

# kind -> the metric its trigger watches
KINDS: dict[str, str] = {
    "kill-broker": "produced",
    "kill-minio": "landed",
    "kill-consumer": "landed",
    "kill-streamer": "streamed",
    "kill-consumer-bridge": "landed",
    "kill-streamer-bridge": "streamed",
    "poison-kafka": "produced",
    "hostile-udp": "streamed",
}
# Relative frequency when the plan is filled beyond one fault of each kind. A broker restart costs the most
# wall time (a JVM start), so it is drawn less often.
WEIGHTS: dict[str, float] = {
    "kill-broker": 0.7,
    "kill-minio": 1.0,
    "kill-consumer": 1.0,
    "kill-streamer": 1.0,
    "kill-consumer-bridge": 0.8,
    "kill-streamer-bridge": 0.8,
    "poison-kafka": 1.0,
    "hostile-udp": 1.0,
}
# The producer's own Kafka bridge is killed once: after it the run's later events never reach Kafka (the
# file is the source of truth; ``qrsdp republish`` completes those sessions when the run has ended).
PRODUCER_BRIDGE = "kill-producer-bridge"

FIRST, LAST = 0.04, 0.85  # faults fire between these fractions of their metric's final value
PRODUCER_BRIDGE_AT = (0.55, 0.8)


@dataclass(frozen=True)
class Fault:
    index: int
    kind: str  # a KINDS key or PRODUCER_BRIDGE
    watch: str  # produced | landed | streamed
    at: float  # fraction of the watched metric's final value
    seed: int  # for the fault's own random choices (which poison, which datagrams)
    beside: bool = False  # fires beside the sequence, whenever its metric gets there

    def describe(self) -> str:
        return f"#{self.index} {self.kind} at {self.at:.0%} of {self.watch}"


def plan(seed: int, n_faults: int, *, producer_bridge: bool = True) -> list[Fault]:
    """``n_faults`` faults: every kind once (when there is room), the rest drawn by weight, in firing
    order; with ``producer_bridge`` (and n_faults >= 2) the last one kills the producer's bridge, beside
    the sequence, at 55-80 % of ``produced``."""
    if n_faults < 0:
        raise ValueError(f"--faults must be >= 0, got {n_faults}")
    rng = random.Random(seed)
    kinds = list(KINDS)
    rng.shuffle(kinds)
    chosen = kinds[:n_faults]
    names = list(WEIGHTS)
    while len(chosen) < n_faults:
        chosen.append(rng.choices(names, weights=[WEIGHTS[k] for k in names])[0])
    if producer_bridge and n_faults >= 2:
        chosen[-1] = PRODUCER_BRIDGE
    others = [k for k in chosen if k != PRODUCER_BRIDGE]
    rng.shuffle(others)
    fractions = sorted(rng.uniform(FIRST, LAST) for _ in others)
    faults = [Fault(i + 1, kind, KINDS[kind], at, rng.randrange(2**32))
              for i, (kind, at) in enumerate(zip(others, fractions, strict=True))]
    if PRODUCER_BRIDGE in chosen:
        # Beside the sequence, late in the run: once it fires the run's later events never reach Kafka
        # until the republish at its end, so in the sequence it would hold up every fault behind it.
        faults.append(Fault(len(faults) + 1, PRODUCER_BRIDGE, "produced", rng.uniform(*PRODUCER_BRIDGE_AT),
                            rng.randrange(2**32), beside=True))
    return faults
