"""OFX 1.x (SGML) and 2.x (XML) bank and credit-card statements, read with ofxtools."""

from __future__ import annotations

import hashlib
import io
import re
import xml.etree.ElementTree as ET
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

from ofxtools.models.base import Aggregate
from ofxtools.Parser import OFXTree, TreeBuilder
from ofxtools.Types import DT_REGEX

from scale_ray.ingest.csv_statement import (
    FieldError,
    clip,
    decimal_to_minor,
    mask_number,
    shown,
    snake,
)
from scale_ray.ingest.records import AccountInfo, ParsedTxn, ParseError, ParseResult, Rejection
from scale_ray.money import MoneyError, normalize_currency, to_minor

_STATEMENTS = ("STMTRS", "CCSTMTRS", "INVSTMTRS")
_BLOCK_RE = re.compile(rb"<STMTTRN>.*?</STMTTRN>", re.DOTALL | re.IGNORECASE)
_AMOUNT_RE = re.compile(r"[+-]?(?:[0-9]+(?:[.,][0-9]*)?|[.,][0-9]+)", re.ASCII)


def _tree(data: bytes) -> ET.Element:
    root = OFXTree().parse(io.BytesIO(data))
    if not isinstance(root, ET.Element):
        raise ValueError("no OFX elements after the header")
    return root


def _parse_tree(data: bytes) -> tuple[ET.Element, dict[int, str]]:
    """The element tree, plus rejections for STMTTRN blocks that broke the whole parse.

    When ofxtools cannot read the file, each ``<STMTTRN>...</STMTTRN>`` block is tried on its
    own; unreadable blocks are cut out and the rest is parsed again. Keys are 1-based STMTTRN
    positions in the original file.
    """
    try:
        return _tree(data), {}
    except Exception as exc:  # ofxtools raises many kinds; all mean "unreadable"
        first = exc
    blocks = list(_BLOCK_RE.finditer(data))
    broken: dict[int, str] = {}
    for number, match in enumerate(blocks, start=1):
        builder = TreeBuilder()
        try:
            builder.feed(match.group().decode("latin-1"))
            builder.close()
        except Exception as exc:
            message = clip(str(exc))
            broken[number] = (
                f"STMTTRN {number}: its tags are malformed, ofxtools cannot read it: {message}"
            )
    if not broken:
        raise ParseError(f"not a readable OFX file: {clip(str(first))}") from first
    pieces, last = [], 0
    for number, match in enumerate(blocks, start=1):
        if number in broken:
            pieces.append(data[last : match.start()])
            last = match.end()
    pieces.append(data[last:])
    try:
        root = _tree(b"".join(pieces))
    except Exception as exc:
        raise ParseError(f"not a readable OFX file: {clip(str(first))}") from exc
    return root, broken


def _aware(raw: str | None, utc_value: datetime | None) -> datetime | None:
    """ofxtools' UTC instant shown in the offset the source wrote (``[-5:EST]`` -> -05:00)."""
    if utc_value is None:
        return None
    utc_value = utc_value.astimezone(UTC)
    match = DT_REGEX.match((raw or "").strip())
    if match is None or not match["gmt_offset_hours"]:
        return utc_value
    groups = match.groupdict()
    local = datetime(
        int(groups["year"]),
        int(groups["month"]),
        int(groups["day"]),
        int(groups["hour"] or 0),
        int(groups["minute"] or 0),
        int(groups["second"] or 0),
        1000 * int(groups["millisecond"] or 0),
    )
    offset = local - utc_value.replace(tzinfo=None)
    if abs(offset) >= timedelta(hours=24):
        return utc_value
    return utc_value.astimezone(timezone(offset))


def _text(elem: ET.Element, path: str) -> str:
    return (elem.findtext(path) or "").strip()


