"""Validated analytics queries: every value checked against an allow-list or a strict format.

The gateway turns query strings into these frozen dataclasses (raising 400 with the reason);
the Analytics deployment only ever sees validated values, and binds them as SQL parameters.
Values that look like SQL (quotes around operators, ``;``, comments) are refused outright:
they are never executed anyway, but a clear 400 tells a probing client it got nowhere.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation

from scale_ray.errors import bad_request
from scale_ray.money import MoneyError, normalize_currency, to_minor
from scale_ray.taxonomy import CategoryError, normalize_path

DIRECTIONS = ("spend", "income", "all")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MEASURES = ("total", "count", "average_per_txn", "average_per_period")
PERIODS = ("day", "week", "month", "year")
GROUP_BYS = (
    "category", "category_group", "merchant", "account", "weekday", "hour", "day_of_month",
    "month_of_year", "year", "month",
)  # fmt: skip
#: Group keys that are a property of the calendar period, so "average per period" is defined.
CALENDAR_GROUPS = {
    "day": {"weekday", "day_of_month", "month_of_year", "year", "month"},
    "week": {"year"},
    "month": {"month_of_year", "year", "month"},
    "year": {"year"},
}
MAX_RANGE_DAYS = 366 * 30
_LAST_RE = re.compile(r"^(\d{1,3})([dwmy])$")
_SQLISH = re.compile(
    r"--|/\*|\*/|;|=|\"|\\|\bunion\s+(all\s+)?select\b|\bdrop\s+table\b|\binsert\s+into\b"
    r"|\bdelete\s+from\b|sleep\s*\(|information_schema|\bor\s+\d+\s*[<>]",
    re.I,
)
_MERCHANT_RE = re.compile(r"^[\w &'.,/()+#@*:!-]{1,100}$")


def _reject_sqlish(name: str, value: str) -> None:
    if _SQLISH.search(value) or any(ord(ch) < 32 for ch in value):
        raise bad_request(
            f"query parameter {name} contains characters or keywords that are not allowed",
            {"parameter": name},
            code="invalid_parameter",
        )


@dataclass(frozen=True)
class DateRange:
    """Local dates ``[start, end)`` of the bank's own clock."""

    start: date
    end: date

    def to_json(self) -> dict[str, str]:
        return {"from": self.start.isoformat(), "to": self.end.isoformat()}


@dataclass(frozen=True)
class Common:
    """What every analytics query carries: a ledger version (time travel) and a currency."""

    version: int | None = None
    currency: str | None = None


@dataclass(frozen=True)
class CategoriesQuery:
    range: DateRange
    parent: str | None = None
    direction: str = "spend"
    common: Common = field(default_factory=Common)


@dataclass(frozen=True)
class HeatmapQuery:
    range: DateRange
    category: str | None = None
    direction: str = "spend"
    common: Common = field(default_factory=Common)


@dataclass(frozen=True)
class MerchantsQuery:
    range: DateRange
    by: str = "spend"
    limit: int = 10
    category: str | None = None
    direction: str = "spend"
    common: Common = field(default_factory=Common)


@dataclass(frozen=True)
class CashflowQuery:
    range: DateRange
    common: Common = field(default_factory=Common)


@dataclass(frozen=True)
class CompareQuery:
    range: DateRange
    measure: str = "total"
    per: str | None = None
    group_by: tuple[str, ...] = ()
    category: tuple[str, ...] = ()
    merchant: str | None = None
    weekdays: tuple[int, ...] = ()
    hour_from: int | None = None
    hour_to: int | None = None
    min_amount_minor: int | None = None
    max_amount_minor: int | None = None
    account_id: str | None = None
    direction: str = "spend"
    limit: int = 100
    common: Common = field(default_factory=Common)


@dataclass(frozen=True)
class OverviewQuery:
    month: date | None = None
    today: date | None = None
    common: Common = field(default_factory=Common)


# -- parsing ------------------------------------------------------------------------------


