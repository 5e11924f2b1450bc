"""scale-ray demo: synthetic users and Berka tenants land in the ledger, labels on disk."""

from __future__ import annotations

import pytest
from deltalake import DeltaTable

from scale_ray.demo.generator import read_labels
from scale_ray.demo.loader import load_demo
from scale_ray.ledger.offline import OfflineLedgerWriter
from scale_ray.ledger.reader import LedgerReader
from scale_ray.settings import Settings
from tests.conftest import SHARED_DATA


@pytest.mark.skipif(not SHARED_DATA.exists(), reason="shared data not present")
def test_demo_load_is_idempotent_and_balances_hold(settings: Settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(**{**settings.__dict__, "shared_data": str(SHARED_DATA)})
    labels = tmp_path / "labels.jsonl"
    report = load_demo(
        settings, OfflineLedgerWriter(settings), users=3, years=1, berka_limit=5, labels_path=labels
    )
    assert report.users == 8 and report.transactions_written > 3 * 500
    assert report.anomalies > 0 and labels.exists() and read_labels(labels)
    again = load_demo(
        settings, OfflineLedgerWriter(settings), users=3, years=1, berka_limit=5, labels_path=labels
    )
    assert again.transactions_written == 0 and again.duplicates == report.transactions_written
    reader = LedgerReader(settings)
    table = DeltaTable(settings.table_uri("transactions")).to_pyarrow_table(columns=["user_id"])
    berka_user = next(u for u in table.column("user_id").to_pylist() if u.startswith("berka-"))
    accounts, _ = reader.list_accounts(berka_user)
    (acc,) = accounts
    assert acc["currency"] == "CZK"
    assert acc["balance_minor"] == acc["reported_balance_minor"]  # opening + flows == bank balance
