"""The HTTP API over real loopback HTTP, Serve, LedgerWriter actors and Delta tables."""

from __future__ import annotations

import threading
import time

import jwt
import pytest

from scale_ray.auth import mint_token

from .conftest import App

pytestmark = pytest.mark.integration


def _txn(i: int, **kw: object) -> dict[str, object]:
    item: dict[str, object] = {
        "txn_id": f"g{i}",
        "account_id": "cur-1",
        "amount": f"-{i}.25",
        "currency": "GBP",
        "booked_at": f"2024-02-{1 + i % 28:02d}T1{i % 10}:00:00Z",
        "narration": f"CARD PAYMENT TO SHOP {i}",
    }
    item.update(kw)
    return item


def _error(response) -> dict:  # type: ignore[no-untyped-def]
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] and body["error"]["message"]
    return body["error"]


def test_health_and_openapi_describe_every_route(app: App) -> None:
    with app.client() as c:
        assert c.get("/healthz").json()["status"] == "ok"
        spec = c.get("/openapi.json").json()
    paths = spec["paths"]
    for path, method in [
        ("/healthz", "get"), ("/openapi.json", "get"), ("/v1/transactions", "post"),
        ("/v1/transactions", "get"), ("/v1/transactions/{txn_id}", "get"),
        ("/v1/accounts", "get"), ("/v1/accounts", "post"), ("/v1/imports", "post"),
        ("/v1/imports/{job_id}", "get"),
    ]:  # fmt: skip
        assert method in paths[path], (path, method)
        assert paths[path][method]["responses"]


def test_post_is_idempotent_and_reads_back(app: App) -> None:
    with app.client("idem") as c:
        batch = {"transactions": [_txn(i) for i in range(30)]}
        first = c.post("/v1/transactions", json=batch)
        assert first.status_code == 201, first.text
        assert first.json()["written"] == 30
        again = c.post("/v1/transactions", json=batch)
        assert (again.json()["written"], again.json()["duplicates"]) == (0, 30)
        listed = c.get("/v1/transactions", params={"limit": 1000}).json()
        assert len(listed["data"]) == 30
        one = c.get("/v1/transactions/g7").json()
        assert one["amount"] == "-7.25" and one["amount_minor"] == -725
        (acc,) = c.get("/v1/accounts").json()["data"]
        assert acc["balance_minor"] == -sum(i * 100 + 25 for i in range(30))


def test_filters(app: App) -> None:
    with app.client("filters") as c:
        c.post("/v1/transactions", json={"transactions": [_txn(i) for i in range(20)]})
        got = c.get("/v1/transactions", params={"q": "shop 1", "max_amount": "-10.00"}).json()
        assert {r["txn_id"] for r in got["data"]} == {f"g{i}" for i in range(10, 20)}
        got = c.get(
            "/v1/transactions",
            params={"from": "2024-02-05", "to": "2024-02-07", "account_id": "cur-1"},
        ).json()
        assert {r["txn_id"] for r in got["data"]} == {"g4", "g5"}


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"limit": "0"}, "bad_request"),
        ({"limit": "many"}, "bad_request"),
        ({"from": "yesterday"}, "bad_request"),
        ({"cursor": "!!!"}, "invalid_cursor"),
        ({"version": "999999"}, "unknown_version"),
        ({"min_amount": "1.234", "currency": "GBP"}, "bad_request"),
        ({"colour": "red"}, "bad_request"),
    ],
)
def test_bad_query_parameters_are_400(app: App, params: dict[str, str], code: str) -> None:
    with app.client() as c:
        response = c.get("/v1/transactions", params=params)
    assert response.status_code == 400
    assert _error(response)["code"] == code


def test_invalid_batch_is_422_and_writes_nothing(app: App) -> None:
    with app.client("invalid") as c:
        bad = {"transactions": [_txn(1), _txn(2, amount="12.345"), _txn(3, booked_at="soon")]}
        response = c.post("/v1/transactions", json=bad)
        assert response.status_code == 422
        assert [e["index"] for e in _error(response)["details"]["errors"]] == [1, 2]
        assert c.get("/v1/transactions").json()["data"] == []
        assert c.post("/v1/transactions", content=b"{oops").status_code == 400
        too_many = {"transactions": [_txn(i) for i in range(10_001)]}
        assert c.post("/v1/transactions", json=too_many).status_code == 413


