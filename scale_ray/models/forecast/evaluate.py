"""Rolling-origin backtest of the daily spend forecasters on real ledgers; prints JSON.

``python -m scale_ray.models.forecast.evaluate --ledger PATH --format berka
[--methods zero,seasonal_naive,gbm,theta,tft] [--origins 6] [--max-users N] [--quick]
[--tft NAME=VALUE ...] [--until YYYY-MM-DD] [--dump PATH.npz]``

``--tft`` sets fields of the TFT's ``TFTConfig`` (e.g. ``max_epochs=8``); ``--until`` drops
every row booked after that day, which gives a validation backtest (its origins all lie before
the reported one's) to tune on; ``--dump`` writes the actuals and every method's quantiles.

Protocol
--------
* Data: a Berka ``trans_test.csv`` (``;``-separated, ``YYMMDD`` dates) read through the
  project's own parser and the demo loader's balance-chain ordering
  (:mod:`scale_ray.demo.berka`); ``account.csv`` beside it gives the account type (statement
  frequency). Each account is a user; its daily series (:func:`.series.daily_series`) runs from
  its first to its last booked day. Berka accounts end on different dates (the subset stops at
  each account's loan), so days after a user's last row are unknown, not zero.
* Origins: calendar days 30 days apart (the forecast starts the day after). The grid is anchored
  on the last day of the data minus the horizon; the evaluation takes the latest ``--origins``
  grid days with at least ``--min-users`` (50) eligible users. A user is eligible at an
  origin when it has ``--encoder`` days up to and including the origin and its series covers
  the whole horizon after it. Every origin's schedule covariates (paydays, recurring bills)
  and income brackets are learnt from rows up to that origin only.
* Training (GBM, TFT): once, on every user's days up to the *first* evaluation origin
  (no target after it is read). Per-user methods (seasonal naive, Theta) use each user's own
  history up to each origin.
* Metrics (:mod:`.metrics`), pooled over users, horizon days and origins: the TFT paper's
  normalized P50 and P90 quantile loss of daily spend, the MAE of the 30-day total spend (the
  sum of the daily P50s; also divided by the mean actual total) and of the sum of the daily
  means by Swanson's rule (``0.3 P10 + 0.4 P50 + 0.3 P90``: summed medians of mostly-zero
  days miss most of a total), coverage of the P10-P90 interval. The zero forecast (P50 loss
  exactly 1) is always included as a baseline.
* Target: the TFT beats the best baseline by at least 10 % on both the P50 and the P90 loss.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from scale_ray.models.forecast.baselines import (
    LEVELS,
    GBMQuantile,
    seasonal_naive,
    theta_forecast,
    zero_forecast,
)
from scale_ray.models.forecast.metrics import check_quantiles, forecast_metrics
from scale_ray.models.forecast.series import (
    Schedule,
    daily_series,
    income_brackets,
    user_schedule,
    with_covariates,
)

FORMATS = ("berka",)
#: ``--methods`` names; ``seasonal_naive`` runs both rules.
METHOD_ALIASES: dict[str, tuple[str, ...]] = {
    "zero": ("zero",),
    "seasonal_naive": ("seasonal_naive_week", "seasonal_naive_month"),
    "seasonal_naive_week": ("seasonal_naive_week",),
    "seasonal_naive_month": ("seasonal_naive_month",),
    "gbm": ("gbm",),
    "theta": ("theta",),
    "tft": ("tft",),
}
DEFAULT_METHODS = "zero,seasonal_naive,gbm,theta,tft"
LEARNED = ("tft",)
TARGET_IMPROVEMENT = 0.10
COUNTRY = "CZ"


# -- data --------------------------------------------------------------------------------------


@dataclass
class Ledger:
    """Ledger rows of every user and what is known about their accounts."""

    rows: pd.DataFrame
    account_types: dict[str, str]
    currency: str
    source: str


def read_accounts(path: Path) -> dict[str, dict[str, str]]:
    """Berka ``account.csv`` rows keyed by account id (empty when the file is absent)."""
    if not path.is_file():
        return {}
    table = pd.read_csv(path, sep=";", dtype=str).fillna("")
    return {row["account_id"].strip(): dict(row) for row in table.to_dict("records")}


def load_berka(path: str | Path, *, max_users: int | None = None) -> Ledger:
    """A Berka ``trans_*.csv`` (or the folder holding ``trans_test.csv``) as ledger rows.

    ``max_users`` keeps the first accounts by numeric id.
    """
    from scale_ray.demo.berka import tenants_from_parse_result
    from scale_ray.ingest.parse import parse_bytes

    path = Path(path)
    if path.is_dir():
        path = path / "trans_test.csv"
    result = parse_bytes(path.read_bytes(), filename=path.name, default_currency="CZK")
    accounts = read_accounts(path.parent / "account.csv")
    tenants = tenants_from_parse_result(result, accounts, limit=max_users)
    records = []
    types = {}
    for tenant in tenants:
        types[tenant.user_id] = tenant.accounts[0].account_type
        for r in tenant.transactions:
            records.append(
                {
                    "user_id": tenant.user_id,
                    "txn_id": str(r.txn_id),
                    "account_id": tenant.accounts[0].account_id,
                    "amount_minor": int(r.amount_minor),
                    "currency": r.currency or "CZK",
                    "booked_at": r.booked_at,
                    "narration": r.narration or "",
                    "merchant": r.merchant,
                    "category_hint": r.category_hint,
                    "balance_after_minor": r.balance_after_minor,
                }
            )
    rows = pd.DataFrame.from_records(records)
    if rows.empty:
        raise ValueError(f"no transactions read from {path}")
    rows["booked_at"] = pd.to_datetime(rows["booked_at"], utc=True)
    rows["amount_minor"] = rows["amount_minor"].astype(np.int64)
    rows["balance_after_minor"] = rows["balance_after_minor"].astype(np.int64)
    currency = str(rows["currency"].mode().iloc[0])
    return Ledger(rows, types, currency, str(path))


# -- origins -----------------------------------------------------------------------------------


@dataclass
class Origin:
    """Everything a forecaster may see at one origin, and the actuals it is scored on."""

    date: pd.Timestamp
    users: list[str]
    #: Covariate frame (:func:`.series.with_covariates`) of the users' days up to the origin.
    history: pd.DataFrame
    #: Covariate rows of the horizon days (targets zeroed: not known).
    future: pd.DataFrame
    schedules: dict[str, Schedule]
    brackets: dict[str, str]
    account_types: dict[str, str]
    #: Daily spend after the origin, ``(users, horizon)``.
    actual: np.ndarray


@dataclass
class Backtest:
    """The ledger's series, the evaluation origins and the training frame."""

    ledger: Ledger
    series: pd.DataFrame
    origins: list[Origin]
    train: pd.DataFrame
    horizon: int
    encoder: int
    description: dict[str, Any] = field(default_factory=dict)


