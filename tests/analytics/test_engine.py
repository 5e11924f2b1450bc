"""Analytics against hand-computed answers on the fixed ledger (tests/analytics/ledger_fixture.py).

No Ray: the engine reads the Delta tables written by the offline writer.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from scale_ray.analytics import params as P
from scale_ray.analytics.service import AnalyticsService
from scale_ray.errors import ApiError
from scale_ray.ingest.records import ParsedTxn
from scale_ray.ledger.offline import OfflineLedgerWriter
from scale_ray.ledger.rows import transactions_table
from scale_ray.settings import Settings
from tests.analytics.ledger_fixture import TODAY, load_fixed_ledger

Q1 = {"from": "2025-01-01", "to": "2025-04-01"}


@pytest.fixture
def service(settings: Settings) -> AnalyticsService:
    load_fixed_ledger(settings)
    return AnalyticsService(settings, clock=lambda: TODAY)


def _amounts(items: list[dict[str, Any]], key: str = "path") -> dict[str, str]:
    return {i[key]: i["amount"] for i in items}


def test_categories_top_level_and_drill_down(service: AnalyticsService) -> None:
    top = service.categories("alice", P.parse_categories(Q1, TODAY))
    # Transfers (a06) are not spending; salary is income.
    assert _amounts(top["categories"]) == {
        "Housing": "1000.00",
        "Food & drink": "262.70",
        "Shopping": "120.00",
        "Bills": "29.97",
        "Uncategorized": "25.00",
    }
    assert top["total"]["amount"] == "1437.67"
    assert [c["path"] for c in top["categories"]][:2] == ["Housing", "Food & drink"]
    food = service.categories("alice", P.parse_categories({**Q1, "parent": "food & DRINK"}, TODAY))
    assert food["parent"] == "Food & drink"
    assert _amounts(food["categories"]) == {
        "Food & drink/Groceries": "215.20",
        "Food & drink/Eating out": "47.50",
    }
    assert [c["count"] for c in food["categories"]] == [4, 3]
    income = service.categories("alice", P.parse_categories({**Q1, "direction": "income"}, TODAY))
    assert _amounts(income["categories"]) == {"Income": "7600.00"}


def test_unknown_category_is_400(service: AnalyticsService) -> None:
    with pytest.raises(ApiError) as err:
        service.categories("alice", P.parse_categories({**Q1, "parent": "Nope"}, TODAY))
    assert err.value.status == 400 and err.value.code == "unknown_category"


def test_heatmap_cells(service: AnalyticsService) -> None:
    h = service.heatmap("alice", P.parse_heatmap(Q1, TODAY))
    amounts, counts = h["weekday_hour"]["amount_minor"], h["weekday_hour"]["count"]
    fri, sat, sun = 4, 5, 6
    assert amounts[fri][12] == 3250 and counts[fri][12] == 2  # a03 12:00 + a08 12:30
    assert amounts[fri][20] == 6000
    assert amounts[sat][8] == 1998 and counts[sat][8] == 2  # two Netflix on Saturdays
    assert amounts[sun][18] == 4520
    assert amounts[1][10] == 100000  # Tuesday rent
    assert sum(map(sum, amounts)) == 143767
    dom = {d["day"]: d for d in h["day_of_month"]}
    assert dom[15]["amount"] == "29.97" and dom[15]["count"] == 3
    assert len(h["day_of_month"]) == 31


def test_merchants_by_spend_and_by_count(service: AnalyticsService) -> None:
    by_spend = service.merchants("alice", P.parse_merchants(Q1, TODAY))["merchants"]
    assert [(m["merchant_key"], m["amount"]) for m in by_spend] == [
        ("homely lettings rent", "1000.00"),
        ("tesco stores", "215.20"),  # two store numbers, one merchant
        ("amazon mktplace", "120.00"),
        ("pret a manger", "47.50"),
        ("netflix com", "29.97"),
        ("corner shop", "25.00"),
    ]
    assert by_spend[1]["count"] == 4 and by_spend[1]["average"]["amount"] == "53.80"
    by_count = service.merchants(
        "alice", P.parse_merchants({**Q1, "by": "count", "limit": "3"}, TODAY)
    )
    assert [m["merchant_key"] for m in by_count["merchants"]] == [
        "tesco stores",
        "pret a manger",
        "netflix com",
    ]


def test_cashflow_running_balance(service: AnalyticsService) -> None:
    c = service.cashflow(
        "alice", P.parse_cashflow({"from": "2025-01-01", "to": "2025-03-31"}, TODAY)
    )
    months = {m["month"]: m for m in c["months"]}
    assert list(months) == ["2025-01", "2025-02", "2025-03"]
    assert months["2025-01"]["income"]["amount"] == "2500.00"
    assert months["2025-01"]["expense"]["amount"] == "97.69"
    assert months["2025-01"]["transfers_net"]["amount"] == "-200.00"
    assert months["2025-01"]["closing_balance"]["amount"] == "3202.31"
    assert months["2025-02"]["expense"]["amount"] == "1089.99"
    assert months["2025-02"]["closing_balance"]["amount"] == "4612.32"
    assert months["2025-03"]["net"]["amount"] == "2350.01"
    assert months["2025-03"]["closing_balance"]["amount"] == "6962.33"
    assert c["opening_balance"]["amount"] == "1000.00"


def _compare(service: AnalyticsService, **query: str) -> dict[str, Any]:
    multi = {k: [v] for k, v in query.items()}
    return service.compare("alice", P.parse_compare(query, multi, TODAY))


def test_compare_average_food_on_fridays(service: AnalyticsService) -> None:
    out = _compare(
        service, measure="average_per_period", per="day", category="Food & drink",
        weekday="fri", **Q1,
    )  # fmt: skip
    (row,) = out["rows"]
    # 13 Fridays in Q1 2025; Food on Fridays: 12.50 + 30.00 + 20.00 + 60.00 + 15.00 = 137.50.
    assert row["periods"] == 13 and row["transactions"] == 5
    assert row["total"]["amount"] == "137.50"
    assert row["value"]["amount"] == "10.58"


def test_compare_grouped_by_weekday_counts_quiet_days(service: AnalyticsService) -> None:
    out = _compare(
        service, measure="average_per_period", per="day", category="Food & drink",
        group_by="weekday", **Q1,
    )  # fmt: skip
    rows = {r["group"]["weekday"]: r for r in out["rows"]}
    assert list(rows) == ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    assert rows["mon"]["value"]["amount"] == "6.15"  # 80.00 / 13 Mondays
    assert rows["sun"]["value"]["amount"] == "3.48"  # 45.20 / 13 Sundays
    assert rows["tue"]["periods"] == 12 and rows["tue"]["value"]["amount"] == "0.00"
    total = _compare(service, measure="count", group_by="category_group", **Q1)
    assert {r["group"]["category_group"]: r["value"] for r in total["rows"]} == {
        "Food & drink": 7, "Bills": 3, "Housing": 1, "Shopping": 1, "Uncategorized": 1,
    }  # fmt: skip


def test_overview(service: AnalyticsService) -> None:
    o = service.overview("alice", P.parse_overview({"month": "2025-03"}, TODAY))
    balances = {a["account_id"]: a["balance"]["amount"] for a in o["accounts"]}
    assert balances == {"alice-cur": "7082.33", "alice-card": "-120.00"}
    assert o["total_balance"] == [{"currency": "GBP", "amount_minor": 696233, "amount": "6962.33"}]
    assert o["this_month"]["income"]["amount"] == "2600.00"
    assert o["this_month"]["spend"]["amount"] == "249.99"
    assert o["this_month"]["savings_rate"] == 0.9039
    assert o["last_month"]["spend"]["amount"] == "1089.99"
    assert o["last_month"]["savings_rate"] == 0.564
    assert o["change"]["spend"]["amount"] == "-840.00"
    assert [c["path"] for c in o["top_categories"]] == [
        "Shopping",
        "Food & drink",
        "Uncategorized",
        "Bills",
    ]
    netflix = [r for r in o["upcoming_recurring"] if "NETFLIX" in r["merchant"].upper()]
    assert netflix and netflix[0]["next_date"] == "2025-04-15"
    assert netflix[0]["amount"]["amount"] == "-9.99"
    assert o["open_flags"] == {"count": 0, "latest": []}
    assert o["unread_notifications"] == 0


def test_rules_then_corrections_win(service: AnalyticsService) -> None:
    status, rule = service.create_rule(
        "alice", {"pattern": "Corner Shop", "category": "food & drink/groceries"}
    )
    assert status == 201 and rule["pattern"] == "corner shop" and rule["matching_transactions"] == 1
    again, _ = service.create_rule(
        "alice", {"pattern": "CORNER  SHOP!", "category": "Food & drink/Groceries"}
    )
    assert again == 200  # same pattern: replaced, not duplicated
    assert len(service.list_rules("alice")["data"]) == 1
    top = _amounts(service.categories("alice", P.parse_categories(Q1, TODAY))["categories"])
    assert "Uncategorized" not in top and top["Food & drink"] == "287.70"

    service.create_rule("alice", {"pattern": "amazon", "category": "Shopping/Electronics"})
    assert service.get_category("alice", "a17")["category_source"] == "rule"
    fixed = service.put_correction("alice", "a17", {"category": "Leisure/Hobbies"})
    assert fixed == {
        "txn_id": "a17",
        "category": "Leisure/Hobbies",
        "category_source": "correction",
    }
    top = _amounts(service.categories("alice", P.parse_categories(Q1, TODAY))["categories"])
    assert top["Leisure"] == "120.00" and "Shopping" not in top
    back = service.delete_correction("alice", "a17")
    assert back["category"] == "Shopping/Electronics" and back["category_source"] == "rule"

    rule_id = next(r["id"] for r in service.list_rules("alice")["data"] if r["pattern"] == "amazon")
    service.delete_rule("alice", rule_id)
    assert service.get_category("alice", "a17")["category"] == "Shopping/General"
    with pytest.raises(ApiError) as err:
        service.delete_rule("alice", rule_id)
    assert err.value.status == 404


def test_tenants_are_isolated(service: AnalyticsService) -> None:
    # bob's 999.00 at Tesco never shows in alice's figures, and alice's rows are not bob's.
    march = {"from": "2025-03-01", "to": "2025-04-01"}
    alice = service.merchants("alice", P.parse_merchants(march, TODAY))["merchants"]
    assert {m["merchant_key"]: m["amount"] for m in alice}["tesco stores"] == "80.00"
    bob = service.categories("bob", P.parse_categories(march, TODAY))
    assert _amounts(bob["categories"]) == {"Food & drink": "999.00"}
    with pytest.raises(ApiError) as err:
        service.put_correction("bob", "a17", {"category": "Leisure"})
    assert err.value.status == 404
    service.create_rule("bob", {"pattern": "tesco", "category": "Leisure"})
    assert service.get_category("alice", "a02")["category"] == "Food & drink/Groceries"
    assert service.list_rules("alice")["data"] == []


def test_budgets_status_and_validation(service: AnalyticsService) -> None:
    status, budget = service.create_budget(
        "alice", {"category": "Food & drink", "period": "monthly", "limit": "100.00"}
    )
    assert status == 201 and budget["currency"] == "GBP" and budget["limit_minor"] == 10000
    current = budget["current"]
    # March to the 20th: 15.00 + 80.00 = 95.00 of 100.00.
    assert current["spent"] == "95.00" and current["percent"] == 95.0
    assert current["thresholds_reached"] == [80]
    assert current["period_start"] == "2025-03-01" and current["period_end"] == "2025-04-01"
    updated = service.update_budget("alice", budget["id"], {"limit": "90"})
    assert updated["current"]["thresholds_reached"] == [80, 100]
    assert [b["id"] for b in service.list_budgets("alice")["data"]] == [budget["id"]]
    for bad in (
        {"category": "Food & drink", "limit": "-5"},
        {"category": "Food & drink", "limit": "1.234"},
        {"category": "Food & drink", "period": "daily", "limit": "5"},
        {"category": "x" * 61, "limit": "5"},
        {"category": "Food & drink", "limit": "5", "colour": "red"},
        {"limit": "5"},
    ):
        with pytest.raises(ApiError) as err:
            service.create_budget("alice", bad)
        assert err.value.status == 422, bad
    service.delete_budget("alice", budget["id"])
    assert service.list_budgets("alice")["data"] == []
    assert service.list_budgets("bob")["data"] == []


def test_time_travel_reads_one_snapshot(service: AnalyticsService, settings: Settings) -> None:
    before = service.categories("alice", P.parse_categories(Q1, TODAY))
    extra = ParsedTxn(
        row_number=1, booked_at=before_time(), amount_minor=-5000, currency="GBP",
        narration="PRET A MANGER", account_id="alice-cur", txn_id="a99", category_hint="eating_out",
    )  # fmt: skip
    OfflineLedgerWriter(settings).write(
        transactions_table("alice", [extra], num_buckets=settings.num_buckets, source="test")
    )
    after = service.categories("alice", P.parse_categories(Q1, TODAY))
    assert after["total"]["amount"] == "1487.67"
    assert after["snapshot_version"] > before["snapshot_version"]
    old = service.categories(
        "alice", P.parse_categories({**Q1, "version": str(before["snapshot_version"])}, TODAY)
    )
    assert old["total"]["amount"] == "1437.67"
    with pytest.raises(ApiError) as err:
        service.categories("alice", P.parse_categories({**Q1, "version": "999"}, TODAY))
    assert err.value.code == "unknown_version"


def before_time() -> Any:
    from datetime import UTC, datetime

    return datetime(2025, 3, 18, 12, 0, tzinfo=UTC)


def test_notifications_read_receipts(service: AnalyticsService, settings: Settings) -> None:
    from datetime import UTC, datetime

    import pyarrow as pa

    from scale_ray.ledger.delta import DeltaAppender
    from scale_ray.ledger.keys import user_bucket
    from scale_ray.ledger.schema import NOTIFICATIONS

    row = {
        "user_id": "alice", "user_bucket": user_bucket("alice", settings.num_buckets),
        "notification_id": "ntf_1", "kind": "budget_threshold", "title": "t", "message": "m",
        "data_json": '{"threshold": 80}', "created_at": datetime(2025, 3, 20, tzinfo=UTC),
    }  # fmt: skip
    DeltaAppender(settings, "notifications").append(
        pa.Table.from_pylist([row], schema=NOTIFICATIONS)
    )
    listed = service.list_notifications("alice")
    assert listed["unread"] == 1 and listed["data"][0]["data"] == {"threshold": 80}
    assert service.list_notifications("bob")["data"] == []
    with pytest.raises(ApiError):
        service.mark_read("bob", {"ids": ["ntf_1"]})
    assert service.mark_read("alice", {"ids": ["ntf_1"]}) == {"marked_read": 1, "unread": 0}
    assert service.list_notifications("alice", unread_only=True)["data"] == []
    assert (
        service.overview("alice", P.parse_overview({}, date(2025, 3, 20)))["unread_notifications"]
        == 0
    )
