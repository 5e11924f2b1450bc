"""OFX 1.x (SGML) and 2.x (XML) statements through ofxtools."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from scale_ray.ingest.parse import detect_format, parse_bytes
from scale_ray.ingest.records import ParseError

OFX1 = b"""OFXHEADER:100
DATA:OFXSGML
VERSION:102
SECURITY:NONE
ENCODING:USASCII
CHARSET:1252
COMPRESSION:NONE
OLDFILEUID:NONE
NEWFILEUID:NONE

<OFX>
<SIGNONMSGSRSV1><SONRS><STATUS><CODE>0<SEVERITY>INFO</STATUS>
<DTSERVER>20240105120000.000[-5:EST]<LANGUAGE>ENG<FI><ORG>MYBANK<FID>1234</FI></SONRS>
</SIGNONMSGSRSV1>
<BANKMSGSRSV1><STMTTRNRS><TRNUID>1<STATUS><CODE>0<SEVERITY>INFO</STATUS>
<STMTRS><CURDEF>USD
<BANKACCTFROM><BANKID>121000248<ACCTID>123456789012<ACCTTYPE>CHECKING</BANKACCTFROM>
<BANKTRANLIST><DTSTART>20240101<DTEND>20240105
<STMTTRN><TRNTYPE>DEBIT<DTPOSTED>20240102120000.000[-5:EST]<DTAVAIL>20240103
<TRNAMT>-12.34<FITID>A1<CHECKNUM>1001<NAME>COFFEE & CO<MEMO>card 1234</STMTTRN>
<STMTTRN><TRNTYPE>CREDIT<DTPOSTED>20240103<TRNAMT>abc<FITID>A2<NAME>PAY</STMTTRN>
<STMTTRN><TRNTYPE>CREDIT<DTPOSTED>20240104<TRNAMT>1000.00<FITID>A3<NAME>SALARY</STMTTRN>
</BANKTRANLIST>
<LEDGERBAL><BALAMT>987.66<DTASOF>20240105</LEDGERBAL>
</STMTRS></STMTTRNRS></BANKMSGSRSV1></OFX>
"""

OFX2 = b"""<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<?OFX OFXHEADER="200" VERSION="220" SECURITY="NONE" OLDFILEUID="NONE" NEWFILEUID="NONE"?>
<OFX>
<SIGNONMSGSRSV1><SONRS><STATUS><CODE>0</CODE><SEVERITY>INFO</SEVERITY></STATUS>
<DTSERVER>20240105120000.000[+5.30:IST]</DTSERVER><LANGUAGE>ENG</LANGUAGE></SONRS>
</SIGNONMSGSRSV1>
<CREDITCARDMSGSRSV1><CCSTMTTRNRS><TRNUID>1</TRNUID>
<STATUS><CODE>0</CODE><SEVERITY>INFO</SEVERITY></STATUS>
<CCSTMTRS><CURDEF>INR</CURDEF><CCACCTFROM><ACCTID>4111111111111111</ACCTID></CCACCTFROM>
<BANKTRANLIST><DTSTART>20240101</DTSTART><DTEND>20240105</DTEND>
<STMTTRN><TRNTYPE>DEBIT</TRNTYPE><DTPOSTED>20240102201500.000[+5.30:IST]</DTPOSTED>
<TRNAMT>-499.50</TRNAMT><FITID>X1</FITID><NAME>SWIGGY</NAME><MEMO>food &amp; more</MEMO>
</STMTTRN>
<STMTTRN><TRNTYPE>CREDIT</TRNTYPE><DTPOSTED>2024-01-03</DTPOSTED><TRNAMT>100</TRNAMT>
<FITID>X2</FITID><NAME>REFUND</NAME></STMTTRN>
<STMTTRN><TRNTYPE>CREDIT</TRNTYPE><DTPOSTED>20240104</DTPOSTED><TRNAMT>100.00</TRNAMT>
<FITID>X3</FITID><NAME>REFUND</NAME><CURRENCY><CURRATE>1.0</CURRATE><CURSYM>USD</CURSYM>
</CURRENCY></STMTTRN>
</BANKTRANLIST>
<LEDGERBAL><BALAMT>-399.50</BALAMT><DTASOF>20240105</DTASOF></LEDGERBAL>
</CCSTMTRS></CCSTMTTRNRS></CREDITCARDMSGSRSV1></OFX>
"""


def test_detects_both_versions() -> None:
    assert detect_format(OFX1) == "ofx"
    assert detect_format(OFX2) == "ofx"
    assert detect_format(OFX2, filename="statement.xml") == "ofx"


def test_ofx1_sgml_statement() -> None:
    result = parse_bytes(OFX1, filename="statement.ofx")
    assert result.format == "ofx"
    (account,) = result.accounts
    assert account.account_id.startswith("ofx-9012-") and "12345678" not in account.account_id
    assert account.masked_number == "XXXXXXXX9012"
    assert account.institution == "MYBANK"
    assert account.account_type == "CHECKING"
    assert account.currency == "USD"
    assert account.current_balance_minor == 98_766

    coffee, salary = result.rows
    assert coffee.row_number == 1
    assert coffee.amount_minor == -1234
    assert coffee.currency == "USD"
    assert coffee.txn_id == "A1"
    assert coffee.mode == "DEBIT"
    assert coffee.merchant == "COFFEE & CO"
    assert coffee.narration == "COFFEE & CO / card 1234"
    assert coffee.booked_at == datetime(2024, 1, 2, 12, 0, tzinfo=timezone(timedelta(hours=-5)))
    assert coffee.booked_at.utcoffset() == timedelta(hours=-5)
    assert coffee.value_date == date(2024, 1, 3)
    assert coffee.extra["checknum"] == "1001"
    assert coffee.account_id == account.account_id

    assert salary.row_number == 3
    assert salary.amount_minor == 100_000
    assert salary.booked_at == datetime(2024, 1, 4, tzinfo=UTC)

    (rejection,) = result.rejections
    assert rejection.row_number == 2
    assert rejection.reason == "STMTTRN 2: TRNAMT 'abc' is not a decimal number"


def test_ofx2_xml_credit_card_statement() -> None:
    result = parse_bytes(OFX2)
    (account,) = result.accounts
    assert account.masked_number == "XXXXXXXXXXXX1111"
    assert account.account_type == "CREDITCARD"
    assert account.current_balance_minor == -39_950
    food, foreign = result.rows
    assert food.amount_minor == -49_950
    assert food.currency == "INR"
    assert food.narration == "SWIGGY / food & more"
    assert food.booked_at.utcoffset() == timedelta(hours=5, minutes=30)
    assert (food.booked_at.hour, food.booked_at.minute) == (20, 15)
    assert foreign.row_number == 3
    assert foreign.currency == "USD"  # CURRENCY aggregate: the amount is in CURSYM
    assert foreign.amount_minor == 10_000
    (rejection,) = result.rejections
    assert rejection.row_number == 2
    assert "DTPOSTED '2024-01-03' is not an OFX date" in rejection.reason


def test_malformed_transaction_is_isolated() -> None:
    broken = OFX1.replace(b"<NAME>PAY", b"<NAME>PAY</MEMO>", 1)
    result = parse_bytes(broken)
    assert [r.txn_id for r in result.rows] == ["A1", "A3"]
    assert [r.row_number for r in result.rows] == [1, 3]
    (rejection,) = result.rejections
    assert rejection.row_number == 2
    assert rejection.reason.startswith("STMTTRN 2: its tags are malformed")


def test_missing_curdef_uses_default_currency_or_rejects() -> None:
    no_curdef = OFX1.replace(b"<CURDEF>USD\n", b"")
    without = parse_bytes(no_curdef)
    assert without.rows == []
    assert all("no currency" in r.reason for r in without.rejections if r.row_number != 2)
    with_default = parse_bytes(no_curdef, default_currency="CAD")
    assert [r.currency for r in with_default.rows] == ["CAD", "CAD"]


def test_account_id_used_without_account_aggregate() -> None:
    no_acct = OFX1.replace(
        b"<BANKACCTFROM><BANKID>121000248<ACCTID>123456789012<ACCTTYPE>CHECKING</BANKACCTFROM>",
        b"",
    )
    result = parse_bytes(no_acct, format="ofx", account_id="acc-7")
    assert {r.account_id for r in result.rows} == {"acc-7"}


@pytest.mark.parametrize(
    "data",
    [
        b"OFXHEADER:100\nDATA:OFXSGML\n<OFX>junk",
        b"<OFX><BANKMSGSRSV1></OFX>",
        b"OFXHEADER:100\n",
        b"",
    ],
)
def test_unreadable_ofx_is_a_parse_error(data: bytes) -> None:
    with pytest.raises(ParseError):
        parse_bytes(data, format="ofx")


def test_parse_error_carries_ofxtools_message() -> None:
    with pytest.raises(ParseError, match=r"not a readable OFX file: .*header"):
        parse_bytes(b"OFXHEADER:100\nDATA:OFXSGML\n<OFX>junk", format="ofx")
