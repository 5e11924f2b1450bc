from decimal import Decimal

import pytest

from scale_ray.api_input import decode_json, mask_number, parse_account, parse_transactions_body
from scale_ray.errors import ApiError


def _txn(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {
        "amount": "-12.50",
        "currency": "GBP",
        "booked_at": "2024-01-02T10:00:00+05:30",
        "narration": "TESCO",
    }
    base.update(kw)
    return base


def test_valid_batch_keeps_offset_and_exact_amounts() -> None:
    raw = (
        b'{"transactions": [{"amount": 12.34, "currency": "gbp", '
        b'"booked_at": "2024-01-02T10:00:00+05:30", "narration": "x"}]}'
    )
    body = decode_json(raw)
    (row,) = parse_transactions_body(body, 10)
    assert row.amount_minor == 1234 and row.currency == "GBP"
    assert row.booked_at.utcoffset().total_seconds() == 5.5 * 3600
    assert isinstance(decode_json(b"1.1"), Decimal)


@pytest.mark.parametrize(
    ("item", "needle"),
    [
        (_txn(amount="1.234"), "more than 2 decimals"),
        (_txn(booked_at="2024-01-02T10:00:00"), "no UTC offset"),
        (_txn(currency="pounds"), "ISO 4217"),
        (_txn(narration=None), "narration"),
        (_txn(colour="red"), "unknown field"),
        (_txn(amount_minor=5), "either amount or amount_minor"),
        (_txn(txn_id="bad id with spaces"), "txn_id"),
        ("not an object", "JSON object"),
    ],
)
def test_invalid_items_named(item: object, needle: str) -> None:
    with pytest.raises(ApiError) as err:
        parse_transactions_body({"transactions": [_txn(), item]}, 10)
    assert err.value.status == 422
    (detail,) = err.value.details["errors"]
    assert detail["index"] == 1 and needle in detail["reason"]


def test_batch_limits() -> None:
    with pytest.raises(ApiError) as err:
        parse_transactions_body({"transactions": [_txn()] * 3}, 2)
    assert err.value.status == 413
    with pytest.raises(ApiError):
        parse_transactions_body({"transactions": []}, 2)
    with pytest.raises(ApiError):
        decode_json(b"{nope")


def test_account_number_is_masked() -> None:
    acc = parse_account({"account_id": "cur-1", "currency": "INR", "number": "1234 5678 9012"})
    assert acc.masked_number == "XXXXXXXX9012"
    assert mask_number("12") == "XXXX12"
