"""``GET /v1/forecast`` over real HTTP on the session's app: the ``Forecaster`` deployment on a
real local Ray, histories posted through the API, a tiny real TFT published to the registry.

Order matters in this module: the first test sees no published forecaster (503), the
``published`` fixture then publishes one and the replica picks it up by itself.
"""

from __future__ import annotations

import shutil
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from deployments.forecaster import parse_user_config
from scale_ray.ledger.keys import user_bucket
from scale_ray.models.forecast.tft import MODEL_NAME, publish_forecaster
from scale_ray.models.registry import ModelRegistry
from tests.models.forecast.tiny import tiny_model

from .conftest import App

pytestmark = pytest.mark.integration

END = date(2025, 6, 30)


def _error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] and body["error"]["message"]
    return body["error"]


def _history(days: int, scale: int) -> list[dict[str, Any]]:
    """``days`` days up to :data:`END`: pay on the 25th, rent on the 1st, groceries every
    third day, coffee on weekdays; amounts times ``scale``."""
    rows = []
    for back in range(days - 1, -1, -1):
        day = END - timedelta(days=back)

        def add(kind: str, amount: int, narration: str, hour: int, day: date = day) -> None:
            at = datetime(day.year, day.month, day.day, hour, tzinfo=UTC)
            rows.append(
                {
                    "txn_id": f"{kind}-{day.isoformat()}",
                    "amount_minor": amount * scale,
                    "currency": "GBP",
                    "booked_at": at.isoformat(),
                    "narration": narration,
                }
            )

        if day.day == 25:
            add("pay", 250_000, "ACME LTD PAYROLL", 6)
        if day.day == 1:
            add("rent", -95_000, "LANDLORD RENT", 8)
        if back % 3 == 0:
            add("food", -(4_000 + 731 * (back % 5)), "TESCO STORES", 18)
        if day.weekday() < 5:
            add("coffee", -350, "PRET A MANGER", 8)
    return rows


def _post(app: App, user: str, rows: list[dict[str, Any]]) -> None:
    with app.client(user) as c:
        r = c.post("/v1/transactions", json={"transactions": rows})
        assert r.status_code == 201, r.text


@pytest.fixture(scope="module")
def people(app: App) -> dict[str, Any]:
    """Alice and Bob (150 days, in different buckets) and a newcomer with 20 days."""
    tag = uuid.uuid4().hex[:6]
    alice = f"fc-alice-{tag}"
    buckets = app.settings.num_buckets
    bob = next(
        f"fc-bob-{tag}-{i}" for i in range(100)
        if user_bucket(f"fc-bob-{tag}-{i}", buckets) != user_bucket(alice, buckets)
    )  # fmt: skip
    newbie = f"fc-new-{tag}"
    histories = {alice: _history(150, 1), bob: _history(150, 3), newbie: _history(20, 1)}
    for user, rows in histories.items():
        _post(app, user, rows)
    return {"alice": alice, "bob": bob, "newbie": newbie, "histories": histories}


def _get(app: App, user: str, deadline_s: float = 90, **params: Any) -> httpx.Response:
    """GET /v1/forecast, waiting while the replica has not loaded a model yet (503)."""
    stop = time.monotonic() + deadline_s
    with app.client(user) as c:
        while True:
            r = c.get("/v1/forecast", params=params)
            if r.status_code != 503 or time.monotonic() > stop:
                return r
            time.sleep(0.5)


@pytest.fixture(scope="module")
def published(app: App, people: dict[str, Any]) -> str:
    """A tiny forecaster published to the app's registry (the replica loads it by itself)."""
    registry = ModelRegistry.from_settings(app.settings)
    live = registry.live(MODEL_NAME)
    if live is None:
        live = publish_forecaster(registry, tiny_model(), {"trained_by": "integration test"})
    assert _get(app, people["alice"]).status_code == 200
    return live


def _handle() -> Any:
    from ray import serve

    return serve.get_deployment_handle("Forecaster", app_name="scale")


def test_503_until_a_model_is_published(app: App, people: dict[str, Any]) -> None:
    registry = ModelRegistry.from_settings(app.settings)
    if registry.latest(MODEL_NAME) is not None:
        pytest.skip("a forecaster is already published in this session")
    with app.client(people["alice"]) as c:
        r = c.get("/v1/forecast")
    assert r.status_code == 503
    assert _error(r)["code"] == "forecaster_unavailable"


def test_forecast_shape(app: App, people: dict[str, Any], published: str) -> None:
    r = _get(app, people["alice"], threshold="500.00")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["user_id"] == people["alice"] and body["currency"] == "GBP"
    assert body["model_version"] == published and body["as_of"] == END.isoformat()
    assert body["horizon"] == 30 == len(body["days"])
    assert body["days"][0]["date"] == (END + timedelta(days=1)).isoformat()
    for day in body["days"]:
        for flow in ("spend", "income", "balance"):
            q = [Decimal(day[flow][k]) for k in ("p10", "p50", "p90")]
            assert q == sorted(q)
    balance = body["balance"]
    assert set(balance) >= {"start", "prob_below_zero", "prob_below_threshold", "threshold"}
    assert balance["threshold"] == "500.00" and "first_low_date" in balance
    assert isinstance(body["warnings"], list)
    assert body["explanation"]["summary"] and body["explanation"]["sentences"]
    assert isinstance(body["explanation"]["weights"], dict)
    week = _get(app, people["alice"], horizon=7, threshold_minor=50_000).json()
    assert week["horizon"] == 7 and len(week["days"]) == 7
    assert week["balance"]["threshold"] == "500.00"


