"""Reason sentences from a row's own figures."""

from __future__ import annotations

import math
from datetime import datetime

import pytest

from scale_ray.models.anomaly.features import FEATURE_NAMES
from scale_ray.models.anomaly.reasons import DRIVER_GROUPS, money, reason_text, sentence


def row(**overrides) -> dict:
    base = {
        "amount_minor": -8300,
        "currency": "GBP",
        "merchant_name": "TESCO STORES 2231",
        "merchant_key": "tesco stores",
        "merchant_usual_minor": 1000.0,
        "category": "groceries/supermarket",
        "category_usual_minor": 2000.0,
        "user_usual_minor": 1500.0,
        "local_time": datetime(2024, 3, 1, 3, 12),
        "time_known": True,
        "merchant_count": 0,
        "velocity_count": 1,
        "velocity_sum_minor": 8300,
        "duplicate_gap_s": math.nan,
        "usual_dom": math.nan,
        "dom": 1,
    }
    base.update(overrides)
    return base


def test_every_driver_resets_real_features() -> None:
    for columns in DRIVER_GROUPS.values():
        assert set(columns) <= set(FEATURE_NAMES)


def test_the_issue_example() -> None:
    text = reason_text(row(), ["merchant_amount", "time_of_day", "new_merchant"])
    assert (
        text
        == "8.3× your usual spend at TESCO STORES 2231, at 03:12, a merchant you have never used"
    )


@pytest.mark.parametrize(
    ("driver", "overrides", "expected"),
    [
        ("category_amount", {}, "4.2× your usual supermarket spend"),
        ("amount", {}, "£83.00, 5.5× your typical payment"),
        ("amount", {"user_usual_minor": 6000.0}, None),
        (
            "new_merchant",
            {"merchant_count": 4, "days_since_merchant": 92.5},
            "your first payment to TESCO STORES 2231 in 92 days",
        ),
        ("new_merchant", {"merchant_count": 4, "days_since_merchant": 31.0}, None),
        ("category_amount", {"category_usual_minor": 90000.0}, None),
        ("velocity", {"velocity_count_1h": 5, "velocity_count": 9}, "5 payments within an hour"),
        ("time_of_day", {"time_known": False}, None),
        (
            "velocity",
            {"velocity_count": 7, "velocity_sum_minor": 41250},
            "7 payments within 24 hours (£412.50 in total)",
        ),
        ("velocity", {}, None),
        (
            "duplicate",
            {"duplicate_gap_s": 300.0},
            "the same £83.00 at TESCO STORES 2231 5 minutes earlier",
        ),
        (
            "duplicate",
            {"duplicate_gap_s": 0.0},
            "the same £83.00 at TESCO STORES 2231 on the same day",
        ),
        ("duplicate", {}, None),
        (
            "recurring_day",
            {"usual_dom": 1.0, "dom": 9},
            "on the 9th, not the usual 1st for this monthly payment",
        ),
        ("merchant_amount", {"merchant_usual_minor": math.nan}, None),
    ],
)
def test_sentences(driver: str, overrides: dict, expected: str | None) -> None:
    assert sentence(driver, row(**overrides)) == expected


def test_at_most_three_sentences_and_a_generic_fallback() -> None:
    drivers = ["merchant_amount", "category_amount", "time_of_day", "new_merchant"]
    assert reason_text(row(), drivers).count(",") == 2
    assert reason_text(row(), ["velocity"]) == "An unusual £83.00 payment at TESCO STORES 2231"


def test_the_merchant_amount_says_what_the_category_amount_would() -> None:
    text = reason_text(row(), ["merchant_amount", "category_amount", "time_of_day"])
    assert text == "8.3× your usual spend at TESCO STORES 2231, at 03:12"
    assert sentence("duplicate", row(duplicate_gap_s=61.0)).endswith("a minute earlier")


def test_money_formats_exactly() -> None:
    assert money(-123456, "GBP") == "£1234.56"
    assert money(500, "JPY") == "¥500"
    assert money(-10, "CZK") == "CZK 0.10"
    with pytest.raises(ValueError):
        sentence("bogus", row())