def eligible_users(
    spans: pd.DataFrame, origin: pd.Timestamp, horizon: int, encoder: int
) -> list[str]:
    """Users with ``encoder`` days up to ``origin`` and a series covering the horizon."""
    ok = (spans["first"] <= origin - pd.Timedelta(days=encoder - 1)) & (
        spans["last"] >= origin + pd.Timedelta(days=horizon)
    )
    return sorted(spans.index[ok])


def origin_grid(
    spans: pd.DataFrame,
    *,
    horizon: int,
    encoder: int,
    step: int,
    count: int,
    min_users: int,
) -> list[pd.Timestamp]:
    """The latest ``count`` origins ``step`` days apart with at least ``min_users`` eligible
    users, in time order; the grid ends on the data's last day minus the horizon."""
    end = spans["last"].max() - pd.Timedelta(days=horizon)
    start = spans["first"].min() + pd.Timedelta(days=encoder - 1)
    chosen: list[pd.Timestamp] = []
    day = end
    while day >= start and len(chosen) < count:
        if len(eligible_users(spans, day, horizon, encoder)) >= min_users:
            chosen.append(day)
        day -= pd.Timedelta(days=step)
    return sorted(chosen)


def _schedules(ledger: Ledger, users: Sequence[str], as_of: pd.Timestamp) -> dict[str, Schedule]:
    rows = ledger.rows[ledger.rows["user_id"].isin(set(users))]
    return {
        str(user): user_schedule(part, as_of=as_of.date())
        for user, part in rows.groupby("user_id", sort=True)
    }


def _future_rows(
    series: pd.DataFrame, users: Sequence[str], origin: pd.Timestamp, horizon: int
) -> pd.DataFrame:
    dates = pd.date_range(origin + pd.Timedelta(days=1), periods=horizon, freq="D")
    last = series[series["date"] == origin].set_index("user_id")
    frames = []
    for user in users:
        frame = pd.DataFrame({"user_id": user, "date": dates})
        frame["time_idx"] = (frame["date"] - pd.Timestamp("1970-01-01")).dt.days.astype(np.int64)
        frame["currency"] = last.loc[user, "currency"]
        for column in series.columns:
            if column not in frame:
                frame[column] = 0.0
        frame["balance"] = float(last.loc[user, "balance"])
        frames.append(frame[list(series.columns)])
    return pd.concat(frames, ignore_index=True)


