"""Labelled merchant strings for training and evaluating the HypCD categorizer.

The main real source is Birmingham City Council's purchase-card data (``/work/shared/data``
README): real merchant strings labelled with an expense code (``TRANS CAC CODE 1``, e.g.
``K020`` "Vehicle Fuel") whose leading letter groups the codes — the two-level hierarchy the
hyperbolic model is evaluated on. The monthly files are not uniform: ten use ``;`` and two use
``,``, one header is ``"; "``-separated, some are cp1252 rather than UTF-8, the later ones add
currency columns, amounts carry thousands separators (``"1,849.80"``), and 49 rows have no code.
:func:`read_birmingham` absorbs all of that; :func:`read_labelled_csv` reads any other labelled
hierarchy. Amounts are exact integer minor units (never floats).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

from scale_ray.money import MoneyError, to_minor

_ENCODINGS = ("utf-8-sig", "cp1252", "latin-1")
_MERCHANT = "MERCHANT NAME"
_CODE = "TRANS CAC CODE 1"
_CODE_NAME = "TRANS CAC DESC 1"
_DATE = "TRANS DATE"
_CARD = "CARD NUMBER"
_AMOUNT_COLUMNS = (
    ("BILLING GROSS AMT", "BILLING CUR CODE"),
    ("ORIGINAL GROSS AMT", "ORIGINAL CUR"),
)
_DATE_FORMATS = ("%d/%m/%y", "%d/%m/%Y", "%Y-%m-%d")


@dataclass(frozen=True)
class LabelledRows:
    """Parallel lists, one entry per labelled row; ``names`` maps a leaf label to its name."""

    texts: list[str]
    labels: list[str]
    parents: list[str]
    names: dict[str, str]
    dates: list[date | None]
    amounts_minor: list[int | None]
    #: Rows read but left out for an empty text or label.
    skipped: int = 0
    #: Who made each transaction (Birmingham: the masked card, one spender), for user memory.
    users: list[str] | None = None

    def __post_init__(self) -> None:
        sizes = {
            len(self.texts),
            len(self.labels),
            len(self.parents),
            len(self.dates),
            len(self.amounts_minor),
        }
        if self.users is not None:
            sizes.add(len(self.users))
        if len(sizes) != 1:
            raise ValueError("LabelledRows lists must all have the same length")

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: Iterable[int]) -> LabelledRows:
        """The rows at ``indices`` (in that order); ``names`` keeps the labels still present."""
        idx = list(indices)
        labels = [self.labels[i] for i in idx]
        present = set(labels)
        return LabelledRows(
            texts=[self.texts[i] for i in idx],
            labels=labels,
            parents=[self.parents[i] for i in idx],
            names={k: v for k, v in self.names.items() if k in present},
            dates=[self.dates[i] for i in idx],
            amounts_minor=[self.amounts_minor[i] for i in idx],
            skipped=self.skipped,
            users=None if self.users is None else [self.users[i] for i in idx],
        )

    def paths(self) -> list[str]:
        """``"parent/label"`` per row (the label alone when it already starts with its parent)."""
        return [
            label if label.startswith(f"{parent}/") else f"{parent}/{label}"
            for parent, label in zip(self.parents, self.labels, strict=True)
        ]


def _csv_files(paths: Sequence[str | Path]) -> list[Path]:
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(sorted(path.glob("*.csv")))
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"no CSV file or folder at {path}")
    return files


def _decode(data: bytes) -> str:
    for encoding in _ENCODINGS:
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise AssertionError("latin-1 decodes any bytes")  # pragma: no cover


def _column(name: str) -> str:
    return " ".join(name.split()).upper()


def _read_table(path: Path, sep: str | None = None) -> tuple[list[str], list[list[str]]]:
    """Header (names trimmed, single-spaced, upper-case) and the non-blank rows of one CSV."""
    text = _decode(path.read_bytes())
    first_line = text.split("\n", 1)[0]
    if sep is None:
        sep = ";" if first_line.count(";") > first_line.count(",") else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep)
    header = next(reader, None)
    if header is None:
        raise ValueError(f"{path}: the file is empty")
    rows = [row for row in reader if any(cell.strip() for cell in row)]
    return [_column(h) for h in header], rows


def _require(path: Path, header: list[str], columns: Sequence[str]) -> list[int]:
    missing = [c for c in columns if _column(c) not in header]
    if missing:
        raise ValueError(f"{path}: missing required column(s) {', '.join(missing)}")
    return [header.index(_column(c)) for c in columns]


def _cell(row: list[str], index: int | None) -> str:
    if index is None or index >= len(row):
        return ""
    return row[index].strip()


def _parse_date(text: str) -> date | None:
    for fmt in _DATE_FORMATS:
        try:
            return datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    return None


def _parse_amount(text: str, currency: str) -> int | None:
    if not text:
        return None
    try:
        return to_minor(text, currency or "GBP")
    except MoneyError:
        return None


def read_birmingham(
    paths: Sequence[str | Path],
    start: date | None = None,
    end: date | None = None,
) -> LabelledRows:
    """Birmingham purchase-card rows from CSV files and/or folders of ``*.csv`` (sorted).

    Leaf label: ``TRANS CAC CODE 1`` upper-cased (``K020``); parent: its first character;
    name: ``TRANS CAC DESC 1`` (the first one seen). Amount: ``BILLING GROSS AMT`` when present,
    else ``ORIGINAL GROSS AMT``, in minor units of its currency. With ``start``/``end``
    (inclusive) only rows dated in that range are kept (undated rows then drop out too).
    Raises ``ValueError`` naming the file when ``MERCHANT NAME`` or ``TRANS CAC CODE 1`` is
    missing.
    """
    texts: list[str] = []
    labels: list[str] = []
    parents: list[str] = []
    names: dict[str, str] = {}
    dates: list[date | None] = []
    amounts: list[int | None] = []
    users: list[str] = []
    skipped = 0
    for path in _csv_files(paths):
        header, rows = _read_table(path)
        merchant_i, code_i = _require(path, header, (_MERCHANT, _CODE))

        def optional(name: str, header: list[str] = header) -> int | None:
            return header.index(name) if name in header else None

        name_i, date_i = optional(_CODE_NAME), optional(_DATE)
        card_i = optional(_CARD)
        amount_cols = [(optional(a), optional(c)) for a, c in _AMOUNT_COLUMNS]
        for row in rows:
            merchant, code = _cell(row, merchant_i), _cell(row, code_i).upper()
            if not merchant or not code:
                skipped += 1
                continue
            when = _parse_date(_cell(row, date_i))
            if (start or end) and (
                when is None or (start and when < start) or (end and when > end)
            ):
                continue
            amount = None
            for amount_i, currency_i in amount_cols:
                if _cell(row, amount_i):
                    amount = _parse_amount(_cell(row, amount_i), _cell(row, currency_i))
                    break
            texts.append(merchant)
            labels.append(code)
            parents.append(code[0])
            if names.get(code, code) == code:
                names[code] = _cell(row, name_i) or code
            dates.append(when)
            amounts.append(amount)
            users.append(_cell(row, card_i))
    return LabelledRows(texts, labels, parents, names, dates, amounts, skipped=skipped, users=users)


def read_labelled_csv(
    paths: Sequence[str | Path],
    text_column: str,
    label_column: str,
    parent_column: str | None = None,
    sep: str | None = None,
) -> LabelledRows:
    """Any labelled merchant CSV(s): ``text_column`` → text, ``label_column`` → leaf label.

    The parent is ``parent_column`` when given, else the label's first ``/`` segment (the label
    itself when it has none). A label's name is its last ``/`` segment. ``sep`` is sniffed
    (``;`` or ``,``) per file when not given. Dates and amounts are not read (``None``).
    """
    texts: list[str] = []
    labels: list[str] = []
    parents: list[str] = []
    names: dict[str, str] = {}
    skipped = 0
    for path in _csv_files(paths):
        header, rows = _read_table(path, sep)
        required = [text_column, label_column] + ([parent_column] if parent_column else [])
        indices = _require(path, header, required)
        text_i, label_i = indices[0], indices[1]
        parent_i = indices[2] if parent_column else None
        for row in rows:
            text, label = _cell(row, text_i), _cell(row, label_i)
            parent = _cell(row, parent_i) if parent_i is not None else label.split("/", 1)[0]
            if not text or not label or not parent:
                skipped += 1
                continue
            texts.append(text)
            labels.append(label)
            parents.append(parent.strip())
            names.setdefault(label, label.rsplit("/", 1)[-1].strip())
    none: list[None] = [None] * len(texts)
    return LabelledRows(texts, labels, parents, names, list(none), list(none), skipped=skipped)
