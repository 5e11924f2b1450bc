"""The flags table: idempotent recording, newest-first pages, verdicts (latest wins), labels."""

from __future__ import annotations

import threading

import pytest
from deltalake import DeltaTable

from scale_ray.models.anomaly.flags import (
    FlagCursor,
    FlagNotFound,
    FlagStore,
    InvalidFlagCursor,
    flag_id,
    flag_json,
)
from scale_ray.models.anomaly.model import AnomalyResult
from scale_ray.settings import Settings


def result(user: str, txn: str, *, flagged: bool = True, score: float = 0.7) -> AnomalyResult:
    return AnomalyResult(
        user_id=user,
        txn_id=txn,
        score=score,
        threshold=0.6,
        flagged=flagged,
        segment="established",
        reason=f"reason of {txn}" if flagged else None,
    )


def flag_rows(settings: Settings) -> list[dict]:
    return DeltaTable(settings.table_uri("flags")).to_pyarrow_table().to_pylist()


def test_record_is_idempotent_across_calls_and_restarts(settings: Settings) -> None:
    # Prepare
    store = FlagStore(settings)
    start = store.latest_version()
    # Execute: flagged and unflagged results of two users, one commit.
    written = store.record(
        [result("ann", "t1"), result("ann", "t2", flagged=False), result("ben", "t1")], "v1"
    )
    # Assert
    assert {(f["user_id"], f["txn_id"]) for f in written} == {("ann", "t1"), ("ben", "t1")}
    assert store.latest_version() == start + 1
    assert all(f["status"] == "open" and f["resolved_at"] is None for f in written)
    assert written[0]["flag_id"] == flag_id(written[0]["txn_id"])
    # A retry in this process and one in a new process (known keys from the table) write nothing.
    assert store.record([result("ann", "t1"), result("ben", "t1")], "v2") == []
    again = FlagStore(settings)
    assert again.record([result("ann", "t1"), result("ann", "t3")], "v2")[0]["txn_id"] == "t3"
    rows = flag_rows(settings)
    assert sorted((r["user_id"], r["txn_id"]) for r in rows) == [
        ("ann", "t1"),
        ("ann", "t3"),
        ("ben", "t1"),
    ]
    assert {r["model_version"] for r in rows if r["txn_id"] == "t1"} == {"v1"}
    assert store.record([result("ann", "t9", flagged=False)], "v1") == []
    assert store.latest_version() == start + 2  # nothing written means no commit


def test_concurrent_records_write_each_flag_once(settings: Settings) -> None:
    store = FlagStore(settings)
    batch = [result("ann", f"t{i}") for i in range(20)]
    threads = [threading.Thread(target=store.record, args=(batch, "v1")) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rows = flag_rows(settings)
    assert len(rows) == 20 and len({r["txn_id"] for r in rows}) == 20


def test_pages_newest_first_with_a_stable_cursor(settings: Settings) -> None:
    store = FlagStore(settings)
    for i in range(5):  # one commit each: distinct created_at, t4 newest
        store.record([result("ann", f"t{i}")], "v1")
    store.record([result("ben", "b1")], "v1")
    every, cursor = store.list("ann", limit=10)
    assert [f["txn_id"] for f in every] == ["t4", "t3", "t2", "t1", "t0"] and cursor is None
    seen: list[str] = []
    page, cursor = store.list("ann", limit=2)
    seen += [f["txn_id"] for f in page]
    # Resolving after the first page does not move what the following pages show.
    store.resolve("ann", flag_id("t0"), "fraud")
    while cursor is not None:
        page, cursor = store.list("ann", limit=2, cursor=cursor)
        seen += [f["txn_id"] for f in page]
    assert seen == ["t4", "t3", "t2", "t1", "t0"]
    assert [f["txn_id"] for f in store.list("ann", limit=10)[0]] == ["t4", "t3", "t2", "t1"]
    assert [f["txn_id"] for f in store.list("ann", status="fraud")[0]] == ["t0"]
    assert len(store.list("ann", status="all")[0]) == 5
    assert [f["txn_id"] for f in store.list("ben", status=None)[0]] == ["b1"]
    with pytest.raises(InvalidFlagCursor):
        store.list("ann", cursor="not-a-cursor")
    with pytest.raises(InvalidFlagCursor):
        store.list("ann", cursor=FlagCursor(10_000, 0, "x").encode())
    with pytest.raises(ValueError):
        store.list("ann", status="dismissed")


def test_resolve_keeps_the_flag_and_the_latest_verdict_wins(settings: Settings) -> None:
    store = FlagStore(settings)
    (raised,) = store.record([result("ann", "t1", score=0.81)], "v1")
    fid = raised["flag_id"]

    legit = store.resolve("ann", fid, "legitimate")
    assert legit["status"] == "legitimate" and legit["resolved_at"] is not None
    assert legit["created_at"] == raised["created_at"]
    version = store.latest_version()
    assert store.resolve("ann", fid, "legitimate")["status"] == "legitimate"
    assert store.latest_version() == version  # the same verdict again writes nothing

    # A new store (another process) sees the verdict; changing it appends, the latest wins.
    other = FlagStore(settings)
    fraud = other.resolve("ann", fid, "fraud")
    got = store.get("ann", fid)
    assert got is not None and got["status"] == "fraud"
    assert got["score"] == pytest.approx(0.81) and got["reason"] == "reason of t1"
    assert got["model_version"] == "v1" and got["created_at"] == raised["created_at"]
    assert got["resolved_at"] == fraud["resolved_at"]
    assert [r["status"] for r in sorted(flag_rows(settings), key=lambda r: r["seq"])] == [
        "open",
        "legitimate",
        "fraud",
    ]
    # A resolved flag is still known: the monitor never re-opens it.
    assert store.record([result("ann", "t1")], "v2") == []

    with pytest.raises(FlagNotFound):
        store.resolve("ben", fid, "fraud")  # ann's flag id is not ben's
    assert store.get("ben", fid) is None
    with pytest.raises(FlagNotFound):
        store.resolve("ann", "0000000000000000", "fraud")
    with pytest.raises(ValueError):
        store.resolve("ann", fid, "open")

    shown = flag_json(got)
    assert set(shown) == {
        "flag_id", "txn_id", "kind", "score", "reason", "status", "model_version",
        "created_at", "resolved_at",
    }  # fmt: skip
    assert shown["created_at"].endswith("Z") and shown["status"] == "fraud"


def test_labelled_returns_the_users_verdicts(settings: Settings) -> None:
    store = FlagStore(settings)
    store.record([result("ann", "t1", score=0.9), result("ann", "t2"), result("ben", "b1")], "v7")
    store.resolve("ann", flag_id("t1"), "fraud")
    store.resolve("ben", flag_id("b1"), "legitimate")
    labels = store.labelled()
    assert [(f["user_id"], f["txn_id"], f["status"]) for f in labels] == [
        ("ann", "t1", "fraud"),
        ("ben", "b1", "legitimate"),
    ]
    assert labels[0]["score"] == pytest.approx(0.9) and labels[0]["model_version"] == "v7"
    assert [f["txn_id"] for f in store.labelled(user_ids=["ben"])] == ["b1"]
    assert store.labelled(user_ids=[]) == []
    assert store.labelled(kind="other") == []
