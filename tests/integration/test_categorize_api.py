"""``POST /v1/categorize`` over real HTTP: gateway → Categorizer deployment → HypCD model.

Also: a rule or correction reaches the categorizer's user memory at once (for that user only),
the replica holds a fifth of the session's one logical GPU, and a model version hot-swaps.
"""

from __future__ import annotations

import shutil
import uuid
from typing import Any

import httpx
import pytest

from deployments.categorizer import parse_user_config
from scale_ray.taxonomy import UNCATEGORIZED, all_paths
from tests.integration.conftest import App

VALID_PATHS = set(all_paths()) | {UNCATEGORIZED}
MERCHANT = "BLUE LANTERN CAFE"


def _categorize(app: App, user: str, descriptions: Any) -> httpx.Response:
    with app.client(user) as c:
        return c.post("/v1/categorize", json={"descriptions": descriptions})


def _one(app: App, user: str, description: str) -> dict[str, Any]:
    r = _categorize(app, user, [description])
    assert r.status_code == 200, r.text
    (result,) = r.json()["results"]
    return result


def _handle() -> Any:
    from ray import serve

    return serve.get_deployment_handle("Categorizer", app_name="scale")


@pytest.fixture(scope="module")
def users() -> dict[str, str]:
    tag = uuid.uuid4().hex[:6]
    return {"alice": f"cat-alice-{tag}", "bob": f"cat-bob-{tag}"}


@pytest.mark.integration
def test_categorize_needs_a_token(app: App) -> None:
    r = httpx.post(f"{app.url}/v1/categorize", json={"descriptions": ["TESCO"]}, timeout=30)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthorized"
    r = httpx.post(
        f"{app.url}/v1/categorize",
        json={"descriptions": ["TESCO"]},
        headers={"Authorization": "Bearer not-a-token"},
        timeout=30,
    )
    assert r.status_code == 401


