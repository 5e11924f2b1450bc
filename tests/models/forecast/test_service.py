"""The forecast service on a real Delta ledger in a temporary folder, with a tiny real TFT.

No Ray: the ``Forecaster`` deployment's ``@serve.batch`` calls ``forecast_many``, tested here
directly (Serve's local testing mode cannot run ``@serve.batch``).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

from scale_ray.errors import ApiError
from scale_ray.ingest.records import ParsedTxn
from scale_ray.ledger.keys import user_bucket
from scale_ray.ledger.offline import OfflineLedgerWriter
from scale_ray.ledger.rows import transactions_table
from scale_ray.ledger.schema import FORECASTS
from scale_ray.models.forecast.service import (
    LRU,
    MIN_HISTORY_DAYS,
    ForecasterUnavailable,
    ForecastRequest,
    ForecastService,
    closing_balance,
    forecast_request,
    threshold_minor_of,
    unwrap,
    user_histories,
)
from scale_ray.settings import Settings

from .tiny import tenant_rows, tiny_model

BUCKETS = 8


# -- plain functions -----------------------------------------------------------------------------
def test_forecast_request_checks_its_input() -> None:
    assert forecast_request("u1", "12.50", None, 7) == ForecastRequest("u1", "12.50", None, 7)
    for bad in (
        dict(user_id=""),
        dict(user_id="u", threshold="1", threshold_minor=100),
        dict(user_id="u", threshold_minor=1.5),
        dict(user_id="u", horizon=0),
        dict(user_id="u", horizon=True),
    ):
        with pytest.raises(ValueError):
            forecast_request(**bad)


def test_threshold_is_money_in_the_users_currency() -> None:
    assert threshold_minor_of(ForecastRequest("u"), "GBP") == 0
    assert threshold_minor_of(ForecastRequest("u", "1,250.50"), "GBP") == 125050
    assert threshold_minor_of(ForecastRequest("u", "-300"), "JPY") == -300
    assert threshold_minor_of(ForecastRequest("u", threshold_minor=777), "GBP") == 777
    with pytest.raises(ApiError) as caught:
        threshold_minor_of(ForecastRequest("u", "12.5"), "JPY")
    assert caught.value.status == 400 and "threshold" in caught.value.message


def test_lru_counts_hits_and_evicts_the_least_recent() -> None:
    cache = LRU(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "b" is now the least recent
    cache.put("c", 3)
    assert cache.get("b") is None and cache.get("c") == 3
    assert cache.to_json() == {"size": 2, "hits": 2, "misses": 1}


def _rows(records: list[dict[str, Any]]) -> pd.DataFrame:
    base = {"user_id": "u", "currency": "GBP", "balance_after_minor": None}
    frame = pd.DataFrame([{**base, **r} for r in records])
    frame["booked_at"] = pd.to_datetime(frame["booked_at"], utc=True)
    return frame


def test_closing_balance_per_account() -> None:
    rows = _rows(
        [
            # Account a: every row has the bank's balance: the last one counts.
            {"account_id": "a", "amount_minor": -500, "booked_at": "2025-01-02T10:00Z",
             "balance_after_minor": 9_500},
            {"account_id": "a", "amount_minor": -100, "booked_at": "2025-01-03T10:00Z",
             "balance_after_minor": 9_400},
            # Account b: no balances: opening balance plus the amounts.
            {"account_id": "b", "amount_minor": 2_000, "booked_at": "2025-01-01T10:00Z"},
            {"account_id": "b", "amount_minor": -250, "booked_at": "2025-01-04T10:00Z"},
            # Another currency is another balance.
            {"account_id": "c", "amount_minor": 99_999, "booked_at": "2025-01-04T10:00Z",
             "currency": "EUR"},
        ]
    )  # fmt: skip
    accounts = pd.DataFrame(
        {"account_id": ["b"], "currency": ["GBP"], "opening_balance_minor": [10_000]}
    )
    assert closing_balance(rows, accounts, "GBP") == pytest.approx((9_400 + 11_750) / 100)
    assert closing_balance(rows, None, "GBP") == pytest.approx((9_400 + 1_750) / 100)


def test_short_and_missing_histories_are_insufficient() -> None:
    model = tiny_model()
    table, users = tenant_rows(2, years=1.0, seed=1)
    frame = table.to_pandas()
    first = frame[frame["user_id"] == users[0]]
    start = first["booked_at"].min()
    short = first[first["booked_at"] < start + pd.Timedelta(days=30)]
    rows = pd.concat([short, frame[frame["user_id"] == users[1]]])
    histories, errors = user_histories(model, rows, [*users, "nobody"])
    assert set(histories) == {users[1]}
    assert errors[users[0]].status == 422 and errors[users[0]].code == "insufficient_history"
    assert errors[users[0]].details["required_days"] >= MIN_HISTORY_DAYS
    assert 25 <= errors[users[0]].details["history_days"] <= 30
    assert errors["nobody"].details["history_days"] == 0
    h = histories[users[1]]
    assert h.as_of <= date(2025, 6, 30)
    assert len(h.series) == model.config.encoder_length
    assert set(model.input_columns) <= set(h.series.columns)


def test_a_users_history_does_not_depend_on_the_batch() -> None:
    model = tiny_model()
    table, users = tenant_rows(3, years=1.0, seed=2)
    alone, _ = user_histories(model, table, [users[0]])
    together, _ = user_histories(model, table, users)
    a, b = alone[users[0]], together[users[0]]
    pd.testing.assert_frame_equal(a.series, b.series)
    assert (a.last_balance, a.as_of, a.schedule, a.income_bracket) == (
        b.last_balance,
        b.as_of,
        b.schedule,
        b.income_bracket,
    )


# -- the service on a real ledger -------------------------------------------------------------
@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = Path(tmp_path_factory.mktemp("forecast")) / "var"
    settings = Settings(data_root=str(root), num_buckets=BUCKETS, writer_shards=2)
    table, users = tenant_rows(3, years=1.0, seed=4)
    OfflineLedgerWriter(settings).write(table)
    return {"settings": settings, "users": users}


def _service(ledger: dict[str, Any], **kw: Any) -> ForecastService:
    model = tiny_model()
    return ForecastService(ledger["settings"], lambda: ("v-test", model), **kw)


def _post(settings: Settings, user: str, txn_id: str, amount_minor: int, when: datetime) -> None:
    txn = ParsedTxn(
        row_number=1, booked_at=when, amount_minor=amount_minor, currency="GBP",
        narration="TESCO STORES", account_id="acc-1", txn_id=txn_id,
    )  # fmt: skip
    OfflineLedgerWriter(settings).write(
        transactions_table(user, [txn], num_buckets=BUCKETS, source="test")
    )


def test_forecast_shape(ledger: dict[str, Any]) -> None:
    user = ledger["users"][0]
    out = _service(ledger).forecast(user, threshold="250.00")
    assert set(out) >= {
        "user_id", "currency", "as_of", "horizon", "model_version", "ledger_version",
        "generated_at", "days", "totals", "balance", "warnings", "explanation",
    }  # fmt: skip
    assert out["user_id"] == user and out["currency"] == "GBP"
    assert out["model_version"] == "v-test" and out["horizon"] == 30 == len(out["days"])
    as_of = date.fromisoformat(out["as_of"])
    dates = [date.fromisoformat(d["date"]) for d in out["days"]]
    assert dates == [as_of + timedelta(days=k) for k in range(1, 31)]
    for day in out["days"]:
        for name in ("spend", "income", "balance"):
            p10, p50, p90 = (Decimal(day[name][q]) for q in ("p10", "p50", "p90"))
            assert p10 <= p50 <= p90
            assert Decimal(day[name]["p50"]).as_tuple().exponent == -2  # pence
        assert Decimal(day["spend"]["p10"]) >= 0 and 0 <= day["prob_below_threshold"] <= 1
    balance = out["balance"]
    assert balance["threshold"] == "250.00"
    assert 0 <= balance["prob_below_zero"] <= balance["prob_below_threshold"] <= 1
    assert set(out["explanation"]) == {"summary", "sentences", "weights"}
    assert isinstance(out["explanation"]["summary"], str) and out["explanation"]["summary"]
    assert all(isinstance(w, dict) and w["code"] and w["message"] for w in out["warnings"])


def test_horizon_and_threshold_options(ledger: dict[str, Any]) -> None:
    service = _service(ledger)
    user = ledger["users"][1]
    week = service.forecast(user, horizon=7)
    assert week["horizon"] == 7 and len(week["days"]) == 7
    with pytest.raises(ApiError) as caught:
        service.forecast(user, horizon=31)
    assert caught.value.status == 400 and caught.value.details["maximum"] == 30
    with pytest.raises(ApiError) as caught:
        service.forecast(user, threshold="1.001")
    assert caught.value.status == 400 and "threshold" in caught.value.message
    assert service.forecast(user, threshold_minor=12345)["balance"]["threshold"] == "123.45"


def test_unknown_user_and_no_model(ledger: dict[str, Any]) -> None:
    with pytest.raises(ApiError) as caught:
        _service(ledger).forecast("nobody-at-all")
    assert (caught.value.status, caught.value.code) == (422, "insufficient_history")

    def no_model() -> tuple[str, Any]:
        raise ForecasterUnavailable("no forecasting model is published yet")

    service = ForecastService(ledger["settings"], no_model)
    result = service.forecast_many([ForecastRequest(ledger["users"][0])])[0]
    assert result[:3] == ("err", 503, "forecaster_unavailable")


def test_a_batch_answers_as_single_requests_do(ledger: dict[str, Any]) -> None:
    a, b = ledger["users"][:2]
    requests = [ForecastRequest(a), ForecastRequest(b, "100.00"), ForecastRequest(a, horizon=5)]
    batched = _service(ledger).forecast_many(requests)
    service = _service(ledger)
    single = [service.forecast_many([r])[0] for r in requests]
    for got, want in zip(batched, single, strict=True):
        got, want = unwrap(got), unwrap(want)
        # A batched network pass may differ from a single one in the last float bits.
        _assert_close({**got, "explanation": None}, {**want, "explanation": None}, ["generated_at"])
        assert set(got["explanation"]["weights"]) == set(want["explanation"]["weights"])
    # A shorter horizon is the first days of the full one (the balance paths are simulated
    # anew, over the shorter horizon).
    flows = lambda days: [(d["date"], d["spend"], d["income"]) for d in days]  # noqa: E731
    assert flows(unwrap(batched[0])["days"][:5]) == flows(unwrap(batched[2])["days"])


def _assert_close(got: Any, want: Any, skip: list[str], path: str = "") -> None:
    """Equal JSON, except that money strings may differ by a few pence and probabilities by
    a hundredth."""
    if isinstance(want, dict):
        assert set(got) == set(want), path
        for key in want:
            if key not in skip:
                _assert_close(got[key], want[key], skip, f"{path}.{key}")
    elif isinstance(want, list):
        assert len(got) == len(want), path
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            _assert_close(g, w, skip, f"{path}[{i}]")
    elif isinstance(want, float):
        assert abs(got - want) <= 0.01, path
    elif isinstance(want, str) and path.rsplit(".", 1)[-1] in {"p10", "p50", "p90", "start"}:
        assert abs(Decimal(got) - Decimal(want)) <= Decimal("0.05") + abs(Decimal(want)) / 10**4
    else:
        assert got == want, path


def test_cached_until_the_users_ledger_changes(ledger: dict[str, Any]) -> None:
    settings = ledger["settings"]
    user = ledger["users"][2]
    service = _service(ledger)
    first = service.forecast(user)
    again = service.forecast(user)
    assert again["generated_at"] == first["generated_at"]
    assert service.stats()["users_predicted"] == 1
    # A commit to another bucket changes the table version, not this user's forecast.
    other = next(
        f"other-{i}" for i in range(100)
        if user_bucket(f"other-{i}", BUCKETS) != user_bucket(user, BUCKETS)
    )  # fmt: skip
    _post(settings, other, "o1", -500, datetime(2025, 6, 29, 12, tzinfo=UTC))
    still = service.forecast(user)
    assert still["generated_at"] == first["generated_at"]
    assert still["ledger_version"] == first["ledger_version"]
    # A new transaction of the user: a new forecast from the new ledger version.
    _post(settings, user, "n1", -12_000, datetime(2025, 7, 2, 12, tzinfo=UTC))
    moved = service.forecast(user)
    assert moved["generated_at"] != first["generated_at"]
    assert moved["ledger_version"] > first["ledger_version"]
    assert moved["as_of"] == "2025-07-02"
    stats = service.stats()
    assert stats["users_predicted"] == 2
    assert stats["prediction_cache"]["hits"] >= 2


def test_rows_for_the_forecasts_table(ledger: dict[str, Any]) -> None:
    from scale_ray.models.forecast.service import forecast_histories

    model = tiny_model()
    table, users = tenant_rows(1, years=1.0, seed=9)
    histories, _ = user_histories(model, table, users)
    (forecast,) = forecast_histories(
        model, "v1", list(histories.values()), ledger_version=3
    ).values()
    rows = pa.Table.from_pylist(forecast.to_rows(user_bucket(users[0], BUCKETS)), schema=FORECASTS)
    assert rows.num_rows == 30
    assert rows.column("horizon_day").to_pylist() == list(range(1, 31))
    assert set(rows.column("ledger_version").to_pylist()) == {3}
    assert rows.column("as_of")[0].as_py() == forecast.as_of
    forecast.threshold_minor = 100
    with pytest.raises(ValueError):
        forecast.to_rows(0)
