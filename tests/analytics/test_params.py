"""Query validation: allow-lists, formats, and SQL-injection attempts answered with 400."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any

import pytest

from scale_ray.analytics import params as P
from scale_ray.errors import ApiError

TODAY = date(2025, 3, 20)

INJECTIONS = [
    "' OR '1'='1",
    "'; DROP TABLE transactions; --",
    "x' UNION SELECT user_id FROM transactions --",
    "1; SELECT * FROM accounts",
    'Food" OR ""="',
    "Food/**/OR/**/1",
    "') OR 1>0 --",
    "Food\\' OR 1",
]


def _parse(endpoint: str, query: dict[str, str]) -> Any:
    if endpoint == "compare":
        return P.parse_compare(query, {k: [v] for k, v in query.items()}, TODAY)
    parser: Callable[..., Any] = getattr(P, f"parse_{endpoint}")
    return parser(query, TODAY)


FILTERS = {
    "overview": ["month", "currency", "version"],
    "categories": ["from", "to", "last", "parent", "direction", "currency", "version"],
    "heatmap": ["from", "to", "last", "category", "direction", "currency", "version"],
    "merchants": ["from", "to", "last", "by", "limit", "category", "direction", "currency"],
    "cashflow": ["from", "to", "last", "currency", "version"],
    "compare": [
        "measure", "per", "group_by", "category", "merchant", "weekday", "hour_from", "hour_to",
        "min_amount", "max_amount", "account_id", "direction", "from", "to", "last", "limit",
        "currency", "version",
    ],
}  # fmt: skip


@pytest.mark.parametrize(
    ("endpoint", "name"), [(e, n) for e, names in FILTERS.items() for n in names]
)
@pytest.mark.parametrize("payload", INJECTIONS)
def test_injection_in_every_filter_is_400(endpoint: str, name: str, payload: str) -> None:
    with pytest.raises(ApiError) as err:
        _parse(endpoint, {name: payload})
    assert err.value.status == 400
    assert name in err.value.message or name in str(err.value.details)


@pytest.mark.parametrize("endpoint", list(FILTERS))
def test_unknown_parameter_is_400(endpoint: str) -> None:
    with pytest.raises(ApiError) as err:
        _parse(endpoint, {"user_id": "bob"})
    assert err.value.status == 400 and "user_id" in err.value.message


def test_valid_values_pass() -> None:
    q = _parse(
        "compare",
        {
            "measure": "average_per_period", "per": "day", "category": "Food & drink",
            "weekday": "fri", "last": "5y", "merchant": "Sainsbury's S/MKT (3251)",
            "min_amount": "1.50",
        },
    )  # fmt: skip
    assert q.category == ("Food & drink",) and q.weekdays == (4,)
    assert q.range.start == date(2020, 3, 21) and q.range.end == date(2025, 3, 21)
    assert q.min_amount_minor == 150 and q.merchant == "Sainsbury's S/MKT (3251)"
    assert _parse("categories", {"parent": "food & drink / groceries"}).parent == (
        "Food & drink/Groceries"
    )
    cash = _parse("cashflow", {})
    assert cash.range.start == date(2024, 4, 1) and cash.range.end == date(2025, 4, 1)
    assert _parse("merchants", {"category": "Select Fashion"}).category == "Select Fashion"


@pytest.mark.parametrize(
    "query",
    [
        {"measure": "average_per_period"},  # needs per
        {"measure": "total", "per": "day"},
        {"group_by": "hour", "measure": "average_per_period", "per": "day"},
        {"group_by": "weekday,hour,year"},
        {"group_by": "user_id"},
        {"weekday": "funday"},
        {"hour_from": "25"},
        {"from": "2025-02-01", "to": "2025-01-01"},
        {"from": "2025-02-30"},
        {"last": "5 years"},
        {"min_amount": "-3"},
        {"limit": "0"},
        {"currency": "POUNDS"},
    ],
)
def test_bad_compare_specs_are_400(query: dict[str, str]) -> None:
    with pytest.raises(ApiError) as err:
        _parse("compare", query)
    assert err.value.status == 400
