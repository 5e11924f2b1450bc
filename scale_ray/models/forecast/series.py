"""Daily per-user cash-flow series and their covariates, from ledger rows.

A user's ledger becomes one row per calendar day from the first to the last booked day (or
``end``): ``spend`` (money out), ``income`` (money in), ``net = income - spend``, the end-of-day
``balance`` and the spend of the top categories, all in the currency's major units as floats.
Forecasts are estimates, so floats are right here; the ledger itself stays in exact minor units.

Covariates, all computable for future days (the decoder knows them):

* calendar: day of week, day of month, month, days to the end of the month, public holiday
  (``holidays`` package, the user's country) and "a holiday or weekend" flag;
* the user's own schedule, learnt from history only: paydays (the day of the month of the
  largest recurring credit, found by :func:`scale_ray.analytics.recurring.detect_recurring`)
  and the recurring debits (bills, rent, subscriptions): ``days_to_payday``,
  ``days_to_recurring`` and the amount of recurring debits due that day
  (``recurring_due``);
* statics: the income bracket (quartile of typical monthly income over all users of the
  frame) and the account type.

Nothing here reads the future: :func:`user_schedule` uses only rows up to ``as_of``, so a
rolling-origin backtest computes the schedule at each origin.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa

from scale_ray.money import exponent

#: Series columns that are money (major units).
MONEY_COLUMNS = ("spend", "income", "net", "balance")
#: Calendar covariates (known in the future).
CALENDAR_COLUMNS = (
    "day_of_week",
    "day_of_month",
    "month",
    "days_to_month_end",
    "is_holiday",
    "is_weekend_or_holiday",
)
#: Schedule covariates (known in the future, from the user's history).
SCHEDULE_COLUMNS = ("days_to_payday", "days_to_recurring", "recurring_due")
#: Days-to-event covariates are capped here (no event known: the cap).
MAX_DAYS_TO = 45
#: Category name used when a debit has none.
OTHER = "other"


@dataclass(frozen=True)
class Schedule:
    """A user's recurring money, learnt from history up to ``as_of``."""

    as_of: date | None
    #: Days of the month income usually arrives (largest recurring credit first).
    paydays: tuple[int, ...] = ()
    #: (day of month, typical amount in major units) of monthly recurring debits.
    bills: tuple[tuple[int, float], ...] = ()
    #: Weekly recurring debits: (weekday 0-6, amount).
    weekly_bills: tuple[tuple[int, float], ...] = field(default_factory=tuple)


def to_frame(table: pa.Table | pd.DataFrame) -> pd.DataFrame:
    """Ledger rows as pandas (Arrow converted); needs user_id, amount_minor, currency, booked_at."""
    frame = table.to_pandas() if isinstance(table, pa.Table) else table.copy()
    missing = [c for c in ("user_id", "amount_minor", "currency", "booked_at") if c not in frame]
    if missing:
        raise ValueError(f"ledger rows are missing columns {missing}")
    return frame


def _major(frame: pd.DataFrame) -> np.ndarray:
    cur = frame["currency"].astype(str).to_numpy()
    uniq, inv = np.unique(cur, return_inverse=True)
    scale = np.array([10.0 ** -exponent(c) for c in uniq])[inv]
    return frame["amount_minor"].to_numpy().astype(np.float64) * scale


def category_of(frame: pd.DataFrame) -> pd.Series:
    """A debit's category: ``category``, else ``category_hint``, else ``mode``, else other."""
    out = pd.Series([None] * len(frame), index=frame.index, dtype=object)
    for column in ("mode", "category_hint", "category"):
        if column in frame.columns:
            values = frame[column].astype(object)
            ok = values.notna() & (values.astype(str).str.strip() != "")
            out = values.where(ok, out)
    return out.fillna(OTHER).astype(str).str.strip().str.lower()


def top_categories(frame: pd.DataFrame, k: int = 3) -> list[str]:
    """The ``k`` categories with the most spend over all users of ``frame``."""
    amounts = _major(frame)
    debit = amounts < 0
    if not debit.any() or k <= 0:
        return []
    spend = pd.Series(-amounts[debit]).groupby(category_of(frame)[debit].to_numpy()).sum()
    return [c for c in spend.sort_values(ascending=False).index[:k]]


