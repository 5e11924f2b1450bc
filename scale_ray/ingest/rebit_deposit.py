"""ReBIT DEPOSIT FI data (Account Aggregator) as XML or JSON, read leniently as FIPs send it.

Real FIPs send unescaped ``& < >`` inside attribute values, attribute names in other cases or
spellings (``txnid``, ``transactionDateTime``, ``valuedate``), no namespace, empty strings for
absent values, and JSON renderings of the same tree. All of that is accepted here; a transaction
whose amount, type or timestamp is unusable becomes a rejection naming the attribute.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

import defusedxml.ElementTree as DET
from defusedxml import DefusedXmlException

from scale_ray.ingest.csv_statement import (
    FieldError,
    clip,
    decimal_to_minor,
    decode_text,
    mask_number,
    parse_amount,
    parse_date,
    parse_datetime,
    shown,
)
from scale_ray.ingest.records import AccountInfo, ParsedTxn, ParseError, ParseResult, Rejection
from scale_ray.money import MoneyError, normalize_currency

NAMESPACE = "http://api.rebit.org.in/FISchema/deposit"
DEFAULT_CURRENCY = "INR"

Value = str | Decimal

# Normalised attribute names (lower case, letters and digits only) in order of preference.
_TXN_ID = ("txnid", "transactionid", "txnref", "id")
_TYPE = ("type", "txntype", "transactiontype", "drcr", "crdr")
_MODE = ("mode", "txnmode", "transactionmode", "paymentmode")
_AMOUNT = ("amount", "txnamount", "transactionamount", "amt")
_BALANCE = ("currentbalance", "balance", "closingbalance", "runningbalance")
_TIMESTAMP = (
    "transactiontimestamp",
    "transactiondatetime",
    "txntimestamp",
    "txndatetime",
    "timestamp",
    "transactiondate",
    "txndate",
    "datetime",
    "date",
)
_VALUE_DATE = ("valuedate", "valuedt", "valuedatetime")
_NARRATION = ("narration", "description", "remarks", "narrative", "particulars")
_REFERENCE = ("reference", "ref", "referencenumber", "refno", "chequeno", "chequenumber")
_CURRENCY = ("currency", "currencycode", "ccy")
_CONSUMED = frozenset(
    _TXN_ID + _TYPE + _MODE + _AMOUNT + _BALANCE + _TIMESTAMP + _VALUE_DATE + _NARRATION
    + _REFERENCE + _CURRENCY
)  # fmt: skip
_RUPEE_WORDS = frozenset({"RS", "RS.", "RUPEES", "RUPEE", "₹", "INR."})


def _key(name: str) -> str:
    """Namespace-free, case-free, punctuation-free attribute or element name."""
    local = name.rsplit("}", 1)[-1].rsplit(":", 1)[-1]
    return re.sub(r"[^0-9a-z]", "", local.casefold())


@dataclass
class _Attrs:
    """Attributes of one element: normalised name -> (source name, non-empty value)."""

    values: dict[str, tuple[str, Value]] = field(default_factory=dict)

    def add(self, name: str, value: Any) -> None:
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, int):
            value = str(value)
        elif isinstance(value, str):
            value = value.strip()
        elif not isinstance(value, Decimal):
            return  # nested objects, lists, null
        if value == "":
            return
        self.values.setdefault(_key(name), (name.rsplit("}", 1)[-1].lstrip("@_"), value))

    def get(self, names: tuple[str, ...]) -> tuple[str, Value] | None:
        for name in names:
            found = self.values.get(name)
            if found is not None:
                return found
        return None

    def text(self, names: tuple[str, ...]) -> str | None:
        found = self.get(names)
        if found is None:
            return None
        return str(found[1])


@dataclass
class _Account:
    attrs: _Attrs
    summary: _Attrs
    txns: list[_Attrs | None]  # None: a record that is not an object/element of attributes


# --------------------------------------------------------------------------------------------
# XML


_DECL_RE = re.compile(r"^\s*<\?xml[^>]*\?>", re.ASCII)
_ENCODING_RE = re.compile(rb"^\s*<\?xml[^>]*encoding\s*=\s*[\"']([A-Za-z0-9._-]+)[\"']")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_AMP_RE = re.compile(r"&(?!(?:amp|lt|gt|quot|apos);)(?:#(x[0-9A-Fa-f]{1,8}|[0-9]{1,10});)?")
_TAG_RE = re.compile(
    r"<[A-Za-z_][\w:.\-]*"
    r"(?:\s+[^\s=<>/\"']+\s*=\s*(?:\"[^\"]*\"|'[^']*'))*"
    r"\s*/?>"
)
_QUOTED_RE = re.compile(r"\"[^\"]*\"|'[^']*'")


def _valid_char(code: int) -> bool:
    return (
        code in (0x9, 0xA, 0xD)
        or 0x20 <= code <= 0xD7FF
        or 0xE000 <= code <= 0xFFFD
        or 0x10000 <= code <= 0x10FFFF
    )


def _fix_amp(match: re.Match[str]) -> str:
    ref = match[1]
    if ref is None:
        return "&amp;"  # a bare '&' (or an entity XML does not define, like &nbsp;)
    code = int(ref[1:], 16) if ref[0] == "x" else int(ref)
    return match[0] if _valid_char(code) else "&amp;" + match[0][1:]


def _fix_tag(match: re.Match[str]) -> str:
    tag = match[0]
    if "<" not in tag[1:] and ">" not in tag[:-1]:
        return tag
    head, rest = tag[:1], tag[1:]
    return (
        head
        + _QUOTED_RE.sub(lambda q: q[0].replace("<", "&lt;").replace(">", "&gt;"), rest[:-1])
        + rest[-1:]
    )


def repair_xml(text: str) -> str:
    """Escape what FIPs leave raw: ``&`` that starts no entity, ``<``/``>`` in attribute values."""
    text = _CONTROL_RE.sub(" ", text)
    text = _AMP_RE.sub(_fix_amp, text)
    return _TAG_RE.sub(_fix_tag, text)


def _decode_xml(data: bytes) -> str:
    declared = _ENCODING_RE.match(data)
    if declared and not data.startswith((b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")):
        codec = declared[1].decode("ascii").lower()
        if codec.replace("-", "").replace("_", "") not in {"utf8", "usascii", "ascii"}:
            try:
                return data.decode(codec)
            except (LookupError, UnicodeDecodeError):
                pass
    return decode_text(data)


def _load_xml(data: bytes) -> ET.Element:
    if not data.strip():
        raise ParseError("the file is empty")
    text = repair_xml(_DECL_RE.sub("", _decode_xml(data).lstrip("\ufeff"), count=1))
    try:
        return DET.fromstring(text.encode("utf-8"), forbid_dtd=True)
    except DefusedXmlException as exc:
        raise ParseError(f"XML refused for safety: {clip(str(exc))}") from exc
    except (ET.ParseError, ValueError) as exc:
        raise ParseError(f"not well-formed XML, even after repairs: {clip(str(exc))}") from exc


def _element_attrs(elem: ET.Element) -> _Attrs:
    attrs = _Attrs()
    for name, value in elem.attrib.items():
        attrs.add(name, value)
    for child in elem:  # some FIPs send attributes as child elements
        if len(child) == 0 and isinstance(child.tag, str):
            attrs.add(child.tag, child.text or "")
    return attrs


def _xml_accounts(root: ET.Element) -> list[_Account]:
    accounts = []
    for elem in root.iter():
        if not isinstance(elem.tag, str) or _key(elem.tag) != "account":
            continue
        summary = _Attrs()
        txns: list[_Attrs | None] = []
        for node in elem.iter():
            if node is elem or not isinstance(node.tag, str):
                continue
            key = _key(node.tag)
            if key == "summary" and not summary.values:
                summary = _element_attrs(node)
            elif key == "transaction":
                txns.append(_element_attrs(node))
        accounts.append(_Account(_element_attrs(elem), summary, txns))
    return accounts


# --------------------------------------------------------------------------------------------
# JSON


def _find(obj: dict[str, Any], name: str) -> Any:
    for key, value in obj.items():
        if isinstance(key, str) and _key(key) == name:
            return value
    return None


def _json_attrs(obj: dict[str, Any]) -> _Attrs:
    attrs = _Attrs()
    for key, value in obj.items():
        attrs.add(str(key), value)
    return attrs


def _looks_like_account(obj: dict[str, Any]) -> bool:
    keys = {_key(str(k)) for k in obj}
    return bool(keys & {"transactions", "summary", "maskedaccnumber", "linkedaccref"})


def _json_account_objects(obj: Any, depth: int = 0) -> Iterator[dict[str, Any]]:
    if depth > 8:
        return
    if isinstance(obj, list):
        for item in obj:
            yield from _json_account_objects(item, depth + 1)
    elif isinstance(obj, dict):
        inner = _find(obj, "account")
        if isinstance(inner, dict | list):
            if isinstance(inner, dict) and not _looks_like_account(inner):
                yield from _json_account_objects(inner, depth + 1)
            elif isinstance(inner, dict):
                yield inner
            else:
                for item in inner:
                    if isinstance(item, dict) and _looks_like_account(item):
                        yield item
                    else:
                        yield from _json_account_objects(item, depth + 1)
        elif _looks_like_account(obj):
            yield obj
        else:
            for value in obj.values():
                if isinstance(value, dict | list):
                    yield from _json_account_objects(value, depth + 1)


def _json_txn_list(txns: Any) -> list[Any]:
    if isinstance(txns, list):
        return txns
    if isinstance(txns, dict):
        inner = _find(txns, "transaction")
        if inner is not None:
            return inner if isinstance(inner, list) else [inner]
        if _find(txns, "amount") is not None:
            return [txns]
    return []


def _json_accounts(data: bytes) -> list[_Account]:
    if not data.strip():
        raise ParseError("the file is empty")
    try:
        obj = json.loads(decode_text(data), parse_float=Decimal, parse_constant=str)
    except (ValueError, RecursionError) as exc:
        raise ParseError(f"not valid JSON: {clip(str(exc))}") from exc
    accounts = []
    for account in _json_account_objects(obj):
        summary_obj = _find(account, "summary")
        if isinstance(summary_obj, list):
            summary_obj = next((s for s in summary_obj if isinstance(s, dict)), None)
        summary = _json_attrs(summary_obj) if isinstance(summary_obj, dict) else _Attrs()
        txns: list[_Attrs | None] = [
            _json_attrs(t) if isinstance(t, dict) else None
            for t in _json_txn_list(_find(account, "transactions"))
        ]
        accounts.append(_Account(_json_attrs(account), summary, txns))
    return accounts


# --------------------------------------------------------------------------------------------
# Shared: attributes -> records


def _currency(summary: _Attrs) -> str:
    text = summary.text(_CURRENCY)
    if text is None:
        return DEFAULT_CURRENCY
    if text.strip().upper() in _RUPEE_WORDS:
        return "INR"
    try:
        return normalize_currency(text)
    except MoneyError:
        return DEFAULT_CURRENCY


def _money(value: Value, currency: str, label: str) -> int:
    if isinstance(value, Decimal):
        return decimal_to_minor(value, currency, label=label)
    return parse_amount(value, currency, label=label)


def _required(attrs: _Attrs, names: tuple[str, ...], label: str) -> tuple[str, Value]:
    found = attrs.get(names)
    if found is None:
        raise FieldError(f"attribute '{label}' is missing")
    return found


def _txn(number: int, attrs: _Attrs, *, currency: str, account_id: str | None) -> ParsedTxn:
    own_currency = attrs.text(_CURRENCY)
    if own_currency is not None:
        try:
            currency = normalize_currency(own_currency)
        except MoneyError as exc:
            raise FieldError(f"currency {shown(own_currency)} is not an ISO 4217 code") from exc
    amount_name, amount_value = _required(attrs, _AMOUNT, "amount")
    amount = abs(_money(amount_value, currency, amount_name))
    type_name, type_value = _required(attrs, _TYPE, "type")
    kind = str(type_value).strip().upper()
    if kind in {"CREDIT", "CR", "C"}:
        sign = 1
    elif kind in {"DEBIT", "DR", "D"}:
        sign = -1
    else:
        raise FieldError(f"{type_name} {shown(type_value)} is not CREDIT or DEBIT")
    ts_name, ts_value = _required(attrs, _TIMESTAMP, "transactionTimestamp")
    booked = parse_datetime(str(ts_value), "dmy", label=ts_name)
    extra: dict[str, str] = {}
    value_date: date | None = None
    value_found = attrs.get(_VALUE_DATE)
    if value_found is not None:
        try:
            value_date = parse_date(str(value_found[1]), "dmy", label=value_found[0])
        except FieldError:
            extra[f"unparsed_{value_found[0]}"] = str(value_found[1])
    balance = None
    balance_found = attrs.get(_BALANCE)
    if balance_found is not None:
        try:
            balance = _money(balance_found[1], currency, balance_found[0])
        except FieldError:
            extra[f"unparsed_{balance_found[0]}"] = str(balance_found[1])
    reference = attrs.text(_REFERENCE)
    if reference is not None:
        extra["reference"] = reference
    for key, (name, value) in attrs.values.items():
        if key not in _CONSUMED:
            extra.setdefault(name, str(value))
    return ParsedTxn(
        row_number=number,
        booked_at=booked,
        amount_minor=sign * amount,
        currency=currency,
        narration=attrs.text(_NARRATION) or "",
        account_id=account_id,
        value_date=value_date,
        mode=attrs.text(_MODE),
        balance_after_minor=balance,
        txn_id=attrs.text(_TXN_ID),
        extra=extra,
    )


def _account_info(account: _Account, fallback_id: str | None) -> tuple[AccountInfo, str]:
    currency = _currency(account.summary)
    linked = account.attrs.text(("linkedaccref", "linkrefnumber", "linkedaccountref"))
    masked = account.attrs.text(("maskedaccnumber", "maskedaccountnumber", "maskedaccno"))
    balance = None
    balance_found = account.summary.get(("currentbalance", "balance"))
    if balance_found is not None:
        try:
            balance = _money(balance_found[1], currency, balance_found[0])
        except FieldError:
            balance = None
    info = AccountInfo(
        account_id=linked or masked or fallback_id,
        masked_number=mask_number(masked),
        institution=account.summary.text(("ifsccode", "ifsc")) or account.summary.text(("branch",)),
        account_type=account.summary.text(("type", "accounttype")) or account.attrs.text(("type",)),
        currency=currency,
        current_balance_minor=balance,
    )
    return info, currency


def _build(accounts: list[_Account], fmt: str, account_id: str | None) -> ParseResult:
    if not accounts:
        raise ParseError("no Account found: this is not ReBIT DEPOSIT FI data")
    result = ParseResult(format=fmt)
    number = 0
    for account in accounts:
        info, currency = _account_info(account, account_id)
        result.accounts.append(info)
        for attrs in account.txns:
            number += 1
            if attrs is None:
                result.rejections.append(
                    Rejection(number, f"transaction {number}: is not an object of attributes")
                )
                continue
            try:
                result.rows.append(
                    _txn(number, attrs, currency=currency, account_id=info.account_id)
                )
            except FieldError as exc:
                result.rejections.append(Rejection(number, f"transaction {number}: {exc}"))
            except (ValueError, ArithmeticError, OverflowError) as exc:  # defensive
                result.rejections.append(
                    Rejection(number, f"transaction {number}: unexpected value error: {exc}")
                )
    return result


def parse_rebit_xml(data: bytes, *, account_id: str | None = None) -> ParseResult:
    """Parse ReBIT DEPOSIT XML (one or more ``Account`` elements, namespaced or not)."""
    return _build(_xml_accounts(_load_xml(data)), "rebit-xml", account_id)


def parse_rebit_json(data: bytes, *, account_id: str | None = None) -> ParseResult:
    """Parse the JSON rendering (``{"Account": {...}}``, ``{"account": ...}``, or a list)."""
    return _build(_json_accounts(data), "rebit-json", account_id)