def _explain(elem: ET.Element, number: int, exc: Exception) -> str:
    """A reason a person can act on, preferring our own reading of the usual culprits."""
    amount = _text(elem, "TRNAMT")
    if not amount:
        return f"STMTTRN {number}: TRNAMT is missing"
    if not _AMOUNT_RE.fullmatch(amount):
        return f"STMTTRN {number}: TRNAMT {shown(amount)} is not a decimal number"
    posted = _text(elem, "DTPOSTED")
    if not posted:
        return f"STMTTRN {number}: DTPOSTED is missing"
    if DT_REGEX.match(posted) is None:
        return f"STMTTRN {number}: DTPOSTED {shown(posted)} is not an OFX date (YYYYMMDD[HHMMSS])"
    if not _text(elem, "FITID"):
        return f"STMTTRN {number}: FITID is missing"
    message = clip(str(exc) or type(exc).__name__)
    return f"STMTTRN {number}: ofxtools cannot read it: {message}"


def _account(stmt: ET.Element, institution: str | None) -> tuple[AccountInfo | None, str | None]:
    acct_elem = None
    for tag in ("BANKACCTFROM", "CCACCTFROM", "INVACCTFROM"):
        acct_elem = stmt.find(tag)
        if acct_elem is not None:
            break
    currency = _text(stmt, "CURDEF") or None
    if currency is not None:
        try:
            currency = normalize_currency(currency)
        except MoneyError:
            currency = None
    acct_id = None
    account_type = None
    bank_id = None
    if acct_elem is not None:
        try:
            acct = Aggregate.from_etree(acct_elem)
            acct_id = getattr(acct, "acctid", None)
            account_type = getattr(acct, "accttype", None)
            bank_id = getattr(acct, "bankid", None)
        except Exception:
            acct_id = _text(acct_elem, "ACCTID") or None
            account_type = _text(acct_elem, "ACCTTYPE") or None
            bank_id = _text(acct_elem, "BANKID") or None
        if acct_elem.tag == "CCACCTFROM":
            account_type = account_type or "CREDITCARD"
        elif acct_elem.tag == "INVACCTFROM":
            account_type = account_type or "INVESTMENT"
    balance = None
    ledger = stmt.find("LEDGERBAL")
    if ledger is not None and currency is not None:
        try:
            balance = decimal_to_minor(Aggregate.from_etree(ledger).balamt, currency)
        except Exception:
            try:
                balance = to_minor(_text(ledger, "BALAMT"), currency)
            except MoneyError:
                balance = None
    if acct_elem is None and currency is None and balance is None:
        return None, None
    info = AccountInfo(
        account_id=_opaque_account_id(acct_id, bank_id),
        masked_number=mask_number(acct_id),
        institution=institution or bank_id,
        account_type=account_type,
        currency=currency,
        current_balance_minor=balance,
    )
    return info, currency


def _row(
    number: int,
    elem: ET.Element,
    txn: Any,
    *,
    currency: str | None,
    account_id: str | None,
) -> ParsedTxn:
    extra: dict[str, str] = {}
    txn_currency = currency
    if txn.currency is not None:
        txn_currency = txn.currency.cursym
        extra["currate"] = str(txn.currency.currate)
    elif txn.origcurrency is not None:
        extra["orig_currency"] = str(txn.origcurrency.cursym)
        extra["currate"] = str(txn.origcurrency.currate)
    if not txn_currency:
        raise FieldError(
            "has no currency: the statement has no CURDEF and no default currency was given"
        )
    amount = decimal_to_minor(txn.trnamt, txn_currency, label="TRNAMT")
    booked = _aware(_text(elem, "DTPOSTED"), txn.dtposted)
    if booked is None:  # pragma: no cover - DTPOSTED is required by ofxtools
        raise FieldError("DTPOSTED is missing")
    value_date: date | None = None
    avail = _aware(_text(elem, "DTAVAIL"), txn.dtavail)
    if avail is not None:
        value_date = avail.date()
    user = _aware(_text(elem, "DTUSER"), txn.dtuser)
    if user is not None:
        extra["dtuser"] = user.isoformat()
    name = txn.name or (txn.payee.name if txn.payee is not None else None)
    memo = txn.memo
    for field in ("checknum", "refnum", "sic", "payeeid", "srvrtid", "correctfitid"):
        value = getattr(txn, field, None)
        if value not in (None, ""):
            extra[snake(field)] = str(value)
    if txn.correctaction:
        extra["correctaction"] = str(txn.correctaction)
    narration = " / ".join(part for part in (name, memo) if part)
    return ParsedTxn(
        row_number=number,
        booked_at=booked,
        amount_minor=amount,
        currency=txn_currency,
        narration=narration,
        account_id=account_id,
        value_date=value_date,
        merchant=name or None,
        mode=txn.trntype or None,
        txn_id=txn.fitid or None,
        extra=extra,
    )


