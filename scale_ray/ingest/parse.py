"""One entry point for every statement format: detect it, parse it, never raise but ParseError."""

from __future__ import annotations

import re

from scale_ray.ingest.csv_statement import (
    DATE_ORDERS,
    DELIMITERS,
    ColumnMapping,
    decode_text,
    parse_csv,
)
from scale_ray.ingest.ofx import parse_ofx
from scale_ray.ingest.rebit_deposit import parse_rebit_json, parse_rebit_xml
from scale_ray.ingest.records import ParseError, ParseResult
from scale_ray.money import MoneyError, normalize_currency

__all__ = ["FORMATS", "ColumnMapping", "ParseError", "detect_format", "parse_bytes"]

FORMATS = ("auto", "csv", "ofx", "rebit-xml", "rebit-json")

_SNIFF_BYTES = 65536
_ACCOUNT_TAG_RE = re.compile(rb"<(?:[\w.\-]+:)?account[\s>/]", re.IGNORECASE)
_OFX_RE = re.compile(r"^\s*OFXHEADER\s*:|<\?OFX[\s?]|<OFX>", re.IGNORECASE)
_EXTENSIONS = {
    ".ofx": "ofx",
    ".qfx": "ofx",
    ".qbo": "ofx",
    ".xml": "rebit-xml",
    ".json": "rebit-json",
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
}


def _extension_hint(filename: str) -> str | None:
    match = re.search(r"\.[A-Za-z0-9]+$", filename.strip())
    return _EXTENSIONS.get(match[0].lower()) if match else None


def detect_format(data: bytes, filename: str = "") -> str:
    """``csv``, ``ofx``, ``rebit-xml`` or ``rebit-json``, read from the content first.

    The file name's extension only settles what the content leaves open. Raises
    :class:`ParseError` when nothing fits (empty, binary, XML of another kind).
    """
    if not data or not data.strip():
        raise ParseError("the file is empty")
    hint = _extension_hint(filename)
    head = decode_text(data[:_SNIFF_BYTES]).lstrip("\ufeff \t\r\n")
    if _OFX_RE.search(head[:_SNIFF_BYTES]):
        return "ofx"
    if head.startswith("<"):
        if _ACCOUNT_TAG_RE.search(data) or "FISchema/deposit" in head:
            return "rebit-xml"
        if hint in {"ofx", "rebit-xml"}:
            return hint
        raise ParseError(
            "XML that is neither OFX nor ReBIT DEPOSIT data (no <OFX> or <Account> element)"
        )
    if head[:1] in ("{", "[") and hint not in {"csv", "ofx", "rebit-xml"}:
        return "rebit-json"
    sample = head[:4096]
    if (
        "\x00" in sample
        or sum(ch < " " and ch not in "\t\r\n" for ch in sample) > len(sample) // 10
    ):
        raise ParseError("the file is binary, not a statement (CSV, OFX, ReBIT XML or JSON)")
    lines = head.split("\n", 20)[:20]
    if any(d in line for line in lines for d in DELIMITERS) or hint == "csv":
        return "csv"
    if hint is not None:
        return hint
    raise ParseError(
        "unrecognised format: not OFX, not ReBIT XML or JSON, and no line is split into columns "
        "by ';', ',', tab or '|'"
    )


def parse_bytes(
    data: bytes,
    *,
    filename: str = "",
    format: str = "auto",
    mapping: ColumnMapping | None = None,
    default_currency: str | None = None,
    account_id: str | None = None,
    date_order: str | None = None,
) -> ParseResult:
    """Parse a statement in any supported format.

    ``format`` is one of :data:`FORMATS` (``auto`` detects it); ``mapping`` and ``date_order``
    (``dmy``, ``mdy``, ``ymd`` or None to detect) apply to CSV only; ``default_currency`` fills
    in where the source names none; ``account_id`` is used for rows whose source has no account
    of its own. ReBIT data without a Summary currency is INR, whatever ``default_currency`` says
    (the AA scheme is Indian). Only :class:`ParseError` is raised: for an unreadable source, or
    for arguments that are not valid (it is a ValueError). Bad rows come back as ``Rejection``.
    """
    if format not in FORMATS:
        raise ParseError(f"format {format!r} is not one of {', '.join(FORMATS)}")
    if date_order is not None and date_order not in DATE_ORDERS:
        raise ParseError(f"date_order {date_order!r} is not one of {', '.join(DATE_ORDERS)}")
    if default_currency is not None:
        try:
            default_currency = normalize_currency(default_currency)
        except MoneyError as exc:
            raise ParseError(f"default currency: {exc}") from exc
    fmt = detect_format(data, filename) if format == "auto" else format
    try:
        if fmt == "csv":
            return parse_csv(
                data,
                mapping=mapping,
                default_currency=default_currency,
                account_id=account_id,
                date_order=date_order,
            )
        if fmt == "ofx":
            return parse_ofx(data, default_currency=default_currency, account_id=account_id)
        if fmt == "rebit-xml":
            return parse_rebit_xml(data, account_id=account_id)
        return parse_rebit_json(data, account_id=account_id)
    except ParseError:
        raise
    except Exception as exc:  # the contract: nothing but ParseError leaves this function
        raise ParseError(f"internal error reading {fmt}: {type(exc).__name__}: {exc}") from exc
