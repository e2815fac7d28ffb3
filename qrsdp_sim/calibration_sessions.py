"""What calibration must know about a session besides its log, and where it comes from.

A realistic session's rates are not visible in its records alone: the models read queue sizes in
*queue units* (``OrderSizes.unit_shares()`` shares), the kernel runs in *business time* (the
session's business clock, rebuilt from its seeds), and every rate is multiplied by an
*excitation* whose state follows the event stream (``decorators``). All three are determined by
the session's configuration, which a run's ``manifest.json`` records: the logs of a run live in
``OUTPUT/SYMBOL/YYYY-MM-DD.qrsdp`` next to ``OUTPUT/manifest.json``, whose entry for that file
(realism, model, base seed, date, open) rebuilds the session's full ``SessionConfig`` through
``RunSpec.session_config``.

A log without a manifest (or with ``use_manifests=False``) has no clock or excitation to rebuild:
it is calibrated in calendar time, with the queue unit given by the caller (``--queue-unit``) or
else the mean ADD size of such logs (see ``qrsdp_sim.calibration``).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qrsdp_sim.engine.clock import ClockGrid
from qrsdp_sim.engine.decorators import DEC_EXCITE, DEC_HAWKES, DEC_NONE, no_decorator
from qrsdp_sim.engine.factor import MarketFactor
from qrsdp_sim.engine.models.factory import model_from_dict
from qrsdp_sim.engine.realism import Realism
from qrsdp_sim.engine.runner import MANIFEST_NAME, RunSpec
from qrsdp_sim.engine.session import SessionConfig

UNIT_MANIFEST = "run manifest"
UNIT_GIVEN = "--queue-unit"
UNIT_MEAN_ADD = "mean ADD size of the logs"

EXCITATION_NAMES = {DEC_NONE: "none", DEC_EXCITE: "excitation", DEC_HAWKES: "Hawkes"}


@dataclass(frozen=True, eq=False)
class SessionContext:
    """Queue unit, business clock and decorator of one session (defaults: the plain seed's).

    ``decorator`` is ``(kind, params, fresh state)``; calibration replays a copy of the state.
    """

    unit: float = 1.0
    unit_source: str = UNIT_GIVEN
    clock: ClockGrid | None = None
    decorator: tuple[int, np.ndarray, np.ndarray] = field(default_factory=no_decorator)
    from_manifest: bool = False

    @classmethod
    def from_config(cls, config: SessionConfig) -> SessionContext:
        """Everything the session's own configuration determines (a run's session)."""
        return cls(
            unit=float(config.realism.sizes.unit_shares()),
            unit_source=UNIT_MANIFEST,
            clock=config.clock_grid(),
            decorator=config.decorator(),
            from_manifest=True,
        )

    @property
    def excitation(self) -> str:
        return EXCITATION_NAMES.get(self.decorator[0], f"decorator {self.decorator[0]}")

    @property
    def time_basis(self) -> str:
        """How the session's exposure is measured, in words (for the command's output)."""
        if not self.from_manifest:
            return "calendar time (no manifest)"
        clock = "business time" if self.clock is not None else "calendar time (identity clock)"
        if self.decorator[0] == DEC_NONE:
            return f"{clock}, no excitation (run manifest)"
        return f"{clock} x the {self.excitation} multiplier replayed (run manifest)"


@dataclass(frozen=True)
class CalibrationLog:
    """A log to calibrate, with its session's configuration when a run's manifest gives it."""

    path: Path
    config: SessionConfig | None = None
    manifest: Path | None = None
    notes: tuple[str, ...] = ()  # what the estimator cannot undo for this session (metaorders, factor)


def log_files(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Files as given; directories expand to every ``*.qrsdp`` below them (sorted)."""
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            out.extend(sorted(p.rglob("*.qrsdp")))
        else:
            out.append(p)
    return out


def find_logs(paths: Iterable[str | os.PathLike[str]], *, use_manifests: bool = True) -> list[CalibrationLog]:
    """The logs under ``paths`` (files, run directories or any directories), each with its session's
    configuration when it sits in a run (``OUTPUT/SYMBOL/DATE.qrsdp`` next to ``OUTPUT/manifest.json``,
    listed there). Raises ValueError when a manifest exists but cannot be read or used."""
    manifests: dict[Path, RunManifest | None] = {}
    out = []
    for path in log_files(paths):
        if not use_manifests:
            out.append(CalibrationLog(path))
            continue
        where = path.parent.parent / MANIFEST_NAME
        if where not in manifests:
            manifests[where] = RunManifest.load(where) if where.is_file() else None
        run = manifests[where]
        out.append(run.log(path) if run is not None else CalibrationLog(path))
    return out


