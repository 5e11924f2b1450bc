"""Plain-language reasons for a forecast, built only from what the model and the ledger say.

A user asking "will I run short this month?" needs a few short sentences, not attention maps.
Every sentence here is tied to something real and checkable:

* the horizon totals and the low-balance risk come from the simulated balance paths
  (:mod:`~scale_ray.models.forecast.balance`), with the day and its probability;
* the causes named for a low balance are the user's own recurring bills falling due before
  that day (from their :class:`~scale_ray.models.forecast.series.Schedule`), weekends and
  public holidays just before it, and the expected everyday spending up to it;
* "spending peaks after payday" is said only when the forecast's own median spend in the
  days after payday is clearly higher than on other days (days a bill falls due left out);
* the inputs named are the largest variable-selection weights of the TFT (encoder and
  decoder averaged), by their plain names (:func:`label`), with their weights;
* the past days named are the ones the attention weighs most, with their dates.

``Explanation.weights`` returns the numbers behind each sentence, so a client can show them
or a test can check them.
"""

from __future__ import annotations

import calendar
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Protocol

import numpy as np

from scale_ray.models.forecast.balance import BalanceProjection
from scale_ray.models.forecast.series import Schedule, public_holidays

#: Below this probability a low balance is not worth a warning.
LOW_RISK = 0.1
#: At or above this probability a low balance is "likely" (else "possible").
LIKELY = 0.5
#: Days after payday that count as "after payday".
AFTER_PAYDAY_DAYS = 5
#: Median spend after payday must exceed other days' by this factor to say it peaks.
PEAK_RATIO = 1.2

_LABELS = {
    "spend": "your recent spending",
    "income": "your recent income",
    "net": "your recent net cash flow",
    "balance": "your balance",
    "day_of_week": "the day of the week",
    "day_of_month": "the day of the month",
    "month": "the month of the year",
    "days_to_month_end": "the days left in the month",
    "is_holiday": "public holidays",
    "is_weekend_or_holiday": "weekends and holidays",
    "days_to_payday": "the days until payday",
    "days_to_recurring": "the days until your next bill",
    "recurring_due": "the bills due",
    "relative_time_idx": "how far ahead the day is",
    "encoder_length": "how much history there is",
    "income_bracket": "your income band",
    "account_type": "your account type",
}


class ExplainableForecast(Protocol):
    """What :func:`explain` reads (``tft.UserForecast`` fits)."""

    origin: date
    dates: list[date]
    quantile_levels: tuple[float, ...]
    quantiles: dict[str, np.ndarray]
    attention: np.ndarray
    attention_dates: list[date]
    encoder_importance: dict[str, float]
    decoder_importance: dict[str, float]
    static_importance: dict[str, float]


@dataclass
class Explanation:
    """A one-line summary, the sentences behind it and the numbers behind those."""

    summary: str
    sentences: list[str]
    weights: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"summary": self.summary, "sentences": self.sentences, "weights": self.weights}


def label(name: str) -> str:
    """The plain name of a model input (``spend_groceries`` -> "your groceries spending")."""
    if name in _LABELS:
        return _LABELS[name]
    for target in ("spend", "income"):
        if name == f"{target}_center" or name == f"{target}_scale":
            return f"your usual {'spending' if target == 'spend' else 'income'} level"
    if name.startswith("spend_"):
        return f"your {name[len('spend_') :].replace('_', ' ')} spending"
    return name.replace("_", " ")


def ordinal(day: int) -> str:
    """``1`` -> "1st", ``22`` -> "22nd", ``13`` -> "13th"."""
    suffix = "th" if 10 <= day % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


def day_text(day: date) -> str:
    """ "the 28th (Sat 28 Jun)"."""
    return f"the {ordinal(day.day)} ({day:%a} {day.day} {day:%b})"


def chance(p: float) -> str:
    """ "a 64% chance" / "an 80% chance" / "an 8% chance"."""
    text = f"{p:.0%}"
    digits = text.rstrip("%")
    article = "an" if digits.startswith("8") or digits in ("11", "18") else "a"
    return f"{article} {text} chance"


def money(amount: float, currency: str) -> str:
    return f"{amount:,.0f} {currency}"


def combined_importance(forecast: ExplainableForecast) -> dict[str, float]:
    """Encoder and decoder selection weights averaged per input (sums to 1), largest first."""
    out: dict[str, float] = {}
    for weights in (forecast.encoder_importance, forecast.decoder_importance):
        for name, weight in weights.items():
            out[name] = out.get(name, 0.0) + float(weight) / 2.0
    total = sum(out.values())
    if total > 0:
        out = {k: v / total for k, v in out.items()}
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def _holidays(country: str | None, days: list[date]) -> set[date]:
    return public_holidays(country, {d.year for d in days}) if days else set()


