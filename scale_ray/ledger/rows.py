"""Turn parsed transactions and accounts into Arrow batches in the ledger's schema."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import pyarrow as pa

from scale_ray.ingest.records import AccountInfo, ParsedTxn
from scale_ray.ledger.keys import derive_txn_ids, user_bucket
from scale_ray.ledger.schema import ACCOUNTS, TRANSACTIONS


def _offset_minutes(ts: datetime) -> int:
    offset = ts.utcoffset()
    if offset is None:
        raise ValueError("booked_at must be timezone-aware")
    return int(offset.total_seconds() // 60)


def assign_txn_ids(user_id: str, rows: Sequence[ParsedTxn]) -> list[str]:
    """Source ids where present, content-derived ids (see :func:`derive_txn_ids`) otherwise."""
    missing = [i for i, r in enumerate(rows) if not r.txn_id]
    ids = [r.txn_id or "" for r in rows]
    if missing:
        derived = derive_txn_ids(
            (
                user_id,
                rows[i].account_id or "",
                rows[i].booked_at.isoformat(),
                str(rows[i].amount_minor),
                rows[i].currency,
                rows[i].narration,
            )
            for i in missing
        )
        for i, txn_id in zip(missing, derived, strict=True):
            ids[i] = txn_id
    return ids


def transactions_table(
    user_id: str,
    rows: Sequence[ParsedTxn],
    *,
    num_buckets: int,
    source: str,
    default_account_id: str = "default",
    import_id: str | None = None,
    ingested_at: datetime | None = None,
) -> pa.Table:
    """Arrow table of ``rows`` for one user, ids assigned, in the ``transactions`` schema."""
    now = ingested_at or datetime.now(UTC)
    ids = assign_txn_ids(user_id, rows)
    n = len(rows)
    bucket = user_bucket(user_id, num_buckets)
    columns = {
        "user_id": [user_id] * n,
        "user_bucket": [bucket] * n,
        "txn_id": ids,
        "account_id": [r.account_id or default_account_id for r in rows],
        "amount_minor": [r.amount_minor for r in rows],
        "currency": [r.currency for r in rows],
        "booked_at": [r.booked_at.astimezone(UTC) for r in rows],
        "booked_offset_min": [_offset_minutes(r.booked_at) for r in rows],
        "value_date": [r.value_date for r in rows],
        "narration": [r.narration for r in rows],
        "merchant": [r.merchant for r in rows],
        "mode": [r.mode for r in rows],
        "balance_after_minor": [r.balance_after_minor for r in rows],
        "category_hint": [r.category_hint for r in rows],
        "source": [source] * n,
        "import_id": [import_id] * n,
        "ingested_at": [now] * n,
    }
    return pa.Table.from_pydict(columns, schema=TRANSACTIONS)


def accounts_table(
    user_id: str,
    accounts: Sequence[AccountInfo],
    *,
    num_buckets: int,
    source: str,
    default_currency: str,
    created_at: datetime | None = None,
) -> pa.Table:
    """Arrow table of ``accounts`` for one user in the ``accounts`` schema."""
    now = created_at or datetime.now(UTC)
    n = len(accounts)
    bucket = user_bucket(user_id, num_buckets)
    return pa.Table.from_pydict(
        {
            "user_id": [user_id] * n,
            "user_bucket": [bucket] * n,
            "account_id": [a.account_id or "default" for a in accounts],
            "masked_number": [a.masked_number for a in accounts],
            "institution": [a.institution for a in accounts],
            "account_type": [a.account_type for a in accounts],
            "currency": [a.currency or default_currency for a in accounts],
            "opening_balance_minor": [a.opening_balance_minor or 0 for a in accounts],
            "source": [source] * n,
            "created_at": [now] * n,
        },
        schema=ACCOUNTS,
    )


def implied_accounts(rows: Sequence[ParsedTxn], default_account_id: str) -> list[AccountInfo]:
    """One AccountInfo per distinct account the rows touch (currency of its first row)."""
    seen: dict[str, AccountInfo] = {}
    for r in rows:
        acc = r.account_id or default_account_id
        if acc not in seen:
            seen[acc] = AccountInfo(account_id=acc, currency=r.currency)
    return list(seen.values())
