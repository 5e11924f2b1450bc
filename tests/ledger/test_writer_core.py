"""LedgerWriterCore on real Delta tables: idempotency, restarts, ownership, snapshots."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from deltalake import DeltaTable

from scale_ray.ingest.records import ParsedTxn
from scale_ray.ledger.keys import shard_of_bucket, user_bucket
from scale_ray.ledger.offline import OfflineLedgerWriter
from scale_ray.ledger.reader import LedgerReader, TxnFilter
from scale_ray.ledger.rows import accounts_table, implied_accounts, transactions_table
from scale_ray.ledger.writer import LedgerWriterCore, ShardOwnershipError, WriteRequest
from scale_ray.settings import Settings


def _request(settings: Settings, user: str, rows: list[ParsedTxn]) -> WriteRequest:
    return WriteRequest(
        transactions_table(user, rows, num_buckets=settings.num_buckets, source="test"),
        accounts_table(
            user,
            implied_accounts(rows, "default"),
            num_buckets=settings.num_buckets,
            source="test",
            default_currency="GBP",
        ),
    )


def _owner(settings: Settings, user: str) -> int:
    return shard_of_bucket(user_bucket(user, settings.num_buckets), settings.writer_shards)


def _count(settings: Settings) -> int:
    return DeltaTable(settings.table_uri("transactions")).to_pyarrow_table().num_rows


def test_reposting_never_duplicates(
    settings: Settings, txns: Callable[..., list[ParsedTxn]]
) -> None:
    core = LedgerWriterCore(settings, _owner(settings, "alice"))
    (ack,) = core.commit_group([_request(settings, "alice", txns(50))])
    assert (ack.written, ack.duplicates, ack.accounts_created) == (50, 0, 1)
    (again,) = core.commit_group([_request(settings, "alice", txns(60))])
    assert (again.written, again.duplicates, again.accounts_created) == (10, 50, 0)
    assert _count(settings) == 60


def test_duplicates_inside_one_group(
    settings: Settings, txns: Callable[..., list[ParsedTxn]]
) -> None:
    core = LedgerWriterCore(settings, _owner(settings, "alice"))
    acks = core.commit_group(
        [_request(settings, "alice", txns(5)), _request(settings, "alice", txns(5))]
    )
    assert [(a.written, a.duplicates) for a in acks] == [(5, 0), (0, 5)]
    assert acks[1].duplicate_txn_ids == [f"t{i}" for i in range(5)]
    assert _count(settings) == 5


def test_restarted_writer_rebuilds_its_index(
    settings: Settings, txns: Callable[..., list[ParsedTxn]]
) -> None:
    shard = _owner(settings, "alice")
    LedgerWriterCore(settings, shard).commit_group([_request(settings, "alice", txns(20))])
    fresh = LedgerWriterCore(settings, shard)  # as after an actor restart
    (ack,) = fresh.commit_group([_request(settings, "alice", txns(25))])
    assert (ack.written, ack.duplicates) == (5, 20)
    assert _count(settings) == 25


def test_same_txn_id_for_different_users_is_kept(
    settings: Settings, txns: Callable[..., list[ParsedTxn]]
) -> None:
    writer = OfflineLedgerWriter(settings)
    for user in ("alice", "bob", "carol"):
        assert writer.write(_request(settings, user, txns(3)).transactions).written == 3
    assert _count(settings) == 9


def test_refuses_buckets_of_another_shard(
    settings: Settings, txns: Callable[..., list[ParsedTxn]]
) -> None:
    other = 1 - _owner(settings, "alice")
    with pytest.raises(ShardOwnershipError):
        LedgerWriterCore(settings, other).commit_group([_request(settings, "alice", txns(1))])
    assert DeltaTable(settings.table_uri("transactions")).version() == 0


def test_content_ids_distinguish_identical_rows(
    settings: Settings, txns: Callable[..., list[ParsedTxn]]
) -> None:
    from dataclasses import replace

    row = replace(txns(1)[0], txn_id=None)
    writer = OfflineLedgerWriter(settings)
    first = writer.write(transactions_table("alice", [row, row], num_buckets=8, source="t"))
    assert first.written == 2  # two identical coffees in one statement are two purchases
    again = writer.write(transactions_table("alice", [row, row], num_buckets=8, source="t"))
    assert (again.written, again.duplicates) == (0, 2)  # re-importing the statement is not


def test_balances_time_travel_and_scoping(
    settings: Settings, txns: Callable[..., list[ParsedTxn]]
) -> None:
    writer = OfflineLedgerWriter(settings)
    v1 = writer.write(*_astuple(_request(settings, "alice", txns(10)))).version
    writer.write(*_astuple(_request(settings, "alice", txns(10, start=10))))
    writer.write(*_astuple(_request(settings, "bob", txns(4))))
    reader = LedgerReader(settings)
    (acc,), _ = reader.list_accounts("alice")
    assert acc["balance_minor"] == -sum(100 + i for i in range(20))
    assert acc["transactions"] == 20
    (old,), _ = reader.list_accounts("alice", version=v1)
    assert old["balance_minor"] == -sum(100 + i for i in range(10))
    rows, _, _ = reader.list_transactions("bob", limit=100)
    assert len(rows) == 4
    assert reader.get_transaction("bob", "t15") is None  # alice's id, not bob's
    rows, _, _ = reader.list_transactions(
        "alice", filters=TxnFilter(text="stores 3", max_amount_minor=-110)
    )
    assert {r["txn_id"] for r in rows} == {"t10", "t17"}


def test_pagination_is_stable_under_inserts(
    settings: Settings, txns: Callable[..., list[ParsedTxn]]
) -> None:
    writer = OfflineLedgerWriter(settings)
    writer.write(_request(settings, "alice", txns(25)).transactions)
    reader = LedgerReader(settings)
    seen: list[str] = []
    page, cursor, version = reader.list_transactions("alice", limit=10)
    seen += [r["txn_id"] for r in page]
    n = 0
    while cursor is not None:
        n += 1  # a newer and an older transaction land between pages
        writer.write(
            _request(settings, "alice", txns(1, start=1000 + n, prefix="new")).transactions
        )
        page, cursor, v = reader.list_transactions("alice", limit=10, cursor=cursor)
        assert v == version
        seen += [r["txn_id"] for r in page]
    assert seen == [f"t{i}" for i in reversed(range(25))]


def _astuple(req: WriteRequest) -> tuple:
    return (req.transactions, req.accounts)


def test_compaction_beside_concurrent_commits(
    settings: Settings, txns: Callable[..., list[ParsedTxn]]
) -> None:
    import threading

    shard = _owner(settings, "alice")
    users = [u for u in (f"user{i}" for i in range(40)) if _owner(settings, u) == shard][:6]
    core = LedgerWriterCore(settings, shard)
    for k in range(10):
        for user in users:
            core.commit_group(
                [WriteRequest(_request(settings, user, txns(2, start=2 * k)).transactions)]
            )
    files_before = len(DeltaTable(settings.table_uri("transactions")).file_uris())
    result: dict[str, int] = {}
    compactor = threading.Thread(target=lambda: result.update(core.compact_owned()))
    compactor.start()
    for k in range(10, 20):  # appends keep landing while the compaction runs
        for user in users:
            core.commit_group(
                [WriteRequest(_request(settings, user, txns(2, start=2 * k)).transactions)]
            )
    compactor.join()
    assert result["files_removed"] > result["files_added"] > 0
    table = DeltaTable(settings.table_uri("transactions"))
    assert len(table.file_uris()) < files_before + 10 * len(users)
    keys = list(
        zip(
            *(table.to_pyarrow_table(columns=["user_id", "txn_id"]).to_pydict().values()),
            strict=True,
        )
    )
    assert len(keys) == len(set(keys)) == 20 * 2 * len(users)
    (again,) = core.commit_group([_request(settings, users[0], txns(40))])
    assert (again.written, again.duplicates) == (0, 40)
