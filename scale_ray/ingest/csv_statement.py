"""CSV statements: the Birmingham p-card and Berka layouts, and generic bank exports.

Also home of the field helpers the other parsers share (dates, amounts, masking), so that a date
or an amount means the same thing whichever format it came in.
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

from scale_ray.ingest.records import ParsedTxn, ParseError, ParseResult, Rejection
from scale_ray.money import MoneyError, normalize_currency, to_minor

DELIMITERS = (";", ",", "\t", "|")
DATE_ORDERS = ("dmy", "mdy", "ymd")
#: How many leading rows may precede the header (bank exports often start with a preamble).
_HEADER_SEARCH_ROWS = 20
_SNIFF_LINES = 50


class FieldError(ValueError):
    """One field of one record is unusable; the message is shown to a person."""


# --------------------------------------------------------------------------------------------
# Column mapping


@dataclass(frozen=True)
class ColumnMapping:
    """Which header holds which field in a generic CSV; every field is a header name or None."""

    date: str | None = None
    amount: str | None = None
    debit: str | None = None
    credit: str | None = None
    narration: str | None = None
    merchant: str | None = None
    currency: str | None = None
    txn_id: str | None = None
    balance: str | None = None
    account: str | None = None
    value_date: str | None = None
    mode: str | None = None
    category: str | None = None

    @classmethod
    def from_dict(cls, d: dict[str, str]) -> ColumnMapping:
        """Build from ``{"date": "Posting Date", ...}``; ValueError naming unknown keys."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(str(k) for k in d if k not in known)
        if unknown:
            raise ValueError(
                f"unknown column mapping keys: {', '.join(unknown)}; "
                f"expected some of: {', '.join(sorted(known))}"
            )
        for key, value in d.items():
            if value is not None and not isinstance(value, str):
                raise ValueError(f"column mapping {key!r} must be a header name, got {value!r}")
        return cls(**{k: (v if v and v.strip() else None) for k, v in d.items()})

    def items(self) -> list[tuple[str, str]]:
        """The (field, header) pairs that are set."""
        return [(f.name, v) for f in fields(self) if (v := getattr(self, f.name))]


# --------------------------------------------------------------------------------------------
# Shared field helpers


def mask_number(number: str | None) -> str | None:
    """Mask every digit but the last four: ``123456789012`` -> ``XXXXXXXX9012``."""
    if number is None:
        return None
    text = number.strip()
    if not text:
        return None
    digit_positions = [i for i, ch in enumerate(text) if ch.isdigit()]
    keep = set(digit_positions[-4:])
    return "".join("X" if ch.isdigit() and i not in keep else ch for i, ch in enumerate(text))