def test_auth_and_bad_input(app: App, people: dict[str, Any], published: str) -> None:
    assert httpx.get(app.url + "/v1/forecast").status_code == 401
    forged = httpx.get(app.url + "/v1/forecast", headers={"Authorization": "Bearer x.y.z"})
    assert forged.status_code == 401 and _error(forged)["code"] == "unauthorized"
    with app.client(people["alice"]) as c:
        for params, needle in (
            ({"user_id": people["bob"]}, "user_id"),
            ({"threshold": "abc"}, "threshold"),
            ({"threshold": "1", "threshold_minor": "100"}, "threshold"),
            ({"horizon": "0"}, "horizon"),
            ({"horizon": "soon"}, "horizon"),
            ({"horizon": "31"}, "horizon"),  # beyond the model's 30 days
        ):
            r = c.get("/v1/forecast", params=params)
            assert r.status_code == 400, (params, r.text)
            assert needle in _error(r)["message"], params
        r = c.get("/v1/forecast", params={"threshold": "10.001"})  # GBP has 2 decimals
        assert r.status_code == 400 and "decimals" in _error(r)["message"]


def test_too_little_history_is_422(app: App, people: dict[str, Any], published: str) -> None:
    r = _get(app, people["newbie"])
    assert r.status_code == 422
    error = _error(r)
    assert error["code"] == "insufficient_history"
    assert error["details"]["history_days"] == 20
    assert error["details"]["required_days"] >= 60


def test_each_user_sees_only_their_own(app: App, people: dict[str, Any], published: str) -> None:
    bodies = {who: _get(app, people[who]).json() for who in ("alice", "bob")}
    for who, body in bodies.items():
        user = people[who]
        assert body["user_id"] == user
        # The forecast starts from this user's own balance: the sum of their amounts.
        own = sum(r["amount_minor"] for r in people["histories"][user])
        assert Decimal(body["balance"]["start"]) == Decimal(own) / 100
    assert bodies["alice"]["balance"]["start"] != bodies["bob"]["balance"]["start"]


def test_cached_until_the_users_ledger_changes(
    app: App, people: dict[str, Any], published: str
) -> None:
    alice, bob = people["alice"], people["bob"]
    first, again = _get(app, alice).json(), _get(app, alice).json()
    assert again["generated_at"] == first["generated_at"]
    bob_before = _get(app, bob).json()
    # Alice spends on a new day: her forecast moves on, Bob's (another bucket) stays cached.
    late = {
        "txn_id": "late-1", "amount_minor": -12_345, "currency": "GBP",
        "booked_at": "2025-07-02T12:00:00+00:00", "narration": "JOHN LEWIS",
    }  # fmt: skip
    _post(app, alice, [late])
    moved = _get(app, alice).json()
    assert moved["generated_at"] != first["generated_at"]
    assert moved["ledger_version"] > first["ledger_version"]
    assert moved["as_of"] == "2025-07-02"
    assert Decimal(moved["balance"]["start"]) == Decimal(first["balance"]["start"]) - Decimal(
        "123.45"
    )
    bob_after = _get(app, bob).json()
    assert bob_after["generated_at"] == bob_before["generated_at"]
    stats = _handle().stats.remote().result(timeout_s=60)
    assert stats["model_version"] == published
    assert stats["prediction_cache"]["hits"] >= 1 and stats["answer_cache"]["hits"] >= 1
    # The decorator asks for no GPU (serve_config.yaml's 0.4 applies under `scale-ray up`).
    assert "GPU" not in stats["resources"] and stats["device"] == "cpu"


def test_model_version_hot_swaps(app: App, people: dict[str, Any], published: str) -> None:
    registry = ModelRegistry.from_settings(app.settings)
    handle = _handle()
    source = registry.path(MODEL_NAME, published)

    def copy(folder: Any) -> None:
        for item in source.iterdir():
            if item.name != "metadata.json":
                shutil.copy(item, folder / item.name)

    copied = registry.publish(MODEL_NAME, copy, {"note": "test copy"})
    try:
        handle.reconfigure.remote({"model_version": copied}).result(timeout_s=120)
        body = _get(app, people["alice"]).json()
        assert body["model_version"] == copied  # a new model version is a new cache key
        # A version that does not exist fails the reconfigure and keeps the model serving.
        with pytest.raises(Exception, match="no version"):
            handle.reconfigure.remote({"model_version": "19990101T000000000000Z"}).result(
                timeout_s=60
            )
        assert handle.model_version.remote().result(timeout_s=60) == copied
        assert _get(app, people["alice"]).status_code == 200
    finally:
        handle.reconfigure.remote({"model_version": published}).result(timeout_s=120)
        shutil.rmtree(registry.path(MODEL_NAME, copied), ignore_errors=True)
    assert _get(app, people["alice"]).json()["model_version"] == published


def test_user_config_is_checked() -> None:
    assert parse_user_config(None) == "live"
    assert parse_user_config({"model_version": " latest "}) == "latest"
    for bad in ({"model_version": ""}, {"model_version": 3}, {"other": 1}, ["live"]):
        with pytest.raises(ValueError):
            parse_user_config(bad)
