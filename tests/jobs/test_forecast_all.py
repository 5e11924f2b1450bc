"""jobs/forecast_all.py: every user forecast into the ``forecasts`` table, once per ledger state.

A tiny real ledger (three generated users and one with a month of history) under a temporary
data root and a tiny real TFT in its registry. The bucket step is plain code (tested without
Ray); the whole job runs on the session's local Ray with a quarter-CPU worker, because the
session's Serve app may hold most of the 2 test CPUs.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable

from jobs import forecast_all
from scale_ray.ingest.records import ParsedTxn
from scale_ray.ledger.keys import user_bucket
from scale_ray.ledger.offline import OfflineLedgerWriter
from scale_ray.ledger.rows import transactions_table
from scale_ray.ledger.schema import FORECASTS
from scale_ray.models.anomaly.training import table_version
from scale_ray.models.forecast.tft import publish_forecaster
from scale_ray.models.registry import ModelRegistry
from scale_ray.settings import Settings
from tests.models.forecast.tiny import tenant_rows, tiny_model

BUCKETS = 8
WORKER = ["--workers", "1", "--cpus-per-worker", "0.25"]


@pytest.fixture
def job_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    settings = Settings(data_root=str(tmp_path / "var"), num_buckets=BUCKETS, writer_shards=2)
    for key, value in settings.as_env().items():
        monkeypatch.setenv(key, value)
    return settings


def _ledger(settings: Settings) -> tuple[list[str], str]:
    """Three users with a year of history and one with a month: (long users, short user)."""
    table, users = tenant_rows(3, years=1.0, seed=21, num_buckets=BUCKETS)
    more, (newbie,) = tenant_rows(1, years=1.0, seed=22, num_buckets=BUCKETS, first_user=9)
    last = pc.max(more.column("booked_at")).as_py()
    short = more.filter(pc.field("booked_at") > pa.scalar(last - timedelta(days=30)))
    OfflineLedgerWriter(settings).write(pa.concat_tables([table, short]))
    return users, newbie


def _publish(settings: Settings) -> str:
    registry = ModelRegistry.from_settings(settings)
    return publish_forecaster(registry, tiny_model(), {"trained_by": "test"})


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    code = forecast_all.main(argv)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert len(lines) == 1
    return code, json.loads(lines[0])


def _statuses(out: pa.Table) -> dict[str, str]:
    users, statuses = out.column("user_id").to_pylist(), out.column("status").to_pylist()
    return dict(zip(users, statuses, strict=True))


def _forecasts(settings: Settings) -> pa.Table:
    return DeltaTable(settings.table_uri("forecasts")).to_pyarrow_table()


def test_forecast_bucket_marks_every_user(job_settings: Settings) -> None:
    # Prepare: one bucket's rows, plain code, no Ray.
    users, newbie = _ledger(job_settings)
    model = tiny_model()
    pinned = table_version(job_settings)
    rows = pa.concat_tables(
        forecast_all.read_bucket(job_settings, pinned, b)
        for b in sorted({user_bucket(u, BUCKETS) for u in [*users, newbie]})
    )
    now = datetime(2025, 7, 1, tzinfo=UTC)
    # Execute
    out = forecast_all.forecast_bucket(model, "v1", rows, bucket=0, ledger_version=pinned, now=now)
    # Assert: 30 rows per long user, one marker for the short one.
    status = _statuses(out)
    assert status[newbie] == forecast_all.INSUFFICIENT
    forecast = out.filter(pc.field("status") == forecast_all.FORECAST)
    assert sorted(set(forecast.column("user_id").to_pylist())) == sorted(users)
    assert forecast.num_rows == 30 * len(users)
    table = forecast.select(FORECASTS.names).cast(FORECASTS)  # fits the table's schema
    assert set(table.column("model_version").to_pylist()) == {"v1"}
    # A user already forecast for the same (as_of, model version) is skipped.
    as_of = forecast.filter(pc.field("user_id") == users[1]).column("as_of")[0].as_py()
    again = forecast_all.forecast_bucket(
        model, "v1", rows, bucket=0, ledger_version=pinned, now=now, done={(users[1], as_of)}
    )
    status = _statuses(again)
    assert status[users[1]] == forecast_all.DONE_BEFORE


@pytest.mark.integration
def test_job_forecasts_everyone_once(
    ray_cluster: None, job_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare
    users, newbie = _ledger(job_settings)
    # Without a model the job says so.
    code, report = _run(WORKER, capsys)
    assert code == forecast_all.EXIT_NO_MODEL and report["error"]["code"] == "no_model"
    version = _publish(job_settings)
    # Execute
    code, report = _run(WORKER, capsys)
    # Assert
    assert code == 0, report
    assert report["model_version"] == version and report["users_forecast"] == 3
    assert report["users_insufficient_history"] == 1 and report["users_failed"] == 0
    assert report["rows"] == report["rows_inserted"] == 90
    table = _forecasts(job_settings)
    assert table.num_rows == 90
    assert sorted(set(table.column("user_id").to_pylist())) == sorted(users)
    assert newbie not in set(table.column("user_id").to_pylist())
    assert set(table.column("ledger_version").to_pylist()) == {report["table_version"]}
    first = table.filter(pc.field("user_id") == users[0]).sort_by("horizon_day")
    assert first.column("horizon_day").to_pylist() == list(range(1, 31))
    assert first.column("user_bucket")[0].as_py() == user_bucket(users[0], BUCKETS)
    explanation = json.loads(first.column("explanation_json")[0].as_py())
    assert explanation["summary"] and explanation["sentences"]

    # A rerun on the same ledger writes nothing.
    code, rerun = _run(WORKER, capsys)
    assert code == 0 and rerun["users_already_forecast"] == 3
    assert rerun["users_forecast"] == 0 and rerun["rows_inserted"] == 0
    assert _forecasts(job_settings).num_rows == 90

    # A new transaction of one user: only that user is forecast again, from the new day.
    txn = ParsedTxn(
        row_number=1, booked_at=datetime(2025, 7, 3, 9, tzinfo=UTC), amount_minor=-4_200,
        currency="GBP", narration="TESCO STORES", account_id="acc-x", txn_id="late-1",
    )  # fmt: skip
    OfflineLedgerWriter(job_settings).write(
        transactions_table(users[2], [txn], num_buckets=BUCKETS, source="test")
    )
    code, later = _run(WORKER, capsys)
    assert code == 0 and later["users_forecast"] == 1 and later["rows_inserted"] == 30
    table = _forecasts(job_settings)
    assert table.num_rows == 120
    as_of = table.filter(pc.field("user_id") == users[2]).column("as_of").to_pylist()
    assert sorted({d.isoformat() for d in as_of})[-1] == "2025-07-03"
