"""jobs/retrain_anomaly.py on the session's local Ray: sharded fit, merge, thresholds, publish.

A small real ledger (four generated users, one year) under a temporary data root; the tasks
ask for a quarter CPU each because the session's Serve app may hold most of the 2 test CPUs.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from jobs import retrain_anomaly
from scale_ray.ingest.records import ParsedTxn
from scale_ray.ledger.offline import OfflineLedgerWriter
from scale_ray.ledger.rows import transactions_table
from scale_ray.models.anomaly.features import build_features
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
    assert set(report["timings"]) == {"plan", "features", "fit", "score", "publish"}
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
    for argv in (["--shards", "0"], ["--shards", "4", "--n-estimators", "3"], ["--flag-rate", "1"]):
        with pytest.raises(SystemExit):
            retrain_anomaly.main(argv)