def test_auth_missing_forged_expired(app: App) -> None:
    import httpx

    s = app.settings
    expired = mint_token(s, "alice", ttl_s=1, now=time.time() - 100)
    now = int(time.time())
    claims = {
        "sub": "alice",
        "iss": s.auth_issuer,
        "aud": s.auth_audience,
        "iat": now,
        "exp": now + 60,
    }
    forged = jwt.encode(claims, "guess", "HS256")
    headers_list = [
        {},
        {"Authorization": f"Bearer {expired}"},
        {"Authorization": f"Bearer {forged}"},
        {"Authorization": "Basic YWxpY2U6cHc="},
    ]
    for headers in headers_list:
        for method, path in (
            ("GET", "/v1/transactions"),
            ("GET", "/v1/accounts"),
            ("POST", "/v1/transactions"),
        ):
            r = httpx.request(
                method, app.url + path, headers=headers, json={"transactions": [_txn(1)]}
            )
            assert r.status_code == 401, (headers, path)
            assert _error(r)["code"] == "unauthorized"


def test_other_users_data_is_unreachable(app: App) -> None:
    with app.client("owner") as owner, app.client("intruder") as intruder:
        owner.post("/v1/transactions", json={"transactions": [_txn(1, txn_id="secret-1")]})
        assert owner.get("/v1/transactions/secret-1").status_code == 200
        r = intruder.get("/v1/transactions/secret-1")
        assert r.status_code == 404 and _error(r)["code"] == "not_found"
        assert intruder.get("/v1/transactions", params={"q": "shop"}).json()["data"] == []
        assert intruder.get("/v1/accounts").json()["data"] == []
        # The same txn_id posted by another user is that user's own transaction.
        assert (
            intruder.post(
                "/v1/transactions", json={"transactions": [_txn(1, txn_id="secret-1")]}
            ).json()["written"]
            == 1
        )


def test_pagination_stable_under_concurrent_inserts(app: App) -> None:
    with app.client("pager") as c:
        c.post(
            "/v1/transactions",
            json={"transactions": [_txn(i, txn_id=f"p{i:03d}") for i in range(120)]},
        )
        stop = threading.Event()

        def insert() -> None:
            with app.client("pager") as w:
                k = 0
                while not stop.is_set() and k < 200:
                    w.post("/v1/transactions", json={"transactions": [_txn(k, txn_id=f"live{k}")]})
                    k += 1

        writer = threading.Thread(target=insert)
        writer.start()
        try:
            seen: list[str] = []
            page = c.get("/v1/transactions", params={"limit": 25}).json()
            version = page["snapshot_version"]
            seen += [r["txn_id"] for r in page["data"]]
            while page["next_cursor"]:
                time.sleep(0.05)
                page = c.get(
                    "/v1/transactions", params={"limit": 25, "cursor": page["next_cursor"]}
                ).json()
                assert page["snapshot_version"] == version
                seen += [r["txn_id"] for r in page["data"]]
        finally:
            stop.set()
            writer.join()
        assert len(seen) == len(set(seen))
        assert {t for t in seen if t.startswith("p")} == {f"p{i:03d}" for i in range(120)}


def test_accounts_link_and_mask(app: App) -> None:
    with app.client("linker") as c:
        account = {
            "account_id": "sav-1",
            "currency": "INR",
            "number": "0012345678901",
            "institution": "HDFC",
            "opening_balance": "1000.00",
        }
        r = c.post("/v1/accounts", json=account)
        assert r.status_code == 201 and r.json()["created"] is True
        assert (
            c.post("/v1/accounts", json={"account_id": "sav-1", "currency": "INR"}).json()[
                "created"
            ]
            is False
        )
        (acc,) = c.get("/v1/accounts").json()["data"]
        assert acc["masked_number"].endswith("8901") and "12345678" not in acc["masked_number"]
        assert acc["balance"] == "1000.00"
        assert c.post("/v1/accounts", json={"currency": "INR"}).status_code == 422


def test_cors_preflight(app: App) -> None:
    import httpx

    origin = app.settings.cors_origins[0]
    r = httpx.options(app.url + "/v1/transactions", headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})  # fmt: skip
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == origin
    r = httpx.options(app.url + "/v1/transactions", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})  # fmt: skip
    assert "access-control-allow-origin" not in r.headers
