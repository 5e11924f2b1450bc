"""Exact money: int64 minor units plus an ISO 4217 currency code. Never floats."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

#: ISO 4217 minor-unit exponents that differ from 2.
_EXPONENTS: dict[str, int] = {
    "BHD": 3, "BIF": 0, "CLF": 4, "CLP": 0, "DJF": 0, "GNF": 0, "IQD": 3, "ISK": 0, "JOD": 3,
    "JPY": 0, "KMF": 0, "KRW": 0, "KWD": 3, "LYD": 3, "OMR": 3, "PYG": 0, "RWF": 0, "TND": 3,
    "UGX": 0, "UYI": 0, "UYW": 4, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0, "XPF": 0,
}  # fmt: skip
_CURRENCY_RE = re.compile(r"^[A-Z]{3}$")
INT64_MAX = 2**63 - 1
_NUMBER_RE = re.compile(r"^[+-]?(\d{1,3}(,\d{3})+|\d+)?(\.\d*)?$")


class MoneyError(ValueError):
    """An amount or currency that cannot be represented exactly."""


def normalize_currency(code: str) -> str:
    """Upper-case, validated three-letter ISO 4217 code."""
    value = (code or "").strip().upper()
    if not _CURRENCY_RE.match(value):
        raise MoneyError(f"currency {code!r} is not a three-letter ISO 4217 code")
    return value


def exponent(currency: str) -> int:
    """Number of minor-unit digits of ``currency`` (2 unless ISO 4217 says otherwise)."""
    return _EXPONENTS.get(normalize_currency(currency), 2)


def to_minor(value: str | int | Decimal, currency: str) -> int:
    """Convert a decimal amount (``"1,234.50"``, ``Decimal("-3.1")``) to signed minor units.

    Raises :class:`MoneyError` when the amount has more decimals than the currency allows, is
    not a number, or does not fit in int64. Floats are refused: they are not exact.
    """
    if isinstance(value, bool | float):
        raise MoneyError("amounts must be decimal strings or integers, not floats")
    exp = exponent(currency)
    if isinstance(value, int):
        dec = Decimal(value)
    elif isinstance(value, Decimal):
        dec = value
    else:
        text = str(value).strip().replace(" ", "").replace("\u00a0", "")
        if not text or not _NUMBER_RE.match(text) or text in {"+", "-", ".", "+.", "-."}:
            raise MoneyError(f"amount {value!r} is not a decimal number")
        try:
            dec = Decimal(text.replace(",", ""))
        except InvalidOperation as exc:  # pragma: no cover - guarded by the regex
            raise MoneyError(f"amount {value!r} is not a decimal number") from exc
    if not dec.is_finite():
        raise MoneyError(f"amount {value!r} is not finite")
    scaled = dec.scaleb(exp)
    if scaled != scaled.to_integral_value():
        raise MoneyError(f"amount {value!r} has more than {exp} decimals for {currency}")
    minor = int(scaled)
    if abs(minor) > INT64_MAX:
        raise MoneyError(f"amount {value!r} does not fit in int64 minor units")
    return minor


def from_minor(minor: int, currency: str) -> str:
    """Format minor units as a plain decimal string (``-1234.50``), exactly."""
    exp = exponent(currency)
    dec = Decimal(int(minor)).scaleb(-exp)
    return f"{dec:.{exp}f}"
