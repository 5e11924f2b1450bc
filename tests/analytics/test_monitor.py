"""The budget monitor: re-checks only the users whose data changed, writes each notice once."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from deltalake import DeltaTable

from scale_ray.analytics.budgets import budget_id
from scale_ray.analytics.monitor import BudgetMonitorCore, TableWatcher
from scale_ray.analytics.state import UserStateStore
from scale_ray.ingest.records import ParsedTxn
from scale_ray.ledger.compaction import optimize_partition
from scale_ray.ledger.keys import user_bucket
from scale_ray.ledger.offline import OfflineLedgerWriter
from scale_ray.ledger.rows import transactions_table
from scale_ray.settings import Settings

from .ledger_fixture import TODAY, load_fixed_ledger

GROCERIES = "Food & drink/Groceries"


def budget(settings: Settings, user: str, limit_minor: int, period: str = "monthly") -> None:
    fields = {"category": GROCERIES, "period": period, "limit_minor": limit_minor}
    UserStateStore(settings).put(
        user, "budget", [(budget_id(GROCERIES, period), {**fields, "currency": "GBP"})]
    )


def spend(settings: Settings, user: str, txn_id: str, when: datetime, amount_minor: int) -> None:
    row = ParsedTxn(
        row_number=1,
        booked_at=when,
        amount_minor=-amount_minor,
        currency="GBP",
        narration="TESCO STORES 7777",
        account_id=f"{user}-cur",
        txn_id=txn_id,
        category_hint="groceries",
    )
    table = transactions_table(user, [row], num_buckets=settings.num_buckets, source="test")
    OfflineLedgerWriter(settings).write(table)


def notification_counts(settings: Settings) -> Counter[tuple[str, int]]:
    """How often each (user, threshold) notification is stored."""
    rows = DeltaTable(settings.table_uri("notifications")).to_pyarrow_table().to_pylist()
    return Counter((r["user_id"], json.loads(r["data_json"])["threshold"]) for r in rows)


def test_table_watcher_reports_added_files_and_their_users(settings: Settings) -> None:
    load_fixed_ledger(settings)
    watcher = TableWatcher(settings, "transactions")
    assert watcher.poll() is None  # the first poll takes the baseline
    assert watcher.poll() is None
    when = datetime(2025, 3, 18, 10, tzinfo=UTC)
    spend(settings, "alice", "w1", when, 100)
    spend(settings, "dave", "w2", when, 100)
    change = watcher.poll()
    assert change is not None
    assert change.version == watcher.version > change.from_version
    assert change.buckets == {user_bucket("alice", 8), user_bucket("dave", 8)}
    assert watcher.users(change) == {"alice", "dave"}
    rows = watcher.read(change, ["user_id", "txn_id", "user_bucket"])
    assert sorted(rows.to_pylist(), key=lambda r: r["txn_id"]) == [
        {"user_id": "alice", "txn_id": "w1", "user_bucket": user_bucket("alice", 8)},
        {"user_id": "dave", "txn_id": "w2", "user_bucket": user_bucket("dave", 8)},
    ]
    only_dave = watcher.read(change, ["txn_id"], buckets={user_bucket("dave", 8)})
    assert only_dave.column("txn_id").to_pylist() == ["w2"]
    assert watcher.poll() is None

    # Compaction rewrites files without changing data: a new version, no added data files.
    result = optimize_partition(settings, "transactions", user_bucket("alice", 8))
    assert result["files_removed"] > 1
    change = watcher.poll()
    assert change is not None and change.added.num_rows == 0
    assert watcher.users(change) == set()


def test_step_evaluates_only_changed_users_and_writes_once(settings: Settings) -> None:
    load_fixed_ledger(settings)
    budget(settings, "alice", 20000)  # 80.00 of 200.00 spent in March: 40 %
    budget(settings, "bob", 100000)  # 999.00 of 1000.00: 99.9 %
    budget(settings, "carol", 5000)  # carol shares alice's bucket; no spend
    assert user_bucket("carol", 8) == user_bucket("alice", 8)
    core = BudgetMonitorCore(settings)

    # First step: a sweep of every user with a budget.
    assert core.step(TODAY) == 1  # bob's 80 %
    assert core.last.sweep and core.last.users == {"alice", "bob", "carol"}
    assert core.step(TODAY) == 0
    assert not core.last.sweep and core.last.users == frozenset()

    # alice spends: only alice is evaluated (not carol, in the same bucket; not bob).
    when = datetime(2025, 3, 18, 10, tzinfo=UTC)
    spend(settings, "alice", "m1", when, 8100)
    assert core.step(TODAY) == 1
    assert core.last.users == {"alice"}
    assert core.step(TODAY) == 0

    # A user without a budget spends: a change, but nobody to evaluate.
    spend(settings, "dave", "m2", when, 100)
    assert core.step(TODAY) == 0
    assert core.last.changed_users == 1 and core.last.users == frozenset()

    # A budget change (user_state) is a change too: lowering alice's limit passes 100 %.
    budget(settings, "alice", 16000)
    assert core.step(TODAY) == 1
    assert core.last.users == {"alice"}

    # A new day in the same week, month and year: nothing to sweep.
    assert core.step(date(2025, 3, 21)) == 0
    assert not core.last.sweep and core.last.users == frozenset()
    # A new month: every monthly budget is checked (April has no spend yet).
    assert core.step(date(2025, 4, 1)) == 0
    assert core.last.sweep and core.last.users == {"alice", "bob", "carol"}

    # A restarted monitor sweeps and finds everything already written.
    restarted = BudgetMonitorCore(settings)
    assert restarted.step(TODAY) == 0
    assert notification_counts(settings) == {("bob", 80): 1, ("alice", 80): 1, ("alice", 100): 1}


def test_evaluate_now_beside_step(settings: Settings) -> None:
    load_fixed_ledger(settings)
    core = BudgetMonitorCore(settings)
    assert core.step(TODAY) == 0
    budget(settings, "alice", 9000)  # 80.00 of 90.00: 88.9 %
    written = core.evaluate_now(["alice"], TODAY)
    assert [r["user_id"] for r in written] == ["alice"]
    assert core.step(TODAY) == 0  # the poll sees the budget change; already written
    assert core.last.users == {"alice"}


def test_failed_user_is_retried_later_not_every_step(settings: Settings) -> None:
    load_fixed_ledger(settings)
    # A budget row no API would accept (unknown period): evaluating it raises.
    bad = {"category": GROCERIES, "period": "fortnightly", "limit_minor": 1, "currency": "GBP"}
    UserStateStore(settings).put("mallory", "budget", [("bud_bad", bad)])
    budget(settings, "bob", 100000)
    core = BudgetMonitorCore(settings, failed_retry_s=0.3)
    assert core.step(TODAY) == 1  # bob's 80 %, despite mallory
    assert core.notifier.stats["failed"] == 1
    assert core.step(TODAY) == 0 and core.last.users == frozenset()  # not due yet
    time.sleep(0.35)
    assert core.step(TODAY) == 0 and core.last.users == {"mallory"}
    assert core.notifier.stats["failed"] == 2


# -- the actor ----------------------------------------------------------------------------


@pytest.fixture
def monitor_settings(ray_cluster: None, tmp_path: Path) -> Iterator[Settings]:
    import ray

    from scale_ray.analytics.monitor_actor import MONITOR_NAME

    settings = Settings(
        data_root=str(tmp_path / "var"),
        num_buckets=8,
        writer_shards=2,
        ray_namespace=f"scale-monitor-{uuid.uuid4().hex[:8]}",
    )
    yield settings
    try:
        actor = ray.get_actor(MONITOR_NAME, namespace=settings.ray_namespace)
    except ValueError:
        return
    ray.kill(actor, no_restart=True)


def wait_for(predicate, timeout_s: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.1)


@pytest.mark.integration
def test_monitor_actor_survives_a_kill_without_duplicates(monitor_settings: Settings) -> None:
    import ray

    from scale_ray.analytics.monitor_actor import ensure_budget_monitor

    settings = monitor_settings
    now = datetime.now(UTC)
    budget(settings, "ivy", 10000, period="yearly")
    actor = ensure_budget_monitor(settings, poll_interval_s=0.2)
    assert ray.get(actor.ping.remote(), timeout=60)

    spend(settings, "ivy", "i1", now, 8500)  # 85 %
    wait_for(lambda: notification_counts(settings)[("ivy", 80)] == 1)

    first = ray.get(actor.stats.remote(), timeout=60)
    ray.kill(actor, no_restart=False)  # Ray restarts it; the new one rebuilds from the table
    spend(settings, "ivy", "i2", now, 2000)  # 105 %
    wait_for(lambda: notification_counts(settings)[("ivy", 100)] == 1)

    # evaluate_now on the restarted actor: nothing new to write.
    assert ray.get(actor.evaluate_now.remote(["ivy"]), timeout=60) == []
    stats = ray.get(actor.stats.remote(), timeout=60)
    assert stats["errors"] == 0, stats["last_error"]
    assert stats["started_at"] > first["started_at"]  # a new instance did the 100 %
    time.sleep(1.0)  # more polls: still exactly once each
    assert notification_counts(settings) == {("ivy", 80): 1, ("ivy", 100): 1}
