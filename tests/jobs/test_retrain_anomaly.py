"""jobs/retrain_anomaly.py on the session's local Ray: sharded fit, merge, thresholds, publish.

A small real ledger (four generated users, one year) under a temporary data root; the tasks
ask for a quarter CPU each because the session's Serve app may hold most of the 2 test CPUs.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from jobs import retrain_anomaly
from scale_ray.ingest.records import ParsedTxn
from scale_ray.ledger.offline import OfflineLedgerWriter
from scale_ray.ledger.rows import transactions_table
from scale_ray.models.anomaly.features import build_features
from scale_ray.models.anomaly.feedback import feedback_metrics
from scale_ray.models.anomaly.flags import FlagStore, flag_id
from scale_ray.models.anomaly.model import DEFAULT_MAX_SAMPLES
from scale_ray.models.anomaly.serving import MODEL_NAME, load_anomaly_model
from scale_ray.models.anomaly.training import read_ledger
from scale_ray.models.registry import ModelRegistry
from scale_ray.settings import Settings

TASK_CPUS = ["--cpus-per-task", "0.25"]


@pytest.fixture
def job_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    settings = Settings(data_root=str(tmp_path / "var"), num_buckets=8, writer_shards=2)
    for key, value in settings.as_env().items():
        monkeypatch.setenv(key, value)
    return settings


def _ledger(settings: Settings, users: int = 4) -> int:
    from scale_ray.demo.generator import generate_tenants

    tenants, _, _ = generate_tenants(users, years=1.0, seed=11, end=date(2025, 6, 30))
    table = pa.concat_tables(
        transactions_table(t.user_id, t.transactions, num_buckets=8, source="demo") for t in tenants
    )
    return OfflineLedgerWriter(settings).write(table).version


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:
    code = retrain_anomaly.main(argv)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert len(lines) == 1
    return code, json.loads(lines[0])


@pytest.mark.integration
def test_sharded_retrain_publishes_a_merged_forest(
    ray_cluster: None, job_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare
    pinned = _ledger(job_settings)
    registry = ModelRegistry.from_settings(job_settings)
    # Execute
    code, report = _run(["--shards", "2", "--n-estimators", "30", *TASK_CPUS], capsys)
    # Assert: the summary
    assert code == 0
    version = report["version"]
    assert report["promoted"] is False and report["table_version"] == pinned
    assert report["shards"] == 2 and report["fitting_shards"] == 2
    assert report["n_estimators"] == 30 and report["max_samples"] == DEFAULT_MAX_SAMPLES
    assert report["users"] == 4 and report["flag_rate"] == 0.005
    debits = len(build_features(read_ledger(job_settings, version=pinned)))
    assert report["rows"] == debits
    # 4 users have 80 "new" rows: that segment uses the overall threshold.
    assert set(report["thresholds"]) == {"*", "growing", "established"}
    assert set(report["flagged_fraction"]) == {"*", "new", "growing", "established"}
    assert report["flagged_fraction"]["*"] == pytest.approx(0.005, abs=0.002)
    assert set(report["timings"]) == {"plan", "features", "fit", "score", "feedback", "publish"}
    # ... the registry version and its metadata
    assert registry.live(MODEL_NAME) == version  # the only version, though not promoted
    assert not (registry.root / MODEL_NAME / "LIVE").exists()
    meta = registry.metadata(MODEL_NAME, version)
    assert meta["table_version"] == pinned and meta["trained_by"] == "ray"
    assert meta["shards"] == 2 and sum(meta["shard_rows"]) == debits
    assert sorted(b for g in meta["shard_buckets"] for b in g) == sorted(
        set(read_ledger(job_settings).column("user_bucket").to_pylist())
    )
    assert meta["trees_per_shard"] == [15, 15] and meta["n_estimators"] == 30
    assert meta["thresholds"] == report["thresholds"] and meta["rows"] == debits
    assert meta["date_from"] < meta["date_to"] and meta["users"] == 4
    # ... and the model: one forest of every shard's trees, flagging about the flag rate.
    resolved, model = load_anomaly_model(registry, version)
    assert resolved == version and len(model.forest.estimators_) == 30
    features = build_features(read_ledger(job_settings, version=pinned))
    share = sum(r.flagged for r in model.results(features, explain="none")) / len(features)
    assert share == pytest.approx(report["flagged_fraction"]["*"], abs=1e-6)

    # A second run with --promote makes its version live; new commits after the pin are not read.
    _ledger(job_settings, users=1)
    argv = ["--shards", "3", "--n-estimators", "31", "--promote", "--table-version", str(pinned)]
    code, again = _run([*argv, *TASK_CPUS], capsys)
    assert code == 0 and again["promoted"] is True
    assert registry.live(MODEL_NAME) == again["version"] != version
    assert again["rows"] == debits and again["n_estimators"] == 31
    assert registry.metadata(MODEL_NAME, again["version"])["table_version"] == pinned


@pytest.mark.integration
def test_feedback_in_the_metadata_and_tuned_thresholds(
    ray_cluster: None, job_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare
    pinned = _ledger(job_settings)
    registry = ModelRegistry.from_settings(job_settings)
    argv = ["--shards", "2", "--n-estimators", "30", "--tune-thresholds", *TASK_CPUS]
    # Execute: no verdicts yet.
    code, first = _run(argv, capsys)
    # Assert: zeros and nulls, thresholds untouched.
    assert code == 0
    meta = registry.metadata(MODEL_NAME, first["version"])
    assert meta["feedback"] == first["feedback"]
    assert first["feedback"]["resolved"] == 0 and first["feedback"]["recall"] is None
    assert first["feedback"]["table_version"] == pinned
    tuning = meta["threshold_tuning"]
    assert tuning == first["threshold_tuning"] and tuning["changed"] is False
    assert tuning["before"] == tuning["after"] == first["thresholds"] == meta["thresholds"]
    assert {s["action"] for s in tuning["segments"].values()} == {"kept"}

    # Users resolve flags: two confirmed frauds just below the established threshold, ten
    # legitimate verdicts on ordinary rows.
    _, model = load_anomaly_model(registry, first["version"])
    features = build_features(read_ledger(job_settings, version=pinned))
    established = features.take(features.segments == "established")
    scores = model.score(established.X)
    order = np.argsort(-scores, kind="stable")
    base = int((scores >= model.thresholds["established"]).sum())
    frauds, legit = order[[base + 1, base + 3]], order[1000:1010]
    store = FlagStore(job_settings)
    chosen = model.results(established.take(np.r_[frauds, legit]), explain="none")
    store.record([dataclasses.replace(r, flagged=True) for r in chosen], first["version"])
    for i, verdict in [(i, "fraud") for i in frauds] + [(i, "legitimate") for i in legit]:
        row = established.rows.iloc[i]
        store.resolve(row["user_id"], flag_id(row["txn_id"]), verdict)

    # Execute: the same retrain (same forest), tuning segments with at least 12 labels.
    code, second = _run([*argv, "--min-labels", "12"], capsys)

    # Assert: the established threshold moved down to the lowest confirmed fraud.
    assert code == 0
    meta = registry.metadata(MODEL_NAME, second["version"])
    tuning = meta["threshold_tuning"]
    assert tuning["changed"] is True and tuning["before"] == first["thresholds"]
    assert tuning["after"] == second["thresholds"] == meta["thresholds"]
    assert tuning["after"]["established"] == float(scores[frauds].min())
    assert tuning["segments"]["established"]["action"] == "lowered"
    assert tuning["settings"]["min_labels"] == 12
    assert {k: v for k, v in tuning["after"].items() if k != "established"} == {
        k: v for k, v in tuning["before"].items() if k != "established"
    }
    assert tuning["feedback_before"]["recall"] == 0.0
    assert tuning["flagged_fraction_before"] == first["flagged_fraction"]
    assert second["flagged_fraction"]["established"] > first["flagged_fraction"]["established"]
    # ... the feedback recorded is that of the published (tuned) model.
    fb = meta["feedback"]
    assert (fb["resolved"], fb["fraud"], fb["legitimate"], fb["unmatched"]) == (12, 2, 10, 0)
    assert fb["live_precision"] == round(2 / 12, 6) and fb["recall"] == 1.0
    _, published = load_anomaly_model(registry, second["version"])
    assert published.thresholds == tuning["after"]
    assert fb == json.loads(json.dumps(feedback_metrics(job_settings, published, version=pinned)))
    # Without --tune-thresholds the feedback is still reported; nothing is tuned.
    code, third = _run(argv[:4] + TASK_CPUS, capsys)
    assert code == 0 and third["threshold_tuning"] is None
    assert third["thresholds"] == first["thresholds"] and third["feedback"]["recall"] == 0.0
    assert "threshold_tuning" not in registry.metadata(MODEL_NAME, third["version"])


@pytest.mark.integration
def test_empty_ledger_exits_with_a_clear_error(
    ray_cluster: None, job_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    code, report = _run(TASK_CPUS, capsys)
    assert code == retrain_anomaly.EXIT_EMPTY
    assert report["error"]["code"] == "empty_ledger"
    assert "holds no rows" in report["error"]["message"]
    # Credits only: read and featured, but no debits to fit on.
    credit = ParsedTxn(
        row_number=1,
        booked_at=datetime(2025, 1, 2, 9, tzinfo=UTC),
        amount_minor=250_000,
        currency="GBP",
        narration="ACME LTD SALARY",
        txn_id="salary-1",
    )
    table = transactions_table("credit-only", [credit], num_buckets=8, source="test")
    OfflineLedgerWriter(job_settings).write(table)
    code, report = _run(TASK_CPUS, capsys)
    assert code == retrain_anomaly.EXIT_EMPTY
    assert "0 debit(s)" in report["error"]["message"]
    assert ModelRegistry.from_settings(job_settings).versions(MODEL_NAME) == []


def test_arguments_are_checked() -> None:
    for argv in (
        ["--shards", "0"],
        ["--shards", "4", "--n-estimators", "3"],
        ["--flag-rate", "1"],
        ["--min-labels", "0"],
    ):
        with pytest.raises(SystemExit):
            retrain_anomaly.main(argv)
