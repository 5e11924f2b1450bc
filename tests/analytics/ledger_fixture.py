"""A small fixed ledger whose every figure the analytics tests compute by hand.

alice (GBP): current account opening 1000.00, card opening 0.00; January–March 2025, all
bookings in GMT (offset 0). bob has one transaction that alice must never see.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from scale_ray.ingest.records import AccountInfo, ParsedTxn
from scale_ray.ledger.offline import OfflineLedgerWriter
from scale_ray.ledger.rows import accounts_table, transactions_table
from scale_ray.settings import Settings

TODAY = date(2025, 3, 20)

#: (txn_id, account, ISO UTC time, amount_minor, narration, hint)
ALICE = [
    ("a01", "cur", "2025-01-03T09:15", 250000, "ACME LTD SALARY", "salary"),  # Fri
    ("a02", "cur", "2025-01-05T18:30", -4520, "TESCO STORES 3251", "groceries"),  # Sun
    ("a03", "cur", "2025-01-10T12:00", -1250, "PRET A MANGER", "eating_out"),  # Fri
    ("a04", "cur", "2025-01-15T08:00", -999, "NETFLIX.COM", "subscriptions"),  # Wed
    ("a05", "cur", "2025-01-17T19:45", -3000, "TESCO STORES 4410", "groceries"),  # Fri
    ("a06", "cur", "2025-01-20T10:00", -20000, "TRANSFER TO SAVINGS", "transfer"),  # Mon
    ("a07", "cur", "2025-02-03T09:15", 250000, "ACME LTD SALARY", "salary"),  # Mon
    ("a08", "cur", "2025-02-07T12:30", -2000, "PRET A MANGER", "eating_out"),  # Fri
    ("a09", "cur", "2025-02-15T08:00", -999, "NETFLIX.COM", "subscriptions"),  # Sat
    ("a10", "cur", "2025-02-21T20:00", -6000, "TESCO STORES 3251", "groceries"),  # Fri
    ("a11", "cur", "2025-02-25T10:00", -100000, "HOMELY LETTINGS RENT", "rent"),  # Tue
    ("a12", "cur", "2025-03-03T09:15", 260000, "ACME LTD SALARY", "salary"),  # Mon
    ("a13", "cur", "2025-03-07T13:00", -1500, "PRET A MANGER", "eating_out"),  # Fri
    ("a14", "cur", "2025-03-10T19:00", -8000, "TESCO STORES 3251", "groceries"),  # Mon
    ("a15", "cur", "2025-03-15T08:00", -999, "NETFLIX.COM", "subscriptions"),  # Sat
    ("a16", "cur", "2025-03-16T11:00", -2500, "CORNER SHOP", None),  # Sun
    ("a17", "card", "2025-03-12T14:00", -12000, "AMAZON MKTPLACE", "shopping"),  # Wed
]
BOB = [("b01", "cur", "2025-03-11T10:00", -99900, "TESCO STORES 9999", "groceries")]


def _rows(user: str, spec: list[tuple]) -> list[ParsedTxn]:
    return [
        ParsedTxn(
            row_number=i + 1,
            booked_at=datetime.fromisoformat(ts).replace(tzinfo=UTC),
            amount_minor=amount,
            currency="GBP",
            narration=narration,
            account_id=f"{user}-{acc}",
            txn_id=txn_id,
            category_hint=hint,
        )
        for i, (txn_id, acc, ts, amount, narration, hint) in enumerate(spec)
    ]


def load_fixed_ledger(settings: Settings) -> None:
    writer = OfflineLedgerWriter(settings)
    for user, spec, opening in (("alice", ALICE, 100000), ("bob", BOB, 0)):
        accounts = [
            AccountInfo(
                account_id=f"{user}-cur", account_type="current", currency="GBP",
                opening_balance_minor=opening, institution="Test Bank", masked_number="****1234",
            ),
            AccountInfo(
                account_id=f"{user}-card", account_type="credit_card", currency="GBP",
                opening_balance_minor=0, institution="Test Card",
            ),
        ]  # fmt: skip
        writer.write(
            transactions_table(
                user, _rows(user, spec), num_buckets=settings.num_buckets, source="test"
            ),
            accounts_table(
                user, accounts, num_buckets=settings.num_buckets, source="test",
                default_currency="GBP",
            ),
        )  # fmt: skip
