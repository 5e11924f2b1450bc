"""The IsolationForest model: thresholds per segment, reasons, the forest merge, persistence."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from scale_ray.demo.generator import generate_tenants
from scale_ray.ledger.rows import transactions_table
from scale_ray.models.anomaly.features import Features, build_features
from scale_ray.models.anomaly.model import (
    AnomalyModel,
    fit_forest,
    merge_forests,
    thresholds_from_scores,
)
from scale_ray.models.anomaly.serving import load_anomaly_model, publish_anomaly_model, score_new
from scale_ray.models.registry import ModelRegistry


@pytest.fixture(scope="module")
def ledger() -> tuple[pa.Table, dict[str, str]]:
    tenants, anomalies, _ = generate_tenants(8, years=1.5, seed=11, anomaly_rate=0.01)
    table = pa.concat_tables(
        transactions_table(t.user_id, t.transactions, num_buckets=16, source="demo")
        for t in tenants
    )
    return table, {a.txn_id: a.kind for a in anomalies}


@pytest.fixture(scope="module")
def features(ledger: tuple[pa.Table, dict[str, str]]) -> Features:
    return build_features(ledger[0])


@pytest.fixture(scope="module")
def model(features: Features) -> AnomalyModel:
    return AnomalyModel.fit(features, n_estimators=100, random_state=0)


def test_thresholds_are_score_quantiles_per_segment() -> None:
    rng = np.random.default_rng(0)
    scores = np.concatenate([rng.uniform(0, 1, 1000), rng.uniform(1, 2, 300)])
    segments = np.array(["established"] * 1000 + ["new"] * 300 + [], dtype=object)
    t = thresholds_from_scores(scores, segments, flag_rate=0.01, min_segment_rows=200)
    assert t["established"] == pytest.approx(np.quantile(scores[:1000], 0.99))
    assert t["new"] == pytest.approx(np.quantile(scores[1000:], 0.99))
    assert t["*"] == pytest.approx(np.quantile(scores, 0.99))
    # Too few rows in a segment: it falls back to the overall threshold.
    assert "new" not in thresholds_from_scores(scores, segments, min_segment_rows=500)
    with pytest.raises(ValueError):
        thresholds_from_scores(scores, segments, flag_rate=0.0)


def test_flag_rate_on_training_rows_is_the_target(model: AnomalyModel, features: Features) -> None:
    results = model.results(features, explain="none")
    flagged = np.array([r.flagged for r in results])
    # Thresholds are the 99.5th percentile of each segment: about 0.5 % of rows reach them.
    assert 0.002 <= flagged.mean() <= 0.01
    assert all(r.reason is None for r in results)


def test_planted_anomalies_score_higher(
    model: AnomalyModel, features: Features, ledger: tuple[pa.Table, dict[str, str]]
) -> None:
    from sklearn.metrics import roc_auc_score

    labels = features.rows["txn_id"].isin(ledger[1].keys()).to_numpy()
    assert labels.sum() > 20
    assert roc_auc_score(labels, model.score(features.X)) > 0.85


def test_flagged_rows_carry_reasons_from_their_drivers(
    model: AnomalyModel, features: Features
) -> None:
    flagged = [r for r in model.results(features) if r.flagged]
    assert flagged
    for result in flagged:
        assert result.reason and not result.reason[0].islower()
        assert result.drivers, result
        contributions = [d["contribution"] for d in result.drivers]
        assert contributions == sorted(contributions, reverse=True)
        assert result.score >= result.threshold


def test_a_night_charge_at_a_new_merchant_is_explained_as_such() -> None:
    t0 = datetime(2024, 1, 1, 12, tzinfo=UTC)
    rng = np.random.default_rng(4)
    rows = []
    for i in range(400):
        rows.append(
            {
                "user_id": "u",
                "txn_id": f"n{i}",
                "amount_minor": -int(rng.integers(500, 3000)),
                "currency": "GBP",
                "booked_at": t0 + timedelta(hours=int(rng.integers(0, 8)) + 24 * (i // 2)),
                "merchant": ["TESCO", "BOOTS", "PRET"][i % 3],
            }
        )
    rows.append(
        {
            "user_id": "u",
            "txn_id": "odd",
            "amount_minor": -2000,
            "currency": "GBP",
            "booked_at": datetime(2024, 9, 1, 3, 12, tzinfo=UTC),
            "merchant": "CASINO ROYALE",
        }
    )
    features = build_features(pd.DataFrame(rows))
    model = AnomalyModel.fit(features, n_estimators=100, random_state=1)
    (odd,) = model.results(
        features.take(features.rows["txn_id"].to_numpy() == "odd"), explain="all"
    )
    drivers = [d["driver"] for d in odd.drivers]
    assert {"new_merchant", "time_of_day"} <= set(drivers[:3])
    assert "a merchant you have never used" in odd.reason.lower()
    assert "at 03:12" in odd.reason


def test_merged_forest_scores_like_the_union_of_trees(features: Features) -> None:
    half = len(features) // 2
    a = fit_forest(features.X[:half], n_estimators=30, random_state=1)
    b = fit_forest(features.X[half:], n_estimators=50, random_state=2)
    merged = merge_forests([a, b])
    assert merged.n_estimators == 80 and len(merged.estimators_) == 80
    # score = -2^(-mean depth / c(n)): its log2 averages over trees.
    la = np.log2(-a.score_samples(features.X))
    lb = np.log2(-b.score_samples(features.X))
    expected = -(2 ** ((30 * la + 50 * lb) / 80))
    np.testing.assert_allclose(merged.score_samples(features.X), expected, rtol=1e-12)
    with pytest.raises(ValueError):
        merge_forests([])


def test_merge_refuses_different_sample_sizes(features: Features) -> None:
    a = fit_forest(features.X[:100], n_estimators=5, max_samples=64)
    b = fit_forest(features.X[:100], n_estimators=5, max_samples=32)
    with pytest.raises(ValueError, match="sample sizes"):
        merge_forests([a, b])


def test_publish_load_and_score_new(
    tmp_path, model: AnomalyModel, ledger: tuple[pa.Table, dict[str, str]]
) -> None:
    registry = ModelRegistry(tmp_path)
    version = publish_anomaly_model(registry, model, {"trained_on": "test"}, promote=True)
    assert registry.live("anomaly") == version
    meta = registry.metadata("anomaly", version)
    assert meta["thresholds"] == model.thresholds and meta["trained_on"] == "test"
    loaded_version, loaded = load_anomaly_model(registry)
    assert loaded_version == version
    table = ledger[0]
    new = set(table.column("txn_id").to_pylist()[-40:])
    a = score_new(model, table, new)
    b = score_new(loaded, table, new)
    assert [r.txn_id for r in a] == [r.txn_id for r in b]
    assert {r.txn_id for r in a} <= new
    np.testing.assert_allclose([r.score for r in a], [r.score for r in b])


def test_load_refuses_other_formats(tmp_path, model: AnomalyModel) -> None:
    import pickle

    model.save(tmp_path)
    path = tmp_path / "anomaly_model.pkl"
    state = pickle.loads(path.read_bytes())
    state["feature_names"] = ["something_else"]
    path.write_bytes(pickle.dumps(state))
    with pytest.raises(ValueError, match="other features"):
        AnomalyModel.load(tmp_path)
