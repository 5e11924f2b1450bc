"""Flags over real HTTP, and the anomaly-monitor actor killed mid-stream on a real local Ray."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pytest
import ray
from deltalake import DeltaTable

from scale_ray.demo.generator import generate_tenants
from scale_ray.ingest.records import ParsedTxn
from scale_ray.ledger.delta import open_table
from scale_ray.ledger.offline import OfflineLedgerWriter
from scale_ray.ledger.rows import transactions_table
from scale_ray.models.anomaly.features import build_features
from scale_ray.models.anomaly.flags import FlagStore, flag_id
from scale_ray.models.anomaly.model import AnomalyModel, AnomalyResult
from scale_ray.models.anomaly.monitor import notification_id
from scale_ray.models.anomaly.monitor_actor import MONITOR_NAME, ensure_anomaly_monitor
from scale_ray.models.anomaly.serving import publish_anomaly_model
from scale_ray.models.registry import ModelRegistry
from scale_ray.settings import Settings

from .conftest import App

pytestmark = pytest.mark.integration


def _error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] and body["error"]["message"]
    return body["error"]


@pytest.fixture(scope="module")
def flagged(app: App) -> dict[str, Any]:
    """Two users' transactions posted over HTTP; flags raised on three of ann's, one of ben's."""
    tag = uuid.uuid4().hex[:6]
    ann, ben = f"ann-{tag}", f"ben-{tag}"
    for user, n in ((ann, 4), (ben, 1)):
        body = {
            "transactions": [
                {
                    "txn_id": f"f{i}", "amount_minor": -(1000 + i), "currency": "GBP",
                    "booked_at": f"2025-03-0{i + 1}T10:00:00Z", "narration": f"SHOP {i}",
                }
                for i in range(n)
            ]
        }  # fmt: skip
        with app.client(user) as c:
            r = c.post("/v1/transactions", json=body)
            assert r.status_code == 201, r.text
    store = FlagStore(app.settings)
    for txn in ("f0", "f1", "f2"):  # three commits: three distinct created_at
        store.record([_result(ann, txn)], "v-test")
    store.record([_result(ben, "f0")], "v-test")
    return {"ann": ann, "ben": ben}


def _result(user: str, txn: str) -> AnomalyResult:
    return AnomalyResult(user, txn, 0.75, 0.6, True, "new", f"Unusual {txn}", [])


def test_list_get_and_resolve_flags_over_http(app: App, flagged: dict[str, Any]) -> None:
    ann = flagged["ann"]
    with app.client(ann) as c:
        r = c.get("/v1/flags")
        assert r.status_code == 200, r.text
        body = r.json()
        assert [f["txn_id"] for f in body["flags"]] == ["f2", "f1", "f0"]
        assert body["next_cursor"] is None
        first = body["flags"][0]
        assert first["flag_id"] == flag_id("f2") and first["status"] == "open"
        assert first["reason"] == "Unusual f2" and first["model_version"] == "v-test"
        assert first["resolved_at"] is None and first["created_at"].endswith("Z")
        assert first["transaction"]["txn_id"] == "f2"
        assert first["transaction"]["amount"] == "-10.02"

        # Pages of one, following next_cursor.
        seen, params = [], {"limit": "1"}
        while True:
            page = c.get("/v1/flags", params=params).json()
            seen += [f["txn_id"] for f in page["flags"]]
            if page["next_cursor"] is None:
                break
            params = {"limit": "1", "cursor": page["next_cursor"]}
        assert seen == ["f2", "f1", "f0"]

        one = c.get(f"/v1/flags/{flag_id('f1')}")
        assert one.status_code == 200 and one.json()["txn_id"] == "f1"

        r = c.post(f"/v1/flags/{flag_id('f1')}", json={"resolution": "legitimate"})
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "legitimate" and r.json()["resolved_at"]
        assert r.json()["transaction"]["txn_id"] == "f1"
        open_ids = [f["txn_id"] for f in c.get("/v1/flags").json()["flags"]]
        assert open_ids == ["f2", "f0"]
        legit = c.get("/v1/flags", params={"status": "legitimate"}).json()["flags"]
        assert [f["txn_id"] for f in legit] == ["f1"]
        # Resolving again replaces the verdict.
        r = c.post(f"/v1/flags/{flag_id('f1')}", json={"resolution": "fraud"})
        assert r.json()["status"] == "fraud"
        assert c.get(f"/v1/flags/{flag_id('f1')}").json()["status"] == "fraud"
        assert len(c.get("/v1/flags", params={"status": "all"}).json()["flags"]) == 3


