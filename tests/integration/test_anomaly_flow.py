"""The whole anomaly flow on the real app: POST transactions → the anomaly-monitor scores the
commit → a flag with a reason in ``GET /v1/flags`` and a notification in ``GET /v1/notifications``
→ the user resolves it."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest

from scale_ray.demo.generator import generate_tenants
from scale_ray.ledger.rows import transactions_table
from scale_ray.models.anomaly.features import build_features
from scale_ray.models.anomaly.model import AnomalyModel
from scale_ray.models.anomaly.serving import MODEL_NAME, publish_anomaly_model
from scale_ray.models.registry import ModelRegistry

from .conftest import App

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def live_model(app: App) -> str:
    """The app's live anomaly model (published once; the monitor picks it up by itself)."""
    registry = ModelRegistry.from_settings(app.settings)
    if registry.latest(MODEL_NAME):
        return registry.live(MODEL_NAME) or ""
    tenants, _, _ = generate_tenants(12, years=1.0, seed=3, anomaly_rate=0.005)
    table = pa.concat_tables(
        transactions_table(t.user_id, t.transactions, num_buckets=8, source="demo") for t in tenants
    )
    model = AnomalyModel.fit(build_features(table), n_estimators=100, random_state=0)
    return publish_anomaly_model(registry, model, {"trained_on": "integration test"})


def _history(now: datetime) -> list[dict[str, Any]]:
    """Ninety days of ordinary daytime spending at four merchants."""
    merchants = ["TESCO STORES", "PRET A MANGER", "TFL TRAVEL", "BOOTS"]
    rows = []
    for day in range(90, 0, -1):
        for k in range(2):
            when = (now - timedelta(days=day)).replace(hour=9 + 5 * k, minute=7 * day % 60)
            rows.append(
                {
                    "txn_id": f"h{day}-{k}",
                    "amount_minor": -(800 + 37 * ((day * 3 + k) % 11)),
                    "currency": "GBP",
                    "booked_at": when.isoformat(),
                    "narration": merchants[(day + k) % 4],
                }
            )
    return rows


def _wait_for_flag(client: Any, txn_id: str, deadline_s: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        r = client.get("/v1/flags", params={"status": "all", "limit": 50})
        assert r.status_code == 200, r.text
        for flag in r.json()["flags"]:
            if flag["txn_id"] == txn_id:
                return flag
        time.sleep(0.5)
    raise AssertionError(f"no flag for {txn_id} within {deadline_s} s")


def test_a_posted_night_charge_at_a_new_merchant_is_flagged_notified_and_resolved(
    app: App, live_model: str
) -> None:
    # Prepare: an ordinary history, committed before the odd charge.
    user = f"flow-{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    odd_time = (now - timedelta(hours=2)).replace(hour=3, minute=12)
    with app.client(user) as c:
        r = c.post("/v1/transactions", json={"transactions": _history(now)})
        assert r.status_code == 201, r.text
        # Execute: the odd charge, in a commit of its own.
        odd = {
            "txn_id": "odd-1",
            "amount_minor": -64999,
            "currency": "GBP",
            "booked_at": odd_time.isoformat(),
            "narration": "LUXURY WATCHES GENEVA",
        }
        r = c.post("/v1/transactions", json={"transactions": [odd]})
        assert r.status_code == 201, r.text
        # Assert: flagged by the app's own monitor, with a reason naming what stood out.
        flag = _wait_for_flag(c, "odd-1")
        assert flag["status"] == "open" and flag["kind"] == "anomaly"
        assert flag["model_version"] == live_model
        assert "never used" in flag["reason"] and "03:12" in flag["reason"], flag["reason"]
        assert flag["transaction"]["txn_id"] == "odd-1"
        # Only the odd charge: none of the ordinary history was flagged.
        r = c.get("/v1/flags", params={"status": "all", "limit": 200})
        assert [f["txn_id"] for f in r.json()["flags"]] == ["odd-1"]
        # A notification for it (booked within the notification window).
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            notes = c.get("/v1/notifications").json()["data"]
            anomaly = [n for n in notes if n["kind"] == "anomaly"]
            if anomaly:
                break
            time.sleep(0.5)
        assert len(anomaly) == 1 and "649.99" in anomaly[0]["title"], anomaly
        # The user says it was fraud: the label is kept.
        r = c.post(f"/v1/flags/{flag['flag_id']}", json={"resolution": "fraud"})
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "fraud"
    # Another user sees none of it.
    with app.client(f"other-{uuid.uuid4().hex[:6]}") as c:
        assert c.get("/v1/flags", params={"status": "all"}).json()["flags"] == []
        assert c.get(f"/v1/flags/{flag['flag_id']}").status_code == 404
