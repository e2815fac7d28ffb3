"""Checksums of the marts, to compare two warehouses (the embedded DuckDB file and a DuckLake).

Each mart's rows of the given symbols, ordered by their key, as text (floating-point columns rounded
to 9 significant digits: parallel aggregation may sum in another order), hashed with md5. Equal
checksums mean the same rows with the same values.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

MARTS = {
    "marts.fct_session_summary": ("symbol", "date"),
    "marts.fct_ohlcv_1min": ("symbol", "date", "minute_index"),
}


def _column_sql(name: str, dtype: str) -> str:
    if dtype.upper() in ("DOUBLE", "FLOAT", "REAL"):
        return f"format('{{:.9g}}', {name})"
    return f"cast({name} as varchar)"


def mart_checksums(con: Any, symbols: Sequence[str]) -> dict[str, tuple[int, str]]:
    """table -> (rows, md5 of the ordered rows) for ``symbols`` (a DuckDB connection)."""
    wanted = ", ".join("'" + s.replace("'", "''") + "'" for s in symbols)
    out = {}
    for table, key in MARTS.items():
        columns = con.sql(f"describe {table}").fetchall()
        row = " || '|' || ".join(f"coalesce({_column_sql(c[0], c[1])}, 'null')" for c in columns)
        count, digest = con.sql(
            f"select count(*), md5(coalesce(string_agg({row}, chr(10) order by {', '.join(key)}), '')) "
            f"from {table} where symbol in ({wanted})"
        ).fetchone()
        out[table] = (int(count), str(digest))
    return out
