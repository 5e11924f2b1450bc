"""The ``AnomalyScorer`` deployment on the session's real local Ray, and its batching functions.

The session app (tests/integration/conftest.py) builds the scorer with the rest of the app; its
registry starts empty, so the replica fits the first model itself (on synthetic tenants: the
ledger is empty then). A user's year of generated history goes in over HTTP like any client's,
with one planted anomaly; the scorer reads it back from the ledger at the latest snapshot.

The functions ``@serve.batch`` runs (:func:`deployments.anomaly.score_requests`) are tested
directly at the bottom: Serve's local testing mode cannot run ``@serve.batch``.
"""

from __future__ import annotations

import shutil
import uuid
from collections import Counter
from collections.abc import Collection
from dataclasses import replace
from datetime import date, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from deployments.anomaly import (
    LedgerRequest,
    ledger_request,
    parse_user_config,
    rows_request,
    score_requests,
)
from scale_ray.ingest.records import ParsedTxn
from scale_ray.ledger.rows import transactions_table
from scale_ray.models.anomaly.training import fit_features, synthetic_ledger
from scale_ray.money import from_minor
from tests.integration.conftest import App

PLANTED = "planted-1"


def _history(user: str, seed: int = 99) -> tuple[list[ParsedTxn], ParsedTxn]:
    """A generated year of one user's transactions, and a planted anomaly after it: 150x the
    usual amount at their most frequent merchant, at 03:12."""
    from scale_ray.demo.generator import generate_tenants

    (tenant,), _, _ = generate_tenants(1, years=1.0, seed=seed, end=date(2025, 6, 30))
    txns = [replace(t, txn_id=f"{user}-{i}") for i, t in enumerate(tenant.transactions)]
    debits = [t for t in txns if t.amount_minor < 0]
    top, _ = Counter(t.merchant or t.narration for t in debits).most_common(1)[0]
    at_top = [t for t in debits if (t.merchant or t.narration) == top]
    usual = sorted(-t.amount_minor for t in at_top)[len(at_top) // 2]
    day = txns[-1].booked_at + timedelta(days=1)
    planted = replace(
        at_top[-1],
        txn_id=PLANTED,
        amount_minor=-usual * 150,
        booked_at=day.replace(hour=3, minute=12, second=0),
        row_number=len(txns) + 1,
    )
    return txns, planted


def _as_json(t: ParsedTxn) -> dict[str, Any]:
    return {
        "txn_id": t.txn_id,
        "account_id": t.account_id,
        "amount": from_minor(t.amount_minor, t.currency),
        "currency": t.currency,
        "booked_at": t.booked_at.isoformat(),
        "narration": t.narration,
        "merchant": t.merchant,
        "category_hint": t.category_hint,
    }


def _as_row(t: ParsedTxn) -> dict[str, Any]:
    return {
        "txn_id": t.txn_id,
        "amount_minor": t.amount_minor,
        "currency": t.currency,
        "booked_at": t.booked_at.isoformat(),
        "narration": t.narration,
        "merchant": t.merchant,
        "category": t.category_hint,
    }


def _handle() -> Any:
    from ray import serve

    return serve.get_deployment_handle("AnomalyScorer", app_name="scale")


@pytest.fixture(scope="module")
def ledger_user(app: App) -> dict[str, Any]:
    user = f"anom-{uuid.uuid4().hex[:6]}"
    txns, planted = _history(user)
    with app.client(user) as c:
        r = c.post("/v1/transactions", json={"transactions": [_as_json(t) for t in txns]})
        assert r.status_code == 201, r.text
        r = c.post("/v1/transactions", json={"transactions": [_as_json(planted)]})
        assert r.status_code == 201, r.text
    ordinary = [t.txn_id for t in txns if t.amount_minor < 0][-5:]
    credit = next(t.txn_id for t in txns if t.amount_minor > 0)
    return {"user": user, "ordinary": ordinary, "credit": credit}


@pytest.mark.integration
def test_a_planted_anomaly_is_flagged_with_a_reason(ledger_user: dict[str, Any]) -> None:
    handle = _handle()
    user, ordinary = ledger_user["user"], ledger_user["ordinary"]
    asked = [PLANTED, *ordinary, ledger_user["credit"], "no-such-txn", PLANTED]
    results = handle.score.remote(user, asked).result(timeout_s=120)
    # Credits and unknown ids are left out; the rest come back once each, in the order asked.
    assert [r["txn_id"] for r in results] == [PLANTED, *ordinary]
    planted = results[0]
    assert planted["user_id"] == user and planted["flagged"] is True
    assert planted["score"] >= planted["threshold"] and planted["segment"] == "established"
    assert "03:12" in planted["reason"] or "usual" in planted["reason"]
    assert planted["drivers"] and planted["drivers"][0]["contribution"] > 0
    assert sum(r["flagged"] for r in results[1:]) <= 1
    assert all(r["reason"] is None for r in results[1:] if not r["flagged"])
    # The request form the gateway will use names the model version.
    body = handle.score_request.remote(user, [PLANTED]).result(timeout_s=60)
    assert body["model_version"] == handle.model_version.remote().result(timeout_s=60)
    assert body["results"] == results[:1]
    # Another user's id sees nothing of this user's ledger.
    assert handle.score.remote("someone-else", [PLANTED]).result(timeout_s=60) == []


@pytest.mark.integration
def test_inline_rows_score_like_the_ledger(ledger_user: dict[str, Any]) -> None:
    handle = _handle()
    txns, planted = _history("inline-user")
    rows = [_as_row(t) for t in [*txns, planted]]
    (inline,) = handle.score_rows.remote(rows, [PLANTED], "inline-user").result(timeout_s=120)
    (ledger,) = handle.score.remote(ledger_user["user"], [PLANTED]).result(timeout_s=60)
    assert inline["flagged"] is True and inline["user_id"] == "inline-user"
    assert inline["score"] == pytest.approx(ledger["score"], abs=1e-9)
    assert inline["reason"] == ledger["reason"]
    with pytest.raises(Exception, match="amount_minor"):
        bad = [{**rows[0], "amount_minor": "1.00"}]
        handle.score_rows.remote(bad, None, "inline-user").result(timeout_s=60)


@pytest.mark.integration
def test_concurrent_requests_share_batches(ledger_user: dict[str, Any]) -> None:
    handle = _handle()
    before = handle.stats.remote().result(timeout_s=60)["batches"]
    users = [ledger_user["user"]] + [f"nobody-{i}" for i in range(31)]
    calls = [handle.score.remote(u, [PLANTED]) for u in users]
    results = [call.result(timeout_s=120) for call in calls]
    assert results[0][0]["flagged"] is True and all(r == [] for r in results[1:])
    after = handle.stats.remote().result(timeout_s=60)["batches"]
    assert after["requests"] - before["requests"] == 32
    assert after["batches"] - before["batches"] < 32  # some requests shared one feature build
    assert after["max_requests_per_batch"] > 1


@pytest.mark.integration
def test_replica_is_cpu_only_and_healthy(app: App, ledger_user: dict[str, Any]) -> None:
    from ray import serve

    from scale_ray.models.registry import ModelRegistry

    status = serve.status().applications["scale"]
    assert status.deployments["AnomalyScorer"].status == "HEALTHY"
    stats = _handle().stats.remote().result(timeout_s=60)
    assert "GPU" not in stats["resources"] and stats["gpu_ids"] == []
    assert stats["table_version"] >= 1 and set(stats["thresholds"]) >= {"*"}
    registry = ModelRegistry.from_settings(app.settings)
    meta = registry.metadata("anomaly", stats["model_version"])
    assert meta["data_source"] in {"synthetic", "ledger"} and meta["trained_by"] == "bootstrap"
    assert meta["seconds"] < 60  # the replica fitted it while starting: seconds, not minutes


@pytest.mark.integration
def test_model_version_hot_swaps_and_a_bad_one_is_refused(
    app: App, ledger_user: dict[str, Any]
) -> None:
    from scale_ray.models.registry import ModelRegistry

    registry = ModelRegistry.from_settings(app.settings)
    handle = _handle()
    user = ledger_user["user"]
    serving = handle.model_version.remote().result(timeout_s=60)
    source = registry.path("anomaly", serving)

    def copy(folder: Any) -> None:
        for item in source.iterdir():
            if item.name != "metadata.json":
                shutil.copy(item, folder / item.name)

    def corrupt(folder: Any) -> None:
        (folder / "anomaly_model.pkl").write_bytes(b"not a pickle")

    copied = registry.publish("anomaly", copy, {"note": "test copy"})
    broken = registry.publish("anomaly", corrupt, {"note": "test: unreadable"})
    try:
        handle.reconfigure.remote({"model_version": copied}).result(timeout_s=120)
        assert handle.model_version.remote().result(timeout_s=60) == copied
        (verdict,) = handle.score.remote(user, [PLANTED]).result(timeout_s=60)
        assert verdict["flagged"] is True
        # A version that does not exist, or does not load, fails the reconfigure and the
        # model that was serving keeps serving.
        with pytest.raises(Exception, match="no version"):
            handle.reconfigure.remote({"model_version": "19990101T000000000000Z"}).result(
                timeout_s=60
            )
        with pytest.raises(Exception):  # noqa: B017 - the unpickling error, whatever its type
            handle.reconfigure.remote({"model_version": broken}).result(timeout_s=60)
        assert handle.model_version.remote().result(timeout_s=60) == copied
        assert handle.score.remote(user, [PLANTED]).result(timeout_s=60) == [verdict]
    finally:
        shutil.rmtree(registry.path("anomaly", copied), ignore_errors=True)
        shutil.rmtree(registry.path("anomaly", broken), ignore_errors=True)
        handle.reconfigure.remote({"model_version": serving}).result(timeout_s=120)
    assert handle.model_version.remote().result(timeout_s=60) == serving


# -- the batching functions, without Ray -------------------------------------------------------
@pytest.fixture(scope="module")
def model() -> Any:
    from scale_ray.models.anomaly.features import build_features

    fitted, _ = fit_features(build_features(synthetic_ledger(4)), n_estimators=50)
    return fitted


def _reader(tables: dict[str, pa.Table]) -> Any:
    calls: list[list[str]] = []

    def read(users: Collection[str]) -> pa.Table:
        calls.append(sorted(users))
        return pa.concat_tables([tables[u] for u in users if u in tables])

    read.calls = calls  # type: ignore[attr-defined]
    return read


def test_one_batch_many_users_one_read_and_answers_in_order(model: Any) -> None:
    a_txns, a_planted = _history("a", seed=1)
    b_txns, b_planted = _history("b", seed=2)
    tables = {
        "a": transactions_table("a", [*a_txns, a_planted], num_buckets=8, source="t"),
        "b": transactions_table("b", [*b_txns, b_planted], num_buckets=8, source="t"),
    }
    read = _reader(tables)
    a_debits = [t.txn_id for t in a_txns if t.amount_minor < 0]
    requests = [
        ledger_request("a", [a_debits[-1], PLANTED]),
        ledger_request("b", [PLANTED, "missing"]),
        ledger_request("a", [PLANTED]),
        # b's inline rows: never mixed with b's ledger rows (same txn ids there).
        rows_request([_as_row(t) for t in b_txns[:50]], user_id="b"),
    ]
    results, sizes = score_requests(model, requests, read)
    assert read.calls == [["a", "b"]]  # one read for every ledger user of the batch
    assert [[r["txn_id"] for r in part] for part in results[:3]] == [
        [a_debits[-1], PLANTED],
        [PLANTED],
        [PLANTED],
    ]
    assert results[0][1] == results[2][0]
    assert results[0][1]["flagged"] and results[1][0]["flagged"]
    assert {r["user_id"] for part in results[:2] for r in part} == {"a", "b"}
    inline = results[3]
    assert [r["txn_id"] for r in inline] == [t.txn_id for t in b_txns[:50] if t.amount_minor < 0]
    assert all(r["user_id"] == "b" for r in inline)
    assert sizes["rows_read"] == tables["a"].num_rows + tables["b"].num_rows + 50
    assert sizes["rows_scored"] == 3 + len(inline)


def test_inline_rows_are_checked() -> None:
    good = {"txn_id": "t1", "amount_minor": -500, "currency": "GBP"}
    at = "2025-01-02T09:30:00+01:00"
    request = rows_request([{**good, "booked_at": at}], user_id="u")
    assert request.frame["booked_offset_min"].tolist() == [60]
    assert request.frame["booked_at"].iloc[0].hour == 8  # stored in UTC, offset kept
    for bad, needle in (
        ([], "non-empty list"),
        ([{**good, "booked_at": "2025-01-02T09:30:00"}], "timezone-aware"),
        ([{**good, "booked_at": "yesterday"}], "ISO"),
        ([{**good, "amount_minor": 1.5, "booked_at": at}], "amount_minor"),
        ([{**good, "booked_at": at}], "one user"),  # no user_id anywhere
        ([{**good, "booked_at": at, "user_id": "x"}, {**good, "booked_at": at}], "one user"),
    ):
        with pytest.raises(ValueError, match=needle):
            rows_request(bad)
    with pytest.raises(ValueError, match="another user"):
        rows_request([{**good, "booked_at": at, "user_id": "x"}], user_id="y")
    for bad_ids in ("t1", [1], [""]):
        with pytest.raises(ValueError):
            ledger_request("u", bad_ids)
    with pytest.raises(ValueError):
        ledger_request("", ["t1"])
    assert ledger_request("u", ["t1", "t2", "t1"]) == LedgerRequest("u", ("t1", "t2"))


def test_a_batch_of_users_without_ledger_rows_is_empty(model: Any) -> None:
    empty = transactions_table("nobody", [], num_buckets=8, source="t")
    results, sizes = score_requests(model, [ledger_request("nobody", ["t1"])], lambda users: empty)
    assert results == [[]] and sizes["rows_featured"] == 0
    assert np.isfinite(model.score(model.reference[None, :])).all()


def test_user_config_is_checked() -> None:
    assert parse_user_config(None) == "live"
    assert parse_user_config({"model_version": " latest "}) == "latest"
    for bad in ({"model_version": ""}, {"model_version": 3}, {"other": 1}, ["live"]):
        with pytest.raises(ValueError):
            parse_user_config(bad)