class Params:
    """Typed access to a query string with an allow-list of names."""

    def __init__(self, query: Mapping[str, str], allowed: set[str], multi: Mapping[str, list[str]]):
        unknown = sorted(set(query) - allowed)
        if unknown:
            raise bad_request(
                f"unknown query parameter(s): {', '.join(unknown)}", {"allowed": sorted(allowed)}
            )
        self.query = query
        self.multi = multi

    def str(self, name: str, max_len: int = 200) -> str | None:
        raw = self.query.get(name)
        if raw is None or raw.strip() == "":
            return None
        if len(raw) > max_len:
            raise bad_request(f"query parameter {name} is longer than {max_len} characters")
        _reject_sqlish(name, raw)
        return raw.strip()

    def choice(self, name: str, choices: tuple[str, ...], default: str | None) -> str | None:
        raw = self.str(name, 40)
        if raw is None:
            return default
        if raw.lower() not in choices:
            raise bad_request(
                f"query parameter {name} must be one of {', '.join(choices)}, got {raw!r}",
                {"parameter": name, "allowed": list(choices)},
            )
        return raw.lower()

    def int(
        self, name: str, *, minimum: int | None = None, maximum: int | None = None
    ) -> int | None:
        raw = self.str(name, 20)
        if raw is None:
            return None
        if not re.fullmatch(r"-?\d+", raw):
            raise bad_request(f"query parameter {name} must be an integer, got {raw!r}")
        value = int(raw)
        if minimum is not None and value < minimum:
            raise bad_request(f"query parameter {name} must be >= {minimum}")
        if maximum is not None and value > maximum:
            raise bad_request(f"query parameter {name} must be <= {maximum}")
        return value

    def date(self, name: str) -> date | None:
        raw = self.str(name, 40)
        if raw is None:
            return None
        try:
            if len(raw) == 10:
                return date.fromisoformat(raw)
            return datetime.fromisoformat(raw.replace("Z", "+00:00")).date()
        except ValueError as exc:
            raise bad_request(
                f"query parameter {name} must be an ISO date (YYYY-MM-DD), got {raw!r}"
            ) from exc

    def month(self, name: str) -> date | None:
        raw = self.str(name, 10)
        if raw is None:
            return None
        if not re.fullmatch(r"\d{4}-\d{2}", raw):
            raise bad_request(f"query parameter {name} must be a month YYYY-MM, got {raw!r}")
        try:
            return date(int(raw[:4]), int(raw[5:]), 1)
        except ValueError as exc:
            raise bad_request(f"query parameter {name}: {exc}") from exc

    def category(self, name: str) -> str | None:
        raw = self.str(name, 200)
        if raw is None:
            return None
        try:
            return normalize_path(raw)
        except CategoryError as exc:
            raise bad_request(f"query parameter {name}: {exc}", code="invalid_parameter") from exc

    def categories(self, name: str) -> tuple[str, ...]:
        values = [v for raw in self.multi.get(name, []) for v in raw.split(",") if v.strip()]
        out = []
        for value in values[:20]:
            _reject_sqlish(name, value)
            try:
                out.append(normalize_path(value))
            except CategoryError as exc:
                raise bad_request(
                    f"query parameter {name}: {exc}", code="invalid_parameter"
                ) from exc
        return tuple(out)

    def merchant(self, name: str) -> str | None:
        raw = self.str(name, 100)
        if raw is None:
            return None
        if not _MERCHANT_RE.match(raw):
            raise bad_request(
                f"query parameter {name} may hold letters, digits, spaces "
                "and & ' . , / ( ) + # @ * : ! -",
                code="invalid_parameter",
            )
        return raw

    def currency(self) -> str | None:
        raw = self.str("currency", 3)
        if raw is None:
            return None
        try:
            return normalize_currency(raw)
        except MoneyError as exc:
            raise bad_request(str(exc), code="invalid_parameter") from exc

    def common(self) -> Common:
        return Common(version=self.int("version", minimum=0), currency=self.currency())

    def amount(self, name: str, currency: str | None) -> int | None:
        minor = self.int(f"{name}_minor", minimum=0)
        raw = self.str(name, 30)
        if raw is None:
            return minor
        if minor is not None:
            raise bad_request(f"give {name} or {name}_minor, not both")
        try:
            value = Decimal(raw)
        except InvalidOperation as exc:
            raise bad_request(f"query parameter {name} must be a decimal amount") from exc
        if value < 0:
            raise bad_request(f"query parameter {name} is a magnitude and must be >= 0")
        try:
            # Without a currency filter the bound is read with two decimals ("XXX" is ISO
            # 4217's "no currency", exponent 2), as GET /v1/transactions does.
            return to_minor(value, currency or "XXX")
        except MoneyError as exc:
            raise bad_request(f"query parameter {name}: {exc}") from exc

    def range(self, today: date, default_days: int | None = None) -> DateRange:
        """``from``/``to`` (to exclusive), or ``last=5y|6m|30d|2w``; default: this month."""
        start, end, last = self.date("from"), self.date("to"), self.str("last", 5)
        if last is not None:
            if start is not None:
                raise bad_request("give last or from, not both")
            m = _LAST_RE.match(last.lower())
            if not m:
                raise bad_request("query parameter last must look like 30d, 8w, 6m or 5y")
            n, unit = int(m.group(1)), m.group(2)
            end = end or today + timedelta(days=1)
            if unit == "d":
                start = end - timedelta(days=n)
            elif unit == "w":
                start = end - timedelta(weeks=n)
            elif unit == "m":
                start = add_months(end.replace(day=1), -n) if end.day == 1 else _back_months(end, n)
            else:
                start = _back_months(end, 12 * n)
        if end is None:
            end = today + timedelta(days=1)
        if start is None:
            start = end - timedelta(days=default_days) if default_days else today.replace(day=1)
        if start >= end:
            raise bad_request("from must be before to (to is exclusive)")
        if (end - start).days > MAX_RANGE_DAYS:
            raise bad_request("the date range is longer than 30 years")
        return DateRange(start, end)


