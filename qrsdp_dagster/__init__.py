"""Dagster definitions."""
