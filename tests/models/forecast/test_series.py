"""Daily series and covariates on small ledgers worked out by hand."""

from __future__ import annotations

from datetime import UTC, date, datetime

import numpy as np
import pandas as pd
import pytest

from scale_ray.models.forecast.series import (
    Schedule,
    calendar_covariates,
    daily_series,
    future_days,
    income_brackets,
    schedule_covariates,
    slug,
    top_categories,
    user_schedule,
    with_covariates,
)


def ledger(rows: list[tuple], user: str = "u1") -> pd.DataFrame:
    """Rows of (when, amount_minor, narration[, category][, balance_after_minor])."""
    out = []
    for i, (when, amount, narration, *rest) in enumerate(rows):
        out.append(
            {
                "user_id": user,
                "txn_id": f"{user}-{i}",
                "account_id": "acc",
                "amount_minor": amount,
                "currency": "GBP",
                "booked_at": when,
                "narration": narration,
                "merchant": narration,
                "category_hint": rest[0] if rest else None,
            }
        )
    return pd.DataFrame(out)


def at(d: int, month: int = 3, hour: int = 12) -> datetime:
    return datetime(2024, month, d, hour, tzinfo=UTC)


def test_daily_sums_fill_missing_days_and_running_balance() -> None:
    frame = ledger(
        [
            (at(1), 250000, "SALARY"),
            (at(1, hour=18), -1250, "PRET", "food"),
            (at(3), -4000, "TESCO", "groceries"),
            (at(3, hour=9), -1000, "TESCO", "groceries"),
        ]
    )
    s = daily_series(frame, categories=["groceries"])
    assert list(s["date"].dt.day) == [1, 2, 3]
    assert list(s["spend"]) == [12.5, 0.0, 50.0]
    assert list(s["income"]) == [2500.0, 0.0, 0.0]
    assert list(s["net"]) == [2487.5, 0.0, -50.0]
    assert list(s["balance"]) == [2487.5, 2487.5, 2437.5]
    assert list(s["spend_groceries"]) == [0.0, 0.0, 50.0]
    assert s["time_idx"].iloc[0] == (date(2024, 3, 1) - date(1970, 1, 1)).days
    assert list(s["time_idx"].diff().dropna()) == [1, 1]


def test_bank_balances_are_used_when_every_row_has_one() -> None:
    frame = ledger([(at(1), -1000, "A"), (at(1, hour=15), -500, "B"), (at(4), 2000, "C")])
    frame["balance_after_minor"] = [9000, 8500, 10500]
    s = daily_series(frame)
    assert list(s["balance"]) == [85.0, 85.0, 85.0, 105.0]


def test_end_extends_with_zero_days_and_users_are_separate() -> None:
    a = ledger([(at(1), -1000, "A")], user="a")
    b = ledger([(at(2), -300, "B"), (at(5), -700, "B")], user="b")
    s = daily_series(pd.concat([a, b]), end=date(2024, 3, 6))
    assert s.groupby("user_id").size().to_dict() == {"a": 6, "b": 5}
    assert s[s.user_id == "a"]["spend"].sum() == 10.0


def test_top_categories_by_spend() -> None:
    frame = ledger(
        [
            (at(1), -9000, "X", "rent"),
            (at(2), -500, "Y", "food"),
            (at(3), -600, "Y", "food"),
            (at(4), -100, "Z", None),
            (at(5), 900000, "S", "salary"),
        ]
    )
    assert top_categories(frame, k=2) == ["rent", "food"]
    assert slug("Insurance payment / X") == "insurance_payment_x"


def test_calendar_covariates_with_holidays() -> None:
    dates = pd.Series(pd.to_datetime(["2024-12-24", "2024-12-25", "2024-12-28", "2024-02-27"]))
    cal = calendar_covariates(dates, "GB")
    assert list(cal["is_holiday"]) == [0, 1, 0, 0]
    assert list(cal["is_weekend_or_holiday"]) == [0, 1, 1, 0]
    assert list(cal["day_of_week"]) == [1, 2, 5, 1]
    assert list(cal["days_to_month_end"]) == [7, 6, 3, 2]  # 2024 is a leap year


def test_schedule_from_history_only_and_its_covariates() -> None:
    rows = []
    for m in range(1, 7):
        rows.append((datetime(2024, m, 25, 9, tzinfo=UTC), 300000, "ACME PAYROLL"))
        rows.append((datetime(2024, m, 1, 9, tzinfo=UTC), -120000, "LANDLORD RENT"))
    frame = ledger(rows)
    schedule = user_schedule(frame, as_of=date(2024, 6, 30))
    assert schedule.paydays == (25,)
    assert schedule.bills == ((1, 1200.0),)
    # Before any history there is nothing to learn.
    assert user_schedule(frame, as_of=date(2023, 12, 31)) == Schedule(date(2023, 12, 31))
    dates = pd.Series(pd.to_datetime(["2024-07-01", "2024-07-20", "2024-07-26"]))
    cov = schedule_covariates(dates, schedule)
    assert list(cov["days_to_payday"]) == [24, 5, 30]
    assert list(cov["days_to_recurring"]) == [0, 12, 6]
    assert list(cov["recurring_due"]) == [1200.0, 0.0, 0.0]


def test_income_brackets_and_with_covariates() -> None:
    users = [
        ledger([(at(1), (k + 1) * 100000, "PAY"), (at(2), -100, "X")], user=f"u{k}")
        for k in range(4)
    ]
    s = daily_series(pd.concat(users))
    brackets = income_brackets(s)
    assert brackets == {"u0": "q1", "u1": "q2", "u2": "q3", "u3": "q4"}
    full = with_covariates(s, {}, country="GB", account_types={"u0": "savings"})
    assert full["account_type"].tolist()[:2] == ["savings", "savings"]
    assert full["days_to_payday"].max() == 45  # no schedule: capped
    assert not full.isna().any().any()


def test_future_days() -> None:
    days = future_days(pd.Timestamp("2024-02-27"), 3)
    assert list(days.dt.day) == [28, 29, 1]


def test_missing_columns_are_named() -> None:
    with pytest.raises(ValueError, match="amount_minor"):
        daily_series(pd.DataFrame({"user_id": ["u"]}))
    assert np.isfinite(daily_series(ledger([(at(1), -1, "A")]))["spend"]).all()