def _median(forecast: ExplainableForecast, target: str) -> np.ndarray | None:
    values = forecast.quantiles.get(target)
    if values is None:
        return None
    k = int(np.argmin([abs(q - 0.5) for q in forecast.quantile_levels]))
    return np.asarray(values, dtype=np.float64)[:, k]


def _bills_due(schedule: Schedule, start: date, end: date) -> list[tuple[date, float]]:
    """Monthly and weekly bills of ``schedule`` falling on days in [start, end]."""
    out: list[tuple[date, float]] = []
    day = start
    while day <= end:
        last_dom = calendar.monthrange(day.year, day.month)[1]
        for dom, amount in schedule.bills:
            if min(dom, last_dom) == day.day:
                out.append((day, float(amount)))
        for weekday, amount in schedule.weekly_bills:
            if weekday == day.weekday():
                out.append((day, float(amount)))
        day += timedelta(days=1)
    return out


def _outlook(
    forecast: ExplainableForecast, projection: BalanceProjection, currency: str
) -> tuple[str | None, dict[str, Any]]:
    spend = projection.totals.get("spend")
    income = projection.totals.get("income")
    if not spend and not income:
        return None, {}
    first, last = forecast.dates[0], forecast.dates[-1]
    span = f"the next {len(forecast.dates)} days ({first.day} {first:%b} to {last.day} {last:%b})"
    parts = []
    if spend:
        parts.append(
            f"spend about {money(spend[1], currency)} (likely between "
            f"{money(spend[0], currency)} and {money(spend[2], currency)})"
        )
    if income:
        parts.append(f"receive about {money(income[1], currency)}")
    sentence = f"Over {span} you will probably " + " and ".join(parts) + "."
    return sentence, {"spend_total": spend, "income_total": income}


def _low_balance(
    forecast: ExplainableForecast,
    projection: BalanceProjection,
    schedule: Schedule,
    currency: str,
    holidays: set[date],
) -> tuple[str, dict[str, Any]]:
    limit = "zero" if projection.threshold == 0 else money(projection.threshold, currency)
    p = projection.p_below_threshold
    low = projection.first_low_date
    if p < LOW_RISK or low is None:
        sentence = (
            f"Your balance is unlikely to fall below {limit} in the next "
            f"{len(forecast.dates)} days ({chance(p)})."
        )
        return sentence, {"probability": p, "date": None}
    likely = "likely" if p >= LIKELY else "possible"
    causes: list[str] = []
    weights: dict[str, Any] = {"probability": p, "date": low.isoformat()}
    bills = _bills_due(schedule, forecast.dates[0], low)
    if bills:
        day, amount = max(bills, key=lambda b: b[1])
        total = sum(a for _, a in bills)
        text = f"a {money(amount, currency)} bill due on the {ordinal(day.day)}"
        if len(bills) > 1:
            text += f" ({len(bills)} bills, {money(total, currency)} in all)"
        causes.append(text)
        weights["bills"] = {d.isoformat(): a for d, a in bills}
    window = [low - timedelta(days=k) for k in range(3)]
    weekend = any(d.weekday() >= 5 for d in window)
    holiday = any(d in holidays for d in window)
    if weekend or holiday:
        causes.append(
            "a holiday weekend"
            if weekend and holiday
            else ("a weekend" if weekend else "a public holiday")
        )
        weights["weekend_or_holiday"] = [
            d.isoformat() for d in window if d.weekday() >= 5 or d in holidays
        ]
    spend = _median(forecast, "spend")
    if spend is not None:
        upto = forecast.dates.index(low) + 1 if low in forecast.dates else len(spend)
        # The forecast's spend includes the bills; the rest is everyday spending.
        everyday = max(0.0, float(spend[:upto].sum()) - sum(a for _, a in bills))
        if everyday >= 1:
            causes.append(f"about {money(everyday, currency)} of other spending before then")
            weights["other_spend_until_low"] = everyday
    sentence = (
        f"A low balance is {likely} around {day_text(low)}: {chance(p)} of going below {limit}"
    )
    if causes:
        sentence += ", mostly from " + _join(causes)
    return sentence + ".", weights