def shown(value: object, limit: int = 60) -> str:
    """A value quoted for a rejection reason, clipped so one bad cell cannot flood a report."""
    text = str(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return repr(text)


def clip(message: str, limit: int = 300) -> str:
    """A third-party error message cut to a readable length."""
    return message if len(message) <= limit else message[: limit - 3] + "..."


def snake(name: str) -> str:
    """``TRANS CAC CODE 1`` -> ``trans_cac_code_1`` (keys of ``ParsedTxn.extra``)."""
    return re.sub(r"[^0-9a-z]+", "_", name.strip().casefold()).strip("_") or "column"


def two_digit_year(yy: int) -> int:
    """Expand a two-digit year like ``strptime('%y')``: 69-99 -> 19xx, 00-68 -> 20xx."""
    return 1900 + yy if yy >= 69 else 2000 + yy


_MONTHS = {
    name: i
    for i, names in enumerate(
        (
            ("jan", "january"),
            ("feb", "february"),
            ("mar", "march"),
            ("apr", "april"),
            ("may",),
            ("jun", "june"),
            ("jul", "july"),
            ("aug", "august"),
            ("sep", "sept", "september"),
            ("oct", "october"),
            ("nov", "november"),
            ("dec", "december"),
        ),
        start=1,
    )
    for name in names
}

_TIME = (
    r"(?:[T ]+(?P<H>[0-9]{1,2}):(?P<M>[0-9]{2})(?::(?P<S>[0-9]{2})(?:[.,](?P<F>[0-9]{1,9}))?)?"
    r"\s*(?P<ampm>[AaPp][Mm])?)?"
    r"\s*(?P<tz>Z|z|UTC|GMT|[+-][0-9]{2}(?::?[0-9]{2})?)?"
)
_ISO_RE = re.compile(r"(?P<y>[0-9]{4})[-/](?P<m>[0-9]{1,2})[-/](?P<d>[0-9]{1,2})" + _TIME, re.ASCII)
_THREE_RE = re.compile(
    r"(?P<a>[0-9]{1,2})(?P<sep>[/.\-])(?P<b>[0-9]{1,2})(?P=sep)(?P<c>[0-9]{4}|[0-9]{2})" + _TIME,
    re.ASCII,
)
_COMPACT_RE = re.compile(r"(?P<digits>[0-9]{8}|[0-9]{6})" + _TIME, re.ASCII)
_DMONY_RE = re.compile(
    r"(?P<d>[0-9]{1,2})[ \-/.]?(?P<mon>[A-Za-z]{3,9})\.?[ \-/.,]*(?P<y>[0-9]{4}|[0-9]{2})" + _TIME,
    re.ASCII,
)
_MONDY_RE = re.compile(
    r"(?P<mon>[A-Za-z]{3,9})\.?[ \-/.]*(?P<d>[0-9]{1,2})(?:st|nd|rd|th)?,?[ \-/.]*(?P<y>[0-9]{4})"
    + _TIME,
    re.ASCII,
)

_DATE_PATTERNS = (
    ("iso", _ISO_RE),
    ("three", _THREE_RE),
    ("compact", _COMPACT_RE),
    ("dmony", _DMONY_RE),
    ("mondy", _MONDY_RE),
)


def _tz_from(text: str | None) -> timezone:
    if not text or text.upper() in {"Z", "UTC", "GMT"}:
        return UTC
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:] or 0)
    if hours > 23 or minutes > 59:
        raise ValueError("bad offset")
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def _build(y: int, m: int, d: int, match: re.Match[str]) -> datetime:
    hour = int(match["H"] or 0)
    ampm = match["ampm"]
    if ampm:
        if not 1 <= hour <= 12:
            raise ValueError("bad 12-hour clock")
        hour = hour % 12 + (12 if ampm.lower() == "pm" else 0)
    frac = (match["F"] or "").ljust(6, "0")[:6]
    return datetime(
        y,
        m,
        d,
        hour,
        int(match["M"] or 0),
        int(match["S"] or 0),
        int(frac or 0),
        tzinfo=_tz_from(match["tz"]),
    )


def parse_datetime(text: str, date_order: str = "dmy", *, label: str = "date") -> datetime:
    """Read a statement date/time into an aware datetime; date-only and naive values are UTC.

    Understands ISO ``2024-01-31[T09:15[:00[.000]]][Z|+05:30]``, ``31/01/2024``, ``31/01/24``,
    ``31.01.2024``, ``01/31/2024`` (per ``date_order``), ``20240131``, ``240131`` (YYMMDD),
    ``31 Jan 2024`` and ``Jan 31, 2024``. Raises :class:`FieldError` naming ``label``.
    """
    value = text.strip()
    if not value:
        raise FieldError(f"{label} is empty")
    kind, match = next(
        ((name, found) for name, pattern in _DATE_PATTERNS if (found := pattern.fullmatch(value))),
        ("", None),
    )
    if match is None:
        raise FieldError(
            f"{label} {shown(text)} is not a recognised date "
            "(expected e.g. 2024-01-31, 31/01/2024, 20240131)"
        )
    groups = match.groupdict()
    try:
        if kind == "iso":
            y, m, d = int(groups["y"]), int(groups["m"]), int(groups["d"])
        elif kind == "three":
            a, b, c = int(groups["a"]), int(groups["b"]), groups["c"]
            if date_order == "ymd":
                y, m, d = a, b, int(c)
                y = two_digit_year(y)
            else:
                year = int(c) if len(c) == 4 else two_digit_year(int(c))
                y, m, d = (year, b, a) if date_order == "dmy" else (year, a, b)
        elif kind == "compact":
            digits = groups["digits"]
            if len(digits) == 8:
                y, m, d = int(digits[:4]), int(digits[4:6]), int(digits[6:])
            else:
                y, m, d = two_digit_year(int(digits[:2])), int(digits[2:4]), int(digits[4:])
        else:
            month = _MONTHS.get(groups["mon"].casefold())
            if month is None:
                raise ValueError("bad month name")
            year_text = groups["y"]
            y = int(year_text) if len(year_text) == 4 else two_digit_year(int(year_text))
            m, d = month, int(groups["d"])
        return _build(y, m, d, match)
    except (ValueError, OverflowError) as exc:
        raise FieldError(f"{label} {shown(text)} is not a valid date") from exc


