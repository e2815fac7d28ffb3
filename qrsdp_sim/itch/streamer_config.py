"""The ITCH streamer's settings (``qrsdp itch-stream`` flags), checked when made.

Its own module so that the streamer and its Kafka clients (:mod:`qrsdp_sim.itch.kafka_source`) both
import it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from qrsdp_sim.itch import moldudp64 as mold
from qrsdp_sim.itch.feed import DEFAULT_TICK_SIZE, Directory
from qrsdp_sim.itch.messages import MAX_PRICE
from qrsdp_sim.itch.order_state import DEFAULT_MAX_ORDERS
from qrsdp_sim.itch.retransmit import DEFAULT_CAPACITY, Limits
from qrsdp_sim.itch.transport import (
    DEFAULT_GROUP,
    DEFAULT_INTERFACE,
    DEFAULT_PORT,
    DEFAULT_TTL,
    check_ipv4,
    check_port,
)
from qrsdp_sim.kafka.message import DEAD_LETTER_TOPIC, DEFAULT_TOPIC

DEFAULT_GROUP_ID = "itch-streamer"
DEFAULT_MERGE_WINDOW_S = 2.0
DEFAULT_MERGE_MAX_HELD = 4_000_000
MAX_UDP_PAYLOAD = 65_507


@dataclass
class StreamerConfig:
    symbols: list[str]
    brokers: str = "127.0.0.1:9092"
    topic: str = DEFAULT_TOPIC
    group_id: str = DEFAULT_GROUP_ID
    dead_letter_topic: str = DEAD_LETTER_TOPIC
    tick_size: int = DEFAULT_TICK_SIZE
    multicast_group: str = DEFAULT_GROUP
    port: int = DEFAULT_PORT
    interface: str = DEFAULT_INTERFACE
    ttl: int = DEFAULT_TTL
    unicast: tuple[str, int] | None = None
    retransmit_host: str = "127.0.0.1"
    retransmit_port: int = 5002
    retransmit_capacity: int = DEFAULT_CAPACITY
    retransmit_limits: Limits = field(default_factory=Limits)
    pcap: str | None = None
    realtime: bool = False
    speed: float = 1.0
    batch: int = 262_144  # messages per step: each step costs one synchronous write-ahead commit
    max_packet: int = mold.DEFAULT_MAX_PACKET
    merge_window: float = DEFAULT_MERGE_WINDOW_S  # wall seconds a message waits at most for slower stocks
    merge_max_held: int = DEFAULT_MERGE_MAX_HELD  # messages held for the merge per running day, at most
    max_orders: int = DEFAULT_MAX_ORDERS  # resting orders per running day, at most
    loss: float = 0.0  # simulated sender packet loss (tests)
    loss_seed: int = 0
    heartbeat_s: float = mold.HEARTBEAT_INTERVAL_S
    eos_seconds: float = 3.0  # end-of-session packets replace heartbeats this long
    day_end_idle: float = 60.0  # close a day whose started stocks all ended after this long idle
    exit_after_sessions: int = 0  # 0: run until SIGTERM
    linger: float = 2.0  # keep serving retransmissions this long after the last session (exit mode)
    max_runtime: float = 0.0  # 0: unbounded (tests bound it)
    kafka_overrides: dict[str, Any] = field(default_factory=dict)  # confluent-kafka settings (python client only)

    def __post_init__(self) -> None:
        """Refuse settings the streamer cannot run with (ValueError naming the flag)."""
        Directory.of(self.symbols)
        if not 1 <= self.tick_size <= MAX_PRICE:
            raise ValueError(f"--tick-size must be 1..{MAX_PRICE} (units of 1e-4 $), got {self.tick_size}")
        for name, port in (("--port", self.port), ("--retransmit-port", self.retransmit_port)):
            check_port(name, port, allow_zero=name == "--retransmit-port")
        if self.unicast is not None:
            check_port("--unicast port", self.unicast[1])
        else:
            check_ipv4("--multicast-group", self.multicast_group, multicast=True)
        check_ipv4("--interface", self.interface)
        if not 0 <= self.ttl <= 255:
            raise ValueError(f"--ttl must be 0..255, got {self.ttl}")
        if self.batch < 1:
            raise ValueError(f"--batch must be >= 1, got {self.batch}")
        if not mold.HEADER_SIZE + 2 + 50 <= self.max_packet <= MAX_UDP_PAYLOAD:
            raise ValueError(f"--max-packet must be {mold.HEADER_SIZE + 52}..{MAX_UDP_PAYLOAD} bytes, got {self.max_packet}")
        if self.retransmit_capacity < 1:
            raise ValueError(f"--retransmit-buffer must be >= 1 message, got {self.retransmit_capacity}")
        if not self.speed > 0:
            raise ValueError(f"--speed must be > 0, got {self.speed}")
        if not self.merge_window >= 0:
            raise ValueError(f"--merge-window must be >= 0 seconds, got {self.merge_window}")
        if self.merge_max_held < 1:
            raise ValueError(f"--merge-max-held must be >= 1 message, got {self.merge_max_held}")
        if self.max_orders < 1:
            raise ValueError(f"--max-orders must be >= 1, got {self.max_orders}")
        if not 0 <= self.loss < 1:
            raise ValueError(f"--simulate-loss must be in [0, 1), got {self.loss}")
        for name, value in (("--day-end-idle", self.day_end_idle), ("--eos-seconds", self.eos_seconds),
                            ("--linger", self.linger), ("--max-runtime", self.max_runtime)):
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0 seconds, got {value}")
        if self.exit_after_sessions < 0:
            raise ValueError(f"--exit-after-sessions must be >= 0, got {self.exit_after_sessions}")
        if not self.topic or not self.group_id or not self.dead_letter_topic:
            raise ValueError("--kafka-topic, --consumer-group and --dead-letter-topic must not be empty")
        if self.dead_letter_topic == self.topic:
            raise ValueError("--dead-letter-topic must differ from --kafka-topic")
