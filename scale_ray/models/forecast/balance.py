"""Balance paths and the risk of running low, from daily spend/income quantile forecasts.

The forecaster gives *marginal* quantiles per day; "will I go overdrawn this month?" is a
question about the *path* (a running sum), so it needs a joint distribution over days. This
module simulates it:

* **Marginals.** Each day's spend (and income) is drawn from the piecewise-linear quantile
  function through the forecast's quantiles (e.g. P10, P50, P90). Between the outermost
  quantiles the interpolation is linear; beyond them the tails are exponential with the slope
  of the nearest segment (``v = v_K + s * log((1 - q_K) / (1 - u))`` above the top quantile,
  mirrored below the bottom one), so the density is continuous at the knots, the upper tail
  is heavier than a linear one (daily money is heavy-tailed) yet has a finite mean, and the
  lower tail is cut at zero (flows are never negative). A forecast whose quantiles are all
  equal is deterministic; a P10 = P50 = 0 forecast puts half the mass exactly at zero, which
  is how zero-inflated days should look.
* **Dependence.** Uniforms come from a Gaussian copula whose latent series is AR(1) over days
  with correlation ``correlation`` (separate, independent series for spend and income:
  income is mostly scheduled and its timing already sits in the quantiles). Independence
  (0) would shrink the spread of monthly totals by the CLT; comonotone days (1) would make
  every path "all low" or "all high" and overstate it. The default 0.06 is measured: on the
  Berka ledgers, after removing each user's day-of-month pattern, the median lag-1
  autocorrelation of the normal scores of daily spend is 0.06 (income: 0.00), and the
  variance of 30-day sums is about 1.0-1.1 times that of independent days, which an AR(1)
  with 0.05-0.06 reproduces (``(1 + rho) / (1 - rho)`` for long windows).

Everything is vectorised over paths with numpy: 2000 paths x 30 days take about 20 ms on a
busy 2-CPU machine, so a Serve replica can project on every request.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Protocol

import numpy as np
from scipy.special import ndtr

#: Quantile levels reported for the balance path and the horizon totals.
BALANCE_LEVELS = (0.1, 0.5, 0.9)
#: Default day-to-day correlation of the latent Gaussian series (see the module docstring).
DEFAULT_CORRELATION = 0.06


class QuantileForecast(Protocol):
    """What :func:`project_balance` reads from a forecast (``tft.UserForecast`` fits)."""

    dates: list[date]
    quantile_levels: tuple[float, ...]
    quantiles: dict[str, np.ndarray]


@dataclass
class BalanceProjection:
    """Simulated end-of-day balances over the forecast horizon."""

    dates: list[date]
    start_balance: float
    threshold: float
    levels: tuple[float, ...]
    #: (horizon, len(levels)) quantiles of the end-of-day balance.
    balance: np.ndarray
    #: Probability that the balance is below zero on at least one day of the horizon.
    p_below_zero: float
    #: Probability that the balance is below ``threshold`` on at least one day.
    p_below_threshold: float
    #: Per day: probability that the balance is below ``threshold`` at the end of that day.
    daily_p_below_threshold: np.ndarray
    #: The most likely first day (1-based, day 1 is ``dates[0]``) below ``threshold`` among
    #: the paths that go below it; None when none does.
    first_low_day: int | None
    first_low_date: date | None
    #: Probability that the first day below ``threshold`` is exactly ``first_low_day``.
    first_low_probability: float
    #: Same as ``first_low_day`` for zero.
    first_negative_day: int | None
    #: target -> quantiles (``levels``) of the horizon total of that flow.
    totals: dict[str, list[float]] = field(default_factory=dict)
    n_paths: int = 0

    def level(self, level: float) -> np.ndarray:
        """The balance path at quantile ``level`` (one of ``levels``)."""
        for i, q in enumerate(self.levels):
            if abs(q - level) < 1e-9:
                return self.balance[:, i]
        raise KeyError(f"no level {level} (have {self.levels})")

    def to_json(self) -> dict[str, Any]:
        return {
            "dates": [d.isoformat() for d in self.dates],
            "start_balance": self.start_balance,
            "threshold": self.threshold,
            "levels": list(self.levels),
            "balance": {
                f"p{round(q * 100)}": np.round(self.balance[:, i], 2).tolist()
                for i, q in enumerate(self.levels)
            },
            "p_below_zero": self.p_below_zero,
            "p_below_threshold": self.p_below_threshold,
            "daily_p_below_threshold": np.round(self.daily_p_below_threshold, 4).tolist(),
            "first_low_day": self.first_low_day,
            "first_low_date": self.first_low_date.isoformat() if self.first_low_date else None,
            "first_low_probability": self.first_low_probability,
            "first_negative_day": self.first_negative_day,
            "totals": self.totals,
            "n_paths": self.n_paths,
        }


def ar1_normals(
    n_paths: int, horizon: int, correlation: float, rng: np.random.Generator
) -> np.ndarray:
    """(n_paths, horizon) standard normals, AR(1) over days with lag-1 ``correlation``."""
    if not -1.0 < correlation < 1.0:
        raise ValueError(f"correlation must be in (-1, 1): {correlation}")
    eps = rng.standard_normal((n_paths, horizon))
    z = np.empty_like(eps)
    if horizon == 0:
        return z
    z[:, 0] = eps[:, 0]
    innovation = np.sqrt(1.0 - correlation**2)
    for t in range(1, horizon):
        z[:, t] = correlation * z[:, t - 1] + innovation * eps[:, t]
    return z


def sample_quantile_function(
    u: np.ndarray, levels: Sequence[float], values: np.ndarray
) -> np.ndarray:
    """Values at probabilities ``u`` (n, horizon) of per-day quantile functions through
    ``values`` (horizon, len(levels)) at ``levels``; linear between knots, exponential tails,
    never negative. ``values`` is sorted along the levels first."""
    q = np.asarray(levels, dtype=np.float64)
    v = np.sort(np.clip(np.asarray(values, dtype=np.float64), 0.0, None), axis=-1)
    if v.ndim != 2 or v.shape[1] != q.size:
        raise ValueError(f"values must be (horizon, {q.size}), got {v.shape}")
    u = np.clip(np.asarray(u, dtype=np.float64), 1e-12, 1.0 - 1e-12)
    if q.size == 1:
        return np.broadcast_to(v[:, 0], u.shape).copy()
    horizon = v.shape[0]
    days = np.arange(horizon)[None, :]
    # Interior: linear between the knots around u.
    k = np.clip(np.searchsorted(q, u, side="right") - 1, 0, q.size - 2)
    q0, q1 = q[k], q[k + 1]
    v0, v1 = v[days, k], v[days, k + 1]
    out = v0 + (v1 - v0) * (u - q0) / (q1 - q0)
    # Tails: exponential with the outer segments' slopes.
    low_slope = (v[:, 1] - v[:, 0]) / (q[1] - q[0])
    high_slope = (v[:, -1] - v[:, -2]) / (q[-1] - q[-2])
    below = u < q[0]
    above = u > q[-1]
    low = v[:, 0][None, :] - (low_slope * q[0])[None, :] * np.log(q[0] / u)
    high = v[:, -1][None, :] + (high_slope * (1.0 - q[-1]))[None, :] * np.log(
        (1.0 - q[-1]) / (1.0 - u)
    )
    out = np.where(below, low, out)
    out = np.where(above, high, out)
    return np.clip(out, 0.0, None)


def _first_true(mask: np.ndarray) -> np.ndarray:
    """1-based index of the first True per row; 0 when none."""
    hit = mask.any(axis=1)
    return np.where(hit, mask.argmax(axis=1) + 1, 0)


def _mode_day(first: np.ndarray) -> tuple[int | None, float]:
    crossed = first[first > 0]
    if crossed.size == 0:
        return None, 0.0
    counts = np.bincount(crossed)
    day = int(counts.argmax())
    return day, float(counts[day] / first.size)


def project_balance(
    last_balance: float,
    forecast: QuantileForecast,
    *,
    threshold: float = 0.0,
    n_paths: int = 2000,
    seed: int = 0,
    correlation: float = DEFAULT_CORRELATION,
    spend: str = "spend",
    income: str = "income",
) -> BalanceProjection:
    """Simulate ``n_paths`` balance paths from ``last_balance`` (end of the forecast's origin
    day) with the forecast's daily ``spend`` and ``income`` quantiles (a missing target counts
    as zero) and summarise them. Seeded: the same inputs give the same projection."""
    if n_paths < 1:
        raise ValueError("n_paths must be >= 1")
    levels = tuple(float(q) for q in forecast.quantile_levels)
    horizon = len(forecast.dates)
    rng = np.random.default_rng(seed)
    flows: dict[str, np.ndarray] = {}
    for name in (spend, income):
        values = forecast.quantiles.get(name)
        if values is None:
            flows[name] = np.zeros((n_paths, horizon))
            continue
        values = np.asarray(values, dtype=np.float64)
        if values.shape[0] != horizon:
            raise ValueError(f"{name} has {values.shape[0]} days, the forecast {horizon}")
        u = ndtr(ar1_normals(n_paths, horizon, correlation, rng))
        flows[name] = sample_quantile_function(u, levels, values)
    paths = float(last_balance) + np.cumsum(flows[income] - flows[spend], axis=1)
    below_threshold = paths < threshold
    below_zero = paths < 0.0
    first_low = _first_true(below_threshold)
    first_negative = _first_true(below_zero)
    low_day, low_p = _mode_day(first_low)
    negative_day, _ = _mode_day(first_negative)
    report = np.asarray(BALANCE_LEVELS)
    balance = np.quantile(paths, report, axis=0).T if horizon else np.zeros((0, report.size))
    totals = {
        name: np.quantile(flows[name].sum(axis=1), report).round(2).tolist()
        for name in (spend, income)
        if name in forecast.quantiles
    }
    return BalanceProjection(
        dates=list(forecast.dates),
        start_balance=float(last_balance),
        threshold=float(threshold),
        levels=BALANCE_LEVELS,
        balance=balance,
        p_below_zero=float(below_zero.any(axis=1).mean()),
        p_below_threshold=float(below_threshold.any(axis=1).mean()),
        daily_p_below_threshold=below_threshold.mean(axis=0),
        first_low_day=low_day,
        first_low_date=forecast.dates[low_day - 1] if low_day else None,
        first_low_probability=low_p,
        first_negative_day=negative_day,
        totals=totals,
        n_paths=n_paths,
    )


__all__ = [
    "BALANCE_LEVELS",
    "DEFAULT_CORRELATION",
    "BalanceProjection",
    "QuantileForecast",
    "ar1_normals",
    "project_balance",
    "sample_quantile_function",
]
