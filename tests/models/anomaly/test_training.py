"""scale_ray.models.anomaly.training: pinned ledger reads, shard plans, the first model.

Real Delta tables under a temporary data root, written by the offline ledger writer; no Ray.
"""

from __future__ import annotations

import threading
from datetime import date

import numpy as np
import pyarrow as pa
import pytest

from scale_ray.ledger.keys import user_bucket
from scale_ray.ledger.offline import OfflineLedgerWriter
from scale_ray.models.anomaly import training
from scale_ray.models.anomaly.features import build_features
from scale_ray.models.anomaly.serving import MODEL_NAME, load_anomaly_model
from scale_ray.models.registry import ModelRegistry
from scale_ray.settings import Settings

END = date(2025, 6, 30)


def _tenants(users: int, *, seed: int = 5, first_user: int = 1, years: float = 1.0) -> pa.Table:
    from scale_ray.demo.generator import generate_tenants
    from scale_ray.ledger.rows import transactions_table

    tenants, _, _ = generate_tenants(users, years=years, seed=seed, end=END, first_user=first_user)
    return pa.concat_tables(
        transactions_table(t.user_id, t.transactions, num_buckets=8, source="demo") for t in tenants
    )


def _debits(table: pa.Table) -> int:
    return sum(1 for a in table.column("amount_minor").to_pylist() if a < 0)


def test_read_ledger_pins_a_version_and_reads_only_the_buckets(settings: Settings) -> None:
    # Prepare: two commits, one user each (in different buckets).
    writer = OfflineLedgerWriter(settings)
    first, second = _tenants(1, years=1.0), _tenants(1, years=1.0, first_user=2)
    a, b = first.column("user_id")[0].as_py(), second.column("user_id")[0].as_py()
    assert user_bucket(a, 8) != user_bucket(b, 8)
    v1 = writer.write(first).version
    writer.write(second)
    # Execute / Assert
    pinned = training.read_ledger(settings, version=v1)
    assert pinned.column_names == list(training.LEDGER_COLUMNS)
    assert set(pinned.column("user_id").to_pylist()) == {a}
    assert pinned.num_rows == first.num_rows
    latest = training.read_ledger(settings)
    assert latest.num_rows == first.num_rows + second.num_rows
    only_b = training.read_ledger(settings, buckets=[user_bucket(b, 8)])
    assert set(only_b.column("user_id").to_pylist()) == {b}
    empty = training.read_ledger(settings, buckets=[])
    assert empty.num_rows == 0 and empty.column_names == list(training.LEDGER_COLUMNS)
    rows = training.bucket_rows(settings, training.table_version(settings))
    assert rows == {user_bucket(a, 8): first.num_rows, user_bucket(b, 8): second.num_rows}


def test_plan_shards_balances_rows_and_drops_empty_shards() -> None:
    rows = {0: 100, 1: 90, 2: 50, 3: 40, 4: 10, 5: 0}
    plan = training.plan_shards(rows, 2)
    assert sorted(b for g in plan for b in g) == [0, 1, 2, 3, 4]
    loads = [sum(rows[b] for b in g) for g in plan]
    assert max(loads) - min(loads) <= 10
    assert training.plan_shards({3: 5}, 4) == [[3]]
    assert training.plan_shards({}, 4) == []
    with pytest.raises(ValueError):
        training.plan_shards(rows, 0)


def test_trees_and_samples_split_exactly() -> None:
    assert training.split_trees(200, 3) == [67, 67, 66]
    assert sum(training.split_trees(10, 4)) == 10
    with pytest.raises(ValueError):
        training.split_trees(2, 3)
    sizes = training.sample_sizes([1000, 3000, 0], total=400)
    assert sizes == [100, 300, 0]
    assert training.sample_sizes([5, 10], total=1000) == [5, 10]


def test_shard_steps_rebuild_the_single_process_model(settings: Settings) -> None:
    """fit_shard + score_shard on two halves, merged, give thresholds from every row."""
    from scale_ray.models.anomaly.model import merge_forests

    OfflineLedgerWriter(settings).write(_tenants(3, years=1.0))
    version = training.table_version(settings)
    plan = training.plan_shards(training.bucket_rows(settings, version), 2)
    parts = [training.shard_features(settings, version, b) for b in plan]
    assert sum(s["rows"] for _, s in parts) == _debits(training.read_ledger(settings))
    forests = [
        training.fit_shard(f, n_estimators=10, max_samples=64, random_state=i)
        for i, (f, _) in enumerate(parts)
    ]
    merged = merge_forests(forests)
    assert len(merged.estimators_) == 10 * len(plan)
    scored = [training.score_shard(merged, f, sample_rows=50, seed=1) for f, _ in parts]
    assert all(s["sample"].shape == (50, parts[0][0].X.shape[1]) for s in scored)
    n_scores = sum(len(v) for s in scored for v in s["scores"].values())
    assert n_scores == sum(len(f) for f, _ in parts)
    with pytest.raises(ValueError, match="max_samples"):
        training.fit_shard(parts[0][0], n_estimators=2, max_samples=10**7, random_state=0)


