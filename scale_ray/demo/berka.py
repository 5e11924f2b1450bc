"""Demo tenants from the real PKDD'99 "Berka" Czech bank ledgers (one tenant per account).

The source is date-only and its rows are not in posting order within a day, so each account's
rows are put back into the order the bank's running balance implies (``previous balance +
amount == balance``); within a day that order is written into ``booked_at`` as whole seconds
after midnight UTC, so sorting by ``booked_at`` gives it back.

About 4 % of rows (1,295 of 30,200, nearly all ``interest credited``) still miss the chain by
exactly 0.10 CZK: the source rounds those amounts but not the balances. A tenant's ledger must
add up, so such a row keeps the bank's balance and its amount absorbs the difference (the
file's amount is kept in ``extra["source_amount_minor"]``). A larger gap, which the data set
does not contain, would keep the amount and recompute the balance instead (the bank's figure in
``extra["source_balance_minor"]``). The opening balance is the first row's balance minus its
amount, so ``opening + cumulative amounts == balance_after_minor`` on every row.
"""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from scale_ray.demo.generator import DemoTenant
from scale_ray.ingest.records import AccountInfo, ParsedTxn, ParseResult

BERKA_DIR = "berka_ecac"
INSTITUTION = "Berka (PKDD'99 Czech bank)"

#: ``account.frequency`` (how often statements are issued) -> ``AccountInfo.account_type``.
BERKA_ACCOUNT_TYPES: dict[str, str] = {
    "monthly issuance": "current-monthly-statement",
    "weekly issuance": "current-weekly-statement",
    "issuance after transaction": "current-statement-per-transaction",
}

#: Largest mismatch (minor units) between ``previous balance + amount`` and the stated balance
#: that is taken as the source's rounding of the amount.
ROUNDING_TOLERANCE_MINOR = 100

#: Days with more rows than this keep their file order instead of a permutation search.
_MAX_PERMUTE = 8


def _mask(account_id: str) -> str:
    digits = "".join(ch for ch in account_id if ch.isdigit()).rjust(4, "0")
    return "*" * 6 + digits[-4:]


def read_berka_accounts(shared_data: Path) -> dict[str, dict[str, str]]:
    """``account.csv`` rows keyed by the Berka account id (as text)."""
    text = (Path(shared_data) / BERKA_DIR / "account.csv").read_bytes().decode("utf-8", "replace")
    reader = csv.DictReader(io.StringIO(text), delimiter=";")
    out: dict[str, dict[str, str]] = {}
    for row in reader:
        clean = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
        if clean.get("account_id"):
            out[clean["account_id"]] = clean
    return out


def _chain_cost(rows: Sequence[ParsedTxn], previous: int | None) -> int:
    cost = 0
    for row in rows:
        if previous is not None and row.balance_after_minor is not None:
            cost += abs(previous + row.amount_minor - row.balance_after_minor)
        if row.balance_after_minor is not None:
            previous = row.balance_after_minor
    return cost


def _order_day(rows: list[ParsedTxn], previous: int | None) -> list[ParsedTxn]:
    """The order of one day's rows that best continues the balance chain from ``previous``.

    Tries permutations in file order and stops at the first exact chain; otherwise keeps the
    one with the smallest total mismatch (the first such one, so the result is deterministic).
    """
    if len(rows) < 2 or len(rows) > _MAX_PERMUTE:
        return rows
    best, best_cost = rows, _chain_cost(rows, previous)
    if best_cost == 0:
        return rows
    for perm in itertools.permutations(rows):
        cost = _chain_cost(perm, previous)
        if cost < best_cost:
            best, best_cost = list(perm), cost
            if cost == 0:
                break
    return best


def order_account_rows(rows: Iterable[ParsedTxn]) -> list[ParsedTxn]:
    """One account's rows sorted by day, each day in the order its running balance implies."""
    by_day: dict[object, list[ParsedTxn]] = {}
    for row in sorted(rows, key=lambda r: (r.booked_at, r.row_number)):
        by_day.setdefault(row.booked_at.date(), []).append(row)
    ordered: list[ParsedTxn] = []
    previous: int | None = None
    for day in sorted(by_day):
        day_rows = _order_day(by_day[day], previous)
        ordered.extend(day_rows)
        for row in reversed(day_rows):
            if row.balance_after_minor is not None:
                previous = row.balance_after_minor
                break
    return ordered


