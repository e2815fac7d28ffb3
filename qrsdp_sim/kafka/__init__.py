"""Kafka distribution layer: the producer sink and the message format (docs/kafka-message-format.md)."""
