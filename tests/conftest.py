"""Shared pytest configuration."""

# Session fixtures for the real services (kafka_stack, minio_stack): see tests/services.py.
pytest_plugins = ("services",)