def build_backtest(
    ledger: Ledger,
    *,
    horizon: int = 30,
    encoder: int = 90,
    step: int = 30,
    origins: int = 6,
    min_users: int = 30,
    top_k: int = 3,
) -> Backtest:
    """Series, evaluation origins (with history, future covariates and actuals) and the
    training frame (every user's days up to the first origin) of ``ledger``."""
    series = daily_series(ledger.rows, top_k=top_k)
    spans = series.groupby("user_id")["date"].agg(first="min", last="max")
    grid = origin_grid(
        spans, horizon=horizon, encoder=encoder, step=step, count=origins, min_users=min_users
    )
    if not grid:
        raise ValueError(
            f"no origin has {min_users} users with {encoder} days of history and {horizon} ahead"
        )
    built: list[Origin] = []
    for day in grid:
        users = eligible_users(spans, day, horizon, encoder)
        mine = series[series["user_id"].isin(set(users))]
        past = mine[mine["date"] <= day]
        schedules = _schedules(ledger, users, day)
        brackets = income_brackets(series[series["date"] <= day], as_of=day.date())
        kwargs = {"country": COUNTRY, "account_types": ledger.account_types, "brackets": brackets}
        history = with_covariates(past, schedules, **kwargs)
        future = with_covariates(_future_rows(series, users, day, horizon), schedules, **kwargs)
        ahead = mine[(mine["date"] > day) & (mine["date"] <= day + pd.Timedelta(days=horizon))]
        actual = (
            ahead.pivot(index="user_id", columns="date", values="spend")
            .reindex(index=users)
            .to_numpy(np.float64)
        )
        if actual.shape != (len(users), horizon) or np.isnan(actual).any():
            raise AssertionError("actuals do not cover the horizon")  # eligibility guarantees
        types = {u: ledger.account_types.get(u, "current") for u in users}
        built.append(Origin(day, users, history, future, schedules, brackets, types, actual))
    cutoff = grid[0]
    past = series[series["date"] <= cutoff]
    counts = past.groupby("user_id").size()
    train_users = sorted(counts.index[counts >= encoder + horizon])
    train_schedules = _schedules(ledger, train_users, cutoff)
    train = with_covariates(
        past[past["user_id"].isin(set(train_users))],
        train_schedules,
        country=COUNTRY,
        account_types=ledger.account_types,
        brackets=income_brackets(past, as_of=cutoff.date()),
    )
    actual_all = np.concatenate([o.actual for o in built])
    description = {
        "source": ledger.source,
        "currency": ledger.currency,
        "users": int(series["user_id"].nunique()),
        "transactions": len(ledger.rows),
        "date_range": [str(series["date"].min().date()), str(series["date"].max().date())],
        "origins": [str(o.date.date()) for o in built],
        "users_per_origin": [len(o.users) for o in built],
        "user_origins": int(actual_all.shape[0]),
        "evaluated_days": int(actual_all.size),
        "zero_spend_share": float((actual_all == 0).mean()),
        "mean_daily_spend": float(actual_all.mean()),
        "mean_30_day_spend": float(actual_all.sum(axis=1).mean()),
        "train_cutoff": str(cutoff.date()),
        "train_users": len(train_users),
        "train_days": len(train),
    }
    return Backtest(ledger, series, built, train, horizon, encoder, description)


# -- methods -----------------------------------------------------------------------------------


@dataclass
class Method:
    """A forecaster in the backtest: ``fit`` once on the training frame, then ``predict`` at
    each origin ``(users, horizon, levels)``."""

    name: str
    predict: Callable[[Origin], np.ndarray]
    fit: Callable[[Backtest], None] = lambda backtest: None
    #: Text, or a callable asked after the run (e.g. for training figures).
    notes: str | Callable[[], str] = ""


def _per_user(origin: Origin, one: Callable[[np.ndarray, pd.Timestamp], np.ndarray]) -> np.ndarray:
    out = []
    groups = dict(tuple(origin.history.groupby("user_id", sort=False)))
    for user in origin.users:
        part = groups[user].sort_values("date")
        out.append(one(part["spend"].to_numpy(np.float64), origin.date))
    return np.stack(out)