def _opaque_account_id(acct_id: str | None, bank_id: str | None) -> str | None:
    """A stable ledger id that does not spell out the account number (PII stays masked).

    Last four digits for people, a short hash of bank + number for uniqueness.
    """
    if not acct_id:
        return None
    digest = hashlib.sha256(f"{bank_id or ''}:{acct_id}".encode()).hexdigest()[:10]
    return f"ofx-{re.sub(r'[^0-9A-Za-z]', '', acct_id)[-4:]}-{digest}"


def parse_ofx(
    data: bytes, *, default_currency: str | None = None, account_id: str | None = None
) -> ParseResult:
    """Parse an OFX statement; unreadable transactions become rejections.

    ``NAME`` (or ``PAYEE/NAME``) is the merchant; narration is ``NAME / MEMO``. ``DTAVAIL`` is
    the value date. ``account_id`` is used only when the statement has no account aggregate.
    """
    if not data.strip():
        raise ParseError("the file is empty")
    if default_currency is not None:
        try:
            default_currency = normalize_currency(default_currency)
        except MoneyError as exc:
            raise ParseError(f"default currency: {exc}") from exc
    root, broken = _parse_tree(data)
    result = ParseResult(format="ofx")
    institution = None
    fi_org = root.find(".//SONRS/FI/ORG")
    if fi_org is not None and (fi_org.text or "").strip():
        institution = (fi_org.text or "").strip()

    parents = {child: parent for parent in root.iter() for child in parent}
    statements: dict[int, tuple[str | None, str | None]] = {}
    for stmt in root.iter():
        if stmt.tag in _STATEMENTS:
            info, currency = _account(stmt, institution)
            if info is not None:
                result.accounts.append(info)
            statements[id(stmt)] = (
                currency or default_currency,
                (info.account_id if info else None) or account_id,
            )

    trns = [elem for elem in root.iter("STMTTRN")]
    if not trns and not broken and not statements:
        raise ParseError("not an OFX statement: no STMTRS, CCSTMTRS or STMTTRN found")
    numbers = [n for n in range(1, len(trns) + len(broken) + 1) if n not in broken]
    for number, reason in broken.items():
        result.rejections.append(Rejection(number, reason))
    for number, elem in zip(numbers, trns, strict=False):
        context: tuple[str | None, str | None] = (default_currency, account_id)
        node: ET.Element | None = elem
        while node is not None:
            if id(node) in statements:
                context = statements[id(node)]
                break
            node = parents.get(node)
        try:
            txn = Aggregate.from_etree(elem)
        except Exception as exc:
            result.rejections.append(Rejection(number, _explain(elem, number, exc)))
            continue
        try:
            result.rows.append(_row(number, elem, txn, currency=context[0], account_id=context[1]))
        except FieldError as exc:
            result.rejections.append(Rejection(number, f"STMTTRN {number}: {exc}"))
        except (ValueError, ArithmeticError, AttributeError, TypeError) as exc:
            result.rejections.append(
                Rejection(number, f"STMTTRN {number}: unexpected value error: {exc}")
            )
    result.rejections.sort(key=lambda r: r.row_number)
    return result
