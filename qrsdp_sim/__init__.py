"""QRSDP simulator package."""
