"""Berka demo tenants: one per account, balances that add up, and the grouping logic."""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path

import pytest

from scale_ray.demo.berka import (
    BERKA_ACCOUNT_TYPES,
    load_berka_tenants,
    order_account_rows,
    tenants_from_parse_result,
)
from scale_ray.ingest.records import ParsedTxn, ParseResult

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
TRANS = SHARED_DATA / "berka_ecac" / "trans_test.csv"


def _row(n: int, day: int, amount: int, balance: int | None, account: str = "berka-7") -> ParsedTxn:
    return ParsedTxn(
        row_number=n,
        booked_at=datetime(1997, 1, day, tzinfo=UTC),
        amount_minor=amount,
        currency="CZK",
        narration="x",
        account_id=account,
        balance_after_minor=balance,
        txn_id=str(100 + n),
        extra={"type": "credit" if amount > 0 else "withdrawal"},
    )


def _assert_balances_add_up(tenant) -> None:
    (account,) = tenant.accounts
    running = account.opening_balance_minor
    for txn in tenant.transactions:
        running += txn.amount_minor
        assert txn.balance_after_minor == running
    assert account.current_balance_minor == running


def test_grouping_reorders_a_day_by_its_balance_chain() -> None:
    rows = [
        _row(1, 2, 1_000, 1_500),  # opening 500
        # Same day, file order wrong: the withdrawal's balance follows the credit.
        _row(2, 3, -300, 2_200),
        _row(3, 3, 1_000, 2_500),
        _row(4, 5, 661, 2_860),  # amount rounded in the source: 0.01 CZK off
        _row(5, 2, 50, 50, account="berka-3"),
    ]
    result = ParseResult(format="csv:berka", rows=rows)
    tenants = tenants_from_parse_result(result, {"7": {"frequency": "weekly issuance"}})
    assert [t.user_id for t in tenants] == ["berka-3", "berka-7"]
    tenant = tenants[1]
    assert tenant.display_name == "Berka account 7"
    (account,) = tenant.accounts
    assert account.account_id == "berka-7" and account.currency == "CZK"
    assert account.account_type == BERKA_ACCOUNT_TYPES["weekly issuance"]
    assert account.opening_balance_minor == 500
    assert [t.txn_id for t in tenant.transactions] == ["101", "103", "102", "104"]
    assert [t.balance_after_minor for t in tenant.transactions] == [1_500, 2_500, 2_200, 2_860]
    last = tenant.transactions[-1]
    assert last.amount_minor == 660 and last.extra["source_amount_minor"] == "661"
    # The recovered order is kept in booked_at: seconds after midnight within one day.
    assert [t.booked_at.second for t in tenant.transactions] == [0, 0, 1, 0]
    _assert_balances_add_up(tenant)
    assert tenants[0].accounts[0].account_type == "current"  # no account.csv row
    assert tenants_from_parse_result(result, limit=1)[0].user_id == "berka-3"


def test_order_keeps_file_order_when_the_chain_is_already_right() -> None:
    rows = [_row(1, 4, 100, 100), _row(2, 4, 200, 300), _row(3, 4, -50, 250)]
    assert [r.txn_id for r in order_account_rows(rows)] == ["101", "102", "103"]


def test_large_gap_keeps_amount_and_recomputes_balance() -> None:
    rows = [_row(1, 2, 1_000, 1_000), _row(2, 3, 500, 9_999)]
    (tenant,) = tenants_from_parse_result(ParseResult(format="csv:berka", rows=rows))
    second = tenant.transactions[1]
    assert second.amount_minor == 500 and second.balance_after_minor == 1_500
    assert second.extra["source_balance_minor"] == "9999"
    _assert_balances_add_up(tenant)


@pytest.fixture(scope="module")
def berka() -> list:
    if not TRANS.is_file():
        pytest.skip(f"shared data not found at {TRANS}")
    return load_berka_tenants(SHARED_DATA)


def test_one_tenant_per_account_with_consistent_balances(berka) -> None:
    with TRANS.open(newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter=";"))
    accounts = {r["account_id"] for r in rows}
    assert len(accounts) == 354
    assert len(berka) == len(accounts)
    assert {t.user_id for t in berka} == {f"berka-{a}" for a in accounts}
    assert sum(len(t.transactions) for t in berka) == len(rows)
    stated = {r["trans_id"]: r["balance"] for r in rows}
    for tenant in berka:
        (account,) = tenant.accounts
        assert account.currency == "CZK"
        assert account.account_type in BERKA_ACCOUNT_TYPES.values()
        assert account.masked_number and account.masked_number.startswith("*")
        assert tenant.display_name == f"Berka account {tenant.user_id.removeprefix('berka-')}"
        first = tenant.transactions[0]
        assert account.opening_balance_minor + first.amount_minor == first.balance_after_minor
        _assert_balances_add_up(tenant)
        ids = [t.txn_id for t in tenant.transactions]
        assert all(ids) and len(set(ids)) == len(ids)
        assert all(t.account_id == tenant.user_id for t in tenant.transactions)
        stamps = [t.booked_at for t in tenant.transactions]
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
        for txn in tenant.transactions:
            # Every balance is the bank's own (2-decimal text in the file).
            assert txn.balance_after_minor == round(float(stated[txn.txn_id]) * 100)
    adjusted = sum("source_amount_minor" in t.extra for x in berka for t in x.transactions)
    assert 0 < adjusted < 0.06 * len(rows)


def test_limit_keeps_the_lowest_account_ids(berka) -> None:
    few = load_berka_tenants(SHARED_DATA, limit=3)
    assert [t.user_id for t in few] == [t.user_id for t in berka[:3]]
    ids = [int(t.user_id.removeprefix("berka-")) for t in berka]
    assert ids == sorted(ids)
