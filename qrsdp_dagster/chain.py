"""Can these sessions be simulated now? The checks a run does before simulating anything.

A session opens at its symbol's previous trading date's close, read from that session's manifest,
and must be simulated with the same configuration as the session it continues (session length,
model, market open, ...: what ``RunSpec.manifest_fields`` records), or its prices would chain
across different simulations without anyone noticing.

:func:`chain_problems` looks at every symbol of a selection once -- the session before its
earliest selected date must exist and have this configuration -- and returns one clear message per
problem, naming the first date to backfill from. ``session_log`` calls it before simulating any
partition, and :class:`qrsdp_dagster.run_coordinator.ChainCheckingRunCoordinator` calls it before
a run is even queued (so a launch that cannot work never starts, and nothing downstream shows a
failure it did not have).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from typing import Any

from qrsdp_sim.engine.calendar import previous_trading_date, trading_dates

CONFIG_FIELDS = (
    "session_seconds", "market_open", "tick_size", "levels_per_side", "initial_spread_ticks", "initial_depth",
    "model", "realism", "market_factor", "base_seed",
)  # fmt: skip
"""Manifest fields that make up a session's configuration (compared when chaining)."""


def session_config(fields: dict[str, Any]) -> dict[str, Any]:
    """The configuration part of a manifest (or of a spec's manifest fields + base seed)."""
    return {k: fields[k] for k in CONFIG_FIELDS if k in fields}


def describe_config(config: dict[str, Any]) -> str:
    """One line: ``session_seconds=3600, model=simple, ...`` (nested values as compact JSON)."""
    parts = []
    for k in CONFIG_FIELDS:
        if k in config:
            v = config[k]
            if isinstance(v, dict) and set(v) == {"name"}:
                v = v["name"]
            parts.append(
                f"{k}={json.dumps(v, sort_keys=True, separators=(',', ':')) if isinstance(v, dict) else v}"
            )
    return ", ".join(parts)


def config_differences(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """``field: before -> now`` for each configuration field that differs (absent fields are ignored)."""
    out = []
    for k in CONFIG_FIELDS:
        if k in before and k in now and before[k] != now[k]:
            out.append(f"{k}: {before[k]} -> {now[k]}")
    return out


def chain_problems(simulation: Any, partitions: Iterable[tuple[str, dt.date]]) -> list[str]:
    """Problems that stop the selected sessions from being simulated, one message each ([] = none).

    ``simulation`` is a :class:`qrsdp_dagster.resources.SimulationResource`; ``partitions`` are
    (symbol, date) pairs. Dates inside the selection are simulated in order by the run itself, so
    only the session before each symbol's earliest selected date is read.
    """
    first = dt.date.fromisoformat(simulation.first_date)
    wanted = session_config({**simulation.spec().manifest_fields(), "base_seed": simulation.base_seed})
    earliest: dict[str, dt.date] = {}
    for symbol, date in partitions:
        if date < earliest.get(symbol, dt.date.max):
            earliest[symbol] = date
    problems = []
    for symbol, date in sorted(earliest.items()):
        if symbol not in simulation.symbols:
            problems.append(f"{symbol} is not a configured symbol ({', '.join(simulation.symbols)})")
            continue
        if date < first:
            problems.append(f"{symbol} {date}: before the first trading date {first}")
            continue
        if date == first:
            continue
        prev = previous_trading_date(date)
        manifest = simulation.read_manifest(symbol, prev)
        if manifest is None:
            missing = first_missing_date(simulation, symbol, first, prev)
            problems.append(
                f"{symbol} {date} opens at the close of {prev}, which has no session. Sessions chain in date order: "
                f"backfill {symbol} from {missing} (the first trading date without a session) to {date}, "
                f"e.g. partitions '{missing}|{symbol}' ... '{date}|{symbol}' of session_log (a backfill keeps "
                "the order)."
            )
            continue
        changed = config_differences(session_config(manifest), wanted)
        if changed and not simulation.allow_config_change:
            problems.append(
                f"{symbol} {date} would continue {symbol} {prev}, simulated with another configuration "
                f"({'; '.join(changed)}). Use the configuration of that session (run config "
                "resources.simulation.config), or set allow_config_change: true to chain them anyway "
                "(recorded in the metadata)."
            )
    return problems


def first_missing_date(simulation: Any, symbol: str, first: dt.date, last: dt.date) -> dt.date:
    """The earliest trading date in first..last without a session of ``symbol`` (``last`` if all
    but it exist). Walks back from ``last`` to the latest existing session, so its cost grows with
    the gap, not with the history."""
    missing = last
    for day in reversed(trading_dates(first, trading_days_between(first, last))):
        if simulation.read_manifest(symbol, day) is not None:
            break
        missing = day
    return missing


def trading_days_between(first: dt.date, last: dt.date) -> int:
    """Trading dates (weekdays) from first to last, both included."""
    return sum(1 for i in range((last - first).days + 1) if (first + dt.timedelta(days=i)).weekday() < 5)
