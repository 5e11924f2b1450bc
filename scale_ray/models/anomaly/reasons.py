"""Plain-language reasons for a flag, from the feature groups that drove it.

:data:`DRIVER_GROUPS` names groups of related features; the model measures how much each group
raised a row's score (see :meth:`AnomalyModel.contributions`) and :func:`reason_text` joins the
sentences of the strongest groups, filled with the row's own figures::

    8.3× your usual spend at TESCO STORES, at 03:12, a merchant you have never used
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from scale_ray.money import from_minor

#: Driver group -> the features it resets. Order is the tie-break order of the sentences.
DRIVER_GROUPS: dict[str, tuple[str, ...]] = {
    "merchant_amount": ("merchant_z",),
    "category_amount": ("category_z",),
    "amount": ("user_z",),
    "new_merchant": ("new_merchant", "log_days_since_merchant", "log_merchant_count"),
    "time_of_day": ("hour", "hour_rarity", "weekday"),
    "velocity": ("velocity_count_1h", "velocity_count_24h", "velocity_amount_24h"),
    "duplicate": ("duplicate",),
    "recurring_day": ("dom_distance",),
}

#: A merchant not paid for this many days is worth mentioning when it reappears.
RARE_MERCHANT_DAYS = 60
#: At most this many sentences per reason.
MAX_SENTENCES = 3

_SYMBOLS = {"GBP": "£", "EUR": "€", "USD": "$", "INR": "₹", "JPY": "¥"}


def money(minor: float | int, currency: str) -> str:
    """``£12.50``, ``CZK 1200.00`` (absolute value; reasons speak of sizes)."""
    text = from_minor(abs(int(minor)), currency)
    symbol = _SYMBOLS.get(currency)
    return f"{symbol}{text}" if symbol else f"{currency} {text}"


def _ratio(amount_minor: int, usual: float) -> float | None:
    if usual is None or not isinstance(usual, (int, float)) or math.isnan(usual) or usual <= 0:
        return None
    return abs(amount_minor) / usual


def _times(ratio: float) -> str:
    return f"{ratio:.1f}×" if ratio < 10 else f"{ratio:.0f}×"


def _ordinal(day: int) -> str:
    suffix = "th" if 10 <= day % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


def _nan(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def sentence(driver: str, row: Mapping[str, Any]) -> str | None:
    """The sentence of one driver for one row, or None when the row has nothing to say."""
    amount = int(row["amount_minor"])
    currency = str(row["currency"])
    merchant = str(row.get("merchant_name") or row.get("merchant_key") or "this merchant")
    if driver == "merchant_amount":
        ratio = _ratio(amount, row.get("merchant_usual_minor"))
        if ratio is None:
            return None
        if ratio >= 1:
            return f"{_times(ratio)} your usual spend at {merchant}"
        usual = money(row["merchant_usual_minor"], currency)
        return f"{money(amount, currency)} at {merchant}, far below your usual {usual}"
    if driver == "category_amount":
        ratio = _ratio(amount, row.get("category_usual_minor"))
        category = row.get("category")
        if ratio is None or ratio < 1 or _nan(category):
            return None
        name = str(category).rsplit("/", 1)[-1].replace("_", " ")
        return f"{_times(ratio)} your usual {name} spend"
    if driver == "amount":
        ratio = _ratio(amount, row.get("user_usual_minor"))
        if ratio is None:
            return f"a {money(amount, currency)} payment"
        if ratio < 2:
            return None  # the size of the payment is not what stands out
        return f"{money(amount, currency)}, {_times(ratio)} your typical payment"
    if driver == "new_merchant":
        count = row.get("merchant_count")
        if _nan(count) or int(count) == 0:
            return "a merchant you have never used"
        days = row.get("days_since_merchant")
        if _nan(days) or float(days) < RARE_MERCHANT_DAYS:
            return None
        return f"your first payment to {merchant} in {int(days)} days"
    if driver == "time_of_day":
        if not bool(row.get("time_known")):
            return None
        local = row.get("local_time")
        if isinstance(local, datetime) or hasattr(local, "strftime"):
            return f"at {local.strftime('%H:%M')}"
        return None
    if driver == "velocity":
        hourly = int(row.get("velocity_count_1h") or 0)
        count = int(row.get("velocity_count") or 0)
        total = row.get("velocity_sum_minor")
        if hourly >= 3:
            return f"{hourly} payments within an hour"
        if count < 2:
            return None
        return f"{count} payments within 24 hours ({money(total or 0, currency)} in total)"
    if driver == "duplicate":
        gap = row.get("duplicate_gap_s")
        if _nan(gap):
            return None
        gap = float(gap)
        when = (
            "on the same day"
            if gap == 0
            else "a minute earlier"
            if gap < 90
            else f"{round(gap / 60)} minutes earlier"
            if gap < 3600
            else f"{gap / 3600:.0f} hours earlier"
        )
        return f"the same {money(amount, currency)} at {merchant} {when}"
    if driver == "recurring_day":
        usual = row.get("usual_dom")
        if _nan(usual):
            return None
        day, usual_day = _ordinal(int(row["dom"])), _ordinal(round(float(usual)))
        return f"on the {day}, not the usual {usual_day} for this monthly payment"
    raise ValueError(f"unknown driver {driver!r}")


def reason_text(row: Mapping[str, Any], drivers: Sequence[str]) -> str:
    """The reason: sentences of the strongest drivers (strongest first), or a generic one."""
    parts: list[str] = []
    for driver in drivers:
        if driver == "category_amount" and "merchant_amount" in drivers:
            continue  # "8× your usual spend at TESCO" already says it, and more precisely
        text = sentence(driver, row)
        if text and text not in parts:
            parts.append(text)
        if len(parts) >= MAX_SENTENCES:
            break
    if not parts:
        merchant = str(row.get("merchant_name") or row.get("merchant_key") or "")
        at = f" at {merchant}" if merchant else ""
        return f"An unusual {money(int(row['amount_minor']), str(row['currency']))} payment{at}"
    text = ", ".join(parts)
    return text[0].upper() + text[1:]


__all__ = ["DRIVER_GROUPS", "MAX_SENTENCES", "money", "reason_text", "sentence"]
