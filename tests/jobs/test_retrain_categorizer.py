"""jobs/retrain_categorizer.py: in-process and through Ray Train, a loadable registry version.

Tiny runs (one or two epochs on a sample of the default rows) keep this quick; the shared data
is not needed (the built-in rows remain without it), except for the Birmingham-format run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jobs import retrain_categorizer
from scale_ray.models.hypcd.categorizer import HypCDCategorizer
from scale_ray.models.hypcd.training_data import MODEL_NAME
from scale_ray.models.registry import ModelRegistry
from scale_ray.settings import Settings, get_settings

BIRMINGHAM = get_settings().shared_data_path() / "birmingham_pcard_2016_2017"


@pytest.fixture
def job_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    settings = Settings(data_root=str(tmp_path / "var"), shared_data=str(tmp_path / "no-shared"))
    for key, value in settings.as_env().items():
        monkeypatch.setenv(key, value)
    return settings


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    assert retrain_categorizer.main(argv) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert len(lines) == 1
    return json.loads(lines[0])


def _loads_and_predicts(settings: Settings, version: str) -> HypCDCategorizer:
    registry = ModelRegistry.from_settings(settings)
    assert version in registry.versions(MODEL_NAME)
    model = HypCDCategorizer.load(registry.path(MODEL_NAME, version))
    preds = model.predict(["TESCO STORES 2335", "NETFLIX.COM", ""])
    assert len(preds) == 3 and preds[0].candidate in model.classes
    assert preds[2].path == "Uncategorized"
    return model


def test_local_run_publishes_and_promotes(
    job_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    report = _run(["--local", "--epochs", "2", "--max-rows", "80", "--promote"], capsys)
    version = str(report["version"])
    assert report["promoted"] is True
    metrics = report["metrics"]
    assert isinstance(metrics, dict)
    assert metrics["version"] == version and metrics["rows"] == 80
    assert metrics["classes"] > 10 and "hierarchy_leaf_prototype_radius" in metrics
    registry = ModelRegistry.from_settings(job_settings)
    assert registry.live(MODEL_NAME) == version
    meta = registry.metadata(MODEL_NAME, version)
    assert meta["data_source"] == "default" and meta["trained_by"] == "local"
    assert meta["sources"]["builtin_merchants"] > 60 and meta["sampled_rows"] == 80
    assert meta["config"]["epochs"] == 2
    _loads_and_predicts(job_settings, version)


def test_birmingham_format_records_dates(
    job_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    if not BIRMINGHAM.is_dir():
        pytest.skip(f"shared data not found at {BIRMINGHAM}")
    month = BIRMINGHAM / "purchase-card-transactions-201612.csv"
    argv = ["--local", "--epochs", "1", "--max-rows", "150", "--format", "birmingham"]
    report = _run([*argv, "--train", str(month)], capsys)
    version = str(report["version"])
    registry = ModelRegistry.from_settings(job_settings)
    assert registry.live(MODEL_NAME) == version  # the only version, though not promoted
    assert not (registry.root / MODEL_NAME / "LIVE").exists()
    meta = registry.metadata(MODEL_NAME, version)
    assert meta["data_source"] == "birmingham" and meta["files"] == [str(month)]
    assert meta["date_from"] <= meta["date_to"]
    assert meta["date_from"].startswith("2016-") or meta["date_from"].startswith("2017-")
    model = _loads_and_predicts(job_settings, version)
    assert all("/" in c and c.split("/")[1].startswith(c.split("/")[0]) for c in model.classes)
    assert set(model.classes) <= set(model.names)  # code → the council's name for it
    assert any(name != path for path, name in model.names.items())


def test_needs_train_files_for_birmingham(job_settings: Settings) -> None:
    with pytest.raises(SystemExit):
        retrain_categorizer.main(["--local", "--format", "birmingham"])


@pytest.mark.integration
def test_ray_train_run(
    ray_cluster: None, job_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    # The session's Serve app holds most of the 2 test CPUs: ask for a quarter.
    report = _run(["--epochs", "1", "--max-rows", "60", "--cpus-per-worker", "0.25"], capsys)
    version = str(report["version"])
    metrics = report["metrics"]
    assert isinstance(metrics, dict) and metrics["rows"] == 60
    meta = ModelRegistry.from_settings(job_settings).metadata(MODEL_NAME, version)
    assert meta["trained_by"] == "ray" and meta["config"]["epochs"] == 1
    _loads_and_predicts(job_settings, version)
    # Ray Train kept its run (with the reported pointer) under the data root.
    runs = Path(job_settings.path("train_runs"))
    assert any(runs.rglob("published.json"))