@pytest.mark.integration
@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"descriptions": []}, "empty"),
        ({"descriptions": ["TESCO"] * 1001}, "at most 1000"),
        ({"descriptions": ["TESCO", 42]}, "descriptions[1] must be a string"),
        ({"descriptions": ["TESCO", None]}, "descriptions[1] must be a string"),
        ({"descriptions": ["TESCO", "   "]}, "descriptions[1] is empty"),
        ({"descriptions": ["x" * 201]}, "descriptions[0] is 201 characters"),
        ({"descriptions": "TESCO"}, "list of strings"),
        ({}, "missing field: descriptions"),
        ({"descriptions": ["TESCO"], "user_id": "bob"}, "unknown field(s): user_id"),
        (["TESCO"], "JSON object"),
    ],
)
def test_categorize_validation_is_400(app: App, body: Any, needle: str) -> None:
    with app.client("validator") as c:
        r = c.post("/v1/categorize", json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "bad_request"
    assert needle in error["message"]


@pytest.mark.integration
def test_categorize_bad_json_is_400(app: App) -> None:
    with app.client("validator") as c:
        r = c.post("/v1/categorize", content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "invalid_json"


@pytest.mark.integration
def test_categorize_answers_one_result_per_description(app: App) -> None:
    descriptions = [
        "TESCO STORES 3251",
        "NETFLIX.COM",
        "SHELL KINGS 587",
        "UBER *TRIP HELP.UBER.COM",
        "TESCO STORES 3251",  # repeats are answered again, in place
        "x" * 200,
    ]
    r = _categorize(app, "categorize-user", descriptions)
    assert r.status_code == 200, r.text
    body = r.json()
    assert isinstance(body["model_version"], str) and body["model_version"]
    results = body["results"]
    assert [x["description"] for x in results] == descriptions
    for x in results:
        assert x["category"] in VALID_PATHS, x
        assert 0.0 <= x["confidence"] <= 1.0
        assert x["source"] == "model"
        assert isinstance(x["known"], bool)
        if x["known"]:
            assert x["category"] == x["candidate"]
            assert x["group"] == x["category"].split("/")[0]
        else:
            assert (x["category"], x["group"]) == (UNCATEGORIZED, UNCATEGORIZED)
            assert x["candidate"] in VALID_PATHS
    assert results[0] == results[4] | {"description": descriptions[0]}
    # The whole limit in one call.
    r = _categorize(app, "categorize-user", [f"SHOP NUMBER {i}" for i in range(1000)])
    assert r.status_code == 200 and len(r.json()["results"]) == 1000


@pytest.mark.integration
def test_a_rule_applies_at_once_for_its_user_only(app: App, users: dict[str, str]) -> None:
    alice, bob = users["alice"], users["bob"]
    assert _one(app, alice, MERCHANT)["source"] == "model"
    with app.client(alice) as c:
        r = c.post("/v1/rules", json={"pattern": MERCHANT.lower(), "category": "Leisure/Hobbies"})
        assert r.status_code == 201, r.text
        rule_id = r.json()["id"]
    mine = _one(app, alice, f"{MERCHANT} 0042")  # the store number is ignored
    assert (mine["category"], mine["source"], mine["confidence"]) == (
        "Leisure/Hobbies",
        "user",
        1.0,
    )
    assert (mine["group"], mine["known"]) == ("Leisure", True)
    theirs = _one(app, bob, MERCHANT)
    assert theirs["source"] == "model"
    # Deleting the rule forgets it.
    with app.client(alice) as c:
        assert c.delete(f"/v1/rules/{rule_id}").status_code == 204
    assert _one(app, alice, MERCHANT)["source"] == "model"


@pytest.mark.integration
def test_a_correction_applies_at_once(app: App, users: dict[str, str]) -> None:
    alice = users["alice"]
    txn = {
        "txn_id": "cat-1", "account_id": "cur", "amount": "-4.20", "currency": "GBP",
        "booked_at": "2025-03-07T08:30:00Z", "narration": "CARD PAYMENT TO FOX AND HOUND PUB",
        "merchant": "FOX AND HOUND PUB",
    }  # fmt: skip
    with app.client(alice) as c:
        r = c.post("/v1/transactions", json={"transactions": [txn]})
        assert r.status_code == 201, r.text
        r = c.put("/v1/transactions/cat-1/category", json={"category": "Leisure/Entertainment"})
        assert r.status_code == 200, r.text
    got = _one(app, alice, "FOX AND HOUND PUB")
    assert (got["category"], got["source"]) == ("Leisure/Entertainment", "user")
    assert _one(app, users["bob"], "FOX AND HOUND PUB")["source"] == "model"
    with app.client(alice) as c:
        assert c.delete("/v1/transactions/cat-1/category").status_code == 200
    assert _one(app, alice, "FOX AND HOUND PUB")["source"] == "model"


@pytest.mark.integration
def test_labels_written_elsewhere_reach_the_replica(app: App, users: dict[str, str]) -> None:
    """Another gateway replica's rule reaches this categorizer replica only through the ledger:
    the replica reloads its user memory when ``user_state`` moves on."""
    import time

    from ray import serve

    alice = users["alice"]
    handle = _handle()
    serving = handle.model_version.remote().result(timeout_s=60)
    analytics = serve.get_deployment_handle("Analytics", app_name="scale")
    handle.reconfigure.remote({"model_version": serving, "memory_refresh_s": 0.5}).result(
        timeout_s=60
    )
    try:
        body = {"pattern": "ledger only grill", "category": "Food & drink/Eating out"}
        ok, *_ = analytics.call.remote("create_rule", alice, body).result(timeout_s=60)
        assert ok == "ok"
        deadline = time.monotonic() + 30
        while _one(app, alice, "LEDGER ONLY GRILL")["source"] != "user":
            assert time.monotonic() < deadline, "the replica never reloaded its user memory"
            time.sleep(0.25)
        assert _one(app, alice, "LEDGER ONLY GRILL")["category"] == "Food & drink/Eating out"
        assert _one(app, users["bob"], "LEDGER ONLY GRILL")["source"] == "model"
    finally:
        handle.reconfigure.remote({"model_version": "live"}).result(timeout_s=60)


@pytest.mark.integration
def test_concurrent_requests_share_batches(app: App) -> None:
    handle = _handle()
    before = handle.stats.remote().result(timeout_s=60)["batches"]
    calls = [
        handle.categorize.remote([f"CORNER SHOP {i}", f"GARAGE {i}"], ["u1", None])
        for i in range(64)
    ]
    results = [call.result(timeout_s=120) for call in calls]
    assert all(len(r) == 2 and r[0]["merchant"] == "corner shop" for r in results)
    after = handle.stats.remote().result(timeout_s=60)["batches"]
    assert after["requests"] - before["requests"] == 64
    assert after["batches"] - before["batches"] < 64  # some requests shared one predict call
    assert after["max_requests_per_batch"] > 1


@pytest.mark.integration
def test_categorizer_replica_holds_a_fifth_of_a_gpu(app: App) -> None:
    import ray
    from ray import serve

    status = serve.status().applications["scale"]
    assert status.deployments["Categorizer"].status == "HEALTHY"
    stats = _handle().stats.remote().result(timeout_s=60)
    assert stats["resources"]["GPU"] == pytest.approx(0.2)
    assert stats["resources"]["CPU"] == pytest.approx(0.5)
    assert stats["model_version"] == _handle().model_version.remote().result(timeout_s=60)
    assert stats["batches"]["batches"] >= 1
    # Nothing else in the app asks for a GPU: the cluster's one logical GPU is 0.2 in use.
    used = ray.cluster_resources()["GPU"] - ray.available_resources().get("GPU", 0.0)
    assert used == pytest.approx(0.2)


@pytest.mark.integration
def test_model_version_hot_swaps_and_keeps_user_memory(app: App, users: dict[str, str]) -> None:
    from scale_ray.models.registry import ModelRegistry

    alice = users["alice"]
    registry = ModelRegistry.from_settings(app.settings)
    handle = _handle()
    serving = handle.model_version.remote().result(timeout_s=60)
    source = registry.path("categorizer", serving)

    def copy(folder: Any) -> None:
        for item in source.iterdir():
            if item.name != "metadata.json":
                shutil.copy(item, folder / item.name)

    copied = registry.publish("categorizer", copy, {"note": "test copy"})
    try:
        with app.client(alice) as c:
            r = c.post("/v1/rules", json={"pattern": "hot swap deli", "category": "Shopping"})
            assert r.status_code in (200, 201), r.text
        handle.reconfigure.remote({"model_version": copied}).result(timeout_s=120)
        r = _categorize(app, alice, ["HOT SWAP DELI", "TESCO STORES 3251"])
        body = r.json()
        assert body["model_version"] == copied
        assert body["results"][0]["source"] == "user"  # user memory moved to the new version
        # A version that does not exist fails the reconfigure and keeps the model serving.
        with pytest.raises(Exception, match="no version"):
            handle.reconfigure.remote({"model_version": "19990101T000000000000Z"}).result(
                timeout_s=60
            )
        assert handle.model_version.remote().result(timeout_s=60) == copied
        assert _categorize(app, alice, ["TESCO"]).status_code == 200
    finally:
        shutil.rmtree(registry.path("categorizer", copied), ignore_errors=True)
        handle.reconfigure.remote({"model_version": "live"}).result(timeout_s=120)
    assert _categorize(app, alice, ["TESCO"]).json()["model_version"] == serving


def test_user_config_is_checked() -> None:
    assert parse_user_config(None) == ("live", 30.0)
    assert parse_user_config({"model_version": " latest "}) == ("latest", 30.0)
    assert parse_user_config({"memory_refresh_s": 0}) == ("live", 0.0)
    for bad in (
        {"model_version": ""},
        {"model_version": 3},
        {"memory_refresh_s": -1},
        {"memory_refresh_s": True},
        {"other": 1},
        ["live"],
    ):
        with pytest.raises(ValueError):
            parse_user_config(bad)