def add_months(d: date, months: int) -> date:
    """The first of the month ``months`` after ``d``'s month (negative goes back)."""
    index = d.year * 12 + d.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def _back_months(d: date, months: int) -> date:
    first = add_months(d.replace(day=1), -months)
    last_day = (add_months(first, 1) - timedelta(days=1)).day
    return first.replace(day=min(d.day, last_day))


def today_utc() -> date:
    return datetime.now(UTC).date()


_COMMON = {"version", "currency"}
_RANGE = {"from", "to", "last"}


def parse_overview(query: Mapping[str, str], today: date) -> OverviewQuery:
    p = Params(query, _COMMON | {"month"}, {})
    return OverviewQuery(month=p.month("month"), today=today, common=p.common())


def parse_categories(query: Mapping[str, str], today: date) -> CategoriesQuery:
    p = Params(query, _COMMON | _RANGE | {"parent", "direction"}, {})
    return CategoriesQuery(
        range=p.range(today),
        parent=p.category("parent"),
        direction=p.choice("direction", ("spend", "income"), "spend") or "spend",
        common=p.common(),
    )


def parse_heatmap(query: Mapping[str, str], today: date) -> HeatmapQuery:
    p = Params(query, _COMMON | _RANGE | {"category", "direction"}, {})
    return HeatmapQuery(
        range=p.range(today, default_days=365),
        category=p.category("category"),
        direction=p.choice("direction", DIRECTIONS, "spend") or "spend",
        common=p.common(),
    )


def parse_merchants(query: Mapping[str, str], today: date) -> MerchantsQuery:
    p = Params(query, _COMMON | _RANGE | {"by", "limit", "category", "direction"}, {})
    return MerchantsQuery(
        range=p.range(today, default_days=365),
        by=p.choice("by", ("spend", "count"), "spend") or "spend",
        limit=p.int("limit", minimum=1, maximum=100) or 10,
        category=p.category("category"),
        direction=p.choice("direction", ("spend", "income"), "spend") or "spend",
        common=p.common(),
    )


