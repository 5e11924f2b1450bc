"""The evaluation CLI on the real Birmingham files (tiny settings), and its argument errors.

The full comparison of the three methods is marked ``slow``; CI runs the HypCD-only variant on
fewer rows. Both skip when the shared data is missing.
"""

from __future__ import annotations

import json
import math
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from scale_ray.models.hypcd.data import LabelledRows
from scale_ray.models.hypcd.evaluate import METHODS, evaluate, main, user_memory_overlay
from scale_ray.settings import get_settings

BIRMINGHAM = get_settings().shared_data_path() / "birmingham_pcard_2016_2017"
TRAIN_FILE = BIRMINGHAM / "purchase-card-transactions-201612.csv"
TEST_FILE = BIRMINGHAM / "purchase-card-transactions-201709.csv"

CLOSED_SET_RATES = (
    "leaf_accuracy",
    "group_accuracy",
    "leaf_accuracy_seen_merchants",
    "leaf_accuracy_new_merchants",
    "known_rate",
    "leaf_accuracy_when_known",
    "leaf_accuracy_with_user_memory",
    "user_memory_coverage",
)
DISCOVERY_RATES = ("all", "old", "new", "unknown_recall_on_novel", "unknown_rate_on_old")


def _args(methods: str, train_rows: int, test_rows: int) -> list[str]:
    return [
        "--train", str(TRAIN_FILE), "--test", str(TEST_FILE),
        "--epochs", "2",
        "--max-train-rows", str(train_rows), "--max-test-rows", str(test_rows),
        "--novel-classes", "2", "--k", "2",
        "--methods", methods,
    ]  # fmt: skip


def _run(methods: str, train_rows: int, test_rows: int) -> dict[str, Any]:
    if not TRAIN_FILE.is_file() or not TEST_FILE.is_file():
        pytest.skip(f"shared data not found at {BIRMINGHAM}")
    return evaluate(_args(methods, train_rows, test_rows))


@pytest.fixture(scope="module")
def small_result() -> dict[str, Any]:
    return _run("hypcd", 400, 150)


def _in_unit_interval(value: object) -> bool:
    return isinstance(value, float) and 0.0 <= value <= 1.0


def check_result(
    result: dict[str, Any], methods: list[str], train_rows: int, test_rows: int
) -> None:
    """Structure and invariants of one ``evaluate`` result (shared by both sizes)."""
    json.dumps(result)  # what main() prints must be JSON
    assert set(result) == {"data", "config", "closed_set", "discovery", "seconds"}

    data = result["data"]
    assert (data["train_rows"], data["test_rows"]) == (train_rows, test_rows)
    train_dates = [date.fromisoformat(d) for d in data["train_dates"]]
    test_dates = [date.fromisoformat(d) for d in data["test_dates"]]
    assert train_dates[0] <= train_dates[1] < test_dates[0] <= test_dates[1]
    assert 0 < data["groups_train"] <= data["categories_train"]
    assert 0 < data["merchants_train"] <= train_rows
    config = result["config"]
    assert (config["epochs"], config["seed"], config["unknown_rate"]) == (2, 0, 0.05)

    closed = result["closed_set"]
    assert set(closed) == {"test_rows", "test_rows_seen_merchant", *methods}
    assert 0 < closed["test_rows"] <= test_rows
    assert _in_unit_interval(closed["test_rows_seen_merchant"])
    for name in methods:
        scores = closed[name]
        for key in CLOSED_SET_RATES:
            assert _in_unit_interval(scores[key]), (name, key, scores[key])
        assert scores["group_accuracy"] >= scores["leaf_accuracy"]  # a right leaf has its group
        assert scores["fit_seconds"] >= 0
        if name == "tfidf_logreg":
            assert "hierarchy" not in scores
        else:
            hierarchy = scores["hierarchy"]
            assert all(math.isfinite(v) for v in hierarchy.values())
            if name == "hypcd":
                assert hierarchy["group_prototype_radius"] < hierarchy["leaf_prototype_radius"]

    found = result["discovery"]
    assert set(found) == {"novel_classes", "novel_names", "test_rows", "test_rows_novel", *methods}
    assert len(found["novel_classes"]) == 2
    assert found["novel_classes"] == sorted(found["novel_classes"])
    assert set(found["novel_names"]) == set(found["novel_classes"])
    assert all(isinstance(n, str) and n for n in found["novel_names"].values())
    n_rows, n_new = found["test_rows"], found["test_rows_novel"]
    assert 0 < n_new < n_rows
    for name in methods:
        scores = found[name]
        for key in DISCOVERY_RATES:
            assert _in_unit_interval(scores[key]), (name, key, scores[key])
        # One matching over all rows: "all" is the row-weighted mean of "old" and "new".
        mixed = (scores["old"] * (n_rows - n_new) + scores["new"] * n_new) / n_rows
        assert scores["all"] == pytest.approx(mixed)
        assert scores["estimated_new_k"] == 2  # fixed by --k
        assert _in_unit_interval(scores["discovery_threshold"])
        clusters = scores["clusters"]
        assert len(clusters) <= 2
        for c in clusters:
            assert c["name"] == " / ".join(c["merchants"][:2])
            assert c["name"].strip()
            assert c["size"] >= 1
            assert c["cluster"] in (0, 1)
            assert c["majority_true_label"] is None or isinstance(c["majority_true_label"], str)