def make_zero(horizon: int) -> Method:
    return Method(
        "zero",
        lambda o: zero_forecast(len(o.users), horizon),
        notes="P10 = P50 = P90 = 0",
    )


def make_seasonal(horizon: int, period: str, window: int) -> Method:
    def predict(origin: Origin) -> np.ndarray:
        return _per_user(
            origin,
            lambda y, last: seasonal_naive(y, last, horizon, period=period, window=window),
        )

    rule = "same weekday last week" if period == "week" else "same day last month"
    return Method(
        f"seasonal_naive_{period}",
        predict,
        notes=f"{rule}; quantiles from the rule's residuals over the last {window} days",
    )


def make_theta(horizon: int, max_history: int) -> Method:
    def predict(origin: Origin) -> np.ndarray:
        return _per_user(
            origin, lambda y, _last: theta_forecast(y, horizon, max_history=max_history)
        )

    return Method(
        "theta",
        predict,
        notes=(
            f"statsmodels ThetaModel per user on daily spend (up to {max_history} days, additive "
            "weekly deseasonalization); quantiles = point + empirical quantiles of its errors "
            f"on the two {horizon}-day windows before the origin"
        ),
    )


def make_gbm(horizon: int, encoder: int, seed: int, quick: bool, threads: int = 1) -> Method:
    model = GBMQuantile(
        horizon=horizon,
        min_history=encoder,
        max_iter=60 if quick else 300,
        train_stride=14 if quick else 7,
        seed=seed,
        threads=threads,
    )

    def fit(backtest: Backtest) -> None:
        model.fit(backtest.train, pd.Timestamp(backtest.description["train_cutoff"]))

    return Method(
        "gbm",
        lambda o: model.predict(o.history, o.future, o.users),
        fit,
        notes=(
            "sklearn HistGradientBoostingRegressor(loss='quantile'), one per level, across users; "
            f"direct multi-horizon; {model.max_iter} iterations; origins every "
            f"{model.train_stride} days before the first evaluation origin"
        ),
    )


#: ``--quick`` TFT: a few batches of a tiny network (checks the plumbing, not the model).
QUICK_TFT = {
    "hidden_size": 8,
    "attention_head_size": 1,
    "hidden_continuous_size": 4,
    "batch_size": 64,
    "max_epochs": 1,
    "limit_train_batches": 5,
}


def tft_config(
    horizon: int, encoder: int, seed: int, quick: bool, overrides: dict[str, Any] | None = None
) -> Any:
    """The TFT's config for the backtest: the module's defaults (or :data:`QUICK_TFT`) with
    ``overrides`` (``--tft NAME=VALUE``) on top."""
    from scale_ray.models.forecast import tft

    options: dict[str, Any] = {
        "horizon": horizon,
        "encoder_length": encoder,
        "quantiles": LEVELS,
        "seed": seed,
        **(QUICK_TFT if quick else {}),
        **(overrides or {}),
    }
    return tft.TFTConfig(**options)


def make_tft(
    horizon: int, encoder: int, seed: int, quick: bool, overrides: dict[str, Any] | None = None
) -> Method:
    from scale_ray.models.forecast import tft

    config = tft_config(horizon, encoder, seed, quick, overrides)
    state: dict[str, Any] = {}

    def fit(backtest: Backtest) -> None:
        state["model"] = tft.fit_tft(backtest.train, config)

    def predict(origin: Origin) -> np.ndarray:
        frame = tft.with_future(
            origin.history,
            horizon,
            origin.schedules,
            country=COUNTRY,
            account_types=origin.account_types,
            brackets=origin.brackets,
        )
        forecasts = {f.user_id: f for f in state["model"].predict(frame)}
        out = np.zeros((len(origin.users), horizon, len(LEVELS)))
        expected = pd.date_range(origin.date + pd.Timedelta(days=1), periods=horizon, freq="D")
        for i, user in enumerate(origin.users):
            forecast = forecasts[user]
            dates = pd.DatetimeIndex(pd.to_datetime(list(forecast.dates)))
            if len(dates) != horizon or not (dates.normalize() == expected).all():
                raise ValueError(f"TFT forecast dates for {user} do not match the horizon")
            out[i] = np.asarray(forecast.quantiles["spend"], dtype=np.float64)
        return out

    def notes() -> str:
        meta = state["model"].metadata if "model" in state else {}
        keep = ("train_samples", "epochs", "train_seconds", "train_loss")
        trained = {k: meta[k] for k in keep if k in meta}
        return f"trained once before the first origin; config {config.to_json()}; {trained}"

    return Method("tft", predict, fit, notes=notes)


