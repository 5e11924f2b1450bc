from collections.abc import Callable

from deltalake import DeltaTable

from scale_ray.ingest.records import ParsedTxn
from scale_ray.ledger.compaction import compact_table
from scale_ray.ledger.offline import OfflineLedgerWriter
from scale_ray.ledger.reader import LedgerReader
from scale_ray.ledger.rows import transactions_table
from scale_ray.settings import Settings


def test_compaction_reduces_files_and_keeps_rows(
    settings: Settings, txns: Callable[..., list[ParsedTxn]]
) -> None:
    writer = OfflineLedgerWriter(settings)
    for k in range(12):
        for user in ("alice", "bob"):
            rows = txns(5, start=k * 5)
            writer.write(
                transactions_table(user, rows, num_buckets=settings.num_buckets, source="t")
            )
    before = DeltaTable(settings.table_uri("transactions"))
    expected = before.to_pyarrow_table().sort_by(
        [("user_id", "ascending"), ("txn_id", "ascending")]
    )
    report = compact_table(settings, "transactions", retention_hours=0, use_ray=False)
    assert report["files_after"] < report["files_before"]
    assert report["files_vacuumed"] > 0
    after = DeltaTable(settings.table_uri("transactions")).to_pyarrow_table()
    assert after.sort_by([("user_id", "ascending"), ("txn_id", "ascending")]).equals(expected)
    rows, _, _ = LedgerReader(settings).list_transactions("alice", limit=100)
    assert len(rows) == 60