def _tenant(
    account_key: str, rows: list[ParsedTxn], meta: dict[str, str] | None
) -> DemoTenant | None:
    ordered = order_account_rows(rows)
    if not ordered:
        return None
    first = ordered[0]
    source_first = first.balance_after_minor
    opening = (source_first - first.amount_minor) if source_first is not None else 0
    balance = opening
    out: list[ParsedTxn] = []
    previous_day = None
    second = 0
    for row in ordered:
        day = row.booked_at.date()
        second = second + 1 if day == previous_day else 0
        previous_day = day
        midnight = row.booked_at.replace(hour=0, minute=0, second=0, microsecond=0)
        amount = row.amount_minor
        source = row.balance_after_minor
        extra = dict(row.extra)
        if source is None or source == balance + amount:
            balance += amount
        elif abs(source - balance - amount) <= ROUNDING_TOLERANCE_MINOR:
            # The source rounded this amount (interest, mostly) but not the balance: keep the
            # bank's balance and let the amount absorb the ten-heller difference.
            extra["source_amount_minor"] = str(amount)
            amount = source - balance
            balance = source
        else:
            # A gap the data cannot explain: trust the amounts, keep the bank's figure aside.
            extra["source_balance_minor"] = str(source)
            balance += amount
        out.append(
            replace(
                row,
                booked_at=midnight + timedelta(seconds=second),
                amount_minor=amount,
                value_date=row.value_date or day,
                balance_after_minor=balance,
                extra=extra,
            )
        )
    raw_id = account_key.removeprefix("berka-")
    frequency = (meta or {}).get("frequency", "")
    account = AccountInfo(
        account_id=account_key,
        masked_number=_mask(raw_id),
        institution=INSTITUTION,
        account_type=BERKA_ACCOUNT_TYPES.get(frequency, "current"),
        currency=first.currency or "CZK",
        opening_balance_minor=opening,
        current_balance_minor=balance,
    )
    return DemoTenant(
        user_id=account_key,
        display_name=f"Berka account {raw_id}",
        accounts=[account],
        transactions=out,
    )


def _account_sort_key(account_key: str) -> tuple[int, int | str]:
    raw = account_key.removeprefix("berka-")
    return (0, int(raw)) if raw.isdigit() else (1, raw)


def tenants_from_parse_result(
    result: ParseResult,
    accounts: dict[str, dict[str, str]] | None = None,
    *,
    limit: int | None = None,
) -> list[DemoTenant]:
    """Group parsed Berka rows into one tenant per account (ascending numeric account id).

    ``accounts`` are ``account.csv`` rows keyed by the raw Berka id; they supply the statement
    frequency (the account type). Rows without an ``account_id`` are skipped.
    """
    groups: dict[str, list[ParsedTxn]] = {}
    for row in result.rows:
        if row.account_id:
            groups.setdefault(row.account_id, []).append(row)
    keys = sorted(groups, key=_account_sort_key)
    if limit is not None:
        keys = keys[: max(0, limit)]
    tenants = []
    for key in keys:
        meta = (accounts or {}).get(key.removeprefix("berka-"))
        tenant = _tenant(key, groups[key], meta)
        if tenant is not None:
            tenants.append(tenant)
    return tenants


def load_berka_tenants(shared_data: Path, *, limit: int | None = None) -> list[DemoTenant]:
    """One demo tenant per account in ``berka_ecac/trans_test.csv`` (354 accounts, CZK).

    ``limit`` keeps the first accounts by numeric id. Raises :class:`FileNotFoundError` when the
    shared data is absent and :class:`scale_ray.ingest.records.ParseError` when it is unreadable.
    """
    from scale_ray.ingest.parse import parse_bytes  # the parser is heavy; load it on use

    base = Path(shared_data)
    data = (base / BERKA_DIR / "trans_test.csv").read_bytes()
    result = parse_bytes(data, filename="trans_test.csv", default_currency="CZK")
    return tenants_from_parse_result(result, read_berka_accounts(base), limit=limit)
