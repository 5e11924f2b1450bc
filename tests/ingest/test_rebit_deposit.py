"""ReBIT DEPOSIT FI data: the AA samples, FIP quirks, and the JSON rendering."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from scale_ray.ingest.parse import detect_format, parse_bytes
from scale_ray.ingest.rebit_deposit import repair_xml
from scale_ray.ingest.records import ParseError, ParseResult

IST = timezone(timedelta(hours=5, minutes=30))
ACCOUNT_REF = "a5f39a2e-542a-4423-a4f4-d265fa005398"


def _check_sample(result: ParseResult) -> None:
    (account,) = result.accounts
    assert account.account_id == ACCOUNT_REF
    assert account.masked_number == "XXXXXXXX1221"
    assert account.currency == "INR"
    assert account.account_type == "SAVINGS"
    assert account.institution == "HDFC0001234"
    assert account.current_balance_minor == 10_166_650
    assert result.rejections == []
    assert [r.txn_id for r in result.rows] == ["M1234567", "M1234568", "M1234569", "M1234570"]
    assert [r.row_number for r in result.rows] == [1, 2, 3, 4]
    assert [r.amount_minor for r in result.rows] == [8_500_000, -125_025, -500_000, -233_400]
    assert [r.balance_after_minor for r in result.rows] == [
        11_025_075,
        10_900_050,
        10_400_050,
        10_166_650,
    ]
    assert [r.mode for r in result.rows] == ["FT", "UPI", "ATM", "OTHERS"]
    assert all(r.booked_at.utcoffset() == timedelta(hours=5, minutes=30) for r in result.rows)
    assert result.rows[0].booked_at == datetime(2024, 1, 1, 9, 15, tzinfo=IST)
    assert result.rows[1].booked_at == datetime(2024, 1, 3, 20, 41, 12, tzinfo=IST)
    assert result.rows[1].narration == "UPI/402312345678/GROCERY & MORE/ok"
    assert result.rows[1].value_date == date(2024, 1, 3)
    assert result.rows[0].extra["reference"] == "N001240012345"
    assert all(r.account_id == ACCOUNT_REF and r.currency == "INR" for r in result.rows)


def test_authored_sample_file(data_dir: Path) -> None:
    data = (data_dir / "aa" / "deposit_sample_authored.xml").read_bytes()
    assert detect_format(data) == "rebit-xml"
    result = parse_bytes(data)
    assert result.format == "rebit-xml"
    _check_sample(result)


def test_rahasya_plaintext(data_dir: Path) -> None:
    vectors = json.loads((data_dir / "aa" / "rahasya_x25519_random.json").read_text())
    _check_sample(parse_bytes(vectors["plaintext"].encode("utf-8")))


def test_upstream_deposit_sample(data_dir: Path) -> None:
    (path,) = (data_dir / "aa" / "upstream").glob("*Deposit.xml")
    result = parse_bytes(path.read_bytes(), account_id="acc-1")
    (account,) = result.accounts
    assert account.account_id == "acc-1"  # linkedAccRef and maskedAccNumber are empty
    assert account.currency == "INR"  # currency="" falls back to INR
    assert account.current_balance_minor is None
    (row,) = result.rows
    assert row.amount_minor == 2000
    assert row.booked_at.utcoffset() == timedelta(hours=-5)
    assert row.txn_id is None
    assert row.account_id == "acc-1"


RAW = b"""<?xml version="1.0" encoding="UTF-8"?>
<Account maskedAccNumber="XXXXXX4321" linkedAccRef="ref-1" type="deposit">
  <Summary currentBalance="500.00" currency="" type="CURRENT"/>
  <Transactions>
    <Transaction txnid="T1" Type="debit" Mode="UPI" Amount="1,250.25"
      transactionDateTime="2024-01-03T20:41:12+05:30" valuedate="2024-01-03"
      Narration="UPI/A & B <Traders>/ok" currentbalance="" Reference="R&D"/>
    <Transaction TxnId="T2" type="CREDIT" amount="10" transactionTimestamp="2024-01-04"
      narration="R&amp;D &nbsp; refund"/>
  </Transactions>
</Account>
"""


def test_raw_ampersand_and_angle_brackets_and_name_variants() -> None:
    result = parse_bytes(RAW)
    assert result.rejections == []
    first, second = result.rows
    assert first.narration == "UPI/A & B <Traders>/ok"
    assert first.extra["reference"] == "R&D"
    assert first.amount_minor == -125_025
    assert first.txn_id == "T1"
    assert first.mode == "UPI"
    assert first.value_date == date(2024, 1, 3)
    assert first.balance_after_minor is None  # empty string is missing
    assert first.booked_at.utcoffset() == timedelta(hours=5, minutes=30)
    assert second.txn_id == "T2"
    assert second.amount_minor == 1000
    assert second.narration == "R&D &nbsp; refund"
    assert second.booked_at == datetime(2024, 1, 4, tzinfo=UTC)
    assert result.accounts[0].account_type == "CURRENT"


def test_repair_xml_leaves_valid_xml_alone() -> None:
    valid = "<a x=\"1 &amp; 2 &#38; &#x26;\" y='q'>t &lt; u</a>"
    assert repair_xml(valid) == valid
    assert repair_xml('<a n="x < y > z"/>') == '<a n="x &lt; y &gt; z"/>'


def test_several_accounts_and_rejections() -> None:
    data = b"""<Accounts>