def parse_date(text: str, date_order: str = "dmy", *, label: str = "date") -> date:
    """Like :func:`parse_datetime` but keeps only the calendar date as written."""
    return parse_datetime(text, date_order, label=label).date()


def detect_date_order(values: Iterable[str]) -> str:
    """``dmy`` unless some ``a/b/yyyy`` value can only be month-first; day-first when ambiguous."""
    month_first = False
    for value in values:
        match = _THREE_RE.fullmatch(value.strip())
        if match is None:
            continue
        a, b = int(match["a"]), int(match["b"])
        if a > 12:
            return "dmy"
        if b > 12:
            month_first = True
    return "mdy" if month_first else "dmy"


_SYMBOLS = "£$€¥₹₩₽₺₫₱฿₦₴₪"
_CRDR_RE = re.compile(
    r"(?:^(?P<pre>CR|DR)\.?\s+)|(?:\s*(?<![A-Za-z])(?P<post>CR|DR|Cr|Dr|cr|dr)\.?$)"
)
_CODE_PRE_RE = re.compile(r"^(?P<code>[A-Za-z]{3})\s*(?=[-+0-9.(" + _SYMBOLS + "])")
_CODE_POST_RE = re.compile(r"(?<=[0-9.)])\s*(?P<code>[A-Za-z]{3})$")
_EURO_RE = re.compile(r"[+-]?(?:[0-9]{1,3}(?:\.[0-9]{3})+|[0-9]+),[0-9]{1,2}", re.ASCII)
_MAX_DECIMAL_ADJUSTED = 18  # int64 minor units never need more than 19 digits


def decimal_to_minor(value: Decimal, currency: str, *, label: str = "amount") -> int:
    """``to_minor`` for a Decimal from JSON/OFX, refusing huge exponents before expanding them."""
    if not value.is_finite():
        raise FieldError(f"{label} {shown(value)} is not a finite number")
    if value and value.adjusted() > _MAX_DECIMAL_ADJUSTED:
        raise FieldError(f"{label} {shown(value)} does not fit in int64 minor units")
    try:
        return to_minor(value, currency)
    except MoneyError as exc:
        message = str(exc).replace(repr(value), shown(value))
        raise FieldError(message.replace("amount", label, 1)) from exc


def parse_amount(text: str, currency: str, *, label: str = "amount") -> int:
    """Signed minor units from a statement amount.

    Accepts ``1,234.56``, ``-12.00``, ``(12.00)`` (negative), ``12.00 CR`` / ``12.00 DR``,
    ``12.00-``, ``£12.00``, ``12.00 GBP``, and decimal commas (``1.234,56``, ``12,50``).
    """
    original = text
    s = text.strip().replace("\u00a0", "").replace("\u2212", "-").replace("'", "")
    if not s:
        raise FieldError(f"{label} is empty")
    sign = 1
    if s.startswith("(") and s.endswith(")"):
        sign, s = -1, s[1:-1].strip()
    crdr = _CRDR_RE.search(s)
    if crdr:
        word = (crdr["pre"] or crdr["post"]).upper()
        s = (s[: crdr.start()] + s[crdr.end() :]).strip()
        if word == "DR":
            sign = -sign
    for pattern in (_CODE_PRE_RE, _CODE_POST_RE):
        code_match = pattern.search(s)
        if code_match and code_match["code"].upper() == currency:
            s = (s[: code_match.start()] + s[code_match.end() :]).strip()
    if len(s) > 1 and s.endswith("-") and s[0] not in "+-":
        sign, s = -sign, s[:-1].strip()
    lead = ""
    if s.startswith(("+", "-")):
        lead, s = s[0], s[1:].strip()
    if s.casefold().startswith("rs."):
        s = s[3:].strip()
    elif s.casefold().startswith("rs") and s[2:3].isdigit():
        s = s[2:]
    s = s.strip(_SYMBOLS).strip()
    if not lead and s.startswith(("+", "-")):
        lead, s = s[0], s[1:].strip()
    s = s.replace(" ", "")
    if _EURO_RE.fullmatch(s):
        s = s.replace(".", "").replace(",", ".")
    if not s or s[0] in "+-":
        raise FieldError(f"{label} {shown(original)} is not a decimal number")
    try:
        minor = to_minor(lead + s, currency)
    except MoneyError as exc:
        message = str(exc).replace(repr(lead + s), shown(original))
        raise FieldError(message.replace("amount", label, 1)) from exc
    return sign * minor