def test_other_users_flags_are_not_found(app: App, flagged: dict[str, Any]) -> None:
    ben = flagged["ben"]
    with app.client(ben) as c:
        assert [f["txn_id"] for f in c.get("/v1/flags").json()["flags"]] == ["f0"]
        # ann's f2 flag: the id exists, but not for ben.
        r = c.get(f"/v1/flags/{flag_id('f2')}")
        assert r.status_code == 404 and _error(r)["code"] == "not_found"
        r = c.post(f"/v1/flags/{flag_id('f2')}", json={"resolution": "fraud"})
        assert r.status_code == 404
        assert c.get("/v1/flags/nope").status_code == 404
    with app.client(flagged["ann"]) as c:
        assert c.get(f"/v1/flags/{flag_id('f2')}").json()["status"] == "open"


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"status": "dismissed"}, 400),
        ({"limit": "0"}, 400),
        ({"limit": "201"}, 400),
        ({"limit": "x"}, 400),
        ({"cursor": "garbage"}, 400),
        ({"user_id": "someone"}, 400),
    ],
)
def test_bad_list_queries_are_400(
    app: App, flagged: dict[str, Any], params: dict[str, str], code: int
) -> None:
    with app.client(flagged["ann"]) as c:
        r = c.get("/v1/flags", params=params)
    assert r.status_code == code, r.text
    assert _error(r)["message"]


def test_bad_resolutions_are_rejected(app: App, flagged: dict[str, Any]) -> None:
    path = f"/v1/flags/{flag_id('f0')}"
    with app.client(flagged["ann"]) as c:
        for content, code, needle in [
            (b"{nope", 400, "not valid JSON"),
            (b"", 400, "empty"),
            (b'["fraud"]', 422, "JSON object"),
            (b"{}", 422, "missing field: resolution"),
            (b'{"resolution": "open"}', 422, "legitimate, fraud"),
            (b'{"resolution": "fraud", "note": "x"}', 422, "unknown field(s): note"),
        ]:
            r = c.post(path, content=content, headers={"Content-Type": "application/json"})
            assert r.status_code == code, (content, r.text)
            assert needle in _error(r)["message"], (content, r.text)
        assert c.get(path, params={"x": "1"}).status_code == 400
        assert c.get(path).json()["status"] == "open"  # nothing was written


def test_flags_need_a_token_and_are_in_openapi(app: App, flagged: dict[str, Any]) -> None:
    for method, path in (
        ("GET", "/v1/flags"),
        ("GET", f"/v1/flags/{flag_id('f0')}"),
        ("POST", f"/v1/flags/{flag_id('f0')}"),
    ):
        r = httpx.request(method, app.url + path, json={"resolution": "fraud"})
        assert r.status_code == 401 and _error(r)["code"] == "unauthorized"
    spec = httpx.get(app.url + "/openapi.json").json()
    assert {"get", "post"} <= set(spec["paths"]["/v1/flags/{flag_id}"])
    assert "get" in spec["paths"]["/v1/flags"]


def test_the_app_runs_an_anomaly_monitor(app: App) -> None:
    actor = ray.get_actor(MONITOR_NAME, namespace=app.settings.ray_namespace)
    assert ray.get(actor.ping.remote(), timeout=60)


# -- the actor, killed mid-stream ----------------------------------------------------------------


@pytest.fixture
def monitor_settings(ray_cluster: None, tmp_path: Path) -> Iterator[Settings]:
    """A data root and namespace of its own (the app's monitor never sees these rows)."""
    settings = Settings(
        data_root=str(tmp_path / "var"),
        num_buckets=8,
        writer_shards=2,
        ray_namespace=f"anomaly-test-{uuid.uuid4().hex[:8]}",
    )
    yield settings
    with contextlib.suppress(ValueError):
        ray.kill(ray.get_actor(MONITOR_NAME, namespace=settings.ray_namespace), no_restart=True)


#: A merchant none of the demo users ever paid, one per commit of the stream.
RARE = (
    "RARE GEMS", "GOLD BULLION", "YACHT CHARTER", "ART AUCTION", "PRIVATE JET",
    "VINTAGE CARS", "FINE WINES", "HORSE STUD", "ISLAND LEASE", "RACE TEAM",
)  # fmt: skip