def test_small_evaluation_hypcd(small_result: dict[str, Any]) -> None:
    check_result(small_result, ["hypcd"], 400, 150)
    assert small_result["discovery"]["hypcd"]["clusters"], "no merchant went to discovery"


@pytest.mark.slow
def test_evaluation_of_all_methods() -> None:
    result = _run(",".join(METHODS), 800, 300)

    check_result(result, list(METHODS), 800, 300)
    # The same capped rows for every method: the same split and the same novel classes.
    assert result["discovery"]["novel_classes"] == ["L/L220", "N/N060"]


def test_unknown_method_is_an_error() -> None:
    # Checked before any file is read, so no shared data is needed.
    with pytest.raises(SystemExit, match="unknown methods: \\['bert'\\]"):
        evaluate(["--train", "a.csv", "--test", "b.csv", "--methods", "hypcd,bert"])


@pytest.mark.parametrize(
    "argv",
    [
        ["--test", "b.csv"],  # --train is required
        ["--train", "a.csv"],  # --test is required
        ["--train", "a.csv", "--test", "b.csv", "--format", "xlsx"],
        ["--train", "a.csv", "--test", "b.csv", "--epochs", "two"],
    ],
    ids=["no-train", "no-test", "bad-format", "bad-epochs"],
)
def test_argument_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        main(argv)

    assert raised.value.code == 2
    assert "error" in capsys.readouterr().err


def test_missing_files_and_empty_data(tmp_path: Path) -> None:
    header_only = tmp_path / "empty.csv"
    header_only.write_text("description,category\n")

    with pytest.raises(FileNotFoundError):
        evaluate(["--train", str(tmp_path / "absent.csv"), "--test", str(header_only)])
    with pytest.raises(SystemExit, match="no labelled rows"):
        evaluate(["--format", "csv", "--train", str(header_only), "--test", str(header_only)])


def _rows(texts: list[str], labels: list[str], users: list[str] | None) -> LabelledRows:
    n = len(texts)
    return LabelledRows(
        texts, labels, [label[0] for label in labels], {}, [None] * n, [None] * n, users=users
    )


def test_user_memory_overlay() -> None:
    # Prepare: card 1 filed Tesco as K020 twice and L100 once; card 2 filed it as L100.
    train = _rows(
        ["tesco 1", "tesco 2", "tesco 3", "tesco 4", "shell"],
        ["K020", "K020", "L100", "L100", "K020"],
        ["card1", "card1", "card1", "card2", "card1"],
    )
    test = _rows(
        ["tesco 9", "tesco 9", "tesco 9", "shell"],
        ["K020"] * 4,
        ["card1", "card2", "card3", "card2"],
    )
    train_keys = ["tesco"] * 4 + ["shell"]
    test_keys = ["tesco", "tesco", "tesco", "shell"]
    preds = ["M/M1", "M/M2", "M/M3", "M/M4"]

    # Execute
    out, coverage = user_memory_overlay(train, train_keys, test, test_keys, preds)
    unchanged, none = user_memory_overlay(
        _rows(train.texts, train.labels, None), train_keys, test, test_keys, preds
    )

    # Assert: each card's own most frequent label wins; unknown (card, merchant) pairs keep the
    # model's answer (card 2 never bought at Shell in training).
    assert out == ["K/K020", "L/L100", "M/M3", "M/M4"]
    assert coverage == 0.5
    assert (unchanged, none) == (preds, 0.0)
