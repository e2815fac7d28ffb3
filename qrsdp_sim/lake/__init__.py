"""The Parquet lake: hive-partitioned raw tables on a local directory or S3, with completion markers."""

from qrsdp_sim.lake.landing import (
    BOOK_STATES_SCHEMA,
    EVENTS_SCHEMA,
    SESSIONS_SCHEMA,
    LandingReport,
    SessionInfo,
    book_states_table,
    events_table,
    land_book_states,
    land_records,
    land_session_file,
    land_table,
    read_records,
    session_info_from_file,
    sessions_table,
)
from qrsdp_sim.lake.store import MARKER_NAME, TABLES, Lake, LakeError, PartitionMarker, S3Options

__all__ = [
    "BOOK_STATES_SCHEMA",
    "EVENTS_SCHEMA",
    "MARKER_NAME",
    "SESSIONS_SCHEMA",
    "TABLES",
    "Lake",
    "LakeError",
    "LandingReport",
    "PartitionMarker",
    "S3Options",
    "SessionInfo",
    "book_states_table",
    "events_table",
    "land_book_states",
    "land_records",
    "land_session_file",
    "land_table",
    "read_records",
    "session_info_from_file",
    "sessions_table",
]