def test_train_on_ledger_records_the_pinned_version(settings: Settings) -> None:
    writer = OfflineLedgerWriter(settings)
    with pytest.raises(ValueError, match="nothing to train on"):
        training.train_on_ledger(settings)
    table = _tenants(2, years=1.0)
    pinned = writer.write(table).version
    writer.write(_tenants(1, years=1.0, first_user=3))  # after the pin: not trained on
    version = training.train_on_ledger(settings, version=pinned, n_estimators=20, promote=True)
    registry = ModelRegistry.from_settings(settings)
    assert registry.live(MODEL_NAME) == version
    meta = registry.metadata(MODEL_NAME, version)
    assert meta["data_source"] == "ledger" and meta["table_version"] == pinned
    assert meta["rows"] == _debits(table) and meta["users"] == 2
    assert meta["ledger_rows"] == table.num_rows
    assert meta["date_from"] < meta["date_to"]
    assert meta["n_estimators"] == 20 and meta["flag_rate"] == 0.005
    assert set(meta["thresholds"]) >= {"*"}
    assert 0.0 < meta["flagged_fraction"]["*"] < 0.02
    _, model = load_anomaly_model(registry, version)
    assert model.thresholds == meta["thresholds"]


def test_first_model_on_an_empty_ledger_is_synthetic_and_made_once(settings: Settings) -> None:
    registry = ModelRegistry.from_settings(settings)
    results: list[str] = []

    def ensure() -> None:
        results.append(training.ensure_anomaly_model(settings, synthetic_users=3))

    threads = [threading.Thread(target=ensure) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1 and len(results) == 3
    assert registry.versions(MODEL_NAME) == results[:1]
    meta = registry.metadata(MODEL_NAME, results[0])
    assert meta["data_source"] == "synthetic" and "synthetic" in meta["note"]
    assert meta["ledger_debits"] == 0 and meta["synthetic"]["users"] == 3
    assert meta["users"] == 3 and meta["rows"] > 2_000
    assert meta["date_from"] < meta["date_to"] and meta["trained_by"] == "bootstrap"
    # 3 users have 60 "new" rows: too few for a threshold of their own.
    assert set(meta["thresholds"]) == {"*", "growing", "established"}
    assert meta["flagged_fraction"]["*"] == pytest.approx(0.005, abs=0.002)
    # A later call returns it without fitting again.
    assert training.ensure_anomaly_model(settings) == results[0]
    assert registry.versions(MODEL_NAME) == results[:1]


def test_first_model_uses_the_ledger_once_it_has_enough_debits(settings: Settings) -> None:
    table = _tenants(2)
    assert _debits(table) >= training.MIN_LEDGER_DEBITS
    pinned = OfflineLedgerWriter(settings).write(table).version
    version = training.ensure_anomaly_model(settings)
    meta = ModelRegistry.from_settings(settings).metadata(MODEL_NAME, version)
    assert meta["data_source"] == "ledger" and meta["table_version"] == pinned
    assert meta["rows"] == _debits(table) and meta["users"] == 2 and meta["buckets"] == "all"


def test_first_model_reads_whole_buckets_up_to_the_row_cap(settings: Settings) -> None:
    table = _tenants(4, years=1.0)
    OfflineLedgerWriter(settings).write(table)
    rows = training.bucket_rows(settings, training.table_version(settings))
    first = next(iter(rows))
    version = training.ensure_anomaly_model(settings, min_ledger_debits=10, max_rows=1)
    meta = ModelRegistry.from_settings(settings).metadata(MODEL_NAME, version)
    assert meta["buckets"] == [first] and meta["ledger_rows"] == rows[first]


def test_flagged_fraction_per_segment() -> None:
    scores = np.array([0.1, 0.9, 0.2, 0.8, 0.3])
    segments = np.array(["new", "new", "established", "established", "growing"], dtype=object)
    out = training.flagged_fraction(scores, segments, {"*": 0.5, "new": 0.95})
    assert out == {"*": 0.2, "new": 0.0, "growing": 0.0, "established": 0.5}
    assert len(build_features(training.synthetic_ledger(1, years=1.0))) > 10
