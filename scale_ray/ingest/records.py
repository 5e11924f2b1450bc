"""What every parser produces: parsed transactions, per-row rejections, account facts."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime


@dataclass(frozen=True, slots=True)
class ParsedTxn:
    """One transaction read from a statement.

    ``amount_minor`` is signed from the account holder's view: credits positive, debits negative.
    ``booked_at`` is timezone-aware; a date-only source becomes midnight UTC of that date.
    ``row_number`` is the 1-based number of the data row in the source (header excluded for CSV,
    record order for OFX / XML / JSON), so a rejection or a duplicate can be traced back.
    """

    row_number: int
    booked_at: datetime
    amount_minor: int
    currency: str
    narration: str
    account_id: str | None = None
    value_date: date | None = None
    merchant: str | None = None
    mode: str | None = None
    balance_after_minor: int | None = None
    txn_id: str | None = None
    category_hint: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Rejection:
    """A row that could not be read: its 1-based row number and a reason a person can act on."""

    row_number: int
    reason: str


@dataclass(frozen=True, slots=True)
class AccountInfo:
    """Facts about the account a statement belongs to, when the source states them."""

    account_id: str | None = None
    masked_number: str | None = None
    institution: str | None = None
    account_type: str | None = None
    currency: str | None = None
    opening_balance_minor: int | None = None
    current_balance_minor: int | None = None


@dataclass
class ParseResult:
    """Everything a parser read from one source."""

    format: str
    rows: list[ParsedTxn] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    accounts: list[AccountInfo] = field(default_factory=list)


class ParseError(ValueError):
    """The whole source is unreadable (wrong format, no header, broken encoding)."""
