from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scale_ray.money import MoneyError, exponent, from_minor, normalize_currency, to_minor


@pytest.mark.parametrize(
    ("value", "currency", "minor"),
    [
        ("12.34", "GBP", 1234),
        ("-0.5", "EUR", -50),
        ("1,234.56", "USD", 123456),
        ("100", "JPY", 100),
        ("1.234", "KWD", 1234),
        (Decimal("7.10"), "INR", 710),
        (42, "GBP", 4200),
    ],
)
def test_to_minor_exact(value: object, currency: str, minor: int) -> None:
    assert to_minor(value, currency) == minor  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["1.234", "abc", "", "1e5x", "--1", "NaN"])
def test_to_minor_rejects(value: str) -> None:
    with pytest.raises(MoneyError):
        to_minor(value, "GBP")


def test_floats_refused() -> None:
    with pytest.raises(MoneyError, match="float"):
        to_minor(0.1, "GBP")  # type: ignore[arg-type]


def test_int64_overflow() -> None:
    with pytest.raises(MoneyError, match="int64"):
        to_minor("99999999999999999999", "GBP")


def test_currency_validation() -> None:
    assert normalize_currency(" gbp ") == "GBP"
    assert exponent("JPY") == 0 and exponent("BHD") == 3 and exponent("INR") == 2
    with pytest.raises(MoneyError):
        normalize_currency("pounds")


@given(st.integers(min_value=-(2**62), max_value=2**62), st.sampled_from(["GBP", "JPY", "KWD"]))
def test_round_trip(minor: int, currency: str) -> None:
    assert to_minor(from_minor(minor, currency), currency) == minor
