"""GCD accuracy: one Hungarian matching of cluster names to true categories, then All/Old/New."""

from __future__ import annotations

import pytest

from scale_ray.models.hypcd.metrics import accuracy, gcd_accuracy, hungarian_match


def test_permuted_cluster_names_score_perfectly() -> None:
    # Prepare: a perfect clustering whose names are a permutation of (and differ from) the truth.
    y_true = ["food", "food", "fuel", "taxi", "taxi", "taxi", "rent"]
    rename = {"food": "c3", "fuel": "c0", "taxi": "c2", "rent": "c1"}
    y_pred = [rename[t] for t in y_true]
    old = [t != "rent" for t in y_true]

    # Execute
    scores = gcd_accuracy(y_true, y_pred, old)

    # Assert
    assert scores == {"all": 1.0, "old": 1.0, "new": 1.0}
    assert accuracy(y_true, y_pred) == 0.0  # plain accuracy compares the names themselves


def test_mixed_example_by_hand() -> None:
    # Prepare: counts of (prediction, truth):  x: a×2, n×1   y: a×1, b×2   z: n×2
    # The best one-to-one matching is x→a, y→b, z→n with 2 + 2 + 2 = 6 hits of 8 rows.
    y_true = ["a", "a", "a", "b", "b", "n", "n", "n"]
    y_pred = ["x", "x", "y", "y", "y", "z", "z", "x"]
    old = [t in ("a", "b") for t in y_true]

    # Execute
    scores = gcd_accuracy(y_true, y_pred, old)
    mapping = hungarian_match(y_true, y_pred)

    # Assert: old rows 0, 1, 3, 4 of 0–4 hit (4/5); new rows 5, 6 of 5–7 hit (2/3).
    assert scores["all"] == pytest.approx(6 / 8)
    assert scores["old"] == pytest.approx(4 / 5)
    assert scores["new"] == pytest.approx(2 / 3)
    # Codes are sorted names: a=0, b=1, n=2 and x=0, y=1, z=2.
    assert mapping == {0: 0, 1: 1, 2: 2}


def test_one_cluster_can_match_only_one_category() -> None:
    # Everything in one cluster: it matches the biggest category, the rest are misses.
    y_true = ["a", "a", "a", "b", "c", "c"]
    y_pred = ["k"] * 6
    old = [True, True, True, True, False, False]

    scores = gcd_accuracy(y_true, y_pred, old)

    assert scores == {"all": pytest.approx(3 / 6), "old": pytest.approx(3 / 4), "new": 0.0}


def test_more_clusters_than_categories() -> None:
    # Four clusters for two categories: two clusters stay unmatched, so their rows are misses.
    y_true = ["a", "a", "b", "b"]
    y_pred = ["p", "q", "r", "s"]

    scores = gcd_accuracy(y_true, y_pred, [True, True, False, False])

    assert scores == {"all": 0.5, "old": 0.5, "new": 0.5}


def test_old_new_split_with_only_old_rows_and_empty_input() -> None:
    only_old = gcd_accuracy(["a", "b"], ["1", "0"], [True, True])
    assert only_old == {"all": 1.0, "old": 1.0, "new": 0.0}
    assert gcd_accuracy([], [], []) == {"all": 0.0, "old": 0.0, "new": 0.0}
    assert accuracy([], []) == 0.0
    assert accuracy(["a", "b", "c", "d"], ["a", "x", "c", "d"]) == 0.75
