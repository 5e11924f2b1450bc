"""Validation of API input into domain records; every problem is named, none is guessed at.

JSON bodies are decoded with ``parse_float=Decimal`` so ``12.34`` arrives exact.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

from scale_ray.errors import ApiError, bad_request, unprocessable
from scale_ray.ingest.records import AccountInfo, ParsedTxn
from scale_ray.money import MoneyError, normalize_currency, to_minor

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/#@+-]{0,127}$")
MAX_TEXT = 1_000
TXN_FIELDS = {
    "txn_id", "account_id", "amount", "amount_minor", "currency", "booked_at", "value_date",
    "narration", "description", "merchant", "mode", "balance_after", "balance_after_minor",
    "category_hint",
}  # fmt: skip
ACCOUNT_FIELDS = {
    "account_id", "currency", "account_type", "institution", "masked_number", "number",
    "opening_balance", "opening_balance_minor",
}  # fmt: skip


def decode_json(raw: bytes) -> Any:
    if not raw:
        raise bad_request("request body is empty; send JSON", code="invalid_json")
    try:
        return json.loads(raw, parse_float=Decimal)
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request(f"request body is not valid JSON: {exc}", code="invalid_json") from exc


def parse_datetime(value: Any, field: str) -> datetime:
    """ISO 8601 with an offset (``Z`` or ``+05:30``), or a date meaning midnight UTC."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{field} must be an ISO 8601 date-time string")
    text = value.strip()
    if len(text) == 10:
        try:
            return datetime.combine(date.fromisoformat(text), time(0), tzinfo=UTC)
        except ValueError as exc:
            raise ValueError(f"{field} {value!r} is not a valid date") from exc
    try:
        parsed = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError as exc:
        raise ValueError(f"{field} {value!r} is not an ISO 8601 date-time") from exc
    if parsed.tzinfo is None:
        raise ValueError(f"{field} {value!r} has no UTC offset; add 'Z' or '+hh:mm'")
    return parsed


def parse_date(value: Any, field: str) -> date:
    if not isinstance(value, str):
        raise ValueError(f"{field} must be a date string YYYY-MM-DD")
    try:
        return date.fromisoformat(value.strip())
    except ValueError as exc:
        raise ValueError(f"{field} {value!r} is not a valid YYYY-MM-DD date") from exc


def _text(
    item: dict[str, Any], key: str, *, required: bool = False, limit: int = MAX_TEXT
) -> str | None:
    value = item.get(key)
    if value is None or value == "":
        if required:
            raise ValueError(f"{key} is required")
        return None
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string")
    if len(value) > limit:
        raise ValueError(f"{key} is longer than {limit} characters")
    return value


def _ident(item: dict[str, Any], key: str) -> str | None:
    value = _text(item, key, limit=128)
    if value is not None and not _ID_RE.match(value):
        raise ValueError(f"{key} {value!r} may hold only letters, digits and . _ : / # @ + -")
    return value


def _money(item: dict[str, Any], key: str, currency: str, *, required: bool) -> int | None:
    decimal_value, minor_value = item.get(key), item.get(f"{key}_minor")
    if decimal_value is not None and minor_value is not None:
        raise ValueError(f"give either {key} or {key}_minor, not both")
    if minor_value is not None:
        if isinstance(minor_value, bool) or not isinstance(minor_value, int):
            raise ValueError(f"{key}_minor must be an integer number of minor units")
        if abs(minor_value) > 2**63 - 1:
            raise ValueError(f"{key}_minor does not fit in int64")
        return minor_value
    if decimal_value is None:
        if required:
            raise ValueError(f"{key} (decimal string) or {key}_minor (integer) is required")
        return None
    if isinstance(decimal_value, bool):
        raise ValueError(f"{key} must be a decimal number")
    try:
        return to_minor(
            decimal_value if isinstance(decimal_value, int | Decimal | str) else str(decimal_value),
            currency,
        )
    except MoneyError as exc:
        raise ValueError(f"{key}: {exc}") from exc


