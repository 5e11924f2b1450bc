"""Fuzzing ``parse_bytes``: only ParseError may escape, and whatever comes back is well formed."""

from __future__ import annotations

import csv
import io
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scale_ray.ingest.parse import FORMATS, parse_bytes
from scale_ray.ingest.records import ParseError, ParseResult

FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

BIRMINGHAM = (
    b"TRANS DATE; TRANS VAT DESC; ORIGINAL GROSS AMT; ORIGINAL CUR; BILLING GROSS AMT; "
    b"BILLING CUR CODE; MERCHANT NAME; CARD NUMBER; TRANS CAC CODE 1; TRANS CAC DESC 1; "
    b"TRANS CAC CODE 2; TRANS CAC DESC 2; TRANS CAC CODE 3; Directorate\n"
    b"03/01/17;VR;72.61;GBP;72.61;GBP;shell kings 587;************5770;K020;Vehicle Fuel;"
    b"RV12N;African-Caribbean DC;A00;Adult & Communities\n"
    b"24/01/17;VR;-5,921.25;USD;-4,972.94;GBP;shell fiveways 387;************1147;K020;"
    b"Vehicle Fuel;RV1K2;Elders Group - Ladywood;A00;Adult & Communities\n"
    b";;;;;;;;;;;;;\n"
)
BERKA = (
    b"trans_id;account_id;date;type;operation;amount;balance;k_symbol;bank;account\n"
    b"6145;25;960728;credit;credit in cash;900.00;900.00;;;\n"
    b"6294;25;961006;withdrawal;remittance to another bank;1110.00;79599.50; ;AB;79838293\n"
    b"6330;25;961008;withdrawal in cash;;164.00;77035.50;insurrance payment;WX;52864879\n"
)
GENERIC = (
    b"Date,Description,Debit,Credit,Balance,Currency\n"
    b'31/01/2024,"Rent, flat",750.00,,"1,250.00",GBP\n'
    b"2024-02-01T09:15:00+05:30,Wages,,(2000.00),3250.00,INR\n"
    b"02/13/2024,Card,12.00 DR,,,EUR\n"
)
REBIT_XML = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<Account xmlns="http://api.rebit.org.in/FISchema/deposit" linkedAccRef="a5f3" '
    b'maskedAccNumber="XXXXXXXX1221" version="1.1" type="deposit">\n'
    b'<Summary currentBalance="101666.50" currency="INR" type="SAVINGS" ifscCode="HDFC0001234"/>\n'
    b'<Transactions startDate="2024-01-01" endDate="2024-01-31">\n'
    b'<Transaction txnId="M1" type="CREDIT" mode="FT" amount="85000.00" '
    b'currentBalance="110250.75" transactionTimestamp="2024-01-01T09:15:00.000+05:30" '
    b'valueDate="2024-01-01" narration="NEFT/ACME CORP/SALARY JAN" reference="N0012"/>\n'
    b'<Transaction txnId="M2" type="DEBIT" mode="UPI" amount="1250.25" '
    b'currentBalance="109000.50" transactionTimestamp="2024-01-03T20:41:12.000+05:30" '
    b'valueDate="2024-01-03" narration="UPI/4023/GROCERY & MORE <ok>" reference="4023"/>\n'
    b"</Transactions>\n</Account>\n"
)
REBIT_JSON = json.dumps(
    {
        "account": {
            "linkedAccRef": "a5f3",
            "Summary": {"currency": "INR", "currentBalance": "10.00"},
            "Transactions": {
                "Transaction": [
                    {
                        "txnId": "M1",
                        "type": "DEBIT",
                        "amount": "12.50",
                        "transactionTimestamp": "2024-01-01T09:15:00.000+05:30",
                        "narration": "x",
                    }
                ]
            },
        }
    }
).encode()
OFX1 = b"""OFXHEADER:100
DATA:OFXSGML
VERSION:102
SECURITY:NONE
ENCODING:USASCII
CHARSET:1252
COMPRESSION:NONE
OLDFILEUID:NONE
NEWFILEUID:NONE

<OFX><BANKMSGSRSV1><STMTTRNRS><TRNUID>1<STATUS><CODE>0<SEVERITY>INFO</STATUS>
<STMTRS><CURDEF>USD<BANKACCTFROM><BANKID>1<ACCTID>123456789<ACCTTYPE>CHECKING</BANKACCTFROM>
<BANKTRANLIST><DTSTART>20240101<DTEND>20240105
<STMTTRN><TRNTYPE>DEBIT<DTPOSTED>20240102120000.000[-5:EST]<TRNAMT>-12.34<FITID>A1<NAME>CAFE</STMTTRN>
<STMTTRN><TRNTYPE>CREDIT<DTPOSTED>20240104<TRNAMT>1000.00<FITID>A3<MEMO>SALARY</STMTTRN>
</BANKTRANLIST><LEDGERBAL><BALAMT>987.66<DTASOF>20240105</LEDGERBAL>
</STMTRS></STMTTRNRS></BANKMSGSRSV1></OFX>
"""
OFX2 = b"""<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<?OFX OFXHEADER="200" VERSION="220" SECURITY="NONE" OLDFILEUID="NONE" NEWFILEUID="NONE"?>
<OFX><CREDITCARDMSGSRSV1><CCSTMTTRNRS><TRNUID>1</TRNUID>
<STATUS><CODE>0</CODE><SEVERITY>INFO</SEVERITY></STATUS>
<CCSTMTRS><CURDEF>INR</CURDEF><CCACCTFROM><ACCTID>4111111111111111</ACCTID></CCACCTFROM>
<BANKTRANLIST><DTSTART>20240101</DTSTART><DTEND>20240105</DTEND>
<STMTTRN><TRNTYPE>DEBIT</TRNTYPE><DTPOSTED>20240102201500.000[+5.30:IST]</DTPOSTED>
<TRNAMT>-499.50</TRNAMT><FITID>X1</FITID><NAME>SWIGGY</NAME></STMTTRN>
</BANKTRANLIST></CCSTMTRS></CCSTMTTRNRS></CREDITCARDMSGSRSV1></OFX>
"""
SEEDS = (BIRMINGHAM, BERKA, GENERIC, REBIT_XML, REBIT_JSON, OFX1, OFX2)

