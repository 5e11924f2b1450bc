"""The analytics routes over real HTTP: gateway → Analytics deployment → Delta snapshots."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.analytics.ledger_fixture import ALICE, BOB
from tests.integration.conftest import App

pytestmark = pytest.mark.integration
Q1 = {"from": "2025-01-01", "to": "2025-04-01"}


def _post_ledger(app: App, user: str, spec: list[tuple], opening: str) -> None:
    with app.client(user) as c:
        for acc in ("cur", "card"):
            r = c.post(
                "/v1/accounts",
                json={
                    "account_id": f"{user}-{acc}", "currency": "GBP",
                    "opening_balance": opening if acc == "cur" else "0",
                },
            )  # fmt: skip
            assert r.status_code == 201, r.text
        body = {
            "transactions": [
                {
                    "txn_id": txn_id, "account_id": f"{user}-{acc}", "amount_minor": amount,
                    "currency": "GBP", "booked_at": ts + "Z", "narration": narration,
                    **({"category_hint": hint} if hint else {}),
                }
                for txn_id, acc, ts, amount, narration, hint in spec
            ]
        }  # fmt: skip
        r = c.post("/v1/transactions", json=body)
        assert r.status_code == 201, r.text


@pytest.fixture(scope="module")
def users(app: App) -> dict[str, str]:
    tag = uuid.uuid4().hex[:6]
    alice, bob = f"alice-{tag}", f"bob-{tag}"
    _post_ledger(app, alice, ALICE, "1000.00")
    _post_ledger(app, bob, BOB, "0")
    return {"alice": alice, "bob": bob}


def _get(app: App, user: str, path: str, **params: Any) -> Any:
    with app.client(user) as c:
        return c.get(path, params=params)


def test_categories_and_drill_down_over_http(app: App, users: dict[str, str]) -> None:
    r = _get(app, users["alice"], "/v1/analytics/categories", **Q1)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["total"]["amount"] == "1437.67"
    assert {c["path"]: c["amount"] for c in body["categories"]}["Food & drink"] == "262.70"
    r = _get(app, users["alice"], "/v1/analytics/categories", parent="Food & drink", **Q1)
    assert [c["amount"] for c in r.json()["categories"]] == ["215.20", "47.50"]


def test_every_endpoint_answers(app: App, users: dict[str, str]) -> None:
    alice = users["alice"]
    for path, params in [
        ("/v1/overview", {"month": "2025-03"}),
        ("/v1/analytics/heatmap", Q1),
        ("/v1/analytics/merchants", {**Q1, "by": "count"}),
        ("/v1/analytics/cashflow", {"from": "2025-01-01", "to": "2025-03-31"}),
        ("/v1/recurring", {"include_inactive": "true"}),
        ("/v1/categories", {}),
        ("/v1/rules", {}),
        ("/v1/budgets", {}),
        ("/v1/notifications", {"unread": "true"}),
    ]:
        r = _get(app, alice, path, **params)
        assert r.status_code == 200, (path, r.text)
    cash = _get(app, alice, "/v1/analytics/cashflow", from_="x")
    assert cash.status_code == 400
    months = _get(
        app, alice, "/v1/analytics/cashflow", **{"from": "2025-01-01", "to": "2025-03-31"}
    )
    assert months.json()["months"][-1]["closing_balance"]["amount"] == "6962.33"
    overview = _get(app, alice, "/v1/overview", month="2025-03").json()
    assert overview["this_month"]["spend"]["amount"] == "249.99"
    assert {a["account_id"] for a in overview["accounts"]} == {f"{alice}-cur", f"{alice}-card"}


def test_compare_food_on_fridays(app: App, users: dict[str, str]) -> None:
    with app.client(users["alice"]) as c:
        r = c.get(
            "/v1/analytics/compare",
            params=[
                ("measure", "average_per_period"), ("per", "day"), ("category", "Food & drink"),
                ("weekday", "fri"), ("from", "2025-01-01"), ("to", "2025-04-01"),
            ],
        )  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.json()["rows"][0]["value"]["amount"] == "10.58"


@pytest.mark.parametrize(
    ("path", "param"),
    [
        ("/v1/analytics/categories", "parent"),
        ("/v1/analytics/heatmap", "category"),
        ("/v1/analytics/merchants", "category"),
        ("/v1/analytics/compare", "merchant"),
        ("/v1/analytics/compare", "group_by"),
        ("/v1/analytics/compare", "account_id"),
        ("/v1/analytics/cashflow", "from"),
        ("/v1/overview", "month"),
    ],
)
def test_sql_injection_is_400_over_http(
    app: App, users: dict[str, str], path: str, param: str
) -> None:
    for payload in ("' OR '1'='1", "x'; DROP TABLE transactions; --"):
        r = _get(app, users["alice"], path, **{param: payload})
        assert r.status_code == 400, (path, param, r.text)
        assert r.json()["error"]["message"]


def test_tenants_cannot_see_or_touch_each_other(app: App, users: dict[str, str]) -> None:
    alice, bob = users["alice"], users["bob"]
    bob_cats = _get(app, bob, "/v1/analytics/categories", **Q1).json()
    assert bob_cats["total"]["amount"] == "999.00"
    alice_merchants = _get(app, alice, "/v1/analytics/merchants", **Q1).json()["merchants"]
    assert all(m["amount"] != "999.00" for m in alice_merchants)
    with app.client(bob) as c:
        assert (
            c.put("/v1/transactions/a17/category", json={"category": "Leisure"}).status_code == 404
        )
        assert c.get("/v1/transactions/a17/category").status_code == 404


def test_rules_corrections_and_budgets_over_http(app: App, users: dict[str, str]) -> None:
    alice = users["alice"]
    with app.client(alice) as c:
        r = c.post(
            "/v1/rules", json={"pattern": "corner shop", "category": "Food & drink/Groceries"}
        )
        assert r.status_code == 201, r.text
        rule_id = r.json()["id"]
        assert c.post("/v1/rules", json={"pattern": "x", "category": "Food"}).status_code == 422
        assert c.post("/v1/rules", content=b"{not json").status_code in (400, 422)
        cats = c.get("/v1/analytics/categories", params=Q1).json()["categories"]
        assert "Uncategorized" not in {x["path"] for x in cats}
        r = c.put("/v1/transactions/a17/category", json={"category": "Leisure/Hobbies"})
        assert r.json() == {
            "txn_id": "a17",
            "category": "Leisure/Hobbies",
            "category_source": "correction",
        }
        r = c.post("/v1/budgets", json={"category": "Leisure", "period": "yearly", "limit": "100"})
        assert r.status_code == 201, r.text
        budget = r.json()
        assert budget["current"]["period_start"].endswith("-01-01")
        assert (
            c.put(f"/v1/budgets/{budget['id']}", json={"limit": "150.00"}).json()["limit"]
            == "150.00"
        )
        assert c.delete(f"/v1/budgets/{budget['id']}").status_code == 204
        assert c.get(f"/v1/budgets/{budget['id']}").status_code == 404
        assert c.delete(f"/v1/rules/{rule_id}").status_code == 204
        assert c.delete("/v1/transactions/a17/category").json()["category"] == "Shopping/General"
    with app.client(users["bob"]) as c:
        assert c.get("/v1/rules").json()["data"] == []


def test_transaction_listing_carries_categories(app: App, users: dict[str, str]) -> None:
    with app.client(users["alice"]) as c:
        page = c.get("/v1/transactions", params={"limit": 100}).json()["data"]
        by_id = {t["txn_id"]: t for t in page}
        assert by_id["a02"]["category"] == "Food & drink/Groceries"
        assert by_id["a02"]["category_source"] == "source"
        assert by_id["a16"]["category"] == "Uncategorized"
        c.put("/v1/transactions/a16/category", json={"category": "Food & drink/Coffee"})
        one = c.get("/v1/transactions/a16").json()
        assert (one["category"], one["category_source"]) == ("Food & drink/Coffee", "correction")
        c.delete("/v1/transactions/a16/category")


def test_openapi_lists_analytics_routes(app: App) -> None:
    with app.client() as c:
        paths = c.get("/openapi.json").json()["paths"]
    for path in (
        "/v1/overview",
        "/v1/analytics/compare",
        "/v1/budgets",
        "/v1/rules",
        "/v1/recurring",
    ):
        assert path in paths


def test_budget_notifications_exactly_once_and_streamed(app: App) -> None:
    """Real gateway, Analytics deployment and budget-monitor actor; SSE over loopback."""
    import json
    import threading
    import time
    from datetime import UTC, datetime

    user = f"carol-{uuid.uuid4().hex[:6]}"
    now = datetime.now(UTC).replace(microsecond=0)

    def spend(txn_id: str, minor: int) -> None:
        with app.client(user) as c:
            r = c.post(
                "/v1/transactions",
                json={"transactions": [{
                    "txn_id": txn_id, "amount_minor": -minor, "currency": "GBP",
                    "booked_at": now.isoformat().replace("+00:00", "Z"),
                    "narration": "TESCO STORES 1", "category_hint": "groceries",
                }]},
            )  # fmt: skip
            assert r.status_code == 201, r.text

    def notifications() -> list[dict[str, Any]]:
        with app.client(user) as c:
            return c.get("/v1/notifications").json()["data"]

    def wait_for(n: int) -> list[dict[str, Any]]:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = notifications()
            if len(found) >= n:
                return found
            time.sleep(0.3)
        raise AssertionError(f"expected {n} notifications, got {notifications()}")

    spend("c1", 5000)
    with app.client(user) as c:
        r = c.post("/v1/budgets", json={"category": "Food & drink", "limit": "100.00"})
        assert r.status_code == 201, r.text
        assert r.json()["current"]["percent"] == 50.0
    spend("c2", 3500)  # 85 %
    (first,) = wait_for(1)
    assert first["data"]["threshold"] == 80 and first["read"] is False

    events: list[dict[str, Any]] = []
    token = app.client(user).headers["Authorization"].split()[1]

    def listen() -> None:
        import httpx

        url = f"{app.url}/v1/notifications/stream"
        params = {"access_token": token, "last_event_id": first["id"]}
        with httpx.stream("GET", url, params=params, timeout=60) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if line.startswith("data: "):
                    events.append(json.loads(line[6:]))
                    return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    time.sleep(1.0)
    spend("c3", 2000)  # 105 %
    found = wait_for(2)
    listener.join(timeout=30)
    assert [e["data"]["threshold"] for e in events] == [100]
    spend("c4", 100)
    time.sleep(2.0)  # the monitor polls every 0.5 s: nothing new may appear
    assert sorted(n["data"]["threshold"] for n in notifications()) == [80, 100]
    assert len({n["id"] for n in found}) == 2
    with app.client(user) as c:
        assert c.post("/v1/notifications/read", json={"all": True}).json()["unread"] == 0
    with app.client("somebody-else") as c:
        assert c.get("/v1/notifications").json()["data"] == []
