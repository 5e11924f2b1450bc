"""The HypCD categorizer end to end on a small synthetic hierarchy (real MiniLM, tiny training).

Three groups with two categories each and eight merchants per category; every merchant appears
with several store numbers, as bank descriptors do. Training is a few epochs on CPU, so these
tests check the plumbing and the guarantees (memory of seen merchants, user memory, calibration,
persistence, the hierarchy in the ball), not accuracy on new merchants.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from scale_ray.models.hypcd.categorizer import (
    HypCDCategorizer,
    InferenceConfig,
    build_training_set,
    fit_categorizer,
)
from scale_ray.models.hypcd.train import TrainConfig
from scale_ray.taxonomy import UNCATEGORIZED

MERCHANTS: dict[str, tuple[str, ...]] = {
    "Food/Groceries": (
        "TESCO STORES", "SAINSBURYS", "ALDI", "LIDL", "ASDA SUPERSTORE", "MORRISONS",
        "WAITROSE", "CO OP FOOD",
    ),
    "Food/Restaurants": (
        "PIZZA EXPRESS", "NANDOS", "WAGAMAMA", "PRET A MANGER", "ZIZZI", "FRANCO MANCA",
        "YO SUSHI", "BELLA ITALIA",
    ),
    "Transport/Fuel": (
        "SHELL", "BP CONNECT", "ESSO", "TEXACO", "JET PETROL", "GULF FUEL", "MURCO",
        "APPLEGREEN",
    ),
    "Transport/Taxi": (
        "UBER TRIP", "ADDISON LEE", "BOLT RIDE", "FREE NOW TAXI", "GETT CABS", "CITY CABS",
        "BLACK CAB", "VEEZU TAXI",
    ),
    "Bills/Energy": (
        "BRITISH GAS", "EDF ENERGY", "OCTOPUS ENERGY", "EON NEXT", "OVO ENERGY", "BULB ENERGY",
        "SCOTTISH POWER", "SSE ENERGY",
    ),
    "Bills/Phone": (
        "VODAFONE", "EE MOBILE", "O2 MOBILE", "THREE MOBILE", "GIFFGAFF", "SKY MOBILE",
        "BT MOBILE", "LEBARA MOBILE",
    ),
}  # fmt: skip
CONFIG = TrainConfig(epochs=4, batch_size=16, hidden_dim=256, out_dim=64, seed=0)


def synthetic_rows() -> tuple[list[str], list[str]]:
    """Three descriptors per merchant, each with its own store number."""
    texts: list[str] = []
    paths: list[str] = []
    for n, (path, names) in enumerate(MERCHANTS.items()):
        for m, name in enumerate(names):
            for store in range(3):
                texts.append(f"{name} {100 * n + 10 * m + store + 1}")
                paths.append(path)
    return texts, paths


@pytest.fixture(scope="module")
def model() -> HypCDCategorizer:
    texts, paths = synthetic_rows()
    return fit_categorizer(texts, paths, CONFIG, version="test-v1")


@pytest.fixture(scope="module")
def euclidean_model() -> HypCDCategorizer:
    texts, paths = synthetic_rows()
    config = TrainConfig(
        geometry="euclidean", epochs=3, batch_size=16, hidden_dim=256, out_dim=64, seed=0
    )
    return fit_categorizer(texts, paths, config)


def test_training_set_is_one_row_per_merchant() -> None:
    texts, paths = synthetic_rows()

    data = build_training_set(texts, paths, unlabelled=["NEW SHOP 12", "tesco stores 4"])

    assert data.classes == sorted(MERCHANTS)
    assert len(data.keys) == 48 + 1  # store numbers fold away; a seen merchant stays labelled
    assert data.keys[-1] == "new shop"
    assert data.counts[-1].sum() == 0
    assert data.counts[data.keys.index("tesco stores")].tolist() == [0, 0, 3, 0, 0, 0]
    assert data.raw[0] == texts[0]


def test_seen_merchants_get_their_category(model: HypCDCategorizer) -> None:
    # Prepare: seen merchants with store numbers and case never seen in training.
    queries = {
        "Tesco Stores 9876": "Food/Groceries",
        "nandos 5": "Food/Restaurants",
        "SHELL 4040": "Transport/Fuel",
        "Addison Lee 777": "Transport/Taxi",
        "british gas 1": "Bills/Energy",
        "VODAFONE 31337": "Bills/Phone",
    }

    # Execute
    predictions = model.predict(list(queries))

    # Assert
    assert [p.path for p in predictions] == list(queries.values())
    for prediction, path in zip(predictions, queries.values(), strict=True):
        assert prediction.known
        assert prediction.source == "model"
        assert prediction.candidate == path
        assert prediction.group == path.split("/")[0]
        assert 0.0 <= prediction.confidence <= 1.0
    assert predictions[0].merchant == "tesco stores"


def test_every_training_merchant_is_recalled(model: HypCDCategorizer) -> None:
    texts, paths = synthetic_rows()

    predictions = model.predict([t.lower() + "0" for t in texts])

    assert [p.candidate for p in predictions] == paths


def test_confidence_threshold_and_unknown(model: HypCDCategorizer) -> None:
    # Prepare: new merchants and inputs without a merchant at all.
    texts = ["COSTA COFFEE 12", "NATIONAL RAIL 88", "4423", ""]

    # Execute
    predictions = model.predict(texts)

    # Assert: the threshold was calibrated; known ⇔ confidence ≥ threshold.
    threshold = model.inference.unknown_threshold
    assert 0.0 < threshold <= 1.0
    assert model.inference.unknown_rate == pytest.approx(0.05)
    for p in predictions[:2]:
        assert 0.0 <= p.confidence <= 1.0
        assert p.candidate in model.classes
        assert p.known == (p.confidence >= threshold)
        assert (p.path == p.candidate) if p.known else (p.path == UNCATEGORIZED)
    for p in predictions[2:]:
        assert (p.merchant, p.path, p.known, p.confidence) == ("", UNCATEGORIZED, False, 0.0)


def test_probabilities_are_distributions(model: HypCDCategorizer) -> None:
    probs, points = model.key_probabilities(["tesco stores", "costa coffee", "uber trip"])

    assert probs.shape == (3, 6)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    assert (probs >= 0).all()
    radius = 1 / math.sqrt(CONFIG.curvature)
    assert (np.linalg.norm(points, axis=1) < radius).all()
    # A seen merchant keeps at least exact_weight of its own distribution (all on its class).
    assert probs[0, model.classes.index("Food/Groceries")] >= model.inference.exact_weight


def test_user_memory_applies_to_that_user_only(model: HypCDCategorizer) -> None:
    # Prepare: alice says Tesco is her phone bill (a correction: wins at once, no retraining).
    key = model.user_memory.remember("alice", "TESCO STORES 1", "Bills/Phone")
    text = "tesco stores 2203"

    # Execute
    for_alice, for_bob, anonymous = model.predict([text, text, text], ["alice", "bob", None])
    model.user_memory.forget("alice", "Tesco Stores")
    after_forget = model.predict([text], ["alice"])[0]

    # Assert
    assert key == "tesco stores"
    assert (for_alice.path, for_alice.source, for_alice.confidence) == (
        "Bills/Phone",
        "user",
        1.0,
    )
    assert for_alice.group == "Bills"
    assert (for_bob.path, for_bob.source) == ("Food/Groceries", "model")
    assert (anonymous.path, anonymous.source) == ("Food/Groceries", "model")
    assert (after_forget.path, after_forget.source) == ("Food/Groceries", "model")


def test_remember_on_the_categorizer(model: HypCDCategorizer) -> None:
    model.remember("carol", "UBER *TRIP 55", "Transport/Fuel")

    carol, dave = model.predict(["uber trip 9", "uber trip 9"], ["carol", "dave"])

    assert (carol.path, carol.source) == ("Transport/Fuel", "user")
    assert (dave.path, dave.source) == ("Transport/Taxi", "model")
    assert ("uber trip", "Transport/Fuel") in model.user_memory.examples()
    model.user_memory.forget("carol", "uber trip")


def test_save_load_round_trip(model: HypCDCategorizer, tmp_path: Path) -> None:
    # Prepare: seen and new merchants (the new ones go through the head, not only the memory).
    texts = ["TESCO STORES 12", "costa coffee 4", "NATIONAL RAIL", "ee mobile 9", "bolt ride"]
    before = model.predict(texts)

    # Execute
    directory = model.save(tmp_path / "model")
    loaded = HypCDCategorizer.load(directory)
    after = loaded.predict(texts)

    # Assert
    assert sorted(p.name for p in directory.iterdir()) == [
        "categorizer.json",
        "head.pt",
        "memory.npz",
    ]
    assert loaded.version == "test-v1"
    assert loaded.classes == model.classes
    assert loaded.memory_keys == model.memory_keys
    assert loaded.inference == model.inference
    assert loaded.config == model.config
    assert [p.path for p in after] == [p.path for p in before]
    assert [p.candidate for p in after] == [p.candidate for p in before]
    assert [p.known for p in after] == [p.known for p in before]
    np.testing.assert_allclose(
        [p.confidence for p in after], [p.confidence for p in before], rtol=1e-5, atol=1e-6
    )
    assert HypCDCategorizer.load(directory, version="v2").version == "v2"


def test_hierarchy_report(model: HypCDCategorizer) -> None:
    report = model.hierarchy_report()

    assert set(report) == {
        "leaf_prototype_radius",
        "group_prototype_radius",
        "within_group_distance",
        "between_group_distance",
    }
    assert all(math.isfinite(v) for v in report.values())
    assert report["leaf_prototype_radius"] > 0
    assert 0 < report["group_prototype_radius"] < report["leaf_prototype_radius"]
    assert report["within_group_distance"] > 0
    assert report["between_group_distance"] > 0


def test_euclidean_geometry_trains_and_predicts(euclidean_model: HypCDCategorizer) -> None:
    predictions = euclidean_model.predict(["esso 12", "WAGAMAMA 9", "giffgaff"])
    report = euclidean_model.hierarchy_report()

    assert euclidean_model.head.geometry == "euclidean"
    assert [p.path for p in predictions] == ["Transport/Fuel", "Food/Restaurants", "Bills/Phone"]
    assert all(0.0 <= p.confidence <= 1.0 for p in predictions)
    assert euclidean_model.inference.unknown_threshold > 0
    # Euclidean points and prototypes lie on the unit sphere.
    points = euclidean_model.ball_points(["esso", "costa coffee"])
    np.testing.assert_allclose(np.linalg.norm(points, axis=1), 1.0, rtol=1e-5)
    assert all(math.isfinite(v) for v in report.values())


def test_training_raises_on_empty_input() -> None:
    with pytest.raises(ValueError, match="no labelled descriptions"):
        fit_categorizer([], [], CONFIG)
    # Descriptors without a merchant (only digits) leave nothing to train on either.
    with pytest.raises(ValueError, match="no labelled descriptions"):
        fit_categorizer(["4423", "  "], ["Food/Groceries", "Food/Groceries"], CONFIG)


def test_inference_config_defaults() -> None:
    assert InferenceConfig().unknown_threshold == 0.0
    assert 0 < InferenceConfig().exact_weight < 1