PLAUSIBLE_DATES = (
    "2024-01-31",
    "2024-01-31T09:15:00.000+05:30",
    "2024-02-30",
    "31/01/2024",
    "01/31/2024",
    "31/02/17",
    "31.01.2024",
    "20240131",
    "240131",
    "31 Jan 2024",
    "Feb 29, 2023",
    "9999-99-99",
    "0000-01-01",
    "",
)
PLAUSIBLE_AMOUNTS = (
    "1,234.56",
    "-12.00",
    "(12.00)",
    "12.00 CR",
    "12.00 DR",
    "£5",
    "1.001",
    "abc",
    "1e5",
    "99999999999999999999999",
    "-",
    ".",
    "NaN",
    "",
    "0",
)
HEADERS = (
    "Date",
    "Transaction Date",
    "Value Date",
    "Description",
    "Amount",
    "Debit",
    "Credit",
    "Balance",
    "Currency",
    "Reference",
    "Type",
    "Dr/Cr",
    "TRANS DATE",
    "ORIGINAL GROSS AMT",
    "CARD NUMBER",
    "trans_id",
    "account_id",
    "date",
    "type",
    "amount",
)
TEXT = st.text(max_size=30)
FIELD = st.one_of(st.sampled_from(PLAUSIBLE_DATES), st.sampled_from(PLAUSIBLE_AMOUNTS), TEXT)


def check(data: bytes, **kwargs: object) -> ParseResult | None:
    """Parse; allow only ParseError; check every invariant of what comes back."""
    try:
        result = parse_bytes(data, **kwargs)  # type: ignore[arg-type]
    except ParseError as exc:
        assert str(exc)
        assert "internal error" not in str(exc)
        return None
    assert result.format in {
        "csv:birmingham",
        "csv:berka",
        "csv:generic",
        "ofx",
        "rebit-xml",
        "rebit-json",
    }
    for rejection in result.rejections:
        assert rejection.row_number >= 1
        assert rejection.reason.strip()
        assert len(rejection.reason) < 1000
        assert "unexpected" not in rejection.reason
    for row in result.rows:
        assert type(row.amount_minor) is int
        assert abs(row.amount_minor) <= 2**63 - 1
        assert row.booked_at.tzinfo is not None
        assert row.booked_at.utcoffset() is not None
        assert len(row.currency) == 3 and row.currency.isupper()
        assert row.row_number >= 1
        assert isinstance(row.narration, str)
        assert row.balance_after_minor is None or type(row.balance_after_minor) is int
    numbers = [r.row_number for r in result.rows] + [r.row_number for r in result.rejections]
    assert len(numbers) == len(set(numbers))
    return result


@FUZZ
@given(st.binary(max_size=2000), st.sampled_from(FORMATS))
def test_arbitrary_bytes(data: bytes, fmt: str) -> None:
    check(data, format=fmt)


MUTATION = st.tuples(
    st.integers(min_value=0, max_value=10_000),
    st.sampled_from(("replace", "insert", "delete", "duplicate", "truncate")),
    st.binary(min_size=1, max_size=8),
)


def mutate(seed: bytes, mutations: list[tuple[int, str, bytes]]) -> bytes:
    data = bytearray(seed)
    for position, kind, payload in mutations:
        at = position % (len(data) + 1)
        if kind == "replace":
            data[at : at + len(payload)] = payload
        elif kind == "insert":
            data[at:at] = payload
        elif kind == "delete":
            del data[at : at + len(payload) * 4]
        elif kind == "duplicate":
            data[at:at] = data[at : at + 40]
        else:
            del data[at:]
    return bytes(data)


@FUZZ
@given(
    st.sampled_from(SEEDS),
    st.lists(MUTATION, max_size=6),
    st.sampled_from(("auto", "auto", "csv", "ofx", "rebit-xml", "rebit-json")),
)
def test_mutated_real_snippets(seed: bytes, mutations: list, fmt: str) -> None:
    check(mutate(seed, mutations), format=fmt, default_currency="GBP")