def parse_currency(text: str, *, label: str = "currency") -> str:
    """Validated ISO 4217 code, or :class:`FieldError`."""
    try:
        return normalize_currency(text)
    except MoneyError as exc:
        raise FieldError(f"{label} {shown(text)} is not a three-letter ISO 4217 code") from exc


CREDIT_WORDS = frozenset({"credit", "cr", "c", "deposit", "dep", "in", "prijem", "+"})
DEBIT_WORDS = frozenset(
    {"debit", "dr", "d", "withdrawal", "withdrawal in cash", "wdl", "out", "vydaj", "-"}
)


def sign_word(text: str | None) -> int | None:
    """+1 for a credit word, -1 for a debit word, None when the text says neither."""
    if text is None:
        return None
    word = text.strip().casefold()
    if word in CREDIT_WORDS:
        return 1
    if word in DEBIT_WORDS:
        return -1
    return None


# --------------------------------------------------------------------------------------------
# Decoding, sniffing, header detection


def decode_text(data: bytes) -> str:
    """UTF-8 (BOM or not), UTF-16 with a BOM, else cp1252, else Latin-1."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise ParseError(f"file starts with a UTF-16 mark but is not UTF-16: {exc}") from exc
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    for encoding in ("utf-8", "cp1252"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


def _norm(header: str) -> str:
    """Header compared after stripping spaces and case-folding."""
    return header.strip().strip("\ufeff").strip().casefold()


def _alias_key(header: str) -> str:
    """Looser key for guessing generic headers: no parentheses, only letters and digits."""
    without = re.sub(r"\([^)]*\)|\[[^\]]*\]", " ", _norm(header))
    return re.sub(r"[^0-9a-z]+", " ", without).strip()


def sniff_delimiter(text: str) -> str:
    """The candidate that splits the first lines most consistently into the most columns."""
    lines = [line for line in text.split("\n", _SNIFF_LINES)[:_SNIFF_LINES] if line.strip()]
    best: tuple[int, int, int] | None = None
    chosen = ","
    error: csv.Error | None = None
    for rank, delimiter in enumerate(DELIMITERS):
        try:
            counts = [
                len(row) for row in csv.reader(lines, delimiter=delimiter, skipinitialspace=True)
            ]
        except csv.Error as exc:
            error = exc
            continue
        multi = [c for c in counts if c >= 2]
        if not multi:
            continue
        mode, freq = Counter(multi).most_common(1)[0]
        score = (freq, mode, -rank)
        if best is None or score > best:
            best, chosen = score, delimiter
    if best is None:
        if error is not None:
            raise ParseError(f"the CSV cannot be split into rows: {error}")
        raise ParseError("no usable header: no line is split into columns by ';', ',', tab or '|'")
    return chosen


def read_rows(data: bytes) -> list[list[str]]:
    """Decode and split a CSV into rows of raw cells."""
    if not data.strip():
        raise ParseError("the file is empty")
    text = decode_text(data)
    if "\x00" in text[:4096]:
        raise ParseError("the file is binary (contains NUL bytes), not a CSV")
    if "\n" not in text and "\r" in text:
        text = text.replace("\r", "\n")
    delimiter = sniff_delimiter(text)
    try:
        return list(
            csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, skipinitialspace=True)
        )
    except csv.Error as exc:
        raise ParseError(f"the CSV cannot be split into rows: {exc}") from exc


def _blank(row: Sequence[str]) -> bool:
    return not any(cell.strip() for cell in row)


# --------------------------------------------------------------------------------------------
# Layouts

_BIRMINGHAM = {"trans date", "original gross amt"}
_BERKA = {"trans_id", "account_id", "date", "type", "amount"}

_ALIASES: dict[str, tuple[str, ...]] = {
    "date": (
        "date",
        "transaction date",
        "trans date",
        "txn date",
        "tran date",
        "posting date",
        "posted date",
        "post date",
        "booking date",
        "booked date",
        "date posted",
        "completed date",
        "started date",
        "transaction time",
        "date time",
        "datetime",
        "timestamp",
        "value date",
    ),
    "value_date": ("value date", "valuedate", "value dt", "effective date"),
    "amount": (
        "amount",
        "transaction amount",
        "txn amount",
        "trans amount",
        "amt",
        "net amount",
        "amount value",
        "value",
    ),
    "debit": (
        "debit",
        "debits",
        "debit amount",
        "debit amt",
        "withdrawal",
        "withdrawals",
        "withdrawal amount",
        "withdrawal amt",
        "paid out",
        "money out",
        "dr",
        "dr amount",
        "outflow",
        "out",
    ),
    "credit": (
        "credit",
        "credits",
        "credit amount",
        "credit amt",
        "deposit",
        "deposits",
        "deposit amount",
        "deposit amt",
        "paid in",
        "money in",
        "cr",
        "cr amount",
        "inflow",
        "in",
    ),
    "balance": (
        "balance",
        "running balance",
        "closing balance",
        "balance after",
        "available balance",
        "running total",
        "balance amount",
        "bal",
    ),
    "currency": ("currency", "ccy", "currency code", "cur", "curr", "transaction currency"),
    "txn_id": (
        "transaction id",
        "txn id",
        "trans id",
        "id",
        "transaction reference",
        "reference",
        "reference number",
        "reference no",
        "ref",
        "ref no",
        "chq ref no",
        "fitid",
    ),
    "account": (
        "account",
        "account number",
        "account no",
        "account id",
        "acct",
        "acct no",
        "card number",
        "card",
        "iban",
    ),
    "indicator": ("dr cr", "cr dr", "debit credit", "credit debit", "d c", "c d", "dc", "cd"),
    "mode": (
        "type",
        "transaction type",
        "txn type",
        "trans type",
        "mode",
        "payment type",
        "payment method",
        "method",
    ),
    "category": ("category", "categories", "spending category", "category name"),
    "narration": (
        "description",
        "narration",
        "details",
        "transaction details",
        "transaction description",
        "particulars",
        "remarks",
        "memo",
        "payee",
        "name",
        "merchant",
        "merchant name",
        "counterparty",
        "beneficiary",
        "text",
        "booking text",
        "purpose",
    ),
    "merchant": (
        "merchant",
        "merchant name",
        "payee",
        "payee name",
        "counterparty",
        "counter party",
        "beneficiary",
        "name",
    ),
}
_RESOLVE_ORDER = (
    "date",
    "value_date",
    "amount",
    "debit",
    "credit",
    "balance",
    "currency",
    "txn_id",
    "account",
    "indicator",
    "mode",
    "category",
    "narration",
    "merchant",
)


def _guess_columns(headers: Sequence[str], mapping: ColumnMapping | None) -> dict[str, int]:
    """Field -> column index: the mapping first, then the usual bank-export header names."""
    columns: dict[str, int] = {}
    taken: set[int] = set()
    if mapping is not None:
        by_norm: dict[str, int] = {}
        for i, header in enumerate(headers):
            by_norm.setdefault(_norm(header), i)
        for name, header in mapping.items():
            index = by_norm.get(_norm(header))
            if index is None:
                raise ParseError(
                    f"column {header!r} (mapped to {name}) is not in the header; "
                    f"the header has: {', '.join(repr(h.strip()) for h in headers)}"
                )
            columns[name] = index
            taken.add(index)
    by_alias: dict[str, int] = {}
    for i, header in enumerate(headers):
        by_alias.setdefault(_alias_key(header), i)
    for name in _RESOLVE_ORDER:
        if name in columns:
            continue
        for alias in _ALIASES[name]:
            index = by_alias.get(alias)
            if index is not None and index not in taken:
                columns[name] = index
                taken.add(index)
                break
    return columns


def _usable(columns: dict[str, int]) -> bool:
    return "date" in columns and bool({"amount", "debit", "credit"} & columns.keys())


def _header_currency(header: str) -> str | None:
    """``Amount (GBP)`` -> ``GBP``."""
    match = re.search(r"[(\[]\s*([A-Za-z]{3})\s*[)\]]", header)
    if match is None:
        return None
    try:
        return normalize_currency(match[1])
    except MoneyError:
        return None


class _Table:
    """Rows of one CSV with a header-name lookup."""

    def __init__(self, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        self.headers = list(headers)
        self.rows = rows
        self.index: dict[str, int] = {}
        for i, header in enumerate(self.headers):
            self.index.setdefault(_norm(header), i)

    def col(self, name: str) -> int | None:
        return self.index.get(name)


def _cell(row: Sequence[str], index: int | None) -> str:
    if index is None or index >= len(row):
        return ""
    return row[index].strip()


def _check_width(row: Sequence[str], width: int) -> None:
    if len(row) > width and any(cell.strip() for cell in row[width:]):
        raise FieldError(
            f"has {len(row)} fields but the header has {width} "
            "(an unquoted separator inside a value?)"
        )


def _extras(row: Sequence[str], headers: Sequence[str], used: set[int]) -> dict[str, str]:
    extra: dict[str, str] = {}
    for i, header in enumerate(headers):
        if i in used or i >= len(row):
            continue
        value = row[i].strip()
        if value:
            extra.setdefault(snake(header), value)
    return extra


def _run_rows(
    rows: Sequence[Sequence[str]],
    width: int,
    build: _RowBuilder,
    result: ParseResult,
) -> None:
    for row_number, row in enumerate(rows, start=1):
        if _blank(row):
            continue
        try:
            _check_width(row, width)
            result.rows.append(build(row_number, row))
        except FieldError as exc:
            result.rejections.append(Rejection(row_number, f"row {row_number}: {exc}"))
        except (ValueError, ArithmeticError, OverflowError) as exc:  # defensive: never escape
            result.rejections.append(
                Rejection(row_number, f"row {row_number}: unexpected value error: {exc}")
            )


class _RowBuilder:
    def __call__(self, row_number: int, row: Sequence[str]) -> ParsedTxn:  # pragma: no cover
        raise NotImplementedError


class _Birmingham(_RowBuilder):
    """Birmingham City Council purchase-card files (``TRANS DATE`` ... ``Directorate``)."""

    def __init__(self, table: _Table, account_id: str | None) -> None:
        c = table.col
        self.date, self.amount = c("trans date"), c("original gross amt")
        self.orig_cur, self.bill_cur = c("original cur"), c("billing cur code")
        self.bill_amount = c("billing gross amt")
        self.merchant, self.card = c("merchant name"), c("card number")
        self.cac_desc, self.cac_code, self.directorate = (
            c("trans cac desc 1"),
            c("trans cac code 1"),
            c("directorate"),
        )
        self.headers = table.headers
        # The amount column read into amount_minor is not repeated in ``extra``; the other is.
        amount_column = self.bill_amount if self.bill_amount is not None else self.amount
        self.used = {
            i
            for i in (self.date, amount_column, self.merchant, self.card, self.cac_desc)
            if i is not None
        }
        self.account_id = account_id
        self.dates: dict[str, datetime] = {}

    def __call__(self, row_number: int, row: Sequence[str]) -> ParsedTxn:
        raw_date = _cell(row, self.date)
        booked = self.dates.get(raw_date)
        if booked is None:
            booked = parse_datetime(raw_date, "dmy")
            self.dates[raw_date] = booked
        # The card account is billed in its own currency: the billing amount is what the ledger
        # holds; a foreign original amount stays in ``extra``. Older files only have ORIGINAL.
        billed = _cell(row, self.bill_amount)
        if billed:
            currency = parse_currency(_cell(row, self.bill_cur) or "GBP")
            raw_amount = billed
        else:
            currency = parse_currency(_cell(row, self.orig_cur) or "GBP")
            raw_amount = _cell(row, self.amount)
        # Positive gross amount is spend on the card: a debit from the holder's view.
        amount = -parse_amount(raw_amount, currency)
        merchant = _cell(row, self.merchant)
        card_digits = re.sub(r"\D", "", _cell(row, self.card))
        account = f"card-{card_digits[-4:]}" if card_digits else self.account_id
        return ParsedTxn(
            row_number=row_number,
            booked_at=booked,
            amount_minor=amount,
            currency=currency,
            narration=merchant,
            account_id=account,
            merchant=merchant or None,
            category_hint=_cell(row, self.cac_desc) or None,
            extra=_extras(row, self.headers, self.used),
        )


class _Berka(_RowBuilder):
    """PKDD'99 Berka ``trans`` table: Czech bank ledger rows in CZK."""

    def __init__(self, table: _Table, account_id: str | None) -> None:
        c = table.col
        self.trans_id, self.account, self.date = c("trans_id"), c("account_id"), c("date")
        self.type, self.operation, self.amount = c("type"), c("operation"), c("amount")
        self.balance, self.k_symbol = c("balance"), c("k_symbol")
        self.bank, self.partner = c("bank"), c("account")
        self.account_id = account_id
        self.dates: dict[str, datetime] = {}

    def _date(self, raw: str) -> datetime:
        booked = self.dates.get(raw)
        if booked is None:
            if not re.fullmatch(r"[0-9]{6}", raw, re.ASCII):
                raise FieldError(f"date {shown(raw)} is not a YYMMDD date")
            try:
                booked = datetime(1900 + int(raw[:2]), int(raw[2:4]), int(raw[4:]), tzinfo=UTC)
            except ValueError as exc:
                raise FieldError(f"date {shown(raw)} is not a valid date") from exc
            self.dates[raw] = booked
        return booked

    def __call__(self, row_number: int, row: Sequence[str]) -> ParsedTxn:
        booked = self._date(_cell(row, self.date))
        kind = _cell(row, self.type)
        sign = sign_word(kind)
        if sign is None:
            lowered = kind.casefold()
            if lowered.startswith(("withdrawal", "vydaj")):
                sign = -1
            elif lowered.startswith(("credit", "prijem")):
                sign = 1
            else:
                raise FieldError(f"type {shown(kind)} is neither credit nor withdrawal")
        amount = sign * abs(parse_amount(_cell(row, self.amount), "CZK"))
        balance_text = _cell(row, self.balance)
        balance = parse_amount(balance_text, "CZK", label="balance") if balance_text else None
        operation = _cell(row, self.operation)
        k_symbol = _cell(row, self.k_symbol)
        bank, partner = _cell(row, self.bank), _cell(row, self.partner)
        parts = [operation, k_symbol]
        if bank or (partner and partner != "0"):
            parts.append(f"partner {bank} {partner}".strip())
        narration = " / ".join(p for p in parts if p) or kind
        extra: dict[str, str] = {"type": kind}
        if k_symbol:
            extra["k_symbol"] = k_symbol
        if bank:
            extra["partner_bank"] = bank
        if partner and partner != "0":
            extra["partner_account"] = partner
        account = _cell(row, self.account)
        return ParsedTxn(
            row_number=row_number,
            booked_at=booked,
            amount_minor=amount,
            currency="CZK",
            narration=narration,
            account_id=f"berka-{account}" if account else self.account_id,
            mode=operation or None,
            balance_after_minor=balance,
            txn_id=_cell(row, self.trans_id) or None,
            category_hint=k_symbol or None,
            extra=extra,
        )