<Account xmlns="http://api.rebit.org.in/FISchema/deposit" linkedAccRef="A">
 <Summary currency="INR" currentBalance="1.00"/>
 <Transactions>
  <Transaction txnId="1" type="CREDIT" amount="5" transactionTimestamp="2024-02-01T10:00:00Z"/>
  <Transaction txnId="2" type="CREDIT" transactionTimestamp="2024-02-01T10:00:00Z"/>
 </Transactions>
</Account>
<Account linkedAccRef="B">
 <Summary currency="USD"/>
 <Transactions>
  <Transaction txnId="3" type="REFUND" amount="5" transactionTimestamp="2024-02-01"/>
  <Transaction txnId="4" type="DEBIT" amount="abc" transactionTimestamp="2024-02-01"/>
  <Transaction txnId="5" type="DEBIT" amount="5" transactionTimestamp="yesterday"/>
  <Transaction txnId="6" type="DEBIT" amount="5" transactionTimestamp="2024-02-30"/>
  <Transaction txnId="7" type="DEBIT" amount="5.5" transactionTimestamp="2024-02-02"/>
 </Transactions>
</Account>
</Accounts>"""
    result = parse_bytes(data)
    assert [a.account_id for a in result.accounts] == ["A", "B"]
    assert [(r.row_number, r.account_id, r.currency, r.amount_minor) for r in result.rows] == [
        (1, "A", "INR", 500),
        (7, "B", "USD", -550),
    ]
    reasons = {r.row_number: r.reason for r in result.rejections}
    assert reasons == {
        2: "transaction 2: attribute 'amount' is missing",
        3: "transaction 3: type 'REFUND' is not CREDIT or DEBIT",
        4: "transaction 4: amount 'abc' is not a decimal number",
        5: "transaction 5: transactionTimestamp 'yesterday' is not a recognised date "
        "(expected e.g. 2024-01-31, 31/01/2024, 20240131)",
        6: "transaction 6: transactionTimestamp '2024-02-30' is not a valid date",
    }


def _sample_as_json(data_dir: Path) -> dict[str, object]:
    import xml.etree.ElementTree as ET

    root = ET.fromstring((data_dir / "aa" / "deposit_sample_authored.xml").read_bytes())
    ns = "{http://api.rebit.org.in/FISchema/deposit}"
    account: dict[str, object] = {k: v for k, v in root.attrib.items() if "}" not in k}
    summary = root.find(f"{ns}Summary")
    assert summary is not None
    account["Summary"] = dict(summary.attrib)
    account["Transactions"] = {
        "startDate": "2024-01-01",
        "Transaction": [dict(t.attrib) for t in root.iter(f"{ns}Transaction")],
    }
    return {"Account": account}


def test_json_rendering_matches_xml(data_dir: Path) -> None:
    document = _sample_as_json(data_dir)
    data = json.dumps(document).encode()
    assert detect_format(data) == "rebit-json"
    result = parse_bytes(data)
    assert result.format == "rebit-json"
    _check_sample(result)
    wrapped = json.dumps([{"account": document["Account"]}]).encode()
    _check_sample(parse_bytes(wrapped, format="rebit-json"))


def test_json_numbers_are_exact_and_single_transaction_object() -> None:
    data = b"""{"account": {"maskedAccNumber": "XX99", "summary": {"currentbalance": 0.1},
      "transactions": {"transaction": {"txnid": 7, "type": "debit", "amount": 1250.25,
      "transactionDateTime": "2024-01-03T20:41:12.000+05:30", "narration": ""}}}}"""
    result = parse_bytes(data)
    (row,) = result.rows
    assert row.amount_minor == -125_025
    assert row.txn_id == "7"
    assert row.narration == ""
    assert result.accounts[0].current_balance_minor == 10
    assert result.accounts[0].account_id == "XX99"


def test_json_rejections() -> None:
    data = json.dumps(
        {
            "Account": {
                "linkedAccRef": "L",
                "Transactions": {
                    "Transaction": [
                        "not an object",
                        {"type": "CREDIT", "amount": "1", "transactionTimestamp": ""},
                        {"type": "", "amount": "1", "transactionTimestamp": "2024-01-01"},
                        {"type": "DEBIT", "amount": "1e400", "transactionTimestamp": "2024-01-01"},
                    ]
                },
            }
        }
    ).encode()
    result = parse_bytes(data)
    assert result.rows == []
    reasons = [r.reason for r in result.rejections]
    assert reasons[0] == "transaction 1: is not an object of attributes"
    assert reasons[1] == "transaction 2: attribute 'transactionTimestamp' is missing"
    assert reasons[2] == "transaction 3: attribute 'type' is missing"
    assert reasons[3] == "transaction 4: amount '1e400' is not a decimal number"


@pytest.mark.parametrize(
    ("data", "fmt"),
    [
        (b"<Account><Transactions><Transaction", "rebit-xml"),
        (b'<!DOCTYPE a [<!ENTITY e "x">]><Account a="&e;"/>', "rebit-xml"),
        (b"<Other/>", "rebit-xml"),
        (b'{"Account": ', "rebit-json"),
        (b'{"something": 1}', "rebit-json"),
        (b"", "rebit-json"),
    ],
)
def test_unreadable_sources_are_parse_errors(data: bytes, fmt: str) -> None:
    with pytest.raises(ParseError):
        parse_bytes(data, format=fmt)


def test_entity_expansion_is_refused() -> None:
    bomb = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>
<Account linkedAccRef="&lol2;"/>"""
    with pytest.raises(ParseError, match=r"refused for safety: DTDForbidden"):
        parse_bytes(bomb)
