"""Balance projection against cases worked out by hand."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np
import pytest

from scale_ray.models.forecast.balance import (
    ar1_normals,
    project_balance,
    sample_quantile_function,
)

LEVELS = (0.1, 0.5, 0.9)
START = date(2025, 6, 1)


@dataclass
class Forecast:
    """The fields project_balance reads (a tft.UserForecast has them too)."""

    quantiles: dict[str, np.ndarray]
    dates: list[date] = field(default_factory=list)
    quantile_levels: tuple[float, ...] = LEVELS


def forecast(spend: list[list[float]] | np.ndarray, income=None) -> Forecast:
    spend = np.asarray(spend, dtype=float)
    quantiles = {"spend": spend}
    if income is not None:
        quantiles["income"] = np.asarray(income, dtype=float)
    days = [START + timedelta(days=k) for k in range(len(spend))]
    return Forecast(quantiles, days)


def constant(value: float, horizon: int) -> np.ndarray:
    return np.full((horizon, 3), float(value))


def test_deterministic_spend_crosses_zero_on_day_twelve() -> None:
    # 1150 - 100 * k: 50 after day 11, -50 after day 12.
    p = project_balance(1150.0, forecast(constant(100, 30), constant(0, 30)), n_paths=500)
    assert p.p_below_zero == 1.0 and p.p_below_threshold == 1.0
    assert p.first_low_day == 12 and p.first_negative_day == 12
    assert p.first_low_date == START + timedelta(days=11)
    assert p.first_low_probability == 1.0
    expected = 1150.0 - 100.0 * np.arange(1, 31)
    for level in LEVELS:
        np.testing.assert_allclose(p.level(level), expected)
    assert p.daily_p_below_threshold[10] == 0.0 and p.daily_p_below_threshold[11] == 1.0
    assert p.totals["spend"] == [3000.0, 3000.0, 3000.0]


def test_threshold_is_reached_before_zero() -> None:
    # Below 500 first after day 7 (450); below zero after day 12.
    p = project_balance(1150.0, forecast(constant(100, 30)), threshold=500.0, n_paths=100)
    assert p.first_low_day == 7 and p.first_negative_day == 12
    assert p.p_below_threshold == 1.0 and p.p_below_zero == 1.0


def test_balance_exactly_at_zero_is_not_below() -> None:
    p = project_balance(1000.0, forecast(constant(100, 10)), n_paths=50)
    assert p.p_below_zero == 0.0 and p.first_low_day is None and p.first_low_date is None


def test_far_above_never_goes_low() -> None:
    spend = np.tile([0.0, 50.0, 400.0], (30, 1))
    p = project_balance(1_000_000.0, forecast(spend), n_paths=2000)
    assert p.p_below_zero == 0.0 and p.p_below_threshold == 0.0
    assert p.first_low_day is None and p.first_low_probability == 0.0
    assert (p.balance[:, 0] <= p.balance[:, 1]).all() and (p.balance[:, 1] <= p.balance[:, 2]).all()


def test_payday_rescues_a_dip() -> None:
    # 300 - 100/day, 1000 in on day 5: -100 after day 4, back up to 800 after day 5.
    income = constant(0, 10)
    income[4] = 1000.0
    p = project_balance(300.0, forecast(constant(100, 10), income), n_paths=100)
    assert p.first_negative_day == 4 and p.p_below_zero == 1.0
    assert p.level(0.5)[4] == pytest.approx(800.0)


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        (100.0, 0.5),  # below zero iff spend > 100 = P50
        (180.0, 0.18),  # linear between P50=100 and P90=200: u = 0.5 + 0.4 * 0.8 = 0.82
        (250.0, 0.1 * math.exp(-2.0)),  # exponential tail: 200 + 25 * log(0.1 / (1 - u))
        (-1.0, 1.0),
    ],
)
def test_one_day_probabilities_from_the_quantile_function(start: float, expected: float) -> None:
    p = project_balance(start, forecast([[0.0, 100.0, 200.0]]), n_paths=200_000, seed=1)
    assert p.p_below_zero == pytest.approx(expected, abs=0.004)


def test_quantile_function_hits_the_knots_and_stays_non_negative() -> None:
    values = np.array([[0.0, 0.0, 80.0], [10.0, 20.0, 40.0]])
    u = np.tile(np.array([0.1, 0.5, 0.9])[:, None], (1, 2))
    out = sample_quantile_function(u, LEVELS, values)
    np.testing.assert_allclose(out, values.T)
    grid = np.linspace(0.0005, 0.9995, 2000)[:, None].repeat(2, axis=1)
    sampled = sample_quantile_function(grid, LEVELS, values)
    assert (sampled >= 0).all()
    assert (np.diff(sampled, axis=0) >= -1e-12).all()  # monotone in u
    # P10 = P50 = 0: half the mass is exactly zero.
    assert np.mean(sampled[:, 0] == 0.0) == pytest.approx(0.5, abs=0.002)
    # Lower tail of day 2: slope 25 per unit u below 0.1 -> 10 - 2.5 * log(0.1 / u) >= 0.
    assert sample_quantile_function(np.array([[0.05, 0.05]]), LEVELS, values)[0, 1] == (
        pytest.approx(10 - 2.5 * math.log(2))
    )
    # Unsorted (crossed) quantiles are sorted first.
    crossed = sample_quantile_function(np.array([[0.5]]), LEVELS, np.array([[30.0, 10.0, 20.0]]))
    assert crossed[0, 0] == pytest.approx(20.0)


def test_ar1_normals_have_the_asked_correlation() -> None:
    z = ar1_normals(20_000, 30, 0.6, np.random.default_rng(0))
    assert z.std() == pytest.approx(1.0, abs=0.02)
    lag1 = np.corrcoef(z[:, 10], z[:, 11])[0, 1]
    lag2 = np.corrcoef(z[:, 10], z[:, 12])[0, 1]
    assert lag1 == pytest.approx(0.6, abs=0.02) and lag2 == pytest.approx(0.36, abs=0.02)
    with pytest.raises(ValueError):
        ar1_normals(2, 2, 1.0, np.random.default_rng(0))


def test_more_day_to_day_dependence_widens_the_month() -> None:
    spend = np.tile([0.0, 50.0, 300.0], (30, 1))

    def spread(rho: float) -> float:
        low, _, high = project_balance(
            10_000.0, forecast(spend), n_paths=4000, correlation=rho
        ).totals["spend"]
        return high - low

    independent, default, strong = spread(0.0), spread(0.06), spread(0.9)
    assert independent < default < strong
    assert strong > 2 * independent


def test_seeded_and_missing_income_counts_as_zero() -> None:
    spend = np.tile([0.0, 50.0, 300.0], (30, 1))
    a = project_balance(2000.0, forecast(spend), seed=5)
    b = project_balance(2000.0, forecast(spend), seed=5)
    np.testing.assert_array_equal(a.balance, b.balance)
    assert "income" not in a.totals
    assert (np.diff(a.level(0.5)) <= 0).all()  # no income: the balance only falls
    assert a.to_json()["first_low_day"] == a.first_low_day
