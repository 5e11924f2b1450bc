"""Baseline forecasters: shapes, ordering, non-negativity, exactness on periodic series, the
gradient-boosting model's features (no look-ahead) and what it learns."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scale_ray.models.forecast.baselines import (
    LEVELS,
    GBMQuantile,
    _user_arrays,
    finish_quantiles,
    gbm_features,
    seasonal_naive,
    seasonal_source,
    theta_forecast,
    zero_forecast,
)
from scale_ray.models.forecast.metrics import check_quantiles
from scale_ray.models.forecast.series import Schedule, with_covariates

WEEK = np.array([0.0, 0.0, 5.0, 0.0, 0.0, 12.0, 3.0])


def test_zero_forecast_shape() -> None:
    out = zero_forecast(4, 30)
    assert out.shape == (4, 30, 3)
    assert not out.any()


def test_finish_quantiles_clips_sorts_and_cleans() -> None:
    out = finish_quantiles(np.array([[3.0, -1.0, np.nan], [2.0, 1.0, np.inf]]))
    np.testing.assert_array_equal(out, [[0.0, 0.0, 3.0], [0.0, 1.0, 2.0]])


def test_seasonal_source_week_and_month() -> None:
    last = pd.Timestamp("2024-03-15")
    targets = pd.date_range("2024-03-16", periods=10, freq="D")
    week = seasonal_source(last, targets, "week")
    # Days 1-7 copy the last week, days 8-10 the week before it (two weeks back).
    assert list((targets - week).days) == [7] * 7 + [14] * 3
    targets = pd.DatetimeIndex(["2024-03-16", "2024-04-14", "2024-04-20", "2024-03-31"])
    month = seasonal_source(last, targets, "month")
    expected = ["2024-02-16", "2024-03-14", "2024-02-20", "2024-02-29"]
    assert list(month) == [pd.Timestamp(d) for d in expected]
    with pytest.raises(ValueError):
        seasonal_source(last, targets, "year")


def test_seasonal_naive_is_exact_on_a_weekly_periodic_series() -> None:
    y = np.tile(WEEK, 20)
    last = pd.Timestamp("2024-05-05")
    out = seasonal_naive(y, last, 30, period="week")
    expected = np.tile(WEEK, 30)[len(y) : len(y) + 30]
    assert out.shape == (30, 3)
    for k in range(3):
        np.testing.assert_array_equal(out[:, k], expected)


def test_seasonal_naive_is_exact_on_a_monthly_periodic_series() -> None:
    days = pd.date_range("2023-01-01", "2024-04-10", freq="D")
    y = np.where(days.day == 5, 400.0, 0.0) + np.where(days.day == 20, 75.0, 0.0)
    out = seasonal_naive(y, days[-1], 45, period="month")
    future = pd.date_range(days[-1] + pd.Timedelta(days=1), periods=45, freq="D")
    expected = np.where(future.day == 5, 400.0, 0.0) + np.where(future.day == 20, 75.0, 0.0)
    for k in range(3):
        np.testing.assert_array_equal(out[:, k], expected)


def test_seasonal_naive_quantiles_on_noisy_sparse_series_are_ordered_and_non_negative() -> None:
    rng = np.random.default_rng(0)
    y = np.where(rng.random(200) < 0.15, rng.exponential(300.0, 200), 0.0)
    for period in ("week", "month"):
        out = seasonal_naive(y, pd.Timestamp("2024-01-31"), 30, period=period)
        check_quantiles(out)
        assert out.shape == (30, 3)
        # Noise widens the band: P90 lies above the point on days the rule copies a zero.
        assert (out[:, 2] > out[:, 0]).any()


def test_theta_forecast_shapes_and_constant_series() -> None:
    rng = np.random.default_rng(1)
    sparse = np.where(rng.random(300) < 0.12, rng.exponential(800.0, 300), 0.0)
    out = theta_forecast(sparse, 30)
    assert out.shape == (30, 3)
    check_quantiles(out)
    # Zero-inflated history: the P10 sits at zero, the P90 well above it.
    assert (out[:, 0] == 0).all()
    assert (out[:, 2] > 0).all()
    np.testing.assert_allclose(theta_forecast(np.full(100, 7.0), 10), np.full((10, 3), 7.0))
    np.testing.assert_array_equal(theta_forecast(np.zeros(100), 10), np.zeros((10, 3)))
    with pytest.raises(ValueError):
        theta_forecast(np.array([]), 5)


def _frame(n_users: int = 10, days: int = 280, seed: int = 0) -> pd.DataFrame:
    """Users who pay a fixed amount every Monday, with rare small spends on other days."""
    rng = np.random.default_rng(seed)
    dates = pd.date_range("2023-01-02", periods=days, freq="D")
    parts = []
    for u in range(n_users):
        amount = 100.0 * (u + 1)
        monday = (dates.weekday == 0).astype(float) * amount
        noise = np.where(rng.random(days) < 0.1, rng.exponential(amount / 4, days), 0.0)
        spend = monday + np.where(dates.weekday == 0, 0.0, noise)
        income = np.where(dates.day == 1, 10 * amount, 0.0)
        parts.append(
            pd.DataFrame(
                {
                    "user_id": f"u{u:02d}",
                    "date": dates,
                    "time_idx": np.arange(days),
                    "currency": "GBP",
                    "spend": spend,
                    "income": income,
                    "net": income - spend,
                    "balance": np.cumsum(income - spend),
                }
            )
        )
    series = pd.concat(parts, ignore_index=True)
    schedules = {f"u{u:02d}": Schedule(None) for u in range(n_users)}
    return with_covariates(series, schedules, country="GB")


def test_gbm_features_never_read_spend_after_the_origin() -> None:
    frame = _frame(n_users=1, days=200)
    arrays = _user_arrays(frame)
    t = np.full(30, 150)
    h = np.arange(1, 31)
    x1, s1, names = gbm_features(arrays, t, h)
    changed = frame.copy()
    changed.loc[changed.index > 150, ["spend", "income", "balance"]] = 1e6
    x2, s2, _ = gbm_features(_user_arrays(changed), t, h)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(s1, s2)
    assert "h" in names and "recurring_due" in names and "same_day_last_month" in names


def test_gbm_learns_a_weekly_payment_and_keeps_quantiles_valid() -> None:
    frame = _frame()
    origin = frame["date"].iloc[0] + pd.Timedelta(days=240)
    model = GBMQuantile(max_iter=40, train_stride=7, min_samples_leaf=20, seed=0)
    model.fit(frame, origin)
    assert len(model.models) == len(LEVELS)
    history = frame[frame["date"] <= origin]
    future = frame[(frame["date"] > origin) & (frame["date"] <= origin + pd.Timedelta(days=30))]
    users = sorted(frame["user_id"].unique())
    pred = model.predict(history, future, users)
    assert pred.shape == (len(users), 30, 3)
    check_quantiles(pred)
    mondays = future.groupby("user_id")["date"].apply(list).loc[users[0]]
    is_monday = np.array([d.weekday() == 0 for d in mondays])
    amounts = 100.0 * (np.arange(len(users)) + 1)
    p50 = pred[:, :, 1]
    # The Monday payment is the median of a Monday; other days' median is zero.
    np.testing.assert_allclose(p50[:, is_monday].mean(axis=1), amounts, rtol=0.25)
    assert (p50[:, ~is_monday] == 0).mean() > 0.9


def test_gbm_fit_reads_nothing_after_the_cutoff() -> None:
    frame = _frame(n_users=4, days=260)
    cutoff = frame["date"].iloc[0] + pd.Timedelta(days=200)
    model = GBMQuantile(max_iter=5, train_stride=7, min_samples_leaf=20)
    x1, y1 = model.training_set(frame, cutoff)
    changed = frame.copy()
    changed.loc[changed["date"] > cutoff, "spend"] = 1e9
    x2, y2 = model.training_set(changed, cutoff)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    with pytest.raises(ValueError):
        model.training_set(frame, frame["date"].iloc[0] + pd.Timedelta(days=50))
