"""The first forecaster of a fresh install, on a real Delta ledger in a temporary folder."""

from __future__ import annotations

import dataclasses
import threading
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from scale_ray.ledger.offline import OfflineLedgerWriter
from scale_ray.models.anomaly.training import table_version
from scale_ray.models.forecast.service import LEDGER_COLUMNS, MODEL_NAME
from scale_ray.models.forecast.training import (
    ensure_forecaster,
    ledger_training_rows,
    training_frame,
)
from scale_ray.models.registry import ModelRegistry
from scale_ray.settings import Settings

from .tiny import tenant_rows


@pytest.fixture
def fast(tmp_path: Path) -> Settings:
    return Settings(data_root=str(tmp_path / "var"), num_buckets=8, forecaster_bootstrap="fast")


def test_first_model_is_fitted_once_on_synthetic_tenants(fast: Settings) -> None:
    # Execute: two callers at once (an flock serializes them; the second finds the first's).
    versions: list[str] = []
    callers = [
        threading.Thread(target=lambda: versions.append(ensure_forecaster(fast))) for _ in range(2)
    ]
    for t in callers:
        t.start()
    for t in callers:
        t.join()
    # Assert
    registry = ModelRegistry.from_settings(fast)
    assert len(set(versions)) == 1 and registry.versions(MODEL_NAME) == versions[:1]
    meta = registry.metadata(MODEL_NAME, versions[0])
    assert meta["data_source"] == "synthetic" and meta["bootstrap"] == "fast"
    assert meta["kind"] == "temporal_fusion_transformer"
    assert len(meta["income_bracket_edges"]) == 3 and meta["categories"]
    assert meta["config"]["categories"] == meta["categories"]
    assert ensure_forecaster(fast) == versions[0]  # no second fit


def test_unknown_bootstrap_mode_is_refused(fast: Settings) -> None:
    with pytest.raises(ValueError, match="forecaster_bootstrap"):
        ensure_forecaster(dataclasses.replace(fast, forecaster_bootstrap="huge"))


def test_ledger_users_with_enough_history(fast: Settings) -> None:
    # Prepare: three users with a year, one with a month.
    table, users = tenant_rows(3, years=1.0, seed=31)
    more, _ = tenant_rows(1, years=1.0, seed=32, first_user=7)
    last = pc.max(more.column("booked_at")).as_py()
    month = more.filter(pc.field("booked_at") > pa.scalar(last - timedelta(days=30)))
    OfflineLedgerWriter(fast).write(pa.concat_tables([table, month]))
    # Execute
    rows, info = ledger_training_rows(fast, version=table_version(fast), min_days=120)
    # Assert
    assert rows is not None and info["qualifying_users"] == 3
    assert sorted(set(rows.column("user_id").to_pylist())) == sorted(users)
    assert rows.column_names == list(LEDGER_COLUMNS)
    frame, meta = training_frame(rows, max_days=100)
    assert frame.groupby("user_id").size().max() == 100
    assert meta["users"] == 3 and len(meta["categories"]) == 3
    none, info = ledger_training_rows(fast, version=table_version(fast), min_days=400)
    assert none is None and info["qualifying_users"] == 0
