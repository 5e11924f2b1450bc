"""Forecast metrics on arrays worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from scale_ray.models.forecast.metrics import (
    check_quantiles,
    coverage,
    forecast_metrics,
    q_risk,
    q_risks,
    quantile_loss,
    swanson_mean,
    total_abs_errors,
    total_mae,
)


def test_quantile_loss_is_the_pinball_loss() -> None:
    # Under-forecast by 6 at q=0.9 costs 0.9 * 6; over-forecast by 6 costs 0.1 * 6.
    np.testing.assert_allclose(quantile_loss(np.array([10.0]), np.array([4.0]), 0.9), [5.4])
    np.testing.assert_allclose(quantile_loss(np.array([4.0]), np.array([10.0]), 0.9), [0.6])
    np.testing.assert_allclose(quantile_loss(np.array([3.0]), np.array([3.0]), 0.5), [0.0])
    with pytest.raises(ValueError):
        quantile_loss(np.array([1.0]), np.array([1.0]), 1.0)


def test_q_risk_by_hand() -> None:
    y = np.array([[2.0, 0.0], [0.0, 6.0]])
    forecast = np.array([[1.0, 1.0], [0.0, 3.0]])
    # P50: 0.5*1 + 0.5*1 + 0 + 0.5*3 = 2.5; 2 * 2.5 / (2 + 6) = 0.625.
    assert q_risk(y, forecast, 0.5) == pytest.approx(0.625)
    # P90: 0.9*1 + 0.1*1 + 0 + 0.9*3 = 3.7; 2 * 3.7 / 8 = 0.925.
    assert q_risk(y, forecast, 0.9) == pytest.approx(0.925)
    # P10: 0.1*1 + 0.9*1 + 0 + 0.1*3 = 1.3; 2 * 1.3 / 8 = 0.325.
    assert q_risk(y, forecast, 0.1) == pytest.approx(0.325)


def test_zero_forecast_has_p50_loss_exactly_one_and_p90_loss_one_point_eight() -> None:
    rng = np.random.default_rng(3)
    y = np.where(rng.random((50, 30)) < 0.1, rng.exponential(500.0, (50, 30)), 0.0)
    zero = np.zeros_like(y)
    assert q_risk(y, zero, 0.5) == 1.0
    assert q_risk(y, zero, 0.9) == pytest.approx(1.8, abs=1e-12)
    assert q_risk(y, zero, 0.1) == pytest.approx(0.2, abs=1e-12)


def test_perfect_forecast_has_zero_loss() -> None:
    rng = np.random.default_rng(4)
    y = rng.exponential(10.0, (7, 30))
    for q in (0.1, 0.5, 0.9):
        assert q_risk(y, y.copy(), q) == 0.0
    stacked = np.repeat(y[..., None], 3, axis=-1)
    out = forecast_metrics(y, stacked)
    assert out["p50_loss"] == 0.0 and out["p90_loss"] == 0.0
    assert out["total_mae"] == 0.0 and out["coverage"] == 1.0


def test_q_risk_without_any_actual_is_nan_and_shapes_must_match() -> None:
    assert math.isnan(q_risk(np.zeros((2, 3)), np.ones((2, 3)), 0.5))
    with pytest.raises(ValueError):
        q_risk(np.zeros((2, 3)), np.zeros((3, 2)), 0.5)


def test_q_risks_reads_one_column_per_level() -> None:
    y = np.array([[4.0, 0.0]])
    quantiles = np.array([[[0.0, 2.0, 4.0], [0.0, 0.0, 1.0]]])
    risks = q_risks(y, quantiles, (0.1, 0.5, 0.9))
    assert risks[0.1] == pytest.approx(2 * (0.1 * 4) / 4)
    assert risks[0.5] == pytest.approx(2 * (0.5 * 2) / 4)
    assert risks[0.9] == pytest.approx(2 * (0.1 * 1) / 4)
    with pytest.raises(ValueError):
        q_risks(y, quantiles, (0.1, 0.9))


def test_total_mae_is_the_error_of_the_horizon_sum() -> None:
    y = np.array([[1.0, 1.0, 0.0], [0.0, 0.0, 6.0]])
    point = np.array([[0.0, 0.0, 2.0], [1.0, 1.0, 1.0]])
    np.testing.assert_allclose(total_abs_errors(y, point), [0.0, 3.0])
    assert total_mae(y, point) == pytest.approx(1.5)


def test_coverage_counts_both_ends() -> None:
    y = np.array([0.0, 1.0, 5.0, 10.0])
    assert coverage(y, np.zeros(4), np.full(4, 5.0)) == pytest.approx(0.75)


def test_forecast_metrics_of_the_zero_forecast() -> None:
    y = np.array([[0.0, 10.0], [30.0, 0.0]])
    out = forecast_metrics(y, np.zeros((2, 2, 3)))
    assert out["p50_loss"] == 1.0
    assert out["p90_loss"] == pytest.approx(1.8)
    assert out["total_mae"] == pytest.approx(20.0)
    assert out["total_mae_norm"] == pytest.approx(1.0)
    assert out["coverage"] == pytest.approx(0.5)  # the two zero days are inside [0, 0]
    assert out["nominal_coverage"] == pytest.approx(0.8)


def test_check_quantiles_rejects_crossing_negative_or_missing_values() -> None:
    check_quantiles(np.array([[[0.0, 1.0, 2.0]]]))
    with pytest.raises(ValueError, match="ordered"):
        check_quantiles(np.array([[[0.0, 3.0, 2.0]]]))
    with pytest.raises(ValueError, match="negative"):
        check_quantiles(np.array([[[-1.0, 0.0, 2.0]]]))
    with pytest.raises(ValueError, match="non-finite"):
        check_quantiles(np.array([[[0.0, np.nan, 2.0]]]))


def test_total_of_daily_means_by_swanson_rule() -> None:
    # One day: P10 0, P50 0, P90 100 -> mean 30; the summed median would say 0.
    q = np.array([[[0.0, 0.0, 100.0], [0.0, 10.0, 20.0]]])
    np.testing.assert_allclose(swanson_mean(q), [[30.0, 10.0]])
    out = forecast_metrics(np.array([[40.0, 0.0]]), q)
    assert out["total_mae"] == pytest.approx(30.0)  # |40 - (0 + 10)|
    assert out["total_mae_mean"] == pytest.approx(0.0)  # |40 - (30 + 10)|
    assert out["total_mae_mean_norm"] == pytest.approx(0.0)
    assert "total_mae_mean" not in forecast_metrics(np.ones((1, 2)), np.ones((1, 2, 2)), (0.2, 0.8))
