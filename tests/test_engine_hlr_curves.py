"""HLR curves: JSON round trip, the schema, and clear rejection of malformed files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from qrsdp_sim.engine import HLR, HLRCurves, HLRCurvesError, SessionConfig


def test_default_curves_follow_the_spec():
    """The realistic built-in curves (queue units): short-lived queues at the best, stable ones deeper."""
    c = HLRCurves.default(levels=5, n_max=100)
    n = np.arange(101)
    np.testing.assert_allclose(c.add[:, 0], np.broadcast_to(8 / (1 + 0.15 * n), (2, 101)))
    np.testing.assert_allclose(c.add[:, 1:], np.broadcast_to(3 / (1 + 0.1 * n), (2, 4, 101)))
    np.testing.assert_allclose(c.cancel[:, 0], np.broadcast_to(1.5 * n / (1 + 0.05 * n), (2, 101)))
    np.testing.assert_allclose(c.cancel[:, 1:], np.broadcast_to(0.12 * n / (1 + 0.01 * n), (2, 4, 101)))
    assert np.all(c.market[:, 0] == 0) and np.all(c.market[:, 1:] == 0.25)
    assert c.spread_sensitivity == 0.3 and c.imbalance_sensitivity == 1.0


def test_seed_curves_follow_the_seed_spec():
    c = HLRCurves.seed(levels=5, n_max=100)
    n = np.arange(101)
    np.testing.assert_allclose(c.add[:, 0], np.broadcast_to(15 / (1 + 0.12 * n), (2, 101)))
    np.testing.assert_allclose(c.add[:, 1:], np.broadcast_to(5 / (1 + 0.2 * n), (2, 4, 101)))
    np.testing.assert_allclose(c.cancel, np.broadcast_to(0.3 * n / (1 + 0.02 * n), (2, 5, 101)))
    assert np.all(c.market[:, 0] == 0) and np.all(c.market[:, 1:] == 8)
    assert c.spread_sensitivity == 0.3 and c.imbalance_sensitivity == 1.0


def test_json_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    c = HLRCurves.default(levels=3, n_max=7)
    c = HLRCurves(
        add=rng.random(c.add.shape) * 10,
        cancel=np.concatenate([np.zeros((2, 3, 1)), rng.random((2, 3, 7))], axis=2),
        market=np.concatenate([np.zeros((2, 1)), rng.random((2, 7))], axis=1),
        spread_sensitivity=-0.125,
        imbalance_sensitivity=0.75,
        meta={"source": "test", "sessions": 3},
    )
    path = tmp_path / "curves.json"
    c.save(path)
    back = HLRCurves.load(path)
    assert back == c  # exact: floats survive JSON (repr round-trips)
    assert back.levels == 3 and back.n_max == 7
    doc = json.loads(path.read_text())
    assert doc["format"] == "qrsdp-hlr-curves" and doc["version"] == 1
    assert len(doc["add"]["bid"]) == 3 and len(doc["add"]["bid"][0]) == 8
    # and the loaded curves drive a session
    SessionConfig(seed=1, session_seconds=1, levels_per_side=3, model=HLR(back)).validate()


def _doc() -> dict:
    return HLRCurves.default(levels=2, n_max=3).to_json_dict()


def _mutate(path: list, value=None, delete: bool = False):
    def apply(doc: dict) -> dict:
        obj = doc
        for key in path[:-1]:
            obj = obj[key]
        if delete:
            del obj[path[-1]]
        else:
            obj[path[-1]] = value
        return doc

    return apply


@pytest.mark.parametrize(
    ("mutate", "location", "reason"),
    [
        (_mutate(["format"], "something-else"), "format", "expected 'qrsdp-hlr-curves'"),
        (_mutate(["version"], 2), "version", "unsupported version"),
        (_mutate(["levels"], 0), "levels", "integer in [1, 64]"),
        (_mutate(["levels"], True), "levels", "integer"),
        (_mutate(["n_max"], 2.5), "n_max", "integer"),
        (_mutate(["add"], None, delete=True), "add", "missing required key"),
        (_mutate(["extra"], 1), "extra", "unknown key"),
        (_mutate(["add", "mid"], []), "add", 'exactly the keys "bid" and "ask"'),
        (_mutate(["add", "bid"], [[1, 2, 3, 4]]), "add.bid", "list of 2 curves"),
        (_mutate(["cancel", "ask", 1], [0, 1, 2]), "cancel.ask[1]", "n_max + 1 = 4 numbers"),
        (_mutate(["add", "bid", 0, 2], -1.0), "add.bid[0][2]", "finite number >= 0"),
        (_mutate(["add", "bid", 0, 2], "7"), "add.bid[0][2]", "finite number >= 0"),
        (_mutate(["market", "bid", 1], float("nan")), "market.bid[1]", "finite number >= 0"),
        (_mutate(["cancel", "bid", 1, 0], 0.5), "cancel.bid[1][0]", "empty queue"),
        (_mutate(["market", "ask", 0], 1.0), "market.ask[0]", "empty queue"),
        (_mutate(["spread_sensitivity"], "high"), "spread_sensitivity", "finite number"),
        (_mutate(["imbalance_sensitivity"], -1), "imbalance_sensitivity", ">= 0"),
        (_mutate(["meta"], [1]), "meta", "must be an object"),
    ],
)
def test_malformed_documents_are_rejected_with_location(tmp_path, mutate, location, reason):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(mutate(_doc()), allow_nan=True))
    with pytest.raises(HLRCurvesError) as info:
        HLRCurves.load(path)
    err = info.value
    assert err.location == location
    assert reason in err.reason
    assert str(path) in str(err) and location in str(err)
    assert "\n" not in str(err)


@pytest.mark.parametrize(
    ("text", "reason"),
    [("{", "invalid JSON"), ("[1, 2]", "expected a JSON object"), ("", "invalid JSON")],
)
def test_files_that_are_not_curves_documents(tmp_path, text, reason):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(HLRCurvesError, match=reason):
        HLRCurves.load(path)


def test_missing_file(tmp_path):
    with pytest.raises(HLRCurvesError, match="cannot read"):
        HLRCurves.load(tmp_path / "nope.json")


def test_programmatic_curves_are_validated_before_simulating():
    c = HLRCurves.default(levels=5)
    bad = HLRCurves(add=c.add, cancel=c.cancel + 1.0, market=c.market)
    with pytest.raises(ValueError, match="empty queue"):
        SessionConfig(seed=1, model=HLR(bad)).validate()