class _Generic(_RowBuilder):
    """Any bank export whose columns were mapped or guessed."""

    def __init__(
        self,
        table: _Table,
        columns: dict[str, int],
        *,
        default_currency: str | None,
        account_id: str | None,
        date_order: str | None,
    ) -> None:
        self.headers = table.headers
        self.columns = columns
        self.used = set(columns.values())
        self.account_id = account_id
        self.currency_hint = None
        for name in ("amount", "debit", "credit"):
            if name in columns and self.currency_hint is None:
                self.currency_hint = _header_currency(self.headers[columns[name]])
        self.default_currency = default_currency
        date_col = columns["date"]
        if date_order is None:
            date_order = detect_date_order(_cell(row, date_col) for row in table.rows)
        self.date_order = date_order
        self.dates: dict[str, datetime] = {}

    def _get(self, row: Sequence[str], name: str) -> str:
        return _cell(row, self.columns.get(name))

    def _currency(self, row: Sequence[str]) -> str:
        text = self._get(row, "currency")
        if text:
            return parse_currency(text)
        if self.currency_hint:
            return self.currency_hint
        if self.default_currency:
            return self.default_currency
        for name in ("amount", "debit", "credit"):
            match = re.search(r"(?:^|[^A-Za-z])([A-Z]{3})(?:$|[^A-Za-z])", self._get(row, name))
            if match:
                try:
                    return normalize_currency(match[1])
                except MoneyError:
                    pass
        raise FieldError(
            "has no currency: the file has no currency column and no default currency was given"
        )

    def _amount(self, row: Sequence[str], currency: str) -> int:
        amount_text = self._get(row, "amount")
        if amount_text:
            amount = parse_amount(amount_text, currency)
            sign = sign_word(self._get(row, "indicator")) or sign_word(self._get(row, "mode"))
            return sign * abs(amount) if sign is not None else amount
        debit_text, credit_text = self._get(row, "debit"), self._get(row, "credit")
        debit = abs(parse_amount(debit_text, currency, label="debit")) if debit_text else 0
        credit = abs(parse_amount(credit_text, currency, label="credit")) if credit_text else 0
        if debit and credit:
            raise FieldError(
                f"both debit {shown(debit_text)} and credit {shown(credit_text)} are filled; "
                "expected only one"
            )
        if not debit_text and not credit_text:
            if "amount" in self.columns and not ({"debit", "credit"} & self.columns.keys()):
                raise FieldError("amount is empty")
            raise FieldError("has no amount: amount, debit and credit are all empty")
        return credit - debit

    def __call__(self, row_number: int, row: Sequence[str]) -> ParsedTxn:
        raw_date = self._get(row, "date")
        booked = self.dates.get(raw_date)
        if booked is None:
            booked = parse_datetime(raw_date, self.date_order)
            self.dates[raw_date] = booked
        currency = self._currency(row)
        amount = self._amount(row, currency)
        extra = _extras(row, self.headers, self.used)
        value_date = None
        value_text = self._get(row, "value_date")
        if value_text:
            try:
                value_date = parse_date(value_text, self.date_order, label="value date")
            except FieldError:
                extra["unparsed_value_date"] = value_text
        balance = None
        balance_text = self._get(row, "balance")
        if balance_text:
            try:
                balance = parse_amount(balance_text, currency, label="balance")
            except FieldError:
                extra["unparsed_balance"] = balance_text
        mode = self._get(row, "mode")
        indicator = self._get(row, "indicator")
        if indicator:
            extra["indicator"] = indicator
        return ParsedTxn(
            row_number=row_number,
            booked_at=booked,
            amount_minor=amount,
            currency=currency,
            narration=self._get(row, "narration"),
            account_id=self._get(row, "account") or self.account_id,
            value_date=value_date,
            merchant=self._get(row, "merchant") or None,
            mode=mode or None,
            balance_after_minor=balance,
            txn_id=self._get(row, "txn_id") or None,
            category_hint=self._get(row, "category") or None,
            extra=extra,
        )