def _stats(actor: Any) -> dict[str, Any]:
    return ray.get(actor.stats.remote(), timeout=60)


def _wait_for_offset(actor: Any, version: int, deadline_s: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            stats = _stats(actor)
            if stats.get("offset") == version and stats.get("retry_users") == 0:
                return stats
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            pass  # restarting
        time.sleep(0.2)
    raise AssertionError(f"monitor did not reach version {version}: {_stats(actor)}")


def test_killed_anomaly_monitor_flags_and_notifies_each_txn_once(
    monitor_settings: Settings,
) -> None:
    settings = monitor_settings
    now = datetime.now(UTC).replace(microsecond=0)
    tenants, _, _ = generate_tenants(3, years=1, seed=9, anomaly_rate=0.01, end=now.date())
    writer = OfflineLedgerWriter(settings)
    for t in tenants:
        rows = [r for r in t.transactions if r.booked_at < now - timedelta(days=20)]
        writer.write(transactions_table(t.user_id, rows, num_buckets=8, source="demo"))
    history = pa.concat_tables(
        transactions_table(t.user_id, t.transactions, num_buckets=8, source="demo") for t in tenants
    )
    model = AnomalyModel.fit(build_features(history), n_estimators=40)
    publish_anomaly_model(ModelRegistry.from_settings(settings), model)
    actor = ensure_anomaly_monitor(settings, poll_interval_s=0.05, model_check_s=0.5)
    first = _wait_for_offset(actor, open_table(settings, "transactions").version())

    # Stream the last 20 days of every user, a £6,000 charge at a new merchant in each
    # commit, and kill the monitor twice while it works.
    def commit(k: int) -> None:
        for t in tenants:
            lo, hi = now - timedelta(days=20 - 2 * k), now - timedelta(days=18 - 2 * k)
            rows = [r for r in t.transactions if lo <= r.booked_at < hi]
            rows.append(
                ParsedTxn(
                    row_number=0, booked_at=hi - timedelta(hours=20), amount_minor=-600_000 - k,
                    currency="GBP", narration=RARE[k], account_id="gems",
                    txn_id=f"gem-{k}",
                )
            )  # fmt: skip
            writer.write(transactions_table(t.user_id, rows, num_buckets=8, source="demo"))

    for k in range(10):
        commit(k)
        if k in (3, 6):
            ray.kill(actor, no_restart=False)
        time.sleep(0.05)
    last = open_table(settings, "transactions").version()
    stats = _wait_for_offset(actor, last)

    # The actor was restarted and resumed from its saved offset.
    assert stats["started_at"] > first["started_at"]
    assert stats["resumed_from"] is not None and stats["resumed_from"] < last
    flags = DeltaTable(settings.table_uri("flags")).to_pyarrow_table().to_pylist()
    notes = DeltaTable(settings.table_uri("notifications")).to_pyarrow_table().to_pylist()
    flag_count = Counter((f["user_id"], f["txn_id"]) for f in flags)
    note_count = Counter((n["user_id"], n["notification_id"]) for n in notes)
    assert flag_count and max(flag_count.values()) == 1, "a flag was written twice"
    assert max(note_count.values()) == 1, "a notification was written twice"
    gems = {(t.user_id, f"gem-{k}") for t in tenants for k in range(10)}
    assert len(gems & flag_count.keys()) >= 20, "the planted charges were not flagged"
    # Every flagged txn (all booked within the last 20 days) booked in the notification window
    # has exactly one notification; the others none.
    booked = {(t.user_id, r.txn_id): r.booked_at for t in tenants for r in t.transactions}
    for k in range(10):
        for t in tenants:
            booked[(t.user_id, f"gem-{k}")] = now - timedelta(days=18 - 2 * k, hours=20)
    expected = {
        (user, notification_id(txn))
        for user, txn in flag_count
        if booked[(user, txn)] >= datetime.now(UTC) - timedelta(days=14) + timedelta(minutes=5)
    }
    assert expected <= note_count.keys()
    too_old = {
        (user, notification_id(txn))
        for user, txn in flag_count
        if booked[(user, txn)] < now - timedelta(days=14, minutes=1)
    }
    assert not too_old & note_count.keys(), "an old charge was notified"
