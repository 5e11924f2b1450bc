"""open_ledger: views of every ledger table, current user state, and categories that agree
row for row with the dashboard's (AnalyticsEngine) on the fixed ledger."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import duckdb
import pytest
from deltalake.exceptions import TableNotFoundError

from scale_ray.analytics.engine import AnalyticsEngine
from scale_ray.analytics.state import UserStateStore
from scale_ray.ingest.records import ParsedTxn
from scale_ray.ledger.delta import open_table
from scale_ray.ledger.duck import DERIVED_VIEWS, TABLES, open_ledger
from scale_ray.ledger.offline import OfflineLedgerWriter
from scale_ray.ledger.rows import transactions_table
from scale_ray.settings import Settings
from tests.analytics.ledger_fixture import load_fixed_ledger

USERS = ("alice", "bob")
COLUMNS = ("category", "category_source", "merchant_key", "merchant_name", "local_at")
CORNER_RULE = {"pattern": "corner shop", "match": "contains", "category": "Food & drink/Groceries"}


@pytest.fixture
def ledger(settings: Settings) -> Settings:
    load_fixed_ledger(settings)
    return settings


def _engine_rows(settings: Settings, user: str) -> dict[str, tuple[Any, ...]]:
    table = AnalyticsEngine(settings).view(user).table
    return {
        r["txn_id"]: tuple(r[c] for c in COLUMNS)
        for r in table.select(["txn_id", *COLUMNS]).to_pylist()
    }


def _duck_rows(con: duckdb.DuckDBPyConnection, user: str) -> dict[str, tuple[Any, ...]]:
    rows = con.execute(
        f"SELECT txn_id, {', '.join(COLUMNS)} FROM categorized_transactions WHERE user_id = ?",
        [user],
    ).fetchall()
    return {r[0]: tuple(r[1:]) for r in rows}


def _assert_agrees(settings: Settings) -> dict[str, dict[str, tuple[Any, ...]]]:
    con = open_ledger(settings.data_root)
    out = {}
    for user in USERS:
        duck = _duck_rows(con, user)
        assert duck == _engine_rows(settings, user)
        out[user] = duck
    return out


def test_every_table_and_derived_view_is_a_view(ledger: Settings) -> None:
    con = open_ledger(ledger.data_root)
    views = {
        r[0]
        for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()
    }
    assert views >= {*TABLES, *DERIVED_VIEWS}
    assert con.execute("SELECT count(*) FROM duckdb_tables()").fetchone() == (0,)  # nothing copied
    assert con.execute("SELECT count(*) FROM transactions").fetchone() == (18,)
    assert con.execute("SELECT count(*) FROM categorized_transactions").fetchone() == (18,)
    assert con.execute("SELECT count(*) FROM accounts").fetchone() == (4,)
    # A filter on the view reaches the scan of the Delta table's files.
    plan = "".join(
        str(r[1])
        for r in con.execute(
            "EXPLAIN SELECT count(*) FROM categorized_transactions WHERE user_id = 'bob'"
        ).fetchall()
    )
    assert "\"user_id\" = 'bob'" in plan


def test_categories_agree_with_engine(ledger: Settings) -> None:
    rows = _assert_agrees(ledger)
    assert rows["alice"]["a02"][:3] == ("Food & drink/Groceries", "source", "tesco stores")
    assert rows["alice"]["a16"][:2] == ("Uncategorized", "none")
    assert rows["alice"]["a06"][0] == "Transfers/Between accounts"


def test_rule_and_correction_agree_with_engine(ledger: Settings) -> None:
    store = UserStateStore(ledger)
    store.put("alice", "rule", [("rul_corner", CORNER_RULE)])
    store.put("alice", "correction", [("a02", {"category": "Leisure"})])
    store.put("bob", "correction", [("b01", {"category": "Shopping/General"})])
    rows = _assert_agrees(ledger)
    assert rows["alice"]["a16"][:2] == ("Food & drink/Groceries", "rule")
    assert rows["alice"]["a02"][:2] == ("Leisure", "correction")
    assert rows["bob"]["b01"][:2] == ("Shopping/General", "correction")
    con = open_ledger(ledger.data_root)
    assert con.execute(
        "SELECT user_id, rule_id, pattern, match, category FROM rules"
    ).fetchall() == [("alice", "rul_corner", "corner shop", "contains", "Food & drink/Groceries")]
    assert set(con.execute("SELECT user_id, txn_id, category FROM corrections").fetchall()) == {
        ("alice", "a02", "Leisure"),
        ("bob", "b01", "Shopping/General"),
    }
    # Deleting them restores the source's categories.
    store.put("alice", "rule", [("rul_corner", {})], deleted=True)
    store.put("alice", "correction", [("a02", {})], deleted=True)
    rows = _assert_agrees(ledger)
    assert rows["alice"]["a16"][:2] == ("Uncategorized", "none")
    assert rows["alice"]["a02"][:2] == ("Food & drink/Groceries", "source")


def test_equally_specific_rules_rank_like_the_engine(ledger: Settings) -> None:
    store = UserStateStore(ledger)
    contains = {"match": "contains"}
    # Two patterns of one length, both in "corner shop", written in one batch: the later wins.
    store.put(
        "alice",
        "rule",
        [
            ("r1", {**contains, "pattern": "corner", "category": "Leisure"}),
            ("r2", {**contains, "pattern": "r shop", "category": "Shopping/General"}),
        ],
    )
    assert _assert_agrees(ledger)["alice"]["a16"][0] == "Shopping/General"
    # Updating r1 (it keeps its created_at, as the API does) makes it the last written.
    first = store.get("alice", "rule", "r1")
    assert first is not None
    store.put(
        "alice",
        "rule",
        [("r1", {**contains, "pattern": "corner", "category": "Travel/Trips"})],
        created_at={"r1": first["created_at"]},
    )
    assert _assert_agrees(ledger)["alice"]["a16"][0] == "Travel/Trips"
    # An exact match beats any substring match.
    store.put(
        "alice", "rule", [("r3", {"match": "exact", "pattern": "corner shop", "category": "Cash"})]
    )
    assert _assert_agrees(ledger)["alice"]["a16"][:2] == ("Cash", "rule")


def test_budgets_view_and_time_travel(ledger: Settings) -> None:
    store = UserStateStore(ledger)
    budget = {
        "category": "Food & drink",
        "period": "monthly",
        "limit_minor": 30000,
        "currency": "GBP",
    }
    put = store.put("alice", "budget", [("bud_food", budget)])
    sql = "SELECT user_id, budget_id, category, period, limit_minor, currency FROM budgets"
    expected = [("alice", "bud_food", "Food & drink", "monthly", 30000, "GBP")]
    assert open_ledger(ledger.data_root).execute(sql).fetchall() == expected
    changed = store.put("alice", "budget", [("bud_food", {**budget, "limit_minor": 25000})])
    assert open_ledger(ledger.data_root).execute("SELECT limit_minor FROM budgets").fetchall() == [
        (25000,)
    ]
    store.put("alice", "budget", [("bud_food", {})], deleted=True)
    assert open_ledger(ledger.data_root).execute(sql).fetchall() == []
    assert open_ledger(ledger.data_root, versions={"user_state": put}).execute(sql).fetchall() == (
        expected
    )
    past = open_ledger(ledger.data_root, versions={"user_state": changed})
    assert past.execute("SELECT limit_minor FROM budgets").fetchall() == [(25000,)]
    # Rules and corrections of that version only.
    assert past.execute("SELECT count(*) FROM rules").fetchone() == (0,)


def test_transactions_time_travel(ledger: Settings) -> None:
    before = open_table(ledger, "transactions").version()
    extra = ParsedTxn(
        row_number=1,
        booked_at=datetime(2025, 3, 18, 12, 0, tzinfo=UTC),
        amount_minor=-700,
        currency="GBP",
        narration="PRET A MANGER",
        account_id="alice-cur",
        txn_id="a18",
        category_hint="eating_out",
    )
    OfflineLedgerWriter(ledger).write(
        transactions_table("alice", [extra], num_buckets=ledger.num_buckets, source="test")
    )
    count = "SELECT count(*) FROM categorized_transactions WHERE user_id = 'alice'"
    assert open_ledger(ledger.data_root).execute(count).fetchone() == (18,)
    assert open_ledger(ledger.data_root, versions={"transactions": before}).execute(
        count
    ).fetchone() == (17,)
    with pytest.raises(ValueError, match="unknown ledger tables"):
        open_ledger(ledger.data_root, versions={"transaction": before})


@pytest.fixture
def new_york_tz() -> Iterator[None]:
    old = os.environ.get("TZ")
    os.environ["TZ"] = "America/New_York"
    time.tzset()
    try:
        yield
    finally:
        if old is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = old
        time.tzset()


def test_local_time_ignores_the_machine_time_zone(ledger: Settings, new_york_tz: None) -> None:
    # Booked 09:30 in UTC+01:00: the bank showed 09:30, whatever zone the analyst is in.
    booked = datetime(2025, 7, 1, 9, 30, tzinfo=timezone(timedelta(hours=1)))
    row = ParsedTxn(
        row_number=1,
        booked_at=booked,
        amount_minor=-500,
        currency="GBP",
        narration="CAFE",
        account_id="bob-cur",
        txn_id="b02",
    )
    OfflineLedgerWriter(ledger).write(
        transactions_table("bob", [row], num_buckets=ledger.num_buckets, source="test")
    )
    con = open_ledger(ledger.data_root)
    assert con.execute("SELECT current_setting('TimeZone')").fetchone() == ("UTC",)
    assert con.execute(
        "SELECT local_at FROM categorized_transactions WHERE txn_id = 'b02'"
    ).fetchone() == (datetime(2025, 7, 1, 9, 30),)


def test_missing_tables_read_empty_and_nothing_is_created(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    con = open_ledger(str(root))
    for name in (*TABLES, "categorized_transactions", "rules", "budgets"):
        assert con.execute(f"SELECT count(*) FROM {name}").fetchone() == (0,)
    assert not root.exists()
    with pytest.raises(TableNotFoundError):
        open_ledger(str(root), versions={"transactions": 0})


def test_no_extension_downloads(ledger: Settings) -> None:
    con = open_ledger(ledger.data_root)
    assert con.execute("SELECT current_setting('autoinstall_known_extensions')").fetchone() == (
        False,
    )
    # A function of an extension that is not built in fails at once instead of downloading.
    with pytest.raises(duckdb.Error, match=r"(?i)extension"):
        con.execute("SELECT ST_Point(1, 2)").fetchall()
