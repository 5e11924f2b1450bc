"""Every notebook runs top to bottom on a small ledger, and is stored without outputs."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from scale_ray.ledger.offline import OfflineLedgerWriter
from scale_ray.ledger.rows import accounts_table, implied_accounts, transactions_table
from scale_ray.settings import Settings
from tests.conftest import make_txns

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.fixture
def small_ledger(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    writer = OfflineLedgerWriter(settings)
    for user in ("ana", "ben", "chen"):
        rows = make_txns(40, prefix=f"{user}-")
        buckets = settings.num_buckets
        accounts = implied_accounts(rows, "default")
        writer.write(
            transactions_table(user, rows, num_buckets=buckets, source="test"),
            accounts_table(
                user, accounts, num_buckets=buckets, source="test", default_currency="GBP"
            ),
        )
    monkeypatch.setenv("SCALE_DATA_ROOT", settings.data_root)
    monkeypatch.setenv("SCALE_NUM_BUCKETS", str(settings.num_buckets))
    return settings


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path: Path, small_ledger: Settings, tmp_path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "strip outputs"
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute(env=dict(os.environ))
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