def slug(category: str) -> str:
    """A column-safe name for a category."""
    text = "".join(ch if ch.isalnum() else "_" for ch in category.lower())
    return "_".join(part for part in text.split("_") if part) or OTHER


def daily_series(
    table: pa.Table | pd.DataFrame,
    *,
    categories: Sequence[str] | None = None,
    top_k: int = 3,
    end: date | None = None,
) -> pd.DataFrame:
    """One row per user and day: ``user_id, date, time_idx, currency, spend, income, net,
    balance, spend_<category>...``.

    Days run from each user's first booked day to their last (or ``end`` when later); days
    without transactions are zeros (their balance carries over). ``time_idx`` counts days from
    1970-01-01, so it is comparable across users. The balance is the last ``balance_after_minor``
    of the day when the ledger has one, else the running sum of amounts (opening balance 0).
    A user with several currencies keeps the one with the most rows.
    """
    frame = to_frame(table)
    if frame.empty:
        return pd.DataFrame(columns=["user_id", "date", "time_idx", "currency", *MONEY_COLUMNS])
    # One currency per user: the most frequent.
    main = (
        frame.groupby(["user_id", "currency"]).size().reset_index(name="n")
        .sort_values(["user_id", "n"], ascending=[True, False])
        .drop_duplicates("user_id")
    )  # fmt: skip
    frame = frame.merge(main[["user_id", "currency"]], on=["user_id", "currency"])
    cats = list(categories) if categories is not None else top_categories(frame, top_k)
    amounts = _major(frame)
    booked = pd.to_datetime(frame["booked_at"], utc=True)
    offset = (
        pd.to_timedelta(frame["booked_offset_min"].fillna(0).astype(int), unit="m")
        if "booked_offset_min" in frame
        else pd.to_timedelta(0, unit="m")
    )
    day = (booked.dt.tz_convert(None) + offset).dt.normalize()
    rows = pd.DataFrame(
        {
            "user_id": frame["user_id"].astype(str).to_numpy(),
            "date": day.to_numpy(),
            "spend": np.where(amounts < 0, -amounts, 0.0),
            "income": np.where(amounts > 0, amounts, 0.0),
        }
    )
    category = category_of(frame).to_numpy()
    for cat in cats:
        rows[f"spend_{slug(cat)}"] = np.where((amounts < 0) & (category == cat), -amounts, 0.0)
    has_balance = "balance_after_minor" in frame and frame["balance_after_minor"].notna().all()
    if has_balance:
        cur = frame["currency"].astype(str).to_numpy()
        uniq, inv = np.unique(cur, return_inverse=True)
        scale = np.array([10.0 ** -exponent(c) for c in uniq])[inv]
        rows["balance_after"] = frame["balance_after_minor"].to_numpy().astype(np.float64) * scale
        order_keys = ["user_id", "date"]
        rows["_order"] = (
            booked.dt.tz_convert(None).to_numpy().astype("datetime64[ns]").astype(np.int64)
        )
        rows = rows.sort_values([*order_keys, "_order"], kind="mergesort")
    sums = (
        rows.drop(columns=[c for c in ("balance_after", "_order") if c in rows])
        .groupby(["user_id", "date"], sort=True)
        .sum()
    )
    if has_balance:
        sums["balance"] = rows.groupby(["user_id", "date"], sort=True)["balance_after"].last()
    out = []
    currency = dict(zip(main["user_id"].astype(str), main["currency"], strict=True))
    for user, part in sums.groupby(level=0, sort=True):
        part = part.droplevel(0)
        last = max(part.index.max(), pd.Timestamp(end)) if end else part.index.max()
        days = pd.date_range(part.index.min(), last, freq="D")
        part = part.reindex(days)
        money = [c for c in part.columns if c != "balance"]
        part[money] = part[money].fillna(0.0)
        part["net"] = part["income"] - part["spend"]
        if has_balance:
            part["balance"] = part["balance"].ffill()
        else:
            part["balance"] = part["net"].cumsum()
        part.insert(0, "user_id", user)
        part.insert(1, "currency", currency[user])
        out.append(part.rename_axis("date").reset_index())
    series = pd.concat(out, ignore_index=True)
    series["time_idx"] = (series["date"] - pd.Timestamp("1970-01-01")).dt.days.astype(np.int64)
    cat_cols = [f"spend_{slug(c)}" for c in cats]
    return series[
        ["user_id", "date", "time_idx", "currency", "spend", "income", "net", "balance", *cat_cols]
    ]


