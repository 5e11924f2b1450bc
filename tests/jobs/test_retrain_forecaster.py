"""jobs/retrain_forecaster.py: in-process and through Ray Data + Ray Train, a loadable version.

A tiny real ledger (three generated users, one year) under a temporary data root;
a one- or two-epoch TFT with a small hidden size keeps each run to seconds. Ray tasks and
workers ask for a quarter CPU because the session's Serve app may hold most of the 2 CPUs.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from jobs import retrain_forecaster
from scale_ray.ledger.offline import OfflineLedgerWriter
from scale_ray.ledger.rows import transactions_table
from scale_ray.models.anomaly.training import read_ledger
from scale_ray.models.forecast.series import top_categories
from scale_ray.models.forecast.tft import MODEL_NAME, load_forecaster
from scale_ray.models.registry import ModelRegistry
from scale_ray.settings import Settings

SMALL = [
    "--max-epochs", "1", "--limit-train-batches", "2", "--batch-size", "32",
    "--hidden-size", "8", "--horizon", "7", "--encoder-length", "28", "--country", "GB",
]  # fmt: skip
QUARTER = ["--cpus-per-worker", "0.25", "--cpus-per-task", "0.25"]


@pytest.fixture
def job_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    settings = Settings(data_root=str(tmp_path / "var"), num_buckets=8, writer_shards=2)
    for key, value in settings.as_env().items():
        monkeypatch.setenv(key, value)
    return settings


def _ledger(settings: Settings, users: int = 3, first_user: int = 1) -> int:
    from scale_ray.demo.generator import generate_tenants

    tenants, _, _ = generate_tenants(
        users, years=1.0, seed=3, end=date(2025, 6, 30), first_user=first_user
    )
    table = pa.concat_tables(
        transactions_table(t.user_id, t.transactions, num_buckets=8, source="demo") for t in tenants
    )
    return OfflineLedgerWriter(settings).write(table).version


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:
    code = retrain_forecaster.main(argv)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert len(lines) == 1
    return code, json.loads(lines[0])


def _forecasts_from_registry(settings: Settings, version: str) -> None:
    """The published version loads and forecasts every user of the pinned ledger."""
    registry = ModelRegistry.from_settings(settings)
    resolved, model = load_forecaster(registry, version)
    assert resolved == version
    meta = registry.metadata(MODEL_NAME, version)
    table = read_ledger(settings, version=meta["table_version"])
    frame = retrain_forecaster.build_frame_local(
        table, categories=meta["categories"], country="GB", horizon=7
    )
    forecasts = model.predict(frame)
    assert [f.user_id for f in forecasts] == sorted(frame["user_id"].unique())
    for f in forecasts:
        q = f.quantiles["spend"]
        assert q.shape == (7, 3) and (np.diff(q, axis=1) >= 0).all() and (q >= 0).all()


def test_local_run_publishes_and_promotes(
    job_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    pinned = _ledger(job_settings)
    _ledger(job_settings, users=1, first_user=9)  # committed after the pin: not read
    code, report = _run(["--local", *SMALL, "--promote", "--table-version", str(pinned)], capsys)
    assert code == 0
    version = report["version"]
    assert report["promoted"] is True and report["table_version"] == pinned
    assert report["users"] == 3 and report["trained_by"] == "local"
    assert set(report["timings"]) == {"read", "series", "train", "validate", "publish"}
    registry = ModelRegistry.from_settings(job_settings)
    assert registry.live(MODEL_NAME) == version
    meta = registry.metadata(MODEL_NAME, version)
    assert meta["table_version"] == pinned and meta["users"] == 3
    assert meta["config"]["horizon"] == 7 and meta["config"]["max_epochs"] == 1
    assert meta["categories"] == top_categories(
        read_ledger(job_settings, version=pinned).to_pandas()
    )
    assert meta["categories"] == meta["config"]["categories"]
    validation = meta["validation"]
    assert validation["users"] == 3 and validation["spend"]["days"] == 3 * 7
    assert set(validation["spend"]["relative"]) == {"p10", "p50", "p90"}
    assert report["validation"]["spend"]["relative"] == validation["spend"]["relative"]
    assert meta["date_from"] < meta["date_to"] <= "2025-06-30"
    _forecasts_from_registry(job_settings, version)


def test_an_empty_ledger_exits_with_status_two(
    job_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    code, report = _run(["--local", *SMALL], capsys)
    assert code == retrain_forecaster.EXIT_EMPTY
    assert report["error"]["code"] == "empty_ledger"
    assert ModelRegistry.from_settings(job_settings).versions(MODEL_NAME) == []


@pytest.mark.integration
def test_ray_data_builds_the_same_frame(ray_cluster: None, job_settings: Settings) -> None:
    pinned = _ledger(job_settings)
    table = read_ledger(job_settings, version=pinned)
    categories = top_categories(table.to_pandas())
    local = retrain_forecaster.build_frame_local(
        table, categories=categories, country="GB", horizon=7
    )
    on_ray = retrain_forecaster.build_frame_ray(
        table, categories=categories, country="GB", horizon=7, cpus_per_task=0.25
    )
    assert len(local) > 3 * 300
    assert list(on_ray.columns) == list(local.columns)
    for column in local.columns:
        np.testing.assert_array_equal(on_ray[column].to_numpy(), local[column].to_numpy())


@pytest.mark.integration
def test_ray_train_run_publishes_the_best_checkpoint(
    ray_cluster: None, job_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    pinned = _ledger(job_settings)
    argv = [*SMALL, "--max-epochs", "2", "--num-workers", "1", *QUARTER]
    code, report = _run(argv, capsys)
    assert code == 0
    version = report["version"]
    assert report["trained_by"] == "ray" and report["num_workers"] == 1
    assert report["table_version"] == pinned and report["best_epoch"] in (0, 1)
    registry = ModelRegistry.from_settings(job_settings)
    meta = registry.metadata(MODEL_NAME, version)
    assert meta["trained_by"] == "ray" and meta["config"]["max_epochs"] == 2
    assert np.isfinite(meta["val_loss"])
    # The published model is a checkpoint Ray Train kept under the data root.
    runs = Path(job_settings.path("train_runs"))
    assert Path(meta["checkpoint"]).is_relative_to(runs)
    assert (Path(meta["checkpoint"]) / "checkpoint.ckpt").is_file()
    assert meta["validation"]["income"]["days"] == 3 * 7
    _forecasts_from_registry(job_settings, version)