class RunManifest:
    """A run's ``manifest.json``: the session configuration of each of its logs."""

    def __init__(self, path: Path, doc: dict[str, Any]) -> None:
        self.path = path
        self.root = path.parent
        self._doc = doc
        self._specs: dict[str, RunSpec] = {}

    @classmethod
    def load(cls, path: Path) -> RunManifest:
        try:
            doc = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(
                f"{path}: cannot read the run's manifest ({exc}); fix it or use --no-manifest"
            ) from None
        if not isinstance(doc, dict):
            raise ValueError(f"{path}: not a run manifest (a JSON object); fix it or use --no-manifest")
        return cls(path, doc)

    def _fail(self, reason: str) -> ValueError:
        return ValueError(f"{self.path}: {reason}; fix the manifest or calibrate with --no-manifest")

    def _entries(self) -> list[dict[str, Any]]:
        entries = self._doc.get("securities", [self._doc])
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise self._fail("'securities' must be a list of objects")
        return entries

    def spec(self, entry: dict[str, Any]) -> RunSpec:
        """The run's settings for one security entry (what ``RunSpec.manifest_fields`` wrote)."""
        symbol = str(entry.get("symbol"))
        if symbol in self._specs:
            return self._specs[symbol]
        try:
            factor = dict(entry.get("market_factor") or {})
            factor.pop("strategy", None)
            spec = RunSpec(
                base_seed=int(self._doc["base_seed"]),
                session_seconds=int(entry["session_seconds"]),
                levels_per_side=int(entry["levels_per_side"]),
                initial_depth=int(entry["initial_depth"]),
                initial_spread_ticks=int(entry["initial_spread_ticks"]),
                tick_size=int(entry["tick_size"]),
                market_open=str(entry["market_open"]),
                model=model_from_dict(entry["model"]),
                realism=Realism.from_dict(entry["realism"]) if "realism" in entry else Realism.plain(),
                factor=MarketFactor(**factor),
            )
        except KeyError as exc:
            raise self._fail(f"security {symbol}: missing {exc}") from None
        except (TypeError, ValueError, AttributeError) as exc:
            raise self._fail(f"security {symbol}: {exc}") from None
        self._specs[symbol] = spec
        return spec

    def log(self, path: Path) -> CalibrationLog:
        """``path`` with its session's configuration; without one if the manifest does not list it."""
        rel = path.relative_to(self.root).as_posix()
        for entry in self._entries():
            sessions = entry.get("sessions", [])
            if not isinstance(sessions, list):
                raise self._fail(f"security {entry.get('symbol')}: 'sessions' must be a list")
            for sess in sessions:
                if not isinstance(sess, dict) or sess.get("file") != rel:
                    continue
                spec = self.spec(entry)
                try:
                    date = dt.date.fromisoformat(str(sess["date"]))
                    config = spec.session_config(str(entry["symbol"]), date, int(sess["open_ticks"]))
                    config.validate()
                    seed = int(sess["seed"])
                except KeyError as exc:
                    raise self._fail(f"session {rel}: missing {exc}") from None
                except (TypeError, ValueError) as exc:
                    raise self._fail(f"session {rel}: {exc}") from None
                if config.seed != seed:
                    raise self._fail(
                        f"session {rel}: the seed derived from the base seed, symbol and date ({config.seed}) "
                        f"is not the recorded one ({seed})"
                    )
                return CalibrationLog(path, config, self.path, _notes(spec))
        return CalibrationLog(path, None, self.path, (f"{rel} is not listed in {self.path}",))


def _notes(spec: RunSpec) -> tuple[str, ...]:
    notes = []
    if not spec.realism.metaorders.is_off:
        notes.append(
            "metaorders were on: a market order's side may be a latent metaorder's sign and add rates are "
            "tilted while one is active; the log cannot reveal them, so the estimates average over them"
        )
    if spec.factor.enabled:
        notes.append(
            f"market factor loading {spec.factor.loading}: the imbalance shift it causes is not part of the estimator"
        )
    return tuple(notes)