def parse_transaction(item: Any, index: int) -> ParsedTxn:
    """One transaction object of ``POST /v1/transactions``; ValueError names the problem."""
    if not isinstance(item, dict):
        raise ValueError("must be a JSON object")
    unknown = sorted(set(item) - TXN_FIELDS)
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(unknown)}")
    try:
        currency = normalize_currency(item.get("currency") or "")
    except MoneyError as exc:
        raise ValueError(str(exc)) from exc
    amount = _money(item, "amount", currency, required=True)
    assert amount is not None
    narration = _text(item, "narration") or _text(item, "description")
    if narration is None:
        raise ValueError("narration (or description) is required")
    value_date = item.get("value_date")
    return ParsedTxn(
        row_number=index + 1,
        booked_at=parse_datetime(item.get("booked_at"), "booked_at"),
        amount_minor=amount,
        currency=currency,
        narration=narration,
        account_id=_ident(item, "account_id"),
        value_date=parse_date(value_date, "value_date") if value_date else None,
        merchant=_text(item, "merchant", limit=256),
        mode=_text(item, "mode", limit=64),
        balance_after_minor=_money(item, "balance_after", currency, required=False),
        txn_id=_ident(item, "txn_id"),
        category_hint=_text(item, "category_hint", limit=256),
    )


def parse_transactions_body(body: Any, max_batch: int) -> list[ParsedTxn]:
    """``{"transactions": [...]}`` (or a bare list); all-or-nothing with every error listed."""
    items = body.get("transactions") if isinstance(body, dict) else body
    if isinstance(body, dict) and set(body) - {"transactions"}:
        raise unprocessable(
            f"unknown top-level field(s): {', '.join(sorted(set(body) - {'transactions'}))}"
        )
    if not isinstance(items, list):
        raise unprocessable('body must be {"transactions": [ ... ]}')
    if not items:
        raise unprocessable("transactions is empty")
    if len(items) > max_batch:
        raise ApiError(
            413,
            "batch_too_large",
            f"at most {max_batch} transactions per request, got {len(items)}",
        )
    rows: list[ParsedTxn] = []
    errors: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        try:
            rows.append(parse_transaction(item, i))
        except ValueError as exc:
            errors.append({"index": i, "reason": str(exc)})
            if len(errors) >= 100:
                break
    if errors:
        raise unprocessable(
            f"{len(errors)} transaction(s) are invalid; nothing was written", {"errors": errors}
        )
    return rows


def mask_number(number: str) -> str:
    """Mask an account or card number, keeping the last four digits (PII never stored whole)."""
    digits = re.sub(r"\D", "", number)
    tail = digits[-4:] if len(digits) >= 4 else digits
    return "X" * max(len(digits) - len(tail), 4) + tail


def parse_account(item: Any) -> AccountInfo:
    if not isinstance(item, dict):
        raise unprocessable("body must be a JSON object describing an account")
    unknown = sorted(set(item) - ACCOUNT_FIELDS)
    try:
        if unknown:
            raise ValueError(f"unknown field(s) {', '.join(unknown)}")
        account_id = _ident(item, "account_id")
        if account_id is None:
            raise ValueError("account_id is required")
        try:
            currency = normalize_currency(item.get("currency") or "")
        except MoneyError as exc:
            raise ValueError(str(exc)) from exc
        number = _text(item, "number", limit=64)
        masked = _text(item, "masked_number", limit=64)
        if number is not None:
            masked = mask_number(number)
        elif masked is not None and re.search(r"\d{5,}", masked):
            masked = mask_number(masked)
        return AccountInfo(
            account_id=account_id,
            masked_number=masked,
            institution=_text(item, "institution", limit=128),
            account_type=_text(item, "account_type", limit=32),
            currency=currency,
            opening_balance_minor=_money(item, "opening_balance", currency, required=False) or 0,
        )
    except ValueError as exc:
        raise unprocessable(str(exc), {"field_errors": [str(exc)]}) from exc
