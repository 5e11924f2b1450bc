"""Forecasts of one user's cash flow, as ``GET /v1/forecast`` and ``jobs/forecast_all.py`` serve
them.

For each user: read their ledger rows at the latest snapshot (their bucket only, filtered to
them), build the daily series (:func:`~.series.daily_series` on the model's own categories),
learn their schedule (paydays, bills: :func:`~.series.user_schedule`, from history only), add
the future rows with their covariates (:func:`~.tft.with_future`), predict P10/P50/P90 of daily
spend and income (:meth:`~.tft.ForecastModel.predict`), project the balance path from the last
known balance (:func:`~.balance.project_balance`) and explain it (:func:`~.explain.explain`).

Batching: :meth:`ForecastService.forecast_many` serves many users at once with one ledger read
per bucket and one ``predict`` call (the ``Forecaster`` deployment's ``@serve.batch`` calls it;
Serve's local testing mode cannot run ``@serve.batch``, so the batching is here, in plain code).

Caching: a forecast depends only on the user's rows (and accounts) and the model, so the
model's output (or the user's "too little history") is cached per ``(user_id, ledger
fingerprint, model_version)`` and the rendered answer per that plus ``(threshold, horizon)``.
The fingerprint is a digest of the data files of the user's bucket in ``transactions`` and
``accounts`` at the snapshot (:meth:`~scale_ray.ledger.delta.SnapshotCache.fingerprint`): a
commit to another bucket keeps the cache, a new transaction of the user (or of a neighbour in
the bucket) moves it on. ``ledger_version`` in the answer is the ``transactions`` version the
rows were read at.

Answers are ``("ok", body)`` or ``("err", status, code, message, details)`` tuples, so they
cross a ``DeploymentHandle`` as plain data (no exception pickling); :func:`unwrap` turns one
back into the body or an :class:`~scale_ray.errors.ApiError`. A user with fewer than
:data:`MIN_HISTORY_DAYS` days of history (or fewer than the model's encoder needs) gets 422
``insufficient_history``; while no model is published, 503 ``forecaster_unavailable``.

Money in the answer is decimal strings in the user's currency, rounded to its minor unit;
forecasts are estimates (floats inside), the ledger's money stays exact.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Hashable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from scale_ray.errors import ApiError
from scale_ray.money import MoneyError, exponent, from_minor, to_minor
from scale_ray.settings import Settings

log = logging.getLogger("scale.forecast")

#: The registry name of the forecasting model.
MODEL_NAME = "forecaster"
#: A user needs at least this many days between their first and last transaction (the model's
#: encoder may ask for more): two months give the schedule two paydays to learn from.
MIN_HISTORY_DAYS = 60
#: Rendered answers and model outputs kept per process (least recently used dropped).
CACHE_SIZE = 2048
#: Ledger columns the series and the schedule use.
LEDGER_COLUMNS: tuple[str, ...] = (
    "user_id",
    "user_bucket",
    "txn_id",
    "account_id",
    "amount_minor",
    "currency",
    "booked_at",
    "booked_offset_min",
    "narration",
    "merchant",
    "mode",
    "balance_after_minor",
    "category_hint",
)
#: Country of public holidays (a calendar covariate) by currency; others have none.
CURRENCY_COUNTRY: dict[str, str] = {
    "GBP": "GB",
    "INR": "IN",
    "CZK": "CZ",
    "USD": "US",
    "CAD": "CA",
    "AUD": "AU",
    "JPY": "JP",
    "CHF": "CH",
    "SGD": "SG",
}
#: ``accounts`` columns read for opening balances and the account type.
ACCOUNT_COLUMNS = [
    "user_id",
    "account_id",
    "account_type",
    "currency",
    "opening_balance_minor",
    "created_at",
]
QUANTILES = ("p10", "p50", "p90")
#: A risk is a warning from this probability on.
WARN_PROBABILITY = 0.1

#: ``("ok", body)`` or ``("err", status, code, message, details)``.
Result = tuple[Any, ...]
#: Returns the serving ``(model_version, model)``; raises :class:`ForecasterUnavailable`.
ModelSource = Callable[[], tuple[str, Any]]


class ForecasterUnavailable(RuntimeError):
    """No forecasting model is published (or it cannot be loaded)."""


def ok(body: dict[str, Any]) -> Result:
    return ("ok", body)


def err(error: ApiError) -> Result:
    return ("err", error.status, error.code, error.message, error.details)


def unwrap(result: Result) -> dict[str, Any]:
    """The body of an ``ok`` result; an ``err`` result raises its :class:`ApiError`."""
    if result[0] == "ok":
        return result[1]
    _, status, code, message, details = result
    raise ApiError(status, code, message, details)


def insufficient_history(user_id: str, days: int, required: int) -> ApiError:
    what = "no transactions" if days == 0 else f"{days} day(s) of transactions"
    return ApiError(
        422,
        "insufficient_history",
        f"not enough history to forecast: {what}, at least {required} days are needed",
        {"history_days": days, "required_days": required},
    )


def unavailable(message: str) -> ApiError:
    return ApiError(503, "forecaster_unavailable", message)


# -- requests ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ForecastRequest:
    """One user's forecast: ``threshold`` (decimal string, the user's currency) or
    ``threshold_minor``; ``horizon`` days (None: the model's)."""

    user_id: str
    threshold: str | None = None
    threshold_minor: int | None = None
    horizon: int | None = None


def forecast_request(
    user_id: Any,
    threshold: Any = None,
    threshold_minor: Any = None,
    horizon: Any = None,
) -> ForecastRequest:
    """A checked :class:`ForecastRequest` (``ValueError`` naming the problem)."""
    if not isinstance(user_id, str) or not user_id:
        raise ValueError("user_id must be a non-empty string")
    if threshold is not None and threshold_minor is not None:
        raise ValueError("give threshold or threshold_minor, not both")
    if threshold is not None and not isinstance(threshold, str | int | Decimal):
        raise ValueError("threshold must be a decimal string")
    if threshold_minor is not None and (
        isinstance(threshold_minor, bool) or not isinstance(threshold_minor, int)
    ):
        raise ValueError("threshold_minor must be an integer (minor units)")
    if horizon is not None and (isinstance(horizon, bool) or not isinstance(horizon, int)):
        raise ValueError("horizon must be an integer")
    if horizon is not None and horizon < 1:
        raise ValueError("horizon must be >= 1")
    text = None if threshold is None else str(threshold)
    return ForecastRequest(user_id, text, threshold_minor, horizon)


def threshold_minor_of(request: ForecastRequest, currency: str) -> int:
    """The request's threshold in ``currency``'s minor units (0 when none); 400 on a bad one."""
    if request.threshold_minor is not None:
        return int(request.threshold_minor)
    if request.threshold is None:
        return 0
    try:
        return to_minor(request.threshold, currency)
    except MoneyError as exc:
        raise ApiError(
            400, "bad_request", f"query parameter threshold: {exc}", {"parameter": "threshold"}
        ) from exc


# -- a small LRU -----------------------------------------------------------------------------------
class LRU:
    """A thread-safe least-recently-used map with hit and miss counts."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]
            self.misses += 1
            return None

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)

    def to_json(self) -> dict[str, int]:
        with self._lock:
            return {"size": len(self._items), "hits": self.hits, "misses": self.misses}


# -- one user's inputs and forecast -------------------------------------------------------------
@dataclass
class UserHistory:
    """What forecasting one user needs of their ledger."""

    user_id: str
    currency: str
    #: The last day of history: the forecast starts the day after.
    as_of: date
    history_days: int
    #: Balance at the end of ``as_of`` (major units).
    last_balance: float
    series: pd.DataFrame
    schedule: Any
    account_type: str = "current"
    income_bracket: str = "q1"


@dataclass
class Prediction:
    """The model's output for one user, with what rendering it needs (cached)."""

    user_id: str
    currency: str
    as_of: date
    history_days: int
    last_balance: float
    schedule: Any
    forecast: Any  # tft.UserForecast


@dataclass
class Forecast:
    """A rendered forecast: the numbers (floats, major units) and the explanation."""

    user_id: str
    currency: str
    as_of: date
    horizon: int
    model_version: str
    ledger_version: int
    dates: list[date]
    spend: np.ndarray  # (horizon, 3)
    income: np.ndarray  # (horizon, 3)
    balance: np.ndarray  # (horizon, 3): simulated end-of-day balance paths' quantiles
    #: Per day: P(end-of-day balance < threshold).
    daily_below_threshold: np.ndarray
    #: Quantiles of the horizon totals of spend and income (of the simulated sums, not sums
    #: of daily quantiles).
    totals: dict[str, np.ndarray]
    start_balance: float
    #: P(the balance is below zero / the threshold on at least one day of the horizon).
    prob_below_zero: float
    prob_below_threshold: float
    threshold_minor: int
    first_low_date: date | None
    first_negative_day: int | None
    warnings: list[dict[str, Any]]
    explanation: dict[str, Any]
    generated_at: datetime

    def money(self, value: float) -> str:
        """``value`` (major units) as a decimal string rounded to the currency's minor unit."""
        exp = exponent(self.currency)
        if not np.isfinite(value):
            value = 0.0
        quantum = Decimal(1).scaleb(-exp)
        dec = Decimal(repr(float(value))).quantize(quantum, rounding=ROUND_HALF_EVEN)
        return from_minor(int(dec.scaleb(exp)), self.currency)

    def _q(self, row: np.ndarray) -> dict[str, str]:
        return {name: self.money(float(v)) for name, v in zip(QUANTILES, row, strict=True)}

    def to_json(self) -> dict[str, Any]:
        """The API's answer."""
        days = [
            {
                "date": d.isoformat(),
                "spend": self._q(self.spend[i]),
                "income": self._q(self.income[i]),
                "balance": self._q(self.balance[i]),
                "prob_below_threshold": round(float(self.daily_below_threshold[i]), 4),
            }
            for i, d in enumerate(self.dates)
        ]
        return {
            "user_id": self.user_id,
            "currency": self.currency,
            "as_of": self.as_of.isoformat(),
            "horizon": self.horizon,
            "model_version": self.model_version,
            "ledger_version": self.ledger_version,
            "generated_at": self.generated_at.isoformat(),
            "days": days,
            "totals": {name: self._q(values) for name, values in self.totals.items()},
            "balance": {
                "start": self.money(self.start_balance),
                "end": self._q(self.balance[-1]) if len(self.balance) else None,
                "prob_below_zero": round(self.prob_below_zero, 4),
                "prob_below_threshold": round(self.prob_below_threshold, 4),
                "threshold": from_minor(self.threshold_minor, self.currency),
                "first_low_date": self.first_low_date.isoformat() if self.first_low_date else None,
                "first_negative_date": self.dates[self.first_negative_day - 1].isoformat()
                if self.first_negative_day
                else None,
            },
            "warnings": self.warnings,
            "explanation": self.explanation,
        }

    def to_rows(self, user_bucket: int) -> list[dict[str, Any]]:
        """Rows of the ``forecasts`` table (:data:`~scale_ray.ledger.schema.FORECASTS`); the
        forecast must be rendered with threshold 0 (its daily probabilities are then those of
        a negative balance)."""
        if self.threshold_minor != 0:
            raise ValueError("forecasts table rows need a forecast rendered with threshold 0")
        explanation = json.dumps(self.explanation, sort_keys=True, default=str)
        out = []
        for i, d in enumerate(self.dates):
            row: dict[str, Any] = {
                "user_id": self.user_id,
                "user_bucket": int(user_bucket),
                "as_of": self.as_of,
                "ledger_version": int(self.ledger_version),
                "model_version": self.model_version,
                "horizon_day": i + 1,
                "date": d,
                "currency": self.currency,
            }
            for name, values in (
                ("spend", self.spend),
                ("income", self.income),
                ("balance", self.balance),
            ):
                for j, q in enumerate(QUANTILES):
                    row[f"{name}_{q}"] = float(values[i, j])
            row["prob_below_zero"] = float(self.daily_below_threshold[i])
            row["explanation_json"] = explanation
            row["created_at"] = self.generated_at
            out.append(row)
        return out


# -- the model's side (tft.py) ------------------------------------------------------------------
def model_horizon(model: Any) -> int:
    """Days the model forecasts."""
    return int(model.config.horizon)


def model_min_history(model: Any, floor: int = MIN_HISTORY_DAYS) -> int:
    """Days of history a user needs: ``floor``, or more when the model's encoder needs more."""
    return max(int(floor), int(model.config.min_encoder))


def category_columns(model: Any) -> list[str]:
    """The ``spend_<category>`` input columns of the model (targets excluded)."""
    targets = set(model.config.targets)
    return [c for c in model.input_columns if c.startswith("spend_") and c not in targets]


def model_series(frame: pd.DataFrame, model: Any) -> pd.DataFrame:
    """:func:`~.series.daily_series` of ledger rows with exactly the model's category columns
    (a category the rows never spend on is a column of zeros)."""
    from scale_ray.models.forecast.series import category_of, daily_series, slug

    wanted = category_columns(model)
    if model.config.categories:
        names = list(model.config.categories)
    else:  # the columns name slugs: find the rows' categories that map onto them
        names, taken = [], set()
        for name in category_of(frame).unique() if len(frame) else []:
            column = f"spend_{slug(name)}"
            if column in wanted and column not in taken:
                names.append(name)
                taken.add(column)
    series = daily_series(frame, categories=names)
    for column in wanted:
        if column not in series:
            series[column] = 0.0
    return series


def bracket_edges(series: pd.DataFrame) -> list[float]:
    """Quartile edges of users' median monthly income (what :func:`~.series.income_brackets`
    ranks by); training stores them in the model's metadata (``income_bracket_edges``), so a
    user forecast alone is put in the bracket the training users defined."""
    monthly = (
        series.assign(month=pd.to_datetime(series["date"]).dt.to_period("M"))
        .groupby(["user_id", "month"])["income"].sum()
        .groupby(level=0).median()
    )  # fmt: skip
    if monthly.empty:
        return []
    return [float(x) for x in np.quantile(monthly.to_numpy(), [0.25, 0.5, 0.75])]


def user_brackets(model: Any, series: pd.DataFrame) -> dict[str, str]:
    """Each user's income bracket by the model's training edges (``q1``..``q4``); a model
    without edges ranks the users of ``series`` among themselves."""
    from scale_ray.models.forecast.series import income_brackets

    edges = (getattr(model, "metadata", None) or {}).get("income_bracket_edges")
    if not edges or len(edges) != 3:
        return income_brackets(series)
    monthly = (
        series.assign(month=pd.to_datetime(series["date"]).dt.to_period("M"))
        .groupby(["user_id", "month"])["income"].sum()
        .groupby(level=0).median()
    )  # fmt: skip
    index = np.searchsorted(np.asarray(edges, dtype=np.float64), monthly.to_numpy(), side="left")
    return {str(u): f"q{int(i) + 1}" for u, i in zip(monthly.index, index, strict=True)}


def model_frame(model: Any, histories: Sequence[UserHistory], country: str | None) -> pd.DataFrame:
    """The users' series with covariates and the model's horizon of future rows."""
    from scale_ray.models.forecast.series import with_covariates
    from scale_ray.models.forecast.tft import with_future

    series = pd.concat([h.series for h in histories], ignore_index=True)
    schedules = {h.user_id: h.schedule for h in histories}
    types = {h.user_id: h.account_type for h in histories}
    brackets = {h.user_id: h.income_bracket for h in histories}
    frame = with_covariates(
        series, schedules, country=country, account_types=types, brackets=brackets
    )
    return with_future(
        frame,
        model_horizon(model),
        schedules,
        country=country,
        account_types=types,
        brackets=brackets,
    )


def predict_users(model: Any, histories: Sequence[UserHistory]) -> dict[str, Any]:
    """One ``predict`` per holiday country over ``histories``: ``{user_id: UserForecast}``."""
    by_country: dict[str | None, list[UserHistory]] = {}
    for h in histories:
        by_country.setdefault(CURRENCY_COUNTRY.get(h.currency), []).append(h)
    out: dict[str, Any] = {}
    for country, group in by_country.items():
        for forecast in model.predict(model_frame(model, group, country)):
            out[str(forecast.user_id)] = forecast
    return out


def slice_forecast(forecast: Any, horizon: int) -> Any:
    """The first ``horizon`` days of a forecast."""
    if len(forecast.dates) <= horizon:
        return forecast
    return dataclasses.replace(
        forecast,
        dates=list(forecast.dates)[:horizon],
        quantiles={k: np.asarray(v)[:horizon] for k, v in forecast.quantiles.items()},
    )


def render(
    prediction: Prediction,
    *,
    model_version: str,
    ledger_version: int,
    threshold_minor: int,
    horizon: int,
    now: datetime | None = None,
) -> Forecast:
    """Balance projection and explanation of a prediction, for one threshold and horizon."""
    from scale_ray.models.forecast.balance import project_balance
    from scale_ray.models.forecast.explain import explain

    currency = prediction.currency
    threshold = threshold_minor * 10.0 ** -exponent(currency)
    forecast = slice_forecast(prediction.forecast, horizon)
    projection = project_balance(prediction.last_balance, forecast, threshold=threshold)
    explanation = explain(forecast, projection, prediction.schedule, currency=currency)
    n = len(forecast.dates)
    levels = [float(q) for q in forecast.quantile_levels]
    pick = [levels.index(min(levels, key=lambda q, t=t: abs(q - t))) for t in (0.1, 0.5, 0.9)]
    zeros = np.zeros((n, 3))
    spend = forecast.quantiles.get("spend")
    income = forecast.quantiles.get("income")
    totals = {
        name: np.asarray(projection.totals.get(name, [0.0, 0.0, 0.0]), dtype=np.float64)
        for name in ("spend", "income")
    }
    return Forecast(
        user_id=prediction.user_id,
        currency=currency,
        as_of=prediction.as_of,
        horizon=n,
        model_version=model_version,
        ledger_version=int(ledger_version),
        dates=[pd.Timestamp(d).date() for d in forecast.dates],
        spend=zeros if spend is None else np.asarray(spend, dtype=np.float64)[:, pick],
        income=zeros if income is None else np.asarray(income, dtype=np.float64)[:, pick],
        balance=np.asarray(projection.balance, dtype=np.float64)[:n],
        daily_below_threshold=np.asarray(projection.daily_p_below_threshold, dtype=np.float64),
        totals=totals,
        start_balance=float(prediction.last_balance),
        prob_below_zero=float(projection.p_below_zero),
        prob_below_threshold=float(projection.p_below_threshold),
        threshold_minor=int(threshold_minor),
        first_low_date=projection.first_low_date,
        first_negative_day=projection.first_negative_day,
        warnings=_warnings(projection, prediction.currency, threshold_minor),
        explanation=_explanation_json(explanation),
        generated_at=now or datetime.now(UTC),
    )


def _warnings(projection: Any, currency: str, threshold_minor: int) -> list[dict[str, Any]]:
    """Plain warnings: a likely overdraft, a likely dip below the threshold."""
    out: list[dict[str, Any]] = []
    p_zero = float(projection.p_below_zero)
    if p_zero >= WARN_PROBABILITY:
        day = projection.first_negative_day
        when = f", most likely first on {projection.dates[day - 1].isoformat()}" if day else ""
        out.append(
            {
                "code": "overdraft_risk",
                "message": f"{round(100 * p_zero)}% chance the balance goes below zero "
                f"in the next {len(projection.dates)} days{when}",
                "probability": round(p_zero, 4),
            }
        )
    p_low = float(projection.p_below_threshold)
    if threshold_minor > 0 and p_low >= WARN_PROBABILITY:
        limit = from_minor(threshold_minor, currency)
        first = projection.first_low_date
        when = f", most likely first on {first.isoformat()}" if first else ""
        out.append(
            {
                "code": "below_threshold",
                "message": f"{round(100 * p_low)}% chance the balance goes below {limit} "
                f"{currency} in the next {len(projection.dates)} days{when}",
                "probability": round(p_low, 4),
            }
        )
    return out


def _explanation_json(explanation: Any) -> dict[str, Any]:
    """``{"summary", "sentences", "weights"}`` as plain JSON (dates as ISO strings, numbers
    rounded to 4 decimals)."""
    return {
        "summary": str(explanation.summary),
        "sentences": [str(s) for s in explanation.sentences],
        "weights": _plain(explanation.weights),
    }


def _plain(value: Any) -> Any:
    """``value`` with only JSON types: mappings, lists, str, int, float (rounded), bool, None."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_plain(v) for v in value]
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return round(float(value), 4) if np.isfinite(value) else None
    if isinstance(value, date | datetime | pd.Timestamp):
        return value.isoformat()
    if value is None or isinstance(value, str):
        return value
    return str(value)


def forecast_histories(
    model: Any,
    model_version: str,
    histories: Sequence[UserHistory],
    *,
    ledger_version: int,
    threshold_minor: int = 0,
    horizon: int | None = None,
    now: datetime | None = None,
    users_per_predict: int = 64,
) -> dict[str, Forecast]:
    """Rendered forecasts of ``histories`` (``users_per_predict`` users per ``predict``)."""
    out: dict[str, Forecast] = {}
    chunk = max(1, int(users_per_predict))
    for start in range(0, len(histories), chunk):
        part = list(histories[start : start + chunk])
        forecasts = predict_users(model, part)
        for h in part:
            forecast = forecasts.get(h.user_id)
            if forecast is None:
                continue
            prediction = Prediction(
                h.user_id, h.currency, h.as_of, h.history_days, h.last_balance, h.schedule, forecast
            )
            out[h.user_id] = render(
                prediction,
                model_version=model_version,
                ledger_version=ledger_version,
                threshold_minor=threshold_minor,
                horizon=horizon or model_horizon(model),
                now=now,
            )
    return out


# -- from ledger rows to histories -----------------------------------------------------------------
def closing_balance(rows: pd.DataFrame, accounts: pd.DataFrame | None, currency: str) -> float:
    """The user's balance after their last row in ``currency`` (major units): per account, its
    last ``balance_after_minor`` when every row of it has one, else its opening balance
    (``accounts`` table) plus its amounts; summed over the accounts."""
    mine = rows[rows["currency"] == currency]
    opening: dict[str, int] = {}
    if accounts is not None and len(accounts):
        acc = accounts[accounts["currency"] == currency]
        opening = {
            str(a): int(b)
            for a, b in zip(acc["account_id"], acc["opening_balance_minor"], strict=True)
        }
    total = 0
    account_ids = mine["account_id"].astype(str) if "account_id" in mine else None
    groups = mine.groupby(account_ids, sort=False) if account_ids is not None else [("", mine)]
    for account, part in groups:
        after = part.get("balance_after_minor")
        if after is not None and len(part) and after.notna().all():
            order = pd.to_datetime(part["booked_at"], utc=True).argsort(kind="mergesort")
            total += int(after.iloc[order].iloc[-1])
        else:
            total += opening.get(str(account), 0) + int(part["amount_minor"].sum())
    return total * 10.0 ** -exponent(currency)


def user_histories(
    model: Any,
    rows: pa.Table | pd.DataFrame,
    user_ids: Collection[str],
    *,
    min_history_days: int = MIN_HISTORY_DAYS,
    accounts: pd.DataFrame | None = None,
) -> tuple[dict[str, UserHistory], dict[str, ApiError]]:
    """Each user's :class:`UserHistory` from their ledger rows, or their 422 error.

    Each user's series is built from their rows alone, so a forecast never depends on who
    else was in the batch. ``accounts`` (rows of the ``accounts`` table) gives opening balances
    and the account type; ``min_history_days`` is raised to what the model's encoder needs.
    """
    from scale_ray.models.forecast.series import user_schedule

    required = model_min_history(model, min_history_days)
    frame = rows.to_pandas() if isinstance(rows, pa.Table) else rows
    wanted = {str(u) for u in user_ids}
    histories: dict[str, UserHistory] = {}
    errors: dict[str, ApiError] = {}
    if len(frame):
        frame = frame[frame["user_id"].astype(str).isin(wanted)]
    by_account_user = (
        dict(tuple(accounts.groupby("user_id", sort=False)))
        if accounts is not None and len(accounts)
        else {}
    )
    for user_id, user_rows in frame.groupby("user_id", sort=False) if len(frame) else []:
        user_id = str(user_id)
        series = model_series(user_rows, model)
        days = len(series)
        if days < required:
            errors[user_id] = insufficient_history(user_id, days, required)
            continue
        currency = str(series["currency"].iloc[0])
        as_of = pd.Timestamp(series["date"].iloc[-1]).date()
        mine = user_rows[user_rows["currency"] == currency]
        user_accounts = by_account_user.get(user_id)
        account_type = "current"
        if user_accounts is not None:
            types = user_accounts.sort_values("created_at")["account_type"].dropna()
            if len(types):
                account_type = str(types.iloc[-1]).lower()
        histories[user_id] = UserHistory(
            user_id=user_id,
            currency=currency,
            as_of=as_of,
            history_days=days,
            last_balance=closing_balance(mine, user_accounts, currency),
            # The encoder reads at most encoder_length days; brackets use the whole history.
            series=series.tail(int(model.config.encoder_length)).reset_index(drop=True),
            schedule=user_schedule(mine, as_of=as_of),
            account_type=account_type,
            income_bracket=user_brackets(model, series).get(user_id, "q1"),
        )
    for user_id in wanted - set(histories) - set(errors):
        errors[user_id] = insufficient_history(user_id, 0, required)
    return histories, errors


# -- the service ---------------------------------------------------------------------------------
class ForecastService:
    """Forecasts for users of one ledger, with the model ``model_source`` gives (thread-safe).

    ``clock`` gives "now" (the ``generated_at`` of an answer). ``min_history_days`` is the
    floor of :func:`model_min_history`.
    """

    def __init__(
        self,
        settings: Settings,
        model_source: ModelSource,
        *,
        min_history_days: int = MIN_HISTORY_DAYS,
        cache_size: int = CACHE_SIZE,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        from scale_ray.ledger.delta import SnapshotCache

        self.settings = settings
        self.model_source = model_source
        self.min_history_days = min_history_days
        self.clock = clock or (lambda: datetime.now(UTC))
        self.snapshots = SnapshotCache(settings, "transactions")
        self.accounts = SnapshotCache(settings, "accounts")
        self.predictions = LRU(cache_size)
        self.answers = LRU(cache_size)
        self.table_version = -1
        self._stats_lock = threading.Lock()
        self.batches = 0
        self.requests = 0
        self.users_predicted = 0
        self.seconds = 0.0

    # ------------------------------------------------------------------ ledger reads
    def _bucket(self, user_id: str) -> int:
        from scale_ray.ledger.keys import user_bucket

        return user_bucket(user_id, self.settings.num_buckets)

    def _fingerprint(self, ledger_version: int, accounts_version: int, user_id: str) -> str:
        """What a user's forecast depends on in the ledger: the data files of their bucket in
        ``transactions`` and ``accounts`` (opening balances) at these versions."""
        bucket = self._bucket(user_id)
        txns = self.snapshots.fingerprint(ledger_version, bucket)
        return f"{txns}:{self.accounts.fingerprint(accounts_version, bucket)}"

    def read_users(self, version: int, user_ids: Collection[str]) -> pa.Table:
        """The ledger rows of ``user_ids`` at ``version`` (one read per bucket)."""
        import pyarrow.compute as pc

        by_bucket: dict[int, list[str]] = {}
        for user in sorted(set(user_ids)):
            by_bucket.setdefault(self._bucket(user), []).append(user)
        parts = [
            self.snapshots.dataset(version, bucket).to_table(
                columns=list(LEDGER_COLUMNS), filter=pc.field("user_id").isin(users)
            )
            for bucket, users in sorted(by_bucket.items())
        ]
        return pa.concat_tables(parts)

    def read_accounts(self, user_ids: Collection[str]) -> pd.DataFrame | None:
        """The ``accounts`` rows of ``user_ids`` (opening balances, types); None if unreadable
        (balances then start at 0 and the type is ``current``)."""
        import pyarrow.compute as pc

        try:
            version = self.accounts.latest_version()
            by_bucket: dict[int, list[str]] = {}
            for user in sorted(set(user_ids)):
                by_bucket.setdefault(self._bucket(user), []).append(user)
            parts = [
                self.accounts.dataset(version, bucket).to_table(
                    columns=ACCOUNT_COLUMNS, filter=pc.field("user_id").isin(users)
                )
                for bucket, users in sorted(by_bucket.items())
            ]
            return pa.concat_tables(parts).to_pandas() if parts else None
        except Exception:
            log.warning("could not read the accounts of %d user(s)", len(user_ids), exc_info=True)
            return None

    # ------------------------------------------------------------------ forecasting
    def forecast(
        self,
        user_id: str,
        *,
        threshold: str | None = None,
        threshold_minor: int | None = None,
        horizon: int | None = None,
    ) -> dict[str, Any]:
        """One user's answer (raises :class:`ApiError`)."""
        request = forecast_request(user_id, threshold, threshold_minor, horizon)
        return unwrap(self.forecast_many([request])[0])

    def forecast_many(self, requests: Sequence[ForecastRequest]) -> list[Result]:
        """One result per request: one model version, one ledger snapshot, one ledger read per
        bucket and one ``predict`` call for the users not in the cache."""
        started = time.perf_counter()
        try:
            version, model = self.model_source()
        except ForecasterUnavailable as exc:
            return [err(unavailable(str(exc))) for _ in requests]
        ledger_version = self.snapshots.latest_version()
        accounts_version = self.accounts.latest_version()
        self.table_version = ledger_version
        results: list[Result | None] = [None] * len(requests)
        max_horizon = model_horizon(model)
        fingerprints: dict[str, str] = {}
        pending: dict[str, list[int]] = {}
        found: dict[str, tuple[Prediction, int] | ApiError] = {}
        for i, request in enumerate(requests):
            if request.horizon is not None and request.horizon > max_horizon:
                results[i] = err(
                    ApiError(
                        400,
                        "bad_request",
                        f"query parameter horizon must be <= {max_horizon}, the model's horizon",
                        {"parameter": "horizon", "maximum": max_horizon},
                    )
                )
                continue
            user = request.user_id
            if user not in fingerprints:
                fingerprints[user] = self._fingerprint(ledger_version, accounts_version, user)
            if user in found or user in pending:
                continue
            cached = self.predictions.get((user, fingerprints[user], version))
            if cached is None:
                pending.setdefault(user, []).append(i)
            else:
                found[user] = cached
        predicted: dict[str, tuple[Prediction, int] | ApiError] = {}
        if pending:
            predicted = self._predict(model, ledger_version, pending)
            for user, value in predicted.items():  # "too little history" is cached too
                self.predictions.put((user, fingerprints[user], version), value)
        for i, request in enumerate(requests):
            if results[i] is not None:
                continue
            user = request.user_id
            key = (user, fingerprints[user], version)
            entry = found[user] if user in found else predicted[user]
            if isinstance(entry, ApiError):
                results[i] = err(entry)
                continue
            prediction, read_version = entry
            try:
                limit = threshold_minor_of(request, prediction.currency)
            except ApiError as exc:
                results[i] = err(exc)
                continue
            horizon = request.horizon or max_horizon
            answer_key = (*key, limit, horizon)
            body = self.answers.get(answer_key)
            if body is None:
                body = render(
                    prediction,
                    model_version=version,
                    ledger_version=read_version,
                    threshold_minor=limit,
                    horizon=horizon,
                    now=self.clock(),
                ).to_json()
                self.answers.put(answer_key, body)
            results[i] = ok(body)
        with self._stats_lock:
            self.batches += 1
            self.requests += len(requests)
            self.users_predicted += sum(1 for v in predicted.values() if isinstance(v, tuple))
            self.seconds += time.perf_counter() - started
        return [r if r is not None else err(unavailable("no answer")) for r in results]

    def _predict(
        self, model: Any, ledger_version: int, pending: Mapping[str, Sequence[int]]
    ) -> dict[str, tuple[Prediction, int] | ApiError]:
        users = sorted(pending)
        rows = self.read_users(ledger_version, users)
        histories, errors = user_histories(
            model,
            rows,
            users,
            min_history_days=self.min_history_days,
            accounts=self.read_accounts(users),
        )
        forecasts = predict_users(model, list(histories.values()))
        out: dict[str, tuple[Prediction, int] | ApiError] = dict(errors)
        for user, h in histories.items():
            forecast = forecasts.get(user)
            if forecast is None:
                out[user] = insufficient_history(user, h.history_days, h.history_days + 1)
                continue
            prediction = Prediction(
                user, h.currency, h.as_of, h.history_days, h.last_balance, h.schedule, forecast
            )
            out[user] = (prediction, ledger_version)
        return out

    def stats(self) -> dict[str, Any]:
        with self._stats_lock:
            return {
                "batches": self.batches,
                "requests": self.requests,
                "users_predicted": self.users_predicted,
                "seconds": round(self.seconds, 3),
                "table_version": self.table_version,
                "prediction_cache": self.predictions.to_json(),
                "answer_cache": self.answers.to_json(),
            }


__all__ = [
    "CACHE_SIZE",
    "LEDGER_COLUMNS",
    "LRU",
    "MIN_HISTORY_DAYS",
    "MODEL_NAME",
    "Forecast",
    "ForecastRequest",
    "ForecastService",
    "ForecasterUnavailable",
    "Prediction",
    "UserHistory",
    "err",
    "forecast_histories",
    "forecast_request",
    "insufficient_history",
    "ok",
    "predict_users",
    "render",
    "threshold_minor_of",
    "unwrap",
    "user_histories",
]
