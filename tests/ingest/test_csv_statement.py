"""CSV statements: the real Birmingham and Berka files, and generic bank exports."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from scale_ray.ingest.csv_statement import mask_number, parse_amount, parse_datetime
from scale_ray.ingest.parse import ColumnMapping, detect_format, parse_bytes
from scale_ray.ingest.records import ParseError, ParseResult

BIRMINGHAM_ROWS = 51_591
BERKA_ROWS = 30_200


def _parse(text: str, **kwargs: object) -> ParseResult:
    return parse_bytes(text.encode("utf-8"), **kwargs)  # type: ignore[arg-type]


def _assert_sound(result: ParseResult) -> None:
    for row in result.rows:
        assert isinstance(row.amount_minor, int)
        assert row.booked_at.utcoffset() is not None
    for rejection in result.rejections:
        assert rejection.row_number >= 1
        assert rejection.reason.startswith(f"row {rejection.row_number}: ")


# --------------------------------------------------------------------------------------------
# Real files


@pytest.fixture(scope="module")
def birmingham(data_dir: Path) -> dict[str, ParseResult]:
    files = sorted((data_dir / "birmingham_pcard_2016_2017").glob("*.csv"))
    assert len(files) == 12
    return {f.name: parse_bytes(f.read_bytes(), filename=f.name) for f in files}


def test_birmingham_every_row_accounted_for(birmingham: dict[str, ParseResult]) -> None:
    total = sum(len(r.rows) + len(r.rejections) for r in birmingham.values())
    assert total == BIRMINGHAM_ROWS
    rejections = [rej for r in birmingham.values() for rej in r.rejections]
    # Every data row of the twelve files is well formed; a trailing ';;;' line is not a row.
    assert rejections == []
    for result in birmingham.values():
        assert result.format == "csv:birmingham"
        _assert_sound(result)
        assert all(row.txn_id is None for row in result.rows)
        assert all(row.account_id and row.account_id.startswith("card-") for row in result.rows)


def test_birmingham_first_row_fields(birmingham: dict[str, ParseResult]) -> None:
    row = birmingham["purchase-card-transactions-201612.csv"].rows[0]
    assert row.row_number == 1
    assert row.booked_at == datetime(2016, 12, 22, tzinfo=UTC)
    assert row.amount_minor == -2000
    assert row.currency == "GBP"
    assert row.merchant == row.narration == "shell kings 587"
    assert row.account_id == "card-5770"
    assert row.category_hint == "Vehicle Fuel"
    assert row.extra["trans_cac_code_1"] == "K020"
    assert row.extra["directorate"] == "Adult & Communities"


def test_birmingham_spaced_header_and_foreign_currency(
    birmingham: dict[str, ParseResult],
) -> None:
    january = birmingham["purchase-card-transactions-201701.csv"]  # header uses '; '
    assert len(january.rows) == 5227
    assert january.rows[0].booked_at == datetime(2017, 1, 3, tzinfo=UTC)
    assert january.rows[0].amount_minor == -7261
    # The card is billed in GBP: that is the ledger amount; the foreign original stays in extra.
    assert {row.currency for row in january.rows} == {"GBP"}
    foreign = {row.extra["original_cur"] for row in january.rows}
    assert {"GBP", "USD", "EUR", "SEK", "DKK", "QAR"} <= foreign
    usd = next(r for r in january.rows if r.extra["original_gross_amt"] == "5,921.25")
    assert (usd.amount_minor, usd.currency, usd.extra["original_cur"]) == (-497294, "GBP", "USD")


def test_birmingham_refunds_are_credits_and_cp1252_decodes(
    birmingham: dict[str, ParseResult],
) -> None:
    february = birmingham["purchase-card-transactions-201702.csv"]
    refund = next(r for r in february.rows if r.extra.get("original_cur") == "PLN")
    # BILLING GROSS AMT -13.49 GBP (ORIGINAL -65.52 PLN): money back to the card.
    assert (refund.amount_minor, refund.currency) == (1349, "GBP")
    april = birmingham["purchase-card-transactions-201704.csv"]  # cp1252 en dash
    assert any("Pulse \u2013 Horizon 2020" in v for r in april.rows for v in r.extra.values())
    may = birmingham["purchase-card-transactions-201705.csv"]
    assert len(may.rows) == 5255  # the trailing line of bare separators is skipped


def test_birmingham_comma_files_with_quotes(birmingham: dict[str, ParseResult]) -> None:
    september = birmingham["purchase-card-transactions-201709.csv"]
    assert len(september.rows) == 4598
    assert september.rows[0].amount_minor == -5000
    assert any(r.amount_minor <= -100_000 for r in september.rows)  # "1,234.00" quoted


@pytest.fixture(scope="module")
def berka(data_dir: Path) -> ParseResult:
    return parse_bytes((data_dir / "berka_ecac" / "trans_test.csv").read_bytes())


def test_berka_parses_nearly_every_row(berka: ParseResult) -> None:
    assert berka.format == "csv:berka"
    assert len(berka.rows) + len(berka.rejections) == BERKA_ROWS
    assert len(berka.rejections) <= 5
    assert all(rej.reason for rej in berka.rejections)
    _assert_sound(berka)


def test_berka_fields(berka: ParseResult) -> None:
    first = berka.rows[0]
    assert first.txn_id == "6145"
    assert first.account_id == "berka-25"
    assert first.booked_at == datetime(1996, 7, 28, tzinfo=UTC)
    assert first.amount_minor == 90_000
    assert first.balance_after_minor == 90_000
    assert first.currency == "CZK"
    assert first.mode == "credit in cash"
    remittance = next(r for r in berka.rows if r.txn_id == "6330")
    assert remittance.amount_minor == -16_400
    assert remittance.category_hint == "insurrance payment"
    assert remittance.extra["k_symbol"] == "insurrance payment"
    assert "WX" in remittance.narration and "52864879" in remittance.narration
    assert all(1993 <= r.booked_at.year <= 1998 for r in berka.rows)
    kinds = {r.extra["type"] for r in berka.rows if r.amount_minor < 0}
    assert kinds == {"withdrawal", "withdrawal in cash"}


def test_berka_signs_agree_with_balances(berka: ParseResult) -> None:
    """balance_after - amount is an earlier balance of the same account for nearly all rows."""
    balances: dict[str | None, set[int | None]] = defaultdict(set)
    for row in berka.rows:
        balances[row.account_id].add(row.balance_after_minor)
    consistent = sum(
        1
        for row in berka.rows
        if row.balance_after_minor is not None
        and (
            row.balance_after_minor - row.amount_minor in balances[row.account_id]
            or row.balance_after_minor == row.amount_minor
        )
    )
    assert consistent / len(berka.rows) > 0.9


# --------------------------------------------------------------------------------------------
# Generic exports


def test_generic_iso_dates_signed_amounts_currency_column() -> None:
    result = _parse(
        "Date,Description,Amount,Currency,Balance,Reference\n"
        "2024-01-02,Coffee,-3.50,GBP,96.50,R1\n"
        '2024-01-03T09:15:00+05:30,Salary,"1,234.56",INR,,R2\n'
        "2024-01-04 18:00,Refund,+2.00,eur,,R3\n"
    )
    assert result.format == "csv:generic"
    assert result.rejections == []
    coffee, salary, refund = result.rows
    assert (coffee.amount_minor, coffee.currency, coffee.txn_id) == (-350, "GBP", "R1")
    assert coffee.booked_at == datetime(2024, 1, 2, tzinfo=UTC)
    assert coffee.balance_after_minor == 9650
    assert coffee.narration == "Coffee"
    assert salary.amount_minor == 123_456
    assert salary.booked_at.utcoffset() == timedelta(hours=5, minutes=30)
    assert salary.booked_at.hour == 9
    assert (refund.amount_minor, refund.currency) == (200, "EUR")
    assert refund.booked_at == datetime(2024, 1, 4, 18, 0, tzinfo=UTC)


def test_generic_debit_credit_columns_semicolon_default_currency() -> None:
    result = _parse(
        "Posting Date;Details;Paid out;Paid in;Balance\n"
        "31/01/2024;Rent;750.00;;1250.00\n"
        "01/02/2024;Wages;;2000.00;3250.00\n"
        "02/02/2024;Both;1.00;2.00;\n"
        "03/02/2024;None;;;\n",
        default_currency="gbp",
        account_id="acc-1",
    )
    assert [(r.amount_minor, r.currency, r.account_id) for r in result.rows] == [
        (-75_000, "GBP", "acc-1"),
        (200_000, "GBP", "acc-1"),
    ]
    assert result.rows[0].booked_at == datetime(2024, 1, 31, tzinfo=UTC)
    assert [r.row_number for r in result.rejections] == [3, 4]
    assert "both debit '1.00' and credit '2.00'" in result.rejections[0].reason
    assert "amount, debit and credit are all empty" in result.rejections[1].reason
    _assert_sound(result)


@pytest.mark.parametrize(
    ("value", "order", "expected"),
    [
        ("31/01/2024", None, date(2024, 1, 31)),
        ("31/01/24", None, date(2024, 1, 31)),
        ("31.01.2024", None, date(2024, 1, 31)),
        ("31-01-2024", None, date(2024, 1, 31)),
        ("20240131", None, date(2024, 1, 31)),
        ("240131", None, date(2024, 1, 31)),
        ("2024/01/31", None, date(2024, 1, 31)),
        ("31 Jan 2024", None, date(2024, 1, 31)),
        ("Jan 31, 2024", None, date(2024, 1, 31)),
        ("02/03/2024", None, date(2024, 3, 2)),  # ambiguous: day first
        ("02/03/2024", "mdy", date(2024, 2, 3)),
        ("24/02/03", "ymd", date(2024, 2, 3)),
    ],
)
def test_generic_date_styles(value: str, order: str | None, expected: date) -> None:
    result = _parse(f'Date,Amount\n"{value}",1.00\n', default_currency="USD", date_order=order)
    assert result.rejections == []
    assert result.rows[0].booked_at == datetime.combine(expected, datetime.min.time(), UTC)


def test_generic_month_first_detected_over_whole_column() -> None:
    result = _parse("Date,Amount\n01/02/2024,1.00\n12/31/2024,2.00\n", default_currency="USD")
    assert [r.booked_at.date() for r in result.rows] == [date(2024, 1, 2), date(2024, 12, 31)]


def test_generic_day_first_detected_over_whole_column() -> None:
    result = _parse("Date,Amount\n01/02/2024,1.00\n31/12/2024,2.00\n", default_currency="USD")
    assert [r.booked_at.date() for r in result.rows] == [date(2024, 2, 1), date(2024, 12, 31)]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1,234.56", 123_456),
        ("-12.00", -1200),
        ("(12.00)", -1200),
        ("12.00 CR", 1200),
        ("12.00 DR", -1200),
        ("12.00-", -1200),
        ("£5.00", 500),
        ("-£5.00", -500),
        ("$ 1,000", 100_000),
        ("5.00 GBP", 500),
        ("1.234,56", 123_456),
        ("12,5", 1250),
        ("7", 700),
    ],
)
def test_generic_amount_styles(value: str, expected: int) -> None:
    assert parse_amount(value, "GBP") == expected
    result = _parse(f'Date\tAmount\n2024-01-01\t"{value}"\n', default_currency="GBP")
    assert [r.amount_minor for r in result.rows] == [expected]


def test_pipe_separator_and_indicator_column() -> None:
    result = _parse(
        "Txn Date|Narration|Amount|Dr/Cr|Chq./Ref.No.\n"
        "01/04/2024|UPI/ZOMATO|250.00|DR|4091\n"
        "02/04/2024|NEFT SALARY|50,000.00|CR|N123\n",
        default_currency="INR",
    )
    assert [(r.amount_minor, r.txn_id) for r in result.rows] == [
        (-25_000, "4091"),
        (5_000_000, "N123"),
    ]


def test_missing_currency_is_a_rejection_per_row() -> None:
    result = _parse("Date,Amount\n2024-01-01,1.00\n2024-01-02,2.00\n")
    assert result.rows == []
    assert [r.row_number for r in result.rejections] == [1, 2]
    assert all("no currency" in r.reason for r in result.rejections)


def test_bad_rows_rejected_good_rows_land() -> None:
    result = _parse(
        "Date,Description,Amount\n"
        "01/02/17,ok,1.00\n"
        "02/02/17,bad amount,abc\n"
        "31/02/17,bad date,2.00\n"
        "03/02/17,too many decimals,1.001\n"
        "hello,bad format,1.00\n"
        "04/02/17,ok again,-2.50\n",
        default_currency="GBP",
    )
    assert [r.row_number for r in result.rows] == [1, 6]
    reasons = {r.row_number: r.reason for r in result.rejections}
    assert reasons[2] == "row 2: amount 'abc' is not a decimal number"
    assert reasons[3] == "row 3: date '31/02/17' is not a valid date"
    assert reasons[4].startswith("row 4: amount '1.001' has more than 2 decimals")
    assert reasons[5].startswith("row 5: date 'hello' is not a recognised date")
    _assert_sound(result)


def test_rows_with_extra_fields_are_rejected() -> None:
    result = _parse(
        "Date,Description,Amount\n2024-01-01,Smith, John,5.00\n2024-01-02,ok,1.00\n",
        default_currency="GBP",
    )
    assert [r.row_number for r in result.rows] == [2]
    assert "has 4 fields but the header has 3" in result.rejections[0].reason


def test_bom_cp1252_preamble_and_spaced_header() -> None:
    text = "Account: 1234\r\nExported 2024-02-01\r\n\r\nDate; Memo; Amount; Currency\r\n"
    text += "01/01/2024; Caf\u00e9 \u2013 Paris; -4.20; EUR\r\n"
    cp1252 = parse_bytes(text.encode("cp1252"))
    utf8_bom = parse_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    for result in (cp1252, utf8_bom):
        assert result.rejections == []
        (row,) = result.rows
        assert row.row_number == 1
        assert row.narration == "Caf\u00e9 \u2013 Paris"
        assert (row.amount_minor, row.currency) == (-420, "EUR")


def test_column_mapping() -> None:
    mapping = ColumnMapping.from_dict(
        {"date": "When", "amount": "How much", "narration": "What", "account": "Acct"}
    )
    result = _parse(
        "When,What,How much,Acct,Other\n2024-01-05,Books,-12.99,A-9,x\n",
        mapping=mapping,
        default_currency="USD",
    )
    (row,) = result.rows
    assert (row.narration, row.amount_minor, row.account_id) == ("Books", -1299, "A-9")
    assert row.extra == {"other": "x"}


def test_column_mapping_errors() -> None:
    with pytest.raises(ValueError, match="unknown column mapping keys: colour"):
        ColumnMapping.from_dict({"date": "Date", "colour": "Red"})
    with pytest.raises(ParseError, match="'Missing' \\(mapped to amount\\)"):
        _parse("Date,Value\n2024-01-01,1\n", mapping=ColumnMapping(amount="Missing"))


def test_mapping_forces_generic_layout_on_berka_like_header() -> None:
    text = "trans_id;account_id;date;type;operation;amount;balance;k_symbol;bank;account\n"
    text += "1;25;960728;credit;credit in cash;900.00;900.00;;;\n"
    berka = _parse(text)
    assert berka.format == "csv:berka"
    generic = _parse(
        text,
        mapping=ColumnMapping(date="date", amount="amount", txn_id="trans_id"),
        default_currency="CZK",
    )
    assert generic.format == "csv:generic"
    assert generic.rows[0].booked_at.date() == date(1996, 7, 28)


@pytest.mark.parametrize(
    "data",
    [b"", b"   \n\n", b"just some words\nand more\n", b"Name,City\nBob,Paris\n"],
)
def test_unusable_csv_is_a_parse_error(data: bytes) -> None:
    with pytest.raises(ParseError):
        parse_bytes(data, format="csv")


def test_detect_format_csv() -> None:
    assert detect_format(b"Date,Amount\n2024-01-01,1\n") == "csv"
    assert detect_format(b"a\tb\n", filename="x.tsv") == "csv"
    with pytest.raises(ParseError):
        detect_format(b"\x00\x01\x02\x03binary")


def test_field_helpers() -> None:
    assert mask_number("123456789012") == "XXXXXXXX9012"
    assert mask_number("****5770") == "****5770"
    assert parse_datetime("2024-01-01T09:15:00.000+05:30").tzinfo == timezone(
        timedelta(hours=5, minutes=30)
    )
    assert parse_datetime("01/02/2024 3:04 PM").hour == 15


def test_currency_from_amount_header() -> None:
    result = _parse("Date,Amount (EUR),Description\n2024-03-01,-9.99,Train\n")
    assert [(r.amount_minor, r.currency) for r in result.rows] == [(-999, "EUR")]


@pytest.mark.parametrize(
    "kwargs",
    [{"format": "xlsx"}, {"date_order": "ydm"}, {"default_currency": "pounds"}],
)
def test_invalid_arguments_are_parse_errors(kwargs: dict[str, str]) -> None:
    with pytest.raises(ParseError):
        parse_bytes(b"Date,Amount\n2024-01-01,1\n", **kwargs)  # type: ignore[arg-type]
