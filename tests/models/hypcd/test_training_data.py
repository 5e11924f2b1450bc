"""Training rows for the shipped categorizer, users' labels from a real ledger, and publishing.

Models here are tiny (two epochs, a few dozen rows) so the file runs in seconds; the real
schedule is measured by ``benchmarks/categorize.py``.
"""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from scale_ray.analytics.state import UserStateStore
from scale_ray.demo.merchants import BUCKETS, MerchantRecord
from scale_ray.ingest.records import ParsedTxn
from scale_ray.ledger.offline import OfflineLedgerWriter
from scale_ray.ledger.rows import transactions_table
from scale_ray.models.hypcd.categorizer import HypCDCategorizer
from scale_ray.models.hypcd.train import TrainConfig
from scale_ray.models.hypcd.training_data import (
    BUILTIN_ROWS,
    MODEL_NAME,
    bucket_path,
    collect_training_rows,
    default_training_rows,
    ensure_categorizer,
    fallback_rows,
    merchant_path,
    train_and_publish,
    user_label_rows,
)
from scale_ray.models.registry import ModelRegistry
from scale_ray.settings import Settings, get_settings
from scale_ray.taxonomy import all_paths

SHARED = get_settings().shared_data_path()
TINY = TrainConfig(epochs=2, batch_size=32, hidden_dim=64, out_dim=16, threads=1)
_LABELLED = {
    "Food & drink/Groceries": ("tesco stores 5504", "sainsburys s/mkts", "aldi 123", "lidl uk"),
    "Transport/Fuel": ("shell kings 587", "esso aston way", "bp kensington f/stn", "texaco pfs"),
    "Bills/Subscriptions": ("netflix.com", "spotify p", "amazon prime", "disney plus"),
    "Food & drink/Eating out": ("mcdonalds", "kfc", "nandos bullring", "pizza hut", "subway"),
}
ROWS = (
    [text for texts in _LABELLED.values() for text in texts],
    [path for path, texts in _LABELLED.items() for _ in texts],
)


def _no_shared(tmp_path: Path, **overrides: object) -> Settings:
    return Settings(
        data_root=str(tmp_path / "var"), shared_data=str(tmp_path / "no-shared"), **overrides
    )


def test_every_path_is_in_the_shipped_tree() -> None:
    tree = set(all_paths())
    assert bucket_path("other") is None
    for bucket in BUCKETS:
        if bucket != "other":
            assert bucket_path(bucket) in tree, bucket
    assert bucket_path("hotel") == "Travel/Lodging"  # a demo bucket HINT_PATHS does not know
    pairs = fallback_rows()
    assert {p for _, p in pairs} <= tree
    assert set(BUILTIN_ROWS) <= set(pairs) and len(pairs) == len(set(pairs)) >= 60
    # One label per merchant string: the built-in list never contradicts itself.
    labels: dict[str, set[str]] = {}
    for text, path in pairs:
        labels.setdefault(text.lower(), set()).add(path)
    assert all(len(v) == 1 for v in labels.values())


def test_merchant_paths_refine_coarse_buckets() -> None:
    def record(name: str, category: str) -> MerchantRecord:
        return MerchantRecord(name=name, category=category, category_code="", count=1)

    assert merchant_path(record("tesco stores 5504", "Purchases Food")) == "Food & drink/Groceries"
    assert merchant_path(record("a2b radio cars", "Travel Taxis")) == "Transport/Taxi"
    assert merchant_path(record("ncp limited", "Transport Misc")) == "Transport/Parking"
    assert merchant_path(record("trainline", "Travel Bus/Rail")) == "Transport/Public transport"
    assert merchant_path(record("costa coffee 123", "Hospitality")) == "Food & drink/Coffee"
    assert merchant_path(record("premier inn 44", "Hospitality")) == "Travel/Lodging"
    assert merchant_path(record("british gas", "Gas")) == "Bills/Utilities/Energy"
    assert merchant_path(record("severn trent", "Water Services")) == "Bills/Utilities/Water"
    assert merchant_path(record("acme roofing", "Building Repairs")) is None  # not spending


def test_without_shared_data_the_builtin_rows_remain(tmp_path: Path) -> None:
    rows = collect_training_rows(_no_shared(tmp_path))
    assert rows.sources == {
        "taxonomy_descriptions": 0,
        "birmingham_merchants": 0,
        "builtin_merchants": len(fallback_rows()),
        "user_labels": 0,
    }
    assert list(zip(*default_training_rows(_no_shared(tmp_path)), strict=True)) == fallback_rows()
    assert len(set(rows.paths)) >= 35