def make_methods(
    names: Sequence[str],
    *,
    horizon: int,
    encoder: int,
    seed: int,
    quick: bool,
    tft_options: dict[str, Any] | None = None,
    theta_history: int = 365,
    threads: int = 1,
) -> list[Method]:
    out: list[Method] = []
    for name in names:
        if name == "zero":
            out.append(make_zero(horizon))
        elif name.startswith("seasonal_naive_"):
            out.append(make_seasonal(horizon, name.removeprefix("seasonal_naive_"), encoder))
        elif name == "theta":
            out.append(make_theta(horizon, theta_history))
        elif name == "gbm":
            out.append(make_gbm(horizon, encoder, seed, quick, threads))
        elif name == "tft":
            out.append(make_tft(horizon, encoder, seed, quick, tft_options))
        else:
            raise ValueError(f"unknown method {name!r}")
    return out


def expand_methods(text: str) -> list[str]:
    """``--methods`` as method names (aliases expanded; the zero forecast always included)."""
    names: list[str] = ["zero"]
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if part not in METHOD_ALIASES:
            raise ValueError(f"unknown method {part!r}; choose from {sorted(METHOD_ALIASES)}")
        names.extend(n for n in METHOD_ALIASES[part] if n not in names)
    return names


# -- run ---------------------------------------------------------------------------------------


def run_method(
    method: Method, backtest: Backtest, predictions: dict[str, np.ndarray] | None = None
) -> dict[str, Any]:
    """Fit, predict at every origin and score one method (its stacked quantiles go into
    ``predictions[method.name]`` when given)."""
    start = time.perf_counter()
    method.fit(backtest)
    fit_s = time.perf_counter() - start
    preds = []
    for origin in backtest.origins:
        pred = np.asarray(method.predict(origin), dtype=np.float64)
        if pred.shape != (len(origin.users), backtest.horizon, len(LEVELS)):
            raise ValueError(f"{method.name}: forecast shape {pred.shape}")
        check_quantiles(pred)
        preds.append(pred)
    seconds = time.perf_counter() - start
    actual = np.concatenate([o.actual for o in backtest.origins])
    quantiles = np.concatenate(preds)
    if predictions is not None:
        predictions[method.name] = quantiles
    result: dict[str, Any] = forecast_metrics(actual, quantiles, LEVELS)
    result["per_origin_p50_loss"] = [
        forecast_metrics(o.actual, p, LEVELS)["p50_loss"]
        for o, p in zip(backtest.origins, preds, strict=True)
    ]
    result["seconds"] = seconds
    result["fit_seconds"] = fit_s
    result["notes"] = method.notes() if callable(method.notes) else method.notes
    return result


