"""Budgets: a spending limit for a category (and everything below it) per week, month or year.

Stored as ``user_state`` rows of kind ``budget``; the key is derived from (category, period)
so one category has at most one budget per period and a retried create is idempotent. Spend is
what the analytics engine calls spend (debits outside Transfers), in the budget's currency,
over the calendar period that contains ``today`` (weeks start on Monday).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from scale_ray.analytics.params import DateRange, add_months
from scale_ray.analytics.state import content_key
from scale_ray.money import from_minor

BUDGET_PERIODS = ("weekly", "monthly", "yearly")
#: Percentages of the limit at which a notification is created, once per budget period.
THRESHOLDS = (80, 100)


def budget_id(category: str, period: str) -> str:
    return "bud_" + content_key("budget", category.casefold(), period)


def period_range(period: str, today: date) -> DateRange:
    """The calendar period of ``period`` kind that contains ``today`` ([start, end))."""
    if period == "weekly":
        start = today - timedelta(days=today.weekday())
        return DateRange(start, start + timedelta(days=7))
    if period == "monthly":
        start = today.replace(day=1)
        return DateRange(start, add_months(start, 1))
    if period == "yearly":
        start = date(today.year, 1, 1)
        return DateRange(start, date(today.year + 1, 1, 1))
    raise ValueError(f"unknown budget period {period!r}")


@dataclass(frozen=True)
class BudgetStatus:
    budget_id: str
    category: str
    period: str
    currency: str
    limit_minor: int
    spent_minor: int
    transactions: int
    range: DateRange

    @property
    def percent(self) -> float:
        return round(100 * self.spent_minor / self.limit_minor, 1) if self.limit_minor else 0.0

    def reached(self) -> list[int]:
        """Thresholds reached: spent * 100 >= threshold * limit, in exact integers."""
        return [t for t in THRESHOLDS if self.spent_minor * 100 >= t * self.limit_minor]

    def to_json(self) -> dict[str, Any]:
        remaining = self.limit_minor - self.spent_minor
        return {
            "period_start": self.range.start.isoformat(),
            "period_end": self.range.end.isoformat(),
            "spent_minor": self.spent_minor,
            "spent": from_minor(self.spent_minor, self.currency),
            "remaining_minor": remaining,
            "remaining": from_minor(remaining, self.currency),
            "percent": self.percent,
            "transactions": self.transactions,
            "thresholds_reached": self.reached(),
        }


def budget_json(row: dict[str, Any], status: BudgetStatus | None = None) -> dict[str, Any]:
    """A stored budget row (and its current status) as the API shows it."""
    out: dict[str, Any] = {
        "id": row["key"],
        "category": row["category"],
        "period": row["period"],
        "currency": row["currency"],
        "limit_minor": int(row["limit_minor"]),
        "limit": from_minor(int(row["limit_minor"]), row["currency"]),
        "created_at": row["created_at"].isoformat(),
        "updated_at": row["updated_at"].isoformat(),
    }
    if status is not None:
        out["current"] = status.to_json()
    return out


def notification_id(budget: str, period_start: date, threshold: int) -> str:
    """Deterministic: one notification per (budget, period, threshold), ever."""
    return "ntf_" + content_key("budget", budget, period_start.isoformat(), str(threshold))


def threshold_notification(status: BudgetStatus, threshold: int) -> dict[str, Any]:
    """The notification row (without user columns) for a reached threshold."""
    spent = from_minor(status.spent_minor, status.currency)
    limit = from_minor(status.limit_minor, status.currency)
    name = status.category.rsplit("/", 1)[-1]
    if threshold >= 100:
        title = (
            f"{name} budget exceeded"
            if status.spent_minor > status.limit_minor
            else (f"{name} budget used up")
        )
    else:
        title = f"{name} budget {threshold}% used"
    label = {"weekly": "this week", "monthly": "this month", "yearly": "this year"}[status.period]
    cur = status.currency
    message = f"You have spent {spent} {cur} of your {limit} {cur} {name} budget {label}."
    data = {
        "budget_id": status.budget_id,
        "category": status.category,
        "period": status.period,
        "period_start": status.range.start.isoformat(),
        "period_end": status.range.end.isoformat(),
        "threshold": threshold,
        "spent_minor": status.spent_minor,
        "limit_minor": status.limit_minor,
        "currency": status.currency,
    }
    return {
        "notification_id": notification_id(status.budget_id, status.range.start, threshold),
        "kind": "budget_threshold",
        "title": title,
        "message": message,
        "data_json": json.dumps(data, sort_keys=True),
    }
