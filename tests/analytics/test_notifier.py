"""Budget threshold notifications: each written exactly once, across re-evaluations and restarts."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import pytest
from deltalake import DeltaTable

from scale_ray.analytics.budgets import budget_id, notification_id, period_range
from scale_ray.analytics.notifier import BudgetNotifier
from scale_ray.analytics.state import UserStateStore
from scale_ray.ingest.records import ParsedTxn
from scale_ray.ledger.keys import user_bucket
from scale_ray.ledger.offline import OfflineLedgerWriter
from scale_ray.ledger.rows import transactions_table
from scale_ray.settings import Settings

from .ledger_fixture import TODAY, load_fixed_ledger

GROCERIES = "Food & drink/Groceries"
BUDGET = budget_id(GROCERIES, "monthly")


def spend(settings: Settings, user: str, txn_id: str, when: str, amount_minor: int) -> None:
    """Post one grocery debit for ``user`` (booked at ``when``, UTC)."""
    row = ParsedTxn(
        row_number=1,
        booked_at=datetime.fromisoformat(when).replace(tzinfo=UTC),
        amount_minor=-amount_minor,
        currency="GBP",
        narration="TESCO STORES 7777",
        account_id=f"{user}-cur",
        txn_id=txn_id,
        category_hint="groceries",
    )
    table = transactions_table(user, [row], num_buckets=settings.num_buckets, source="test")
    OfflineLedgerWriter(settings).write(table)


def stored(settings: Settings, user: str | None = None) -> list[dict]:
    rows = DeltaTable(settings.table_uri("notifications")).to_pyarrow_table().to_pylist()
    return [r for r in rows if user is None or r["user_id"] == user]


def threshold_ids(settings: Settings, user: str) -> list[tuple[str, int]]:
    """(period start, threshold) of every stored notification of ``user``."""
    data = [json.loads(r["data_json"]) for r in stored(settings, user)]
    return sorted((d["period_start"], d["threshold"]) for d in data)


@pytest.fixture
def ledger(settings: Settings) -> Settings:
    load_fixed_ledger(settings)
    # Groceries in March so far: 80.00 (a14) of a 200.00 monthly budget: 40 %.
    UserStateStore(settings).put(
        "alice",
        "budget",
        [
            (
                BUDGET,
                {
                    "category": GROCERIES,
                    "period": "monthly",
                    "limit_minor": 20000,
                    "currency": "GBP",
                },
            )
        ],
    )
    return settings


def test_thresholds_are_written_once_each(ledger: Settings) -> None:
    settings = ledger
    notifier = BudgetNotifier(settings)

    # Below 80 %: nothing.
    assert notifier.evaluate(["alice", "bob"], TODAY) == []

    # 80.00 + 81.00 = 161.00 of 200.00 (80.5 %): the 80 % notification, once.
    spend(settings, "alice", "n1", "2025-03-18T10:00", 8100)
    written = notifier.evaluate(["alice", "bob"], TODAY)
    assert [(r["user_id"], r["kind"]) for r in written] == [("alice", "budget_threshold")]
    march = period_range("monthly", TODAY).start
    assert written[0]["notification_id"] == notification_id(BUDGET, march, 80)
    assert written[0]["title"] == "Groceries budget 80% used"
    assert notifier.evaluate(["alice"], TODAY) == []
    assert threshold_ids(settings, "alice") == [("2025-03-01", 80)]

    # 161.00 + 40.00 = 201.00 (100.5 %): the 100 % notification, once.
    spend(settings, "alice", "n2", "2025-03-19T10:00", 4000)
    written = notifier.evaluate(["alice"], TODAY)
    assert [r["notification_id"] for r in written] == [notification_id(BUDGET, march, 100)]
    assert written[0]["title"] == "Groceries budget exceeded"
    assert notifier.evaluate(["alice"], TODAY) == []

    # A restarted notifier rebuilds what it knows from the table: still nothing new.
    assert BudgetNotifier(settings).evaluate(["alice", "bob"], TODAY) == []
    assert threshold_ids(settings, "alice") == [("2025-03-01", 80), ("2025-03-01", 100)]

    # Next period: the spend starts again; crossing 80 % there is a new notification.
    april = date(2025, 4, 10)
    assert notifier.evaluate(["alice"], april) == []
    spend(settings, "alice", "n3", "2025-04-05T10:00", 17000)
    written = BudgetNotifier(settings).evaluate(["alice"], april)
    assert [r["notification_id"] for r in written] == [
        notification_id(BUDGET, date(2025, 4, 1), 80)
    ]
    assert threshold_ids(settings, "alice") == [
        ("2025-03-01", 80),
        ("2025-03-01", 100),
        ("2025-04-01", 80),
    ]
    assert stored(settings, "bob") == []


def test_jump_past_both_thresholds_writes_both_in_one_commit(ledger: Settings) -> None:
    settings = ledger
    spend(settings, "alice", "big", "2025-03-18T10:00", 50000)
    before = DeltaTable(settings.table_uri("notifications")).version()
    written = BudgetNotifier(settings).evaluate(["alice"], TODAY)
    assert sorted(r["notification_id"] for r in written) == sorted(
        notification_id(BUDGET, date(2025, 3, 1), t) for t in (80, 100)
    )
    assert DeltaTable(settings.table_uri("notifications")).version() == before + 1
    row = stored(settings, "alice")[0]
    assert row["created_at"].tzinfo is not None
    assert row["user_bucket"] == written[0]["user_bucket"]


def test_users_with_budgets_latest_wins(ledger: Settings) -> None:
    settings = ledger
    notifier = BudgetNotifier(settings)
    store = UserStateStore(settings)
    assert notifier.users_with_budgets() == {"alice"}
    fields = {"category": GROCERIES, "period": "weekly", "limit_minor": 100, "currency": "GBP"}
    store.put("bob", "budget", [(budget_id(GROCERIES, "weekly"), fields)])
    assert notifier.users_with_budgets() == {"alice", "bob"}
    store.put("bob", "budget", [(budget_id(GROCERIES, "weekly"), fields)], deleted=True)
    assert notifier.users_with_budgets() == {"alice"}
    # Other kinds do not count.
    store.put(
        "bob", "rule", [("r1", {"pattern": "tesco", "match": "contains", "category": GROCERIES})]
    )
    assert notifier.users_with_budgets() == {"alice"}

    alice = user_bucket("alice", settings.num_buckets)
    assert notifier.users_with_budgets({alice}) == {"alice"}
    assert notifier.users_with_budgets(periods={"monthly", "yearly"}) == {"alice"}
    assert notifier.users_with_budgets(periods={"weekly"}) == set()
    others = set(range(settings.num_buckets)) - {alice}
    assert notifier.users_with_budgets(others) == set()
    assert notifier.users_with_budgets(set()) == set()


def test_failed_user_is_reported_not_fatal(ledger: Settings) -> None:
    settings = ledger
    spend(settings, "alice", "n1", "2025-03-18T10:00", 8100)
    # A budget row no API would accept (unknown period): computing its status fails.
    bad = {"category": GROCERIES, "period": "fortnightly", "limit_minor": 1, "currency": "GBP"}
    UserStateStore(settings).put("mallory", "budget", [("bud_bad", bad)])
    notifier = BudgetNotifier(settings)
    failed: set[str] = set()
    written = notifier.evaluate(["alice", "mallory"], TODAY, failed=failed)
    assert failed == {"mallory"}
    assert [r["user_id"] for r in written] == ["alice"]
    with pytest.raises(ValueError, match="fortnightly"):
        notifier.evaluate(["mallory"], TODAY)