@FUZZ
@given(
    st.lists(st.sampled_from(HEADERS), min_size=1, max_size=7, unique=True),
    st.lists(st.lists(FIELD, min_size=0, max_size=8), max_size=8),
    st.sampled_from((";", ",", "\t", "|", "; ")),
    st.sampled_from((None, "EUR")),
    st.sampled_from((None, "dmy", "mdy", "ymd")),
    st.sampled_from(("utf-8", "utf-8-sig", "cp1252", "utf-16")),
)
def test_csv_from_plausible_fields(
    header: list[str],
    rows: list[list[str]],
    delimiter: str,
    currency: str | None,
    order: str | None,
    encoding: str,
) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter[0])
    writer.writerow(header)
    writer.writerows(rows)
    text = buffer.getvalue()
    if delimiter == "; ":
        text = text.replace(";", "; ")
    data = text.encode(encoding, errors="replace")
    result = check(data, default_currency=currency, date_order=order, account_id="acc")
    if result is not None and result.format.startswith("csv"):
        numbered = {r.row_number for r in result.rows} | {r.row_number for r in result.rejections}
        assert all(1 <= n <= len(rows) for n in numbered)


SCALAR = st.one_of(
    st.sampled_from(PLAUSIBLE_DATES),
    st.sampled_from(PLAUSIBLE_AMOUNTS),
    st.sampled_from(("CREDIT", "DEBIT", "debit", "CR", "X")),
    TEXT,
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
)
TXN_KEYS = st.sampled_from(
    (
        "txnId",
        "txnid",
        "type",
        "Type",
        "mode",
        "amount",
        "Amount",
        "currentBalance",
        "transactionTimestamp",
        "transactionDateTime",
        "valueDate",
        "narration",
        "reference",
        "currency",
    )
)
TXN = st.dictionaries(TXN_KEYS, SCALAR, max_size=10)


@FUZZ
@given(
    st.lists(st.one_of(TXN, SCALAR), max_size=6),
    st.dictionaries(st.sampled_from(("currency", "currentBalance", "type")), SCALAR),
    st.sampled_from(("Account", "account", "list", "nested")),
)
def test_rebit_json_from_plausible_fields(txns: list, summary: dict, shape: str) -> None:
    account = {
        "linkedAccRef": "L",
        "maskedAccNumber": "XXXX1234",
        "Summary": summary,
        "Transactions": {"Transaction": txns},
    }
    document: object
    if shape == "list":
        document = [{"Account": account}, {"account": account}]
    elif shape == "nested":
        document = {"FI": [{"data": [{"account": account}]}]}
    else:
        document = {shape: account}
    result = check(json.dumps(document).encode(), format="rebit-json")
    assert result is not None
    assert len(result.rows) + len(result.rejections) == len(txns) * (2 if shape == "list" else 1)


ATTR_VALUE = st.one_of(
    st.sampled_from(PLAUSIBLE_DATES),
    st.sampled_from(PLAUSIBLE_AMOUNTS),
    st.sampled_from(("CREDIT", "DEBIT", "A & B", "<tag>", "x > y", "&amp;", "&#0;", "&nbsp;")),
    st.text(alphabet=st.characters(blacklist_characters='"'), max_size=20),
)


@FUZZ
@given(st.lists(st.dictionaries(TXN_KEYS, ATTR_VALUE, max_size=10), max_size=6))
def test_rebit_xml_with_raw_attribute_values(txns: list[dict[str, str]]) -> None:
    parts = ['<Account linkedAccRef="L"><Summary currency="INR"/><Transactions>']
    for txn in txns:
        attributes = " ".join(f'{key}="{value}"' for key, value in txn.items())
        parts.append(f"<Transaction {attributes}/>")
    parts.append("</Transactions></Account>")
    result = check("\n".join(parts).encode("utf-8", errors="surrogatepass"), format="auto")
    if result is not None:
        assert len(result.rows) + len(result.rejections) == len(txns)


OFX_FIELD = st.one_of(
    st.sampled_from(("20240102", "20240102120000.000[-5:EST]", "2024-01-02", "abc", "-1.00")),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=20),
)


@FUZZ
@given(st.lists(st.tuples(OFX_FIELD, OFX_FIELD, OFX_FIELD, OFX_FIELD), max_size=5))
def test_ofx_from_plausible_fields(txns: list[tuple[str, str, str, str]]) -> None:
    blocks = "".join(
        f"<STMTTRN><TRNTYPE>{kind}<DTPOSTED>{posted}<TRNAMT>{amount}<FITID>F{i}<NAME>{name}"
        "</STMTTRN>\n"
        for i, (kind, posted, amount, name) in enumerate(txns)
    )
    data = OFX1.replace(
        b"<STMTTRN><TRNTYPE>DEBIT", blocks.encode("latin-1") + b"<STMTTRN><TRNTYPE>DEBIT", 1
    )
    check(data)
