"""Forecast metrics: the TFT paper's normalized quantile loss, 30-day total error, coverage.

Arrays are ``(series, horizon)`` for actuals and point forecasts; a quantile forecast for
several levels is ``(series, horizon, levels)``. Everything is summed over all series (users
times origins) and all days of the horizon, as in Lim et al. (2021), "Temporal Fusion
Transformers for interpretable multi-horizon time series forecasting", eq. 18-19:

``QL(y, ŷ, q) = q · max(y - ŷ, 0) + (1 - q) · max(ŷ - y, 0)``
``q-risk = 2 · Σ QL(y, ŷ_q, q) / Σ |y|``

With non-negative targets the zero forecast has a P50 q-risk of exactly 1 and a P90 q-risk of
exactly 1.8, a useful yardstick for sparse daily spend.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def quantile_loss(y: np.ndarray, forecast: np.ndarray, q: float) -> np.ndarray:
    """Element-wise pinball loss ``QL(y, ŷ, q)``."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile level must be in (0, 1), got {q}")
    diff = np.asarray(y, dtype=np.float64) - np.asarray(forecast, dtype=np.float64)
    return q * np.maximum(diff, 0.0) + (1.0 - q) * np.maximum(-diff, 0.0)


def q_risk(y: np.ndarray, forecast: np.ndarray, q: float) -> float:
    """Normalized quantile loss ``2 Σ QL(y, ŷ_q, q) / Σ |y|`` over every element.

    NaN when the actuals are all zero (the normalizer is zero).
    """
    y = np.asarray(y, dtype=np.float64)
    forecast = np.asarray(forecast, dtype=np.float64)
    if y.shape != forecast.shape:
        raise ValueError(f"shapes differ: actual {y.shape}, forecast {forecast.shape}")
    scale = float(np.abs(y).sum())
    if scale == 0.0:
        return float("nan")
    return float(2.0 * quantile_loss(y, forecast, q).sum() / scale)


def q_risks(y: np.ndarray, quantiles: np.ndarray, levels: Sequence[float]) -> dict[float, float]:
    """:func:`q_risk` of each level: ``quantiles[..., i]`` is the forecast of ``levels[i]``."""
    quantiles = np.asarray(quantiles, dtype=np.float64)
    if quantiles.shape[-1] != len(levels):
        raise ValueError(f"{quantiles.shape[-1]} quantile columns for {len(levels)} levels")
    return {float(q): q_risk(y, quantiles[..., i], q) for i, q in enumerate(levels)}


def total_abs_errors(y: np.ndarray, point: np.ndarray) -> np.ndarray:
    """Per series: ``|Σ_h y - Σ_h ŷ|``, the error of the horizon total (e.g. 30-day spend)."""
    y = np.asarray(y, dtype=np.float64)
    point = np.asarray(point, dtype=np.float64)
    if y.shape != point.shape or y.ndim != 2:
        raise ValueError(f"need equal (series, horizon) arrays, got {y.shape} and {point.shape}")
    return np.abs(y.sum(axis=1) - point.sum(axis=1))


def total_mae(y: np.ndarray, point: np.ndarray) -> float:
    """Mean absolute error of the horizon total over the series."""
    errors = total_abs_errors(y, point)
    return float(errors.mean()) if errors.size else float("nan")


def coverage(y: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    """Share of actuals inside ``[lower, upper]`` (both ends included)."""
    y = np.asarray(y, dtype=np.float64)
    inside = (y >= np.asarray(lower)) & (y <= np.asarray(upper))
    return float(inside.mean()) if inside.size else float("nan")


def check_quantiles(quantiles: np.ndarray, *, tol: float = 1e-9) -> None:
    """Raise unless the forecast is finite, non-negative and ordered along the last axis."""
    q = np.asarray(quantiles, dtype=np.float64)
    if not np.isfinite(q).all():
        raise ValueError("quantile forecast has non-finite values")
    if (q < -tol).any():
        raise ValueError("quantile forecast has negative values")
    if (np.diff(q, axis=-1) < -tol).any():
        raise ValueError("quantile forecast is not ordered")


#: Swanson's rule: the mean of a distribution from its P10, P50 and P90.
SWANSON_WEIGHTS = (0.3, 0.4, 0.3)


def swanson_mean(quantiles: np.ndarray) -> np.ndarray:
    """``0.3 P10 + 0.4 P50 + 0.3 P90`` of a ``(..., 3)`` P10/P50/P90 forecast."""
    return np.asarray(quantiles, dtype=np.float64) @ np.asarray(SWANSON_WEIGHTS)


def forecast_metrics(
    y: np.ndarray, quantiles: np.ndarray, levels: Sequence[float] = (0.1, 0.5, 0.9)
) -> dict[str, float]:
    """The evaluation's figures for one method: ``p50_loss``, ``p90_loss`` (and every other
    level as ``p<100q>_loss``), ``total_mae`` of the P50 horizon total, ``total_mae_norm``
    (that MAE over the mean actual total) and ``coverage`` of the outermost interval.

    A day's median is a poor point for a *sum* of zero-inflated days (it is 0 on most days, so
    the summed medians miss most of the total); with P10/P50/P90 levels the total of the
    daily means by Swanson's rule is scored as well (``total_mae_mean``, ``_mean_norm``).
    """
    levels = [float(q) for q in levels]
    quantiles = np.asarray(quantiles, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    out: dict[str, float] = {}
    for q, risk in q_risks(y, quantiles, levels).items():
        out[f"p{round(q * 100)}_loss"] = risk
    median = levels.index(0.5) if 0.5 in levels else len(levels) // 2
    out["total_mae"] = total_mae(y, quantiles[..., median])
    mean_total = float(y.sum(axis=1).mean()) if y.size else float("nan")
    out["total_mae_norm"] = out["total_mae"] / mean_total if mean_total else float("nan")
    if [round(q, 6) for q in levels] == [0.1, 0.5, 0.9]:
        out["total_mae_mean"] = total_mae(y, swanson_mean(quantiles))
        out["total_mae_mean_norm"] = (
            out["total_mae_mean"] / mean_total if mean_total else float("nan")
        )
    lo, hi = int(np.argmin(levels)), int(np.argmax(levels))
    out["coverage"] = coverage(y, quantiles[..., lo], quantiles[..., hi])
    out["nominal_coverage"] = levels[hi] - levels[lo]
    return out


__all__ = [
    "check_quantiles",
    "coverage",
    "forecast_metrics",
    "q_risk",
    "q_risks",
    "quantile_loss",
    "swanson_mean",
    "total_abs_errors",
    "total_mae",
]
