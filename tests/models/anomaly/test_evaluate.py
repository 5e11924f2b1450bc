"""The anomaly evaluation: its metrics and baselines by hand, one planted run on a built ledger,
and the CLI on the real data (small settings; skipped when the shared data is missing).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest

from scale_ray.models.anomaly.evaluate import (
    _cutoff,
    evaluate,
    evaluate_planted_run,
    main,
    precision_at_k,
    user_amount_z,
    zscore_scores,
)
from scale_ray.models.anomaly.planting import ANOMALY_KINDS, plant_anomalies
from scale_ray.models.anomaly.real_ledgers import TIME_OF_DAY_NOTE, assign_times_of_day
from scale_ray.settings import get_settings
from tests.models.anomaly.test_planting import NEW_NAMES, _ledger

SHARED = get_settings().shared_data_path()
FRAUD = SHARED / "fraud" / "ulb_creditcard_sample_5412.csv"
BERKA = SHARED / "berka_ecac" / "trans_test.csv"
BIRMINGHAM = SHARED / "birmingham_pcard_2016_2017"


def _need_shared() -> None:
    if not FRAUD.is_file() or not BERKA.is_file() or not BIRMINGHAM.is_dir():
        pytest.skip(f"shared data not found at {SHARED}")


def test_precision_at_k() -> None:
    y = np.array([1, 0, 1, 0, 0], dtype=bool)
    score = np.array([0.9, 0.8, 0.7, 0.1, 0.2])
    assert precision_at_k(y, score, 1) == 1.0
    assert precision_at_k(y, score, 2) == 0.5
    assert precision_at_k(y, score, 3) == pytest.approx(2 / 3)
    assert precision_at_k(y, score, 50) == pytest.approx(2 / 5)  # k capped at the rows


def test_zscore_scores_is_the_mean_squared_z() -> None:
    fit = np.array([[0.0, 10.0], [2.0, 30.0]])  # means 1, 20; stds 1, 10
    test = np.array([[1.0, 20.0], [3.0, 0.0]])
    np.testing.assert_allclose(zscore_scores(fit, test), [0.0, (4.0 + 4.0) / 2])


def test_user_amount_z_uses_only_earlier_debits() -> None:
    rows = pd.DataFrame(
        {
            "user_id": ["a"] * 4 + ["b"] * 2,
            "currency": "GBP",
            "amount_minor": [-1000, -3000, -2000, -9000, -500, -700],
        }
    )
    z = user_amount_z(rows)
    # a: the first two have fewer than two earlier debits; the third: mean 20, sd 10 -> 0;
    # the fourth: earlier 10, 30, 20 -> mean 20, sd sqrt(200/3) -> (90 - 20) / 8.165.
    np.testing.assert_allclose(z, [0.0, 0.0, 0.0, 70.0 / np.sqrt(200.0 / 3.0), 0.0, 0.0])


@pytest.fixture(scope="module")
def built_run() -> dict[str, Any]:
    timed = assign_times_of_day(_ledger(users=10, per_user=300), seed=0)
    planted = plant_anomalies(timed, new_merchants=NEW_NAMES, rate=0.03, seed=1)
    return evaluate_planted_run(
        planted,
        _cutoff(timed, 0.7),
        flag_rate=0.005,
        n_estimators=100,
        max_samples=256,
        random_state=0,
        with_examples=True,
    )


def test_planted_run_on_a_built_ledger(built_run: dict[str, Any]) -> None:
    m, c = built_run["metrics"], built_run["counts"]
    assert c["train_debits"] + c["test_debits"] == c["debits"]
    assert c["planted_train"] + c["planted_test"] == c["planted_rows"]
    assert c["true_flags"] + c["false_flags"] == c["flagged_test"]
    assert sum(c["planted_by_kind"].values()) == c["planted_rows"]
    assert sum(built_run["per_kind"][k]["test_rows"] for k in ANOMALY_KINDS) == c["planted_test"]
    assert m["recall"] == pytest.approx(c["true_flags"] / c["planted_test"])
    normals = c["test_debits"] - c["planted_test"]
    assert m["false_flag_rate"] == pytest.approx(c["false_flags"] / normals)
    # The model finds the plants far better than the amount z-score, and flags few normals.
    assert m["roc_auc"] > 0.75
    assert m["roc_auc"] > m["baseline_amount_z_roc_auc"] + 0.05
    assert m["false_flag_rate"] <= 0.02
    examples = built_run["examples"]
    assert examples["flagged_plants"], "no plant was flagged"
    for example in examples["flagged_plants"] + examples["false_flags"]:
        assert example["reason"] and example["score"] >= example["threshold"]
    assert all(e["kind"] in ANOMALY_KINDS for e in examples["flagged_plants"])
    assert all(e["kind"] == "normal" for e in examples["false_flags"])


@pytest.fixture(scope="module")
def quick_result() -> dict[str, Any]:
    _need_shared()
    return evaluate(["--quick", "--max-users", "80", "--plant-rate", "0.05"])


def test_fraud_sample(quick_result: dict[str, Any]) -> None:
    fraud = quick_result["fraud"]
    assert fraud["rows"] == 5412 and fraud["frauds"] == 492
    assert fraud["frauds_in_test"]["mean"] == 246
    for method in ("isolation_forest", "zscore", "amount_abs_z"):
        for metric, value in fraud[method].items():
            assert 0.0 <= value["mean"] <= 1.0, (method, metric)
            assert value["n"] == 2
    assert fraud["isolation_forest"]["roc_auc"]["mean"] >= 0.9
    assert fraud["amount_abs_z"]["roc_auc"]["mean"] < fraud["isolation_forest"]["roc_auc"]["mean"]


@pytest.mark.parametrize("dataset", ["berka", "birmingham"])
def test_planted_ledgers(quick_result: dict[str, Any], dataset: str) -> None:
    out = quick_result[dataset]
    assert out["users"] == 80
    assert out["time_of_day"] == TIME_OF_DAY_NOTE
    assert 0.02 <= out["planted_share_of_debits"] <= 0.09
    m = out["metrics"]
    for name in ("roc_auc", "baseline_amount_z_roc_auc", "precision", "recall", "f1"):
        assert 0.0 <= m[name]["mean"] <= 1.0, name
    assert m["roc_auc"]["mean"] > m["baseline_amount_z_roc_auc"]["mean"] + 0.05
    assert m["false_flag_rate"]["mean"] <= 0.02
    assert set(out["per_kind"]) == set(ANOMALY_KINDS)
    assert out["train_before"] > out["date_range"][0]
    assert out["train_before"] < out["date_range"][1]
    first = out["counts_first_seed"]
    assert first["train_debits"] + first["test_debits"] == first["debits"]
    assert set(out["thresholds_first_seed"]) >= {"*"}


def test_cli_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    _need_shared()
    assert main(["--datasets", "fraud", "--seeds", "1", "--n-estimators", "50"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"config", "fraud", "targets", "seconds"}
    assert out["config"]["seeds"] == 1


@pytest.mark.parametrize(
    "argv",
    [
        ["--datasets", "nope"],
        ["--seeds", "0"],
        ["--flag-rate", "1.5"],
        ["--train-share", "1"],
        ["--datasets", "fraud", "--fraud", "/nonexistent/fraud.csv"],
    ],
)
def test_bad_arguments(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        evaluate(argv)