def parse_cashflow(query: Mapping[str, str], today: date) -> CashflowQuery:
    p = Params(query, _COMMON | _RANGE, {})
    r = p.range(today, default_days=None)
    if p.query.get("from") is None and p.query.get("last") is None:
        r = DateRange(add_months(today.replace(day=1), -11), r.end)
    # Months are whole: widen to month boundaries.
    start = r.start.replace(day=1)
    end = r.end if r.end.day == 1 else add_months(r.end, 1)
    return CashflowQuery(range=DateRange(start, end), common=p.common())


def parse_compare(
    query: Mapping[str, str], multi: Mapping[str, list[str]], today: date
) -> CompareQuery:
    allowed = _COMMON | _RANGE | {
        "measure", "per", "group_by", "category", "merchant", "weekday", "hour_from", "hour_to",
        "min_amount", "max_amount", "min_amount_minor", "max_amount_minor", "account_id",
        "direction", "limit",
    }  # fmt: skip
    p = Params(query, allowed, multi)
    measure = p.choice("measure", MEASURES, "total") or "total"
    per = p.choice("per", PERIODS, None)
    if measure == "average_per_period" and per is None:
        raise bad_request("measure=average_per_period needs per=day|week|month|year")
    if measure != "average_per_period" and per is not None:
        raise bad_request("per is only used with measure=average_per_period")
    group_by: list[str] = []
    for raw in multi.get("group_by", []):
        for name in raw.split(","):
            name = name.strip().lower()
            if not name:
                continue
            _reject_sqlish("group_by", name)
            if name not in GROUP_BYS:
                raise bad_request(
                    f"group_by {name!r} is not allowed",
                    {"parameter": "group_by", "allowed": list(GROUP_BYS)},
                    code="invalid_parameter",
                )
            if name not in group_by:
                group_by.append(name)
    if len(group_by) > 2:
        raise bad_request("group_by takes at most two keys")
    if per is not None:
        bad = [g for g in group_by if g not in CALENDAR_GROUPS[per] and g not in _NON_TIME]
        if bad:
            raise bad_request(
                f"average per {per} cannot be grouped by {', '.join(bad)}; "
                f"allowed: {', '.join(sorted(CALENDAR_GROUPS[per] | _NON_TIME))}"
            )
    weekdays: list[int] = []
    for raw in multi.get("weekday", []):
        for name in raw.split(","):
            name = name.strip().lower()[:3]
            if not name:
                continue
            if name not in WEEKDAYS:
                raise bad_request(
                    "weekday must be mon, tue, wed, thu, fri, sat or sun",
                    {"parameter": "weekday"},
                    code="invalid_parameter",
                )
            weekdays.append(WEEKDAYS.index(name))
    common = p.common()
    account_id = p.str("account_id", 100)
    return CompareQuery(
        range=p.range(today, default_days=365),
        measure=measure,
        per=per,
        group_by=tuple(group_by),
        category=p.categories("category"),
        merchant=p.merchant("merchant"),
        weekdays=tuple(sorted(set(weekdays))),
        hour_from=p.int("hour_from", minimum=0, maximum=23),
        hour_to=p.int("hour_to", minimum=1, maximum=24),
        min_amount_minor=p.amount("min_amount", common.currency),
        max_amount_minor=p.amount("max_amount", common.currency),
        account_id=account_id,
        direction=p.choice("direction", DIRECTIONS, "spend") or "spend",
        limit=p.int("limit", minimum=1, maximum=1000) or 100,
        common=common,
    )


_NON_TIME = {"category", "category_group", "merchant", "account"}

__all__ = [
    "CashflowQuery",
    "CategoriesQuery",
    "Common",
    "CompareQuery",
    "DateRange",
    "HeatmapQuery",
    "MerchantsQuery",
    "OverviewQuery",
    "add_months",
    "parse_cashflow",
    "parse_categories",
    "parse_compare",
    "parse_heatmap",
    "parse_merchants",
    "parse_overview",
    "today_utc",
]