# -- covariates ------------------------------------------------------------------------------


def public_holidays(country: str | None, years: Iterable[int]) -> set[date]:
    """Public holidays of ``country`` (ISO code) in ``years``; none for an unknown country."""
    if not country:
        return set()
    import holidays

    try:
        return set(holidays.country_holidays(country, years=sorted(set(years))).keys())
    except (KeyError, NotImplementedError):
        return set()


def calendar_covariates(dates: pd.Series, country: str | None = None) -> pd.DataFrame:
    """Calendar covariates of ``dates`` (a datetime64 Series), aligned to its index."""
    d = pd.to_datetime(dates)
    days_in_month = d.dt.days_in_month
    off = public_holidays(country, d.dt.year.unique().tolist())
    is_holiday = d.dt.date.isin(off).astype(np.int64) if off else pd.Series(0, index=d.index)
    weekend = (d.dt.weekday >= 5).astype(np.int64)
    return pd.DataFrame(
        {
            "day_of_week": d.dt.weekday.astype(np.int64),
            "day_of_month": d.dt.day.astype(np.int64),
            "month": d.dt.month.astype(np.int64),
            "days_to_month_end": (days_in_month - d.dt.day).astype(np.int64),
            "is_holiday": is_holiday.astype(np.int64),
            "is_weekend_or_holiday": np.maximum(weekend, is_holiday).astype(np.int64),
        },
        index=dates.index,
    )


def user_schedule(ledger: pd.DataFrame, as_of: date | None = None) -> Schedule:
    """Paydays and recurring bills of one user's ledger rows booked up to ``as_of``."""
    from scale_ray.analytics.recurring import detect_recurring

    frame = ledger
    if as_of is not None:
        booked = pd.to_datetime(frame["booked_at"], utc=True).dt.date
        frame = frame[booked <= as_of]
    if frame.empty:
        return Schedule(as_of)
    rows = frame.copy()
    for column, default in (("txn_id", None), ("account_id", "default"), ("narration", "")):
        if column not in rows:
            rows[column] = [f"r{i}" for i in range(len(rows))] if column == "txn_id" else default
    if "merchant" not in rows:
        rows["merchant"] = None
    # Berka-like ledgers name the payee in the mode/category, not the merchant.
    rows["narration"] = rows["narration"].fillna("").astype(str)
    found = detect_recurring(rows, as_of=as_of)
    scale = 10.0 ** -exponent(str(rows["currency"].iloc[0]))
    paydays: list[tuple[float, int]] = []
    bills: list[tuple[int, float]] = []
    weekly: list[tuple[int, float]] = []
    for series in found:
        if not series.active:
            continue
        amount = abs(series.amount_minor) * scale
        if series.period == "monthly":
            if series.direction == "in" or series.amount_minor > 0:
                paydays.append((amount, series.next_date.day))
            else:
                bills.append((series.next_date.day, amount))
        elif series.period == "weekly" and series.amount_minor < 0:
            weekly.append((series.next_date.weekday(), amount))
    paydays.sort(reverse=True)
    return Schedule(
        as_of,
        tuple(dict.fromkeys(day for _, day in paydays)),
        tuple(sorted(bills)),
        tuple(sorted(weekly)),
    )


