"""The forecast backtest: origins and actuals on a built ledger, the summary by hand, and the
``--quick`` CLI on the real Berka ledgers (skipped when the shared data is missing)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from scale_ray.demo.berka import BERKA_ACCOUNT_TYPES
from scale_ray.models.forecast.evaluate import (
    Ledger,
    build_backtest,
    eligible_users,
    expand_methods,
    load_berka,
    main,
    origin_grid,
    parse_tft_options,
    summarize,
)
from scale_ray.settings import get_settings

SHARED = get_settings().shared_data_path()
BERKA = SHARED / "berka_ecac" / "trans_test.csv"


def _need_berka() -> None:
    if not BERKA.is_file():
        pytest.skip(f"shared data not found at {SHARED}")


def _ledger() -> Ledger:
    """Three users: ``a`` all of 2023, ``b`` March-December, ``c`` from October only."""
    spans = {"a": ("2023-01-01", "2023-12-31"), "b": ("2023-03-01", "2023-12-31")}
    spans["c"] = ("2023-10-01", "2023-12-31")
    rows = []
    for user, (start, end) in spans.items():
        balance = 0
        day = datetime.fromisoformat(start).replace(tzinfo=UTC)
        stop = datetime.fromisoformat(end).replace(tzinfo=UTC)
        i = 0
        while day <= stop:
            amounts = []
            if day.day == 1 or day == datetime.fromisoformat(start).replace(tzinfo=UTC):
                amounts.append(500_000)  # monthly income
            if day.timetuple().tm_yday % 3 == 0 or day == stop:
                amounts.append(-(10_000 + 100 * day.timetuple().tm_yday))
            for amount in amounts:
                balance += amount
                rows.append(
                    {
                        "user_id": user,
                        "txn_id": f"{user}-{i}",
                        "account_id": f"acc-{user}",
                        "amount_minor": amount,
                        "currency": "CZK",
                        "booked_at": day + timedelta(seconds=i % 60),
                        "narration": "salary" if amount > 0 else "shop",
                        "merchant": None,
                        "category_hint": None,
                        "balance_after_minor": balance,
                    }
                )
                i += 1
            day += timedelta(days=1)
    frame = pd.DataFrame(rows)
    frame["booked_at"] = pd.to_datetime(frame["booked_at"], utc=True)
    return Ledger(frame, {"a": "current", "b": "savings"}, "CZK", "built")


def _spend(day: pd.Timestamp) -> float:
    """Daily spend of users a and b (both end on 2023-12-31, which has a debit too)."""
    yday = day.dayofyear
    return (10_000 + 100 * yday) / 100.0 if yday % 3 == 0 or yday == 365 else 0.0


def test_origins_eligibility_and_actuals_on_a_built_ledger() -> None:
    bt = build_backtest(_ledger(), horizon=30, encoder=90, step=30, origins=3, min_users=1)
    dates = [o.date for o in bt.origins]
    # The grid ends on the last day minus the horizon and steps back 30 days.
    assert dates == [pd.Timestamp(d) for d in ("2023-10-02", "2023-11-01", "2023-12-01")]
    for origin in bt.origins:
        assert origin.users == ["a", "b"]  # c has too little history
        assert origin.history["date"].max() == origin.date
        future = origin.future.groupby("user_id")["date"].agg(["min", "max", "size"])
        assert (future["min"] == origin.date + pd.Timedelta(days=1)).all()
        assert (future["size"] == 30).all()
        assert not origin.future["spend"].any()  # targets are not handed to forecasters
        days = pd.date_range(origin.date + pd.Timedelta(days=1), periods=30, freq="D")
        expected = np.array([_spend(d) for d in days])
        np.testing.assert_allclose(origin.actual[0], expected)
        np.testing.assert_allclose(origin.actual[1], expected)
        assert origin.account_types == {"a": "current", "b": "savings"}
        assert set(origin.schedules) == {"a", "b"}
    # Training stops at the first origin; c (one day by then) is left out.
    assert bt.train["date"].max() == dates[0]
    assert sorted(bt.train["user_id"].unique()) == ["a", "b"]
    assert bt.description["user_origins"] == 6
    assert bt.description["evaluated_days"] == 180


def test_origin_grid_needs_enough_users() -> None:
    spans = pd.DataFrame(
        {
            "first": pd.to_datetime(["2023-01-01", "2023-06-01"]),
            "last": pd.to_datetime(["2023-12-31", "2023-12-31"]),
        },
        index=["a", "b"],
    )
    origin = pd.Timestamp("2023-12-01")
    assert eligible_users(spans, origin, 30, 90) == ["a", "b"]
    assert eligible_users(spans, pd.Timestamp("2023-12-02"), 30, 90) == []
    grid = origin_grid(spans, horizon=30, encoder=90, step=30, count=10, min_users=2)
    assert grid[-1] == origin and all(eligible_users(spans, d, 30, 90) == ["a", "b"] for d in grid)
    assert grid[0] >= pd.Timestamp("2023-06-01") + pd.Timedelta(days=89)
    with pytest.raises(ValueError, match="no origin"):
        build_backtest(_ledger(), origins=2, min_users=3)


def test_expand_methods() -> None:
    assert expand_methods("seasonal_naive,gbm") == [
        "zero",
        "seasonal_naive_week",
        "seasonal_naive_month",
        "gbm",
    ]
    assert expand_methods("zero,theta,zero") == ["zero", "theta"]
    with pytest.raises(ValueError, match="unknown method"):
        expand_methods("prophet")


def test_parse_tft_options() -> None:
    assert parse_tft_options(["max_epochs=3", "loss_space=raw", "learning_rate=0.01"]) == {
        "max_epochs": 3,
        "loss_space": "raw",
        "learning_rate": 0.01,
    }
    with pytest.raises(ValueError):
        parse_tft_options(["max_epochs"])


def test_summarize_picks_the_best_baseline_per_metric() -> None:
    results = {
        "zero": {"p50_loss": 1.0, "p90_loss": 1.8, "total_mae": 300.0},
        "gbm": {"p50_loss": 0.9, "p90_loss": 1.4, "total_mae": 250.0},
        "seasonal_naive_month": {"p50_loss": 1.5, "p90_loss": 1.5, "total_mae": 200.0},
        "tft": {"p50_loss": 0.8, "p90_loss": 1.3, "total_mae": 220.0},
    }
    out = summarize(results)
    assert out["best_baseline"]["p50_loss"] == {"method": "gbm", "value": 0.9}
    assert out["best_baseline"]["p90_loss"] == {"method": "gbm", "value": 1.4}
    assert out["best_baseline"]["total_mae"]["method"] == "seasonal_naive_month"
    assert out["tft_improvement"]["p50_loss"] == pytest.approx(1 / 9)
    assert out["tft_improvement"]["p90_loss"] == pytest.approx(1 / 14)
    assert out["tft_improvement"]["total_mae"] == pytest.approx(-0.1)
    assert out["targets"]["p50_loss"] is True
    assert out["targets"]["p90_loss"] is False
    assert out["targets"]["met"] is False
    assert "targets" not in summarize({k: v for k, v in results.items() if k != "tft"})


def test_load_berka_reads_accounts_and_types() -> None:
    _need_berka()
    ledger = load_berka(BERKA, max_users=5)
    assert ledger.rows["user_id"].nunique() == 5
    assert ledger.currency == "CZK"
    assert set(ledger.account_types.values()) <= set(BERKA_ACCOUNT_TYPES.values())
    assert ledger.rows["booked_at"].dt.tz is not None


def test_quick_cli_on_real_berka(capsys: pytest.CaptureFixture[str]) -> None:
    _need_berka()
    started = time.perf_counter()
    assert main(["--ledger", str(BERKA), "--format", "berka", "--quick", "--seed", "0"]) == 0
    elapsed = time.perf_counter() - started
    report = json.loads(capsys.readouterr().out)
    methods = report["methods"]
    expected = {"zero", "seasonal_naive_week", "seasonal_naive_month", "gbm", "theta", "tft"}
    assert set(methods) == expected
    assert methods["zero"]["p50_loss"] == pytest.approx(1.0, abs=1e-12)
    assert methods["zero"]["p90_loss"] == pytest.approx(1.8, abs=1e-12)
    for result in methods.values():
        for key in ("p50_loss", "p90_loss", "total_mae", "coverage", "seconds"):
            assert np.isfinite(result[key])
        assert 0.0 <= result["coverage"] <= 1.0
        assert result["p50_loss"] > 0.0
    data = report["data"]
    assert len(data["origins"]) == 2
    assert data["train_cutoff"] == data["origins"][0]
    assert min(data["users_per_origin"]) >= 10
    assert data["evaluated_days"] == 30 * data["user_origins"]
    assert 0.5 < data["zero_spend_share"] < 1.0  # Berka days are mostly without a debit
    assert report["best_baseline"]["p50_loss"]["value"] <= 1.0
    assert set(report["targets"]) >= {"p50_loss", "p90_loss", "met"}
    assert elapsed < 90
