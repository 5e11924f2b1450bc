"""Baseline forecasters of daily spend, for the forecast evaluation (P10/P50/P90).

Every forecaster returns quantiles ``(..., horizon, levels)`` that are non-negative and ordered
along the last axis (spend is never negative; crossing quantiles are sorted).

* :func:`zero_forecast`: all quantiles 0. On sparse daily spend (Berka: ~89 % of days without a
  debit) it is hard to beat on the daily P50 loss: its normalized P50 loss is exactly 1.
* :func:`seasonal_naive`: the value on the same day last week (``period="week"``) or on the
  same day of the month last month (``period="month"``), taken from the latest observed period
  (direct multi-horizon: day ``h`` of the horizon repeats the last observed week/month).
  Quantiles add the empirical quantiles of the rule's residuals over the encoder window
  (``y[d] - y[d - period]``), clipped at 0; a periodic series is forecast exactly.
* :class:`GBMQuantile`: one ``HistGradientBoostingRegressor(loss="quantile")`` per level, fitted
  across users on (origin, horizon day) pairs (direct multi-horizon, the horizon day is a
  feature). Features are known at the origin: rolling means, spread, share of spending days
  and maximum of past spend; the same weekday in past weeks and the same day of the month in
  past months; days since the last debit, income and balance; plus the target day's calendar
  and schedule covariates of :mod:`.series` (``recurring_due``, ``days_to_payday`` ...). Money
  features and the target are divided by the user's mean daily spend over the last 90 days
  (the loss is scale-equivariant, so the model learns one shape for all users).
* :func:`theta_forecast`: statsmodels' Theta method per user on *daily* spend with additive
  weekly deseasonalization. Its Gaussian intervals are symmetric about a positive mean, which
  fits zero-inflated days badly (its P50 is never 0), so quantiles are the point forecast plus
  empirical quantiles of its own out-of-sample errors (the last ``backtests`` horizons of the
  history, each forecast from the data before it), clipped at 0. Daily Theta was kept rather
  than weekly totals: the weekly variant needs a second model to spread a week over its days,
  and the error quantiles already give the zero-inflated shape (P10 = P50 = 0 on most days).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from scale_ray.models.forecast.series import MAX_DAYS_TO

#: Quantile levels of every forecast here.
LEVELS: tuple[float, ...] = (0.1, 0.5, 0.9)
#: The residual window of the seasonal naive rule (the TFT's encoder length).
ENCODER_DAYS = 90


def finish_quantiles(values: np.ndarray) -> np.ndarray:
    """Clip at 0, replace non-finite values with 0 and sort along the last axis."""
    out = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    return np.sort(np.maximum(out, 0.0), axis=-1)


def zero_forecast(n_series: int, horizon: int, levels: Sequence[float] = LEVELS) -> np.ndarray:
    """All-zero quantiles, ``(n_series, horizon, levels)``."""
    return np.zeros((n_series, horizon, len(levels)), dtype=np.float64)


# -- seasonal naive --------------------------------------------------------------------------


def _month_back(dates: pd.DatetimeIndex, months: int) -> pd.DatetimeIndex:
    """``dates`` minus ``months`` calendar months (day clamped to the shorter month's end)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pd.errors.PerformanceWarning)
        return dates - pd.DateOffset(months=months)


def seasonal_source(last: pd.Timestamp, targets: pd.DatetimeIndex, period: str) -> pd.DatetimeIndex:
    """The observed day each target day copies: same weekday of the latest observed week, or
    same day of the month in the latest month whose copy is on or before ``last``."""
    last = pd.Timestamp(last)
    if period == "week":
        gap = np.asarray((targets - last).days, dtype=np.int64)
        weeks = np.ceil(np.maximum(gap, 1) / 7.0).astype(np.int64)
        return targets - pd.to_timedelta(7 * weeks, unit="D")
    if period == "month":
        out = _month_back(targets, 1)
        for months in range(2, 4):
            late = out > last
            if not late.any():
                break
            out = out.where(~late, _month_back(targets, months))
        return out
    raise ValueError(f"period must be 'week' or 'month', got {period!r}")


def seasonal_naive(
    history: np.ndarray,
    last: pd.Timestamp,
    horizon: int,
    *,
    period: str = "week",
    levels: Sequence[float] = LEVELS,
    window: int = ENCODER_DAYS,
) -> np.ndarray:
    """Seasonal naive quantiles ``(horizon, levels)`` from a daily ``history`` ending on ``last``.

    The point is the copied day's value; quantiles add the ``levels`` quantiles of the rule's
    one-period residuals over the last ``window`` days (0 when none can be computed).
    """
    y = np.asarray(history, dtype=np.float64)
    if y.ndim != 1 or y.size == 0:
        raise ValueError("history must be a non-empty 1-D array")
    last = pd.Timestamp(last)
    first = last - pd.Timedelta(days=y.size - 1)
    targets = pd.date_range(last + pd.Timedelta(days=1), periods=horizon, freq="D")
    src = np.asarray((seasonal_source(last, targets, period) - first).days, dtype=np.int64)
    point = np.where(src >= 0, y[np.clip(src, 0, None)], 0.0)
    # Residuals of the one-period rule over the encoder window.
    days = pd.date_range(first, last, freq="D")[-window:]
    prev = days - pd.Timedelta(days=7) if period == "week" else _month_back(days, 1)
    prev_idx = np.asarray((prev - first).days, dtype=np.int64)
    day_idx = np.asarray((days - first).days, dtype=np.int64)
    ok = prev_idx >= 0
    resid = y[day_idx[ok]] - y[prev_idx[ok]]
    shift = np.quantile(resid, levels) if resid.size else np.zeros(len(levels))
    return finish_quantiles(point[:, None] + np.asarray(shift)[None, :])


# -- Theta -------------------------------------------------------------------------------------


def _theta_point(y: np.ndarray, horizon: int, period: int) -> np.ndarray:
    from statsmodels.tsa.forecasting.theta import ThetaModel

    if y.size < 2 * period + 2 or float(np.std(y)) == 0.0:
        return np.full(horizon, float(y.mean()) if y.size else 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            model = ThetaModel(y, period=period, deseasonalize=True, method="additive")
            point = np.asarray(model.fit().forecast(horizon), dtype=np.float64)
        except (ValueError, np.linalg.LinAlgError, ZeroDivisionError):
            return np.full(horizon, float(y.mean()))
    if not np.isfinite(point).all():
        return np.full(horizon, float(y.mean()))
    return point


def theta_forecast(
    history: np.ndarray,
    horizon: int,
    *,
    levels: Sequence[float] = LEVELS,
    period: int = 7,
    max_history: int = 365,
    backtests: int = 2,
) -> np.ndarray:
    """Theta-method quantiles ``(horizon, levels)`` of a daily ``history`` (last value = origin).

    Fits on the last ``max_history`` days. The quantile offsets are the empirical quantiles of
    the out-of-sample errors of ``backtests`` earlier forecasts of ``horizon`` days each (each
    fitted on the history before it); with too little history for any, of ``y - mean(y)``.
    """
    y = np.asarray(history, dtype=np.float64)[-max_history:]
    if y.ndim != 1 or y.size == 0:
        raise ValueError("history must be a non-empty 1-D array")
    point = _theta_point(y, horizon, period)
    errors = []
    for b in range(1, backtests + 1):
        cut = y.size - b * horizon
        if cut < 2 * period + 2:
            break
        actual = y[cut : cut + horizon]
        errors.append(actual - _theta_point(y[:cut], horizon, period)[: actual.size])
    resid = np.concatenate(errors) if errors else y - y.mean()
    shift = np.quantile(resid, levels)
    return finish_quantiles(np.maximum(point, 0.0)[:, None] + shift[None, :])


# -- gradient boosting -----------------------------------------------------------------------

#: Target-day covariates the GBM reads from the frame (calendar and schedule of series.py).
GBM_TARGET_COVARIATES = (
    "day_of_week",
    "day_of_month",
    "month",
    "days_to_month_end",
    "is_holiday",
    "is_weekend_or_holiday",
    "days_to_payday",
    "days_to_recurring",
)


@dataclass
class _UserArrays:
    """One user's contiguous daily rows (history, then the future days when predicting)."""

    dates: pd.DatetimeIndex
    spend: np.ndarray
    income: np.ndarray
    balance: np.ndarray
    covariates: dict[str, np.ndarray]
    due: np.ndarray
    cs: np.ndarray = field(init=False)
    cs_nz: np.ndarray = field(init=False)
    cs_inc: np.ndarray = field(init=False)
    cs_sq: np.ndarray = field(init=False)
    max90: np.ndarray = field(init=False)
    since: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        y = np.nan_to_num(self.spend)
        self.cs = np.concatenate([[0.0], np.cumsum(y)])
        self.cs_nz = np.concatenate([[0.0], np.cumsum(y > 0)])
        self.cs_inc = np.concatenate([[0.0], np.cumsum(np.nan_to_num(self.income))])
        self.cs_sq = np.concatenate([[0.0], np.cumsum(y * y)])
        self.max90 = pd.Series(y).rolling(ENCODER_DAYS, min_periods=1).max().to_numpy()
        idx = np.where(y > 0, np.arange(y.size), -1)
        last = np.maximum.accumulate(idx)
        self.since = np.where(last >= 0, np.arange(y.size) - last, MAX_DAYS_TO * 4)


def _window(cs: np.ndarray, t: np.ndarray, w: int) -> tuple[np.ndarray, np.ndarray]:
    start = np.maximum(t - w + 1, 0)
    return cs[t + 1] - cs[start], (t + 1 - start).astype(np.float64)


def _user_arrays(part: pd.DataFrame) -> _UserArrays:
    part = part.sort_values("date")
    cov = {c: part[c].to_numpy(np.float64) if c in part else np.zeros(len(part))
           for c in GBM_TARGET_COVARIATES}  # fmt: skip
    due = part["recurring_due"].to_numpy(np.float64) if "recurring_due" in part else None
    balance = part["balance"].to_numpy(np.float64) if "balance" in part else None
    return _UserArrays(
        dates=pd.DatetimeIndex(part["date"]),
        spend=part["spend"].to_numpy(np.float64),
        income=part["income"].to_numpy(np.float64) if "income" in part else np.zeros(len(part)),
        balance=np.nan_to_num(balance) if balance is not None else np.zeros(len(part)),
        covariates=cov,
        due=np.nan_to_num(due) if due is not None else np.zeros(len(part)),
    )


def gbm_features(
    arrays: _UserArrays, t: np.ndarray, h: np.ndarray, *, scale_target: bool = True
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Features of the (origin index ``t``, horizon day ``h``) pairs of one user.

    Only spend, income and balance up to ``t`` are read; the target day's covariates are
    known in advance. Returns ``(X, scale, names)``: the target's divisor is ``scale``.
    """
    t = np.asarray(t, dtype=np.int64)
    h = np.asarray(h, dtype=np.int64)
    y = np.nan_to_num(arrays.spend)
    target = t + h
    sum90, n90 = _window(arrays.cs, t, ENCODER_DAYS)
    mean90 = sum90 / n90
    scale = np.maximum(mean90, 1.0) if scale_target else np.ones_like(mean90)
    cols: dict[str, np.ndarray] = {"h": h.astype(np.float64), "log_scale": np.log1p(mean90)}
    for w in (7, 30, 90):
        s, n = _window(arrays.cs, t, w)
        cols[f"mean{w}"] = s / n / scale
    for w in (30, 90):
        s, n = _window(arrays.cs_nz, t, w)
        cols[f"nz{w}"] = s / n
    sq, n = _window(arrays.cs_sq, t, ENCODER_DAYS)
    cols["std90"] = np.sqrt(np.maximum(sq / n - mean90**2, 0.0)) / scale
    cols["max90"] = arrays.max90[t] / scale
    cols["since_spend"] = np.minimum(arrays.since[t], MAX_DAYS_TO * 4).astype(np.float64)
    inc, n = _window(arrays.cs_inc, t, 30)
    cols["income30"] = inc / scale
    cols["balance"] = arrays.balance[t] / scale
    # Same weekday: the latest observed one, and the mean over the last 12 weeks.
    weeks = np.ceil(h / 7.0).astype(np.int64)
    lag = target - 7 * weeks
    cols["same_weekday"] = np.where(lag >= 0, y[np.maximum(lag, 0)], 0.0) / scale
    total = np.zeros(t.size)
    count = np.zeros(t.size)
    for k in range(12):
        idx = lag - 7 * k
        ok = idx >= 0
        total += np.where(ok, y[np.maximum(idx, 0)], 0.0)
        count += ok
    cols["weekday_mean12"] = total / np.maximum(count, 1) / scale
    # Same day of the month: the latest observed month, and the mean over three months.
    dates = arrays.dates
    origin_dates = dates[t]
    target_dates = origin_dates + pd.to_timedelta(h, unit="D")
    latest = np.full(t.size, np.nan)
    month_total = np.zeros(t.size)
    month_count = np.zeros(t.size)
    for m in range(1, 5):
        src = _month_back(target_dates, m)
        idx = np.asarray((src - dates[0]).days, dtype=np.int64)
        usable = np.asarray(src <= origin_dates) & (idx >= 0)
        value = y[np.maximum(idx, 0)]
        latest = np.where(np.isnan(latest) & usable, value, latest)
        take = usable & (month_count < 3)
        month_total += np.where(take, value, 0.0)
        month_count += take
    cols["same_day_last_month"] = np.nan_to_num(latest) / scale
    cols["month_day_mean3"] = month_total / np.maximum(month_count, 1) / scale
    for name, values in arrays.covariates.items():
        cols[name] = values[target]
    cols["recurring_due"] = arrays.due[target] / scale
    names = list(cols)
    return np.column_stack([cols[n] for n in names]), scale, names


@dataclass
class GBMQuantile:
    """Direct multi-horizon quantile gradient boosting across users (see the module doc)."""

    levels: Sequence[float] = LEVELS
    horizon: int = 30
    min_history: int = ENCODER_DAYS
    train_stride: int = 7
    max_iter: int = 300
    learning_rate: float = 0.05
    max_leaf_nodes: int = 31
    min_samples_leaf: int = 100
    scale_target: bool = True
    #: Width of the uniform noise added to the (scaled) targets before fitting; see ``fit``.
    jitter: float = 1e-3
    seed: int = 0
    #: OpenMP threads for fitting and predicting (sklearn would take every core otherwise,
    #: which on a shared box slows everyone down, this model most of all).
    threads: int = 1
    models: list = field(default_factory=list, init=False)
    feature_names: list[str] = field(default_factory=list, init=False)

    def training_set(
        self, frame: pd.DataFrame, cutoff: pd.Timestamp
    ) -> tuple[np.ndarray, np.ndarray]:
        """Features and scaled targets of every origin on the stride grid whose whole horizon
        ends on or before ``cutoff`` (no target after it is read)."""
        xs, ys = [], []
        cutoff = pd.Timestamp(cutoff)
        for _, part in frame[frame["date"] <= cutoff].groupby("user_id", sort=True):
            arrays = _user_arrays(part)
            n = arrays.spend.size
            last_origin = n - 1 - self.horizon
            origins = np.arange(last_origin, self.min_history - 2, -self.train_stride)
            if origins.size == 0:
                continue
            t = np.repeat(origins, self.horizon)
            h = np.tile(np.arange(1, self.horizon + 1), origins.size)
            x, scale, self.feature_names = gbm_features(
                arrays, t, h, scale_target=self.scale_target
            )
            xs.append(x)
            ys.append(arrays.spend[t + h] / scale)
        if not xs:
            raise ValueError("no user has enough history before the cutoff to train on")
        return np.vstack(xs), np.concatenate(ys)

    def fit(self, frame: pd.DataFrame, cutoff: pd.Timestamp) -> GBMQuantile:
        """Fit one model per level on ``frame`` rows up to ``cutoff``.

        Most targets are exactly 0 and sklearn's pinball gradient at ``y == prediction`` is that
        of ``y > prediction``: starting from the all-zero baseline every zero day would push the
        way a spending day does and no split would be found (the model stays at 0). A tiny
        uniform jitter on the targets breaks those ties; predictions inside the jitter band
        are read as 0.
        """
        from sklearn.ensemble import HistGradientBoostingRegressor
        from threadpoolctl import threadpool_limits

        x, y = self.training_set(frame, cutoff)
        rng = np.random.default_rng(self.seed)
        y = y + rng.uniform(0.0, self.jitter, size=y.size)
        self.models = []
        with threadpool_limits(limits=self.threads):
            self._fit_levels(HistGradientBoostingRegressor, x, y)
        return self

    def _fit_levels(self, estimator: type, x: np.ndarray, y: np.ndarray) -> None:
        for q in self.levels:
            model = estimator(
                loss="quantile",
                quantile=float(q),
                max_iter=self.max_iter,
                learning_rate=self.learning_rate,
                max_leaf_nodes=self.max_leaf_nodes,
                min_samples_leaf=self.min_samples_leaf,
                early_stopping=False,
                random_state=self.seed,
            )
            self.models.append(model.fit(x, y))

    def predict(
        self, history: pd.DataFrame, future: pd.DataFrame, users: Sequence[str]
    ) -> np.ndarray:
        """Quantiles ``(users, horizon, levels)``: ``history`` holds each user's rows up to the
        origin, ``future`` the covariate rows of the ``horizon`` days after it."""
        from threadpoolctl import threadpool_limits

        if not self.models:
            raise RuntimeError("fit the model first")
        out = np.zeros((len(users), self.horizon, len(self.levels)))
        hist = dict(tuple(history.groupby("user_id", sort=False)))
        fut = dict(tuple(future.groupby("user_id", sort=False)))
        for i, user in enumerate(users):
            part = hist[user].sort_values("date")
            ahead = fut[user].sort_values("date").copy()
            if len(ahead) != self.horizon:
                raise ValueError(f"user {user}: {len(ahead)} future rows, need {self.horizon}")
            for column in ("spend", "income"):
                ahead[column] = 0.0
            ahead["balance"] = float(part["balance"].iloc[-1]) if "balance" in part else 0.0
            arrays = _user_arrays(pd.concat([part, ahead], ignore_index=True))
            origin = len(part) - 1
            h = np.arange(1, self.horizon + 1)
            x, scale, _ = gbm_features(
                arrays, np.full(h.size, origin), h, scale_target=self.scale_target
            )
            with threadpool_limits(limits=self.threads):
                preds = np.column_stack([m.predict(x) for m in self.models])
            # Inside the jitter band a prediction means "zero".
            preds = np.where(preds <= self.jitter, 0.0, preds)
            out[i] = preds * scale[:, None]
        return finish_quantiles(out)


__all__ = [
    "ENCODER_DAYS",
    "GBM_TARGET_COVARIATES",
    "LEVELS",
    "GBMQuantile",
    "finish_quantiles",
    "gbm_features",
    "seasonal_naive",
    "seasonal_source",
    "theta_forecast",
    "zero_forecast",
]
