"""jobs/compact_ledger.py: per-partition Ray tasks, checkpoint, vacuum; rows unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from deltalake import DeltaTable

from jobs import compact_ledger
from scale_ray.ledger.offline import OfflineLedgerWriter
from scale_ray.ledger.rows import transactions_table
from scale_ray.settings import Settings
from tests.conftest import make_txns


@pytest.mark.integration
def test_compaction_job_on_ray(
    ray_cluster: None,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    writer = OfflineLedgerWriter(settings)
    for k in range(6):
        for user in ("u1", "u2", "u3"):
            writer.write(
                transactions_table(
                    user, make_txns(4, start=4 * k), num_buckets=settings.num_buckets, source="t"
                )
            )
    rows_before = DeltaTable(settings.table_uri("transactions")).to_pyarrow_table().num_rows
    for key, value in settings.as_env().items():
        monkeypatch.setenv(key, value)
    assert compact_ledger.main(["--tables", "transactions", "--retention-hours", "0"]) == 0
    report = json.loads(capsys.readouterr().out)["transactions"]
    assert report["files_after"] < report["files_before"]
    table = DeltaTable(settings.table_uri("transactions"))
    assert table.to_pyarrow_table().num_rows == rows_before
    log_dir = Path(settings.table_uri("transactions")) / "_delta_log"
    assert any(p.name.endswith(".checkpoint.parquet") for p in log_dir.iterdir())
