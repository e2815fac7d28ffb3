"""Which Kafka client the services use: the native bridge or confluent-kafka.

``QRSDP_KAFKA_CLIENT``:

* ``auto`` (default) -- the bridge (``qrsdp-kafka-bridge``, docs/kafka-bridge.md) when its binary
  is built, else confluent-kafka;
* ``bridge`` -- the bridge, and an error that says how to build it when it is missing;
* ``python`` -- confluent-kafka (one Python call per message: ~0.6 M messages/s).

Both produce and read the same messages (docs/kafka-message-format.md), so the choice never
changes data, only speed.
"""

from __future__ import annotations

import os

from qrsdp_sim.kafka.bridge import BINARY_NAME, BridgeError, bridge_available

CLIENT_ENV = "QRSDP_KAFKA_CLIENT"
CHOICES = ("auto", "bridge", "python")


def client_choice() -> str:
    """The validated value of ``QRSDP_KAFKA_CLIENT`` (``auto`` when unset)."""
    value = os.environ.get(CLIENT_ENV, "auto").strip().lower() or "auto"
    if value not in CHOICES:
        raise ValueError(f"{CLIENT_ENV}={value!r}: expected one of {', '.join(CHOICES)}")
    return value


def use_bridge() -> bool:
    """True when the services should talk to Kafka through the bridge."""
    choice = client_choice()
    if choice == "python":
        return False
    if bridge_available():
        return True
    if choice == "bridge":
        raise BridgeError(
            f"{CLIENT_ENV}=bridge but {BINARY_NAME} is not built: run `infra/stack.sh bridge-build` "
            f"(or set {CLIENT_ENV}=python)"
        )
    return False