def summarize(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Best baseline per metric, the TFT's relative improvement over it, and the targets."""
    baselines = {k: v for k, v in results.items() if k not in LEARNED}
    best: dict[str, dict[str, Any]] = {}
    for metric in ("p50_loss", "p90_loss", "total_mae", "total_mae_mean"):
        if not all(metric in v for v in results.values()):
            continue
        name = min(baselines, key=lambda k: baselines[k][metric])
        best[metric] = {"method": name, "value": baselines[name][metric]}
    out: dict[str, Any] = {"best_baseline": best}
    if "tft" in results:
        tft = results["tft"]
        improvement = {m: (b["value"] - tft[m]) / b["value"] for m, b in best.items()}
        out["tft_improvement"] = improvement
        met = {
            "p50_loss": improvement["p50_loss"] >= TARGET_IMPROVEMENT,
            "p90_loss": improvement["p90_loss"] >= TARGET_IMPROVEMENT,
        }
        out["targets"] = {
            "required_improvement": TARGET_IMPROVEMENT,
            **met,
            "met": all(met.values()),
        }
    return out


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    torch.set_num_threads(args.threads)
    from threadpoolctl import threadpool_limits

    if args.format not in FORMATS:
        raise ValueError(f"unknown format {args.format!r}")
    quick = args.quick
    max_users = args.max_users if args.max_users is not None else (40 if quick else None)
    origins = args.origins if args.origins is not None else (2 if quick else 6)
    min_users = args.min_users if args.min_users is not None else (10 if quick else 50)
    started = time.perf_counter()
    ledger = load_berka(args.ledger, max_users=max_users)
    if args.until is not None:
        # A validation backtest: the data as it stood on ``until`` (nothing later is read).
        until = pd.Timestamp(args.until, tz="UTC") + pd.Timedelta(days=1)
        ledger.rows = ledger.rows[ledger.rows["booked_at"] < until].reset_index(drop=True)
    backtest = build_backtest(
        ledger,
        horizon=args.horizon,
        encoder=args.encoder,
        step=args.step,
        origins=origins,
        min_users=min_users,
    )
    prep_s = time.perf_counter() - started
    names = expand_methods(args.methods)
    methods = make_methods(
        names,
        horizon=args.horizon,
        encoder=args.encoder,
        seed=args.seed,
        quick=quick,
        tft_options=parse_tft_options(args.tft),
        threads=args.threads,
    )
    results: dict[str, dict[str, Any]] = {}
    predictions: dict[str, np.ndarray] = {}
    with threadpool_limits(limits=args.threads):
        for method in methods:
            np.random.seed(args.seed)
            torch.manual_seed(args.seed)
            results[method.name] = run_method(method, backtest, predictions)
    if args.dump is not None:
        dump_predictions(args.dump, backtest, predictions)
    return {
        "protocol": {
            "format": args.format,
            "horizon": args.horizon,
            "encoder": args.encoder,
            "origin_step_days": args.step,
            "origins": origins,
            "min_users": min_users,
            "max_users": max_users,
            "quantiles": list(LEVELS),
            "training": "once, on every user's days up to the first origin (GBM, TFT)",
            "total_point": (
                "total_mae: sum of the daily P50 over the horizon; total_mae_mean: sum of the "
                "daily means by Swanson's rule (0.3 P10 + 0.4 P50 + 0.3 P90)"
            ),
            "quick": quick,
            "until": args.until,
            "seed": args.seed,
            "threads": args.threads,
        },
        "data": backtest.description,
        "methods": results,
        **summarize(results),
        "seconds": {"prepare": prep_s, "total": time.perf_counter() - started},
    }


def dump_predictions(path: Path, backtest: Backtest, predictions: dict[str, np.ndarray]) -> None:
    """Write the actuals, every method's quantiles and the row keys to an ``.npz`` file
    (rows: user-origin pairs in origin order)."""
    users = [u for o in backtest.origins for u in o.users]
    origins = [str(o.date.date()) for o in backtest.origins for _ in o.users]
    np.savez_compressed(
        path,
        actual=np.concatenate([o.actual for o in backtest.origins]),
        users=np.asarray(users),
        origins=np.asarray(origins),
        levels=np.asarray(LEVELS),
        **{f"pred_{name}": values for name, values in predictions.items()},
    )


def parse_tft_options(items: Sequence[str]) -> dict[str, Any]:
    """``NAME=VALUE`` pairs as TFTConfig keyword arguments (values read as JSON when they
    parse, else kept as text)."""
    out: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--tft wants NAME=VALUE, got {item!r}")
        try:
            out[name.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[name.strip()] = value
    return out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    from scale_ray.settings import get_settings

    default_ledger = get_settings().shared_data_path() / "berka_ecac" / "trans_test.csv"
    parser = argparse.ArgumentParser(
        prog="python -m scale_ray.models.forecast.evaluate",
        description="Rolling-origin backtest of daily spend forecasts; prints JSON.",
    )
    parser.add_argument("--ledger", type=Path, default=default_ledger)
    parser.add_argument("--format", default="berka", choices=FORMATS)
    parser.add_argument("--methods", default=DEFAULT_METHODS)
    parser.add_argument("--origins", type=int, default=None, help="default 6 (quick: 2)")
    parser.add_argument("--max-users", type=int, default=None, help="default all (quick: 40)")
    parser.add_argument("--min-users", type=int, default=None, help="default 50 (quick: 10)")
    parser.add_argument(
        "--until",
        default=None,
        help="ignore rows booked after this day (YYYY-MM-DD): a validation backtest for tuning",
    )
    parser.add_argument("--horizon", type=int, default=30)
    parser.add_argument("--encoder", type=int, default=90)
    parser.add_argument("--step", type=int, default=30, help="days between origins")
    parser.add_argument(
        "--tft",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a TFTConfig field for the TFT (repeatable), e.g. --tft max_epochs=4",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dump", type=Path, default=None, help="write predictions to .npz")
    parser.add_argument("--quick", action="store_true", help="CI size: few users and origins")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        report = evaluate(args)
    except (FileNotFoundError, ValueError) as exc:
        print(json.dumps({"error": str(exc)}), file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