def test_default_rows_from_shared_data(tmp_path: Path) -> None:
    if not (SHARED / "birmingham_pcard_2016_2017").is_dir():
        pytest.skip(f"shared data not found at {SHARED}")
    settings = Settings(data_root=str(tmp_path / "var"), shared_data=str(SHARED))
    rows = collect_training_rows(settings, max_per_path=50)
    assert rows.sources["taxonomy_descriptions"] > 800
    assert rows.sources["birmingham_merchants"] > 500
    assert rows.sources["user_labels"] == 0
    assert len(rows) == sum(rows.sources.values())
    assert set(rows.paths) <= set(all_paths())
    start = rows.sources["taxonomy_descriptions"]
    real = Counter(rows.paths[start : start + rows.sources["birmingham_merchants"]])
    assert max(real.values()) == 50 and len(real) >= 12


def _txn(i: int, narration: str, merchant: str | None = None) -> ParsedTxn:
    return ParsedTxn(
        row_number=i + 1,
        booked_at=datetime(2024, 3, 1 + i, 12, tzinfo=UTC),
        amount_minor=-(500 + i),
        currency="GBP",
        narration=narration,
        merchant=merchant,
        txn_id=f"t{i}",
    )


def test_user_labels_from_the_ledger(tmp_path: Path) -> None:
    settings = _no_shared(tmp_path, num_buckets=8)
    assert user_label_rows(settings) == []  # no ledger yet
    writer = OfflineLedgerWriter(settings)
    rows = [
        _txn(0, "CARD PAYMENT TO CORNER SHOP 12", "Corner Shop"),
        _txn(1, "PAYPAL *MYGYM"),
        _txn(2, "UNLABELLED THING"),
    ]
    writer.write(transactions_table("alice", rows, num_buckets=8, source="test"))
    writer.write(transactions_table("bob", rows[:1], num_buckets=8, source="test"))
    assert user_label_rows(settings) == []  # transactions, but no labels
    store = UserStateStore(settings)
    store.put("alice", "correction", [("t0", {"category": "food & DRINK/groceries"})])
    store.put("alice", "correction", [("t1", {"category": "Leisure/Sport & fitness"})])
    store.put("bob", "correction", [("t0", {"category": "Uncategorized"})])  # not a label
    store.put("bob", "correction", [("missing", {"category": "Cash"})])  # no such transaction
    rule = {"pattern": "netflix", "match": "contains", "category": "Bills/Subscriptions"}
    store.put("bob", "rule", [("r1", rule)])
    store.put("alice", "rule", [("r2", {**rule, "pattern": "old"})])
    store.put("alice", "rule", [("r2", {})], deleted=True)  # deleted: gone
    assert user_label_rows(settings) == [
        ("alice", "Corner Shop", "Food & drink/Groceries"),
        ("alice", "PAYPAL *MYGYM", "Leisure/Sport & fitness"),
        ("bob", "netflix", "Bills/Subscriptions"),
    ]
    collected = collect_training_rows(settings)
    assert collected.sources["user_labels"] == 3
    assert collected.texts[-3:] == ["Corner Shop", "PAYPAL *MYGYM", "netflix"]


def test_train_and_publish(tmp_path: Path) -> None:
    settings = _no_shared(tmp_path)
    registry = ModelRegistry.from_settings(settings)
    version = train_and_publish(settings, TINY, ROWS, metadata={"data_source": "test"})
    assert registry.versions(MODEL_NAME) == [version]
    meta = registry.metadata(MODEL_NAME, version)
    assert meta["rows"] == 17 and meta["classes"] == 4 and meta["merchants"] == 17
    assert meta["data_source"] == "test" and meta["config"]["epochs"] == 2
    assert set(meta["hierarchy"]) == {
        "leaf_prototype_radius",
        "group_prototype_radius",
        "within_group_distance",
        "between_group_distance",
    }
    assert meta["train_seconds"] > 0
    model = HypCDCategorizer.load(registry.path(MODEL_NAME, version))
    assert model.version == version  # the model's own files record the registry version
    (pred,) = model.predict(["TESCO STORES 9999"])
    assert pred.candidate in set(ROWS[1])


def test_ensure_categorizer_trains_once(tmp_path: Path) -> None:
    settings = _no_shared(tmp_path)
    registry = ModelRegistry.from_settings(settings)
    results: list[str] = []
    errors: list[BaseException] = []

    def call() -> None:
        try:
            results.append(ensure_categorizer(settings, config=TINY, rows=ROWS))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(registry.versions(MODEL_NAME)) == 1
    assert results == [registry.versions(MODEL_NAME)[0]] * 3
    # With a version present nothing is trained; a promoted version is what comes back.
    newer = train_and_publish(settings, TINY, ROWS)
    assert ensure_categorizer(settings, registry) == newer
    registry.promote(MODEL_NAME, results[0])
    assert ensure_categorizer(settings) == results[0]
    assert len(registry.versions(MODEL_NAME)) == 2