def parse_csv(
    data: bytes,
    *,
    mapping: ColumnMapping | None = None,
    default_currency: str | None = None,
    account_id: str | None = None,
    date_order: str | None = None,
) -> ParseResult:
    """Parse a CSV statement; the layout (Birmingham, Berka, generic) is read from the header.

    A ``mapping`` forces the generic layout. Raises :class:`ParseError` only when the file as a
    whole is unusable; bad rows become rejections.
    """
    if date_order is not None and date_order not in DATE_ORDERS:
        raise ParseError(f"date_order {date_order!r} is not one of {', '.join(DATE_ORDERS)}")
    if default_currency is not None:
        try:
            default_currency = normalize_currency(default_currency)
        except MoneyError as exc:
            raise ParseError(f"default currency: {exc}") from exc
    rows = read_rows(data)
    candidates = [(i, row) for i, row in enumerate(rows) if not _blank(row)]
    if not candidates:
        raise ParseError("the file has no rows")
    first_headers = candidates[0][1]
    mapping_error: ParseError | None = None
    for index, headers in candidates[:_HEADER_SEARCH_ROWS]:
        normalized = {_norm(h) for h in headers}
        body = rows[index + 1 :]
        table = _Table(headers, body)
        builder: _RowBuilder
        if mapping is None and normalized >= _BIRMINGHAM:
            builder, layout = _Birmingham(table, account_id), "birmingham"
        elif mapping is None and normalized >= _BERKA:
            builder, layout = _Berka(table, account_id), "berka"
        else:
            try:
                columns = _guess_columns(headers, mapping)
            except ParseError as exc:
                mapping_error = mapping_error or exc
                continue
            if not _usable(columns):
                continue
            builder = _Generic(
                table,
                columns,
                default_currency=default_currency,
                account_id=account_id,
                date_order=date_order,
            )
            layout = "generic"
        result = ParseResult(format=f"csv:{layout}")
        _run_rows(body, len(headers), builder, result)
        return result
    if mapping_error is not None:
        raise mapping_error
    if mapping is not None:
        raise ParseError(
            "no usable header: the mapping needs a date column and an amount, debit or credit "
            "column"
        )
    raise ParseError(
        "no usable header: expected a date column and an amount (or debit/credit) column; "
        f"the first row has: {', '.join(repr(h.strip()) for h in first_headers[:20])}"
    )