def _payday(
    forecast: ExplainableForecast, schedule: Schedule, currency: str, top: Mapping[str, float]
) -> tuple[str | None, dict[str, Any]]:
    if not schedule.paydays:
        return None, {}
    payday = schedule.paydays[0]
    spend = _median(forecast, "spend")
    if spend is None or spend.size == 0:
        return None, {}
    after = np.array(
        [(d - _on_or_before(d, payday)).days < AFTER_PAYDAY_DAYS for d in forecast.dates]
    )
    # Days a bill falls due are left out on both sides: a bill is not a spending spree.
    bill_days = {d for d, _ in _bills_due(schedule, forecast.dates[0], forecast.dates[-1])}
    free = np.array([d not in bill_days for d in forecast.dates])
    weights: dict[str, Any] = {"payday": payday}
    spend, after = spend[free], after[free]
    if after.any() and (~after).any():
        inside, outside = float(spend[after].mean()), float(spend[~after].mean())
        weights.update({"spend_after_payday": inside, "spend_other_days": outside})
        if inside > PEAK_RATIO * outside and inside > 0:
            return (
                f"Spending is expected to peak after payday (the {ordinal(payday)}): about "
                f"{money(inside, currency)} a day in the {AFTER_PAYDAY_DAYS} days after it, "
                f"against {money(outside, currency)} on other days.",
                weights,
            )
    if "days_to_payday" in top:
        return (
            f"Your payday (the {ordinal(payday)}) is one of the main signals in this forecast.",
            weights,
        )
    return None, {}


def _on_or_before(day: date, dom: int) -> date:
    """The latest date on or before ``day`` whose day of month is ``dom`` (clamped)."""
    for months in range(3):
        year = day.year + (day.month - 1 - months) // 12
        month = (day.month - 1 - months) % 12 + 1
        last = calendar.monthrange(year, month)[1]
        candidate = date(year, month, min(dom, last))
        if candidate <= day:
            return candidate
    return day - timedelta(days=400)


def _attention(forecast: ExplainableForecast, n: int = 3) -> tuple[str | None, dict[str, float]]:
    weights = np.asarray(forecast.attention, dtype=np.float64)
    if weights.size == 0 or not np.isfinite(weights).any() or weights.sum() <= 0:
        return None, {}
    order = np.argsort(-weights, kind="stable")[:n]
    days = sorted(forecast.attention_dates[i] for i in order)
    picked = {forecast.attention_dates[i].isoformat(): float(weights[i]) for i in order}
    listed = _join([f"{d.day} {d:%b}" for d in days])
    doms = [d.day for d in days]
    if len(days) > 1 and max(doms) - min(doms) <= 2 and len({(d.year, d.month) for d in days}) > 1:
        sentence = (
            f"It draws most on what happened around the {ordinal(days[-1].day)} of past months "
            f"({listed})."
        )
    else:
        sentence = f"It draws most on what happened on {listed}."
    return sentence, picked


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def explain(
    forecast: ExplainableForecast,
    projection: BalanceProjection,
    schedule: Schedule,
    *,
    currency: str,
    country: str | None = None,
    top: int = 3,
) -> Explanation:
    """Short sentences on what the forecast expects and why (see the module docstring).

    ``country`` names the public-holiday calendar for the weekend/holiday cause; ``top`` is
    how many inputs and past days to name.
    """
    sentences: list[str] = []
    weights: dict[str, Any] = {}
    holidays = _holidays(country, list(forecast.dates))

    low, low_weights = _low_balance(forecast, projection, schedule, currency, holidays)
    weights["low_balance"] = low_weights
    outlook, outlook_weights = _outlook(forecast, projection, currency)
    weights["totals"] = outlook_weights
    at_risk = low_weights.get("date") is not None
    if at_risk:
        sentences.append(low)
    if outlook:
        sentences.append(outlook)
    if not at_risk:
        sentences.append(low)

    importance = combined_importance(forecast)
    named = dict(list(importance.items())[:top])
    weights["inputs"] = named
    weights["static"] = dict(list(forecast.static_importance.items())[:top])

    payday, payday_weights = _payday(forecast, schedule, currency, named)
    if payday:
        sentences.append(payday)
        weights["payday"] = payday_weights
    if named:
        sentences.append(
            "The forecast leans most on "
            + _join([f"{label(n)} ({w:.0%})" for n, w in named.items()])
            + "."
        )
    attention, attention_weights = _attention(forecast, top)
    if attention:
        sentences.append(attention)
        weights["attention"] = attention_weights
    return Explanation(summary=sentences[0], sentences=sentences, weights=weights)


__all__ = [
    "Explanation",
    "chance",
    "combined_importance",
    "day_text",
    "explain",
    "label",
    "ordinal",
]
