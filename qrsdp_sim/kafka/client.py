"""Which Kafka client the services use: the native bridge or confluent-kafka.

``QRSDP_KAFKA_CLIENT`` selects it for every Kafka service (the dual-write producer, the Parquet
consumer, the ITCH streamer):

- ``auto`` (the default, also when unset or empty): ``qrsdp-kafka-bridge`` when its binary is found
  (:func:`qrsdp_sim.kafka.bridge.bridge_available`), else confluent-kafka;
- ``bridge``: the bridge (starting it fails with a clear error when it is not built);
- ``python``: confluent-kafka, one Python call per message.

Messages on Kafka, consumer groups and committed offsets are the same whichever client is used,
so a service may switch clients across a restart.
"""

from __future__ import annotations

import os

CLIENT_ENV = "QRSDP_KAFKA_CLIENT"
CLIENT_CHOICES = ("auto", "bridge", "python")


def kafka_client_setting() -> str:
    """The value of ``QRSDP_KAFKA_CLIENT`` (lower case; ``auto`` when unset or empty).

    Raises ValueError for anything but auto, bridge or python.
    """
    value = (os.environ.get(CLIENT_ENV) or "auto").strip().lower() or "auto"
    if value not in CLIENT_CHOICES:
        raise ValueError(f"{CLIENT_ENV}={os.environ.get(CLIENT_ENV)!r}: use one of {', '.join(CLIENT_CHOICES)}")
    return value


def use_bridge() -> bool:
    """True when the services should use ``qrsdp-kafka-bridge``, False for confluent-kafka.

    ``bridge`` answers True even when the binary is missing: the service then fails when it starts
    the bridge (``BridgeError`` naming ``infra/stack.sh bridge-build``) instead of silently
    falling back.
    """
    setting = kafka_client_setting()
    if setting == "auto":
        from qrsdp_sim.kafka.bridge import bridge_available

        return bridge_available()
    return setting == "bridge"