def _days_to(day: date, dom: int) -> int:
    """Days from ``day`` to the next date with day of month ``dom`` (0 on it; clamped to the
    month's last day)."""
    for months in range(3):
        year = day.year + (day.month - 1 + months) // 12
        month = (day.month - 1 + months) % 12 + 1
        target = date(year, month, min(dom, calendar.monthrange(year, month)[1]))
        if target >= day:
            return (target - day).days
    return MAX_DAYS_TO


def schedule_covariates(dates: pd.Series, schedule: Schedule) -> pd.DataFrame:
    """``days_to_payday``, ``days_to_recurring`` and ``recurring_due`` for ``dates``."""
    days = [pd.Timestamp(x).date() for x in pd.to_datetime(dates)]
    to_pay, to_bill, due = [], [], []
    for day in days:
        pays = [_days_to(day, dom) for dom in schedule.paydays]
        bills = [_days_to(day, dom) for dom, _ in schedule.bills]
        bills += [(wd - day.weekday()) % 7 for wd, _ in schedule.weekly_bills]
        to_pay.append(min([*pays, MAX_DAYS_TO]))
        to_bill.append(min([*bills, MAX_DAYS_TO]))
        amount = sum(a for dom, a in schedule.bills if _days_to(day, dom) == 0)
        amount += sum(a for wd, a in schedule.weekly_bills if wd == day.weekday())
        due.append(amount)
    return pd.DataFrame(
        {
            "days_to_payday": np.minimum(to_pay, MAX_DAYS_TO).astype(np.int64),
            "days_to_recurring": np.minimum(to_bill, MAX_DAYS_TO).astype(np.int64),
            "recurring_due": np.asarray(due, dtype=np.float64),
        },
        index=dates.index,
    )


def income_brackets(series: pd.DataFrame, as_of: date | None = None) -> dict[str, str]:
    """Each user's income bracket (``q1``..``q4``): quartile of median monthly income over the
    users of ``series`` (days up to ``as_of``)."""
    part = series if as_of is None else series[series["date"] <= pd.Timestamp(as_of)]
    monthly = (
        part.assign(month=part["date"].dt.to_period("M"))
        .groupby(["user_id", "month"])["income"].sum()
        .groupby(level=0).median()
    )  # fmt: skip
    if monthly.empty:
        return {}
    ranks = monthly.rank(pct=True, method="average")
    return {u: f"q{min(4, int(np.ceil(r * 4)) or 1)}" for u, r in ranks.items()}


def with_covariates(
    series: pd.DataFrame,
    schedules: dict[str, Schedule],
    *,
    country: str | None = None,
    account_types: dict[str, str] | None = None,
    brackets: dict[str, str] | None = None,
) -> pd.DataFrame:
    """``series`` plus calendar, schedule and static columns (``income_bracket``,
    ``account_type``)."""
    out = series.reset_index(drop=True)
    cal = calendar_covariates(out["date"], country)
    parts = []
    for user, idx in out.groupby("user_id", sort=False).groups.items():
        sched = schedules.get(user, Schedule(None))
        parts.append(schedule_covariates(out.loc[idx, "date"], sched))
    sched_cols = pd.concat(parts).reindex(out.index) if parts else None
    out = pd.concat([out, cal] + ([sched_cols] if sched_cols is not None else []), axis=1)
    brackets = brackets if brackets is not None else income_brackets(series)
    out["income_bracket"] = out["user_id"].map(brackets).fillna("q1").astype(str)
    types = account_types or {}
    out["account_type"] = out["user_id"].map(types).fillna("current").astype(str)
    return out


def future_days(last: pd.Timestamp, horizon: int) -> pd.Series:
    """The ``horizon`` days after ``last``."""
    return pd.Series(pd.date_range(last + timedelta(days=1), periods=horizon, freq="D"))


__all__ = [
    "CALENDAR_COLUMNS",
    "MONEY_COLUMNS",
    "SCHEDULE_COLUMNS",
    "Schedule",
    "calendar_covariates",
    "category_of",
    "daily_series",
    "future_days",
    "income_brackets",
    "public_holidays",
    "schedule_covariates",
    "slug",
    "top_categories",
    "user_schedule",
    "with_covariates",
]
