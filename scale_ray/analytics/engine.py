"""The dashboard's numbers: one user's ledger at one snapshot, categorized, queried in DuckDB.

A :class:`UserView` is the user's transactions at one ``transactions`` version, with the
category each one resolves to (correction > rule > model > source hint), plus their accounts.
Views are cached per replica and keyed by *fingerprints* of the user's partition (the set of
data files of their bucket), not by table version: a commit for another bucket, or for another
table, leaves the user's view valid, so under continuous ingest most requests still hit.

Every query is parameterized; the values come from :mod:`scale_ray.analytics.params`. Money is
summed as int64 minor units and averaged with :class:`decimal.Decimal`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from deltalake.exceptions import DeltaError

from scale_ray.analytics.budgets import BudgetStatus, period_range
from scale_ray.analytics.categorize import categorize_table, merchant_key
from scale_ray.analytics.params import (
    CashflowQuery,
    CategoriesQuery,
    CompareQuery,
    DateRange,
    HeatmapQuery,
    MerchantsQuery,
    OverviewQuery,
    add_months,
    today_utc,
)
from scale_ray.analytics.state import DUCKDB_CONFIG, StateSnapshot, UserStateStore
from scale_ray.errors import bad_request
from scale_ray.ledger.delta import SnapshotCache
from scale_ray.ledger.keys import user_bucket
from scale_ray.ledger.reader import UnknownVersion
from scale_ray.money import from_minor
from scale_ray.settings import Settings
from scale_ray.taxonomy import SEPARATOR, TRANSFERS, all_paths

WEEKDAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

GROUP_SQL: dict[str, str] = {
    "category": "category",
    "category_group": "split_part(category, '/', 1)",
    "merchant": "merchant_key",
    "account": "account_id",
    "weekday": "(isodow(local_at) - 1)",
    "hour": "hour(local_at)",
    "day_of_month": "day(local_at)",
    "month_of_year": "month(local_at)",
    "year": "year(local_at)",
    "month": "strftime(local_at, '%Y-%m')",
}


def money(minor: int, currency: str) -> dict[str, Any]:
    return {"amount_minor": int(minor), "amount": from_minor(int(minor), currency)}


def ratio(numerator: int, denominator: int) -> float | None:
    """A rate for display (not money): four decimals, None when undefined."""
    if not denominator:
        return None
    return round(numerator / denominator, 4)


def divide_minor(total: int, count: int) -> int:
    """``total / count`` rounded half-even to whole minor units (exact, no floats)."""
    if count == 0:
        return 0
    return int((Decimal(total) / Decimal(count)).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def _local(d: date) -> datetime:
    return datetime(d.year, d.month, d.day)


@dataclass
class UserView:
    """One user's categorized transactions and accounts at one snapshot."""

    user_id: str
    version: int
    state: StateSnapshot
    table: pa.Table
    accounts: list[dict[str, Any]]
    currencies: list[str]
    memo: dict[str, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def currency(self, requested: str | None) -> str:
        """The requested currency, else the one most of the user's transactions are in."""
        if requested:
            return requested
        if self.currencies:
            return self.currencies[0]
        return self.accounts[0]["currency"] if self.accounts else "GBP"

    def categories(self) -> set[str]:
        """Every category path (and ancestor) in use, in rules or in corrections."""
        cached = self.memo.get("categories")
        if cached is not None:
            return cached
        used = set(pc.unique(self.table.column("category")).to_pylist()) if self.table else set()
        for kind in ("rule", "correction"):
            used.update(r["category"] for r in self.state.of(kind) if r.get("category"))
        out: set[str] = set()
        for path in used:
            parts = path.split(SEPARATOR)
            out.update(SEPARATOR.join(parts[: i + 1]) for i in range(len(parts)))
        self.memo["categories"] = out
        return out


class AnalyticsEngine:
    """Snapshot analytics for one process (thread-safe); the Analytics deployment owns one."""

    def __init__(self, settings: Settings, *, cache_rows: int = 4_000_000) -> None:
        self.settings = settings
        self.transactions = SnapshotCache(settings, "transactions")
        self.accounts = SnapshotCache(settings, "accounts")
        self.flags_table = SnapshotCache(settings, "flags")
        self.notifications_table = SnapshotCache(settings, "notifications")
        self.state = UserStateStore(settings)
        # Per-user tables are small: one thread per query beats DuckDB's scheduling overhead;
        # concurrency comes from concurrent requests.
        self._db = duckdb.connect(config={"threads": 1, **DUCKDB_CONFIG})
        self._local = threading.local()
        self._lock = threading.Lock()
        self._slices: OrderedDict[tuple[str, str, str], pa.Table] = OrderedDict()
        self._views: OrderedDict[tuple[str, ...], UserView] = OrderedDict()
        self._cache_rows = cache_rows
        self._rows_cached = 0
        self.stats = {"view_hits": 0, "view_misses": 0, "slice_hits": 0, "slice_misses": 0}

    # -- caching -------------------------------------------------------------------------

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        """This thread's DuckDB cursor (cursor creation costs as much as a small query)."""
        cur = getattr(self._local, "cursor", None)
        if cur is None:
            with self._lock:
                cur = self._db.cursor()
            self._local.cursor = cur
        return cur

    def _sql(self, sql: str, params: list[Any], **tables: Any) -> list[dict[str, Any]]:
        cur = self._cursor()
        for name, table in tables.items():
            cur.register(name, table)
        result = cur.execute(sql, params)
        columns = [d[0] for d in result.description]
        return [dict(zip(columns, row, strict=True)) for row in result.fetchall()]

    def _arrow(self, sql: str, params: list[Any], **tables: Any) -> pa.Table:
        cur = self._cursor()
        for name, table in tables.items():
            cur.register(name, table)
        return cur.sql(sql, params=params).to_arrow_table()

    def _slice(
        self, cache: SnapshotCache, user_id: str, version: int | None = None
    ) -> tuple[pa.Table, int, str]:
        """The user's rows of a table at ``version`` (latest when None), cached by fingerprint."""
        bucket = user_bucket(user_id, self.settings.num_buckets)
        latest = cache.latest_version()
        if version is None:
            version = latest
        elif version > latest:
            raise UnknownVersion(f"version {version} does not exist yet (latest is {latest})")
        try:
            fingerprint = cache.fingerprint(version, bucket)
        except DeltaError as exc:
            raise UnknownVersion(f"version {version} is not available: {exc}") from exc
        key = (cache.name, user_id, fingerprint)
        with self._lock:
            hit = self._slices.get(key)
            if hit is not None:
                self._slices.move_to_end(key)
                self.stats["slice_hits"] += 1
                return hit, version, fingerprint
        dataset = cache.dataset(version, bucket)
        table = dataset.to_table(filter=pc.field("user_id") == user_id)
        with self._lock:
            self.stats["slice_misses"] += 1
            self._slices[key] = table
            self._rows_cached += table.num_rows
            self._evict()
        return table, version, fingerprint

    def _evict(self) -> None:
        while self._rows_cached > self._cache_rows and len(self._slices) > 1:
            _, old = self._slices.popitem(last=False)
            self._rows_cached -= old.num_rows
        while len(self._views) > 20_000:
            self._views.popitem(last=False)

    def view(self, user_id: str, version: int | None = None) -> UserView:
        """The user's categorized view at ``version`` (latest when None)."""
        raw, version, txn_fp = self._slice(self.transactions, user_id, version)
        state = self.state.snapshot(user_id)
        accounts, _, acc_fp = self._slice(self.accounts, user_id)
        key = (user_id, txn_fp, state.fingerprint, acc_fp)
        with self._lock:
            hit = self._views.get(key)
            if hit is not None:
                self._views.move_to_end(key)
                self.stats["view_hits"] += 1
                return hit if hit.version == version else _revision(hit, version, state)
        table = self._categorize(user_id, raw, state)
        currencies = [
            r["currency"]
            for r in self._sql(
                "SELECT currency, count(*) AS n FROM c GROUP BY currency ORDER BY n DESC, currency",
                [],
                c=table,
            )
        ]
        view = UserView(user_id, version, state, table, _accounts(accounts), currencies)
        with self._lock:
            self.stats["view_misses"] += 1
            self._views[key] = view
            self._evict()
        return view

    def _categorize(self, user_id: str, raw: pa.Table, state: StateSnapshot) -> pa.Table:
        corrections = {r["key"]: r["category"] for r in state.of("correction")}
        rules = sorted(
            state.of("rule"),
            key=lambda r: (r["match"] != "exact", -len(r["pattern"]), -r["seq"]),
        )
        return categorize_table(
            raw, corrections, [(r["pattern"], r["match"], r["category"]) for r in rules]
        )

    # -- shared pieces -------------------------------------------------------------------

    @staticmethod
    def _filters(
        currency: str,
        rng: DateRange | None,
        direction: str,
        categories: tuple[str, ...] = (),
    ) -> tuple[list[str], list[Any], str]:
        """WHERE clauses, their parameters, and the amount expression for ``direction``."""
        where = ["currency = ?"]
        params: list[Any] = [currency]
        if rng is not None:
            where += ["local_at >= ?", "local_at < ?"]
            params += [_local(rng.start), _local(rng.end)]
        amount = "amount_minor"
        if direction == "spend":
            where.append("amount_minor < 0 AND split_part(category, '/', 1) <> ?")
            params.append(TRANSFERS)
            amount = "(-amount_minor)"
        elif direction == "income":
            where.append("amount_minor > 0 AND split_part(category, '/', 1) <> ?")
            params.append(TRANSFERS)
        if categories:
            where.append(
                "("
                + " OR ".join(["(category = ? OR starts_with(category, ?))"] * len(categories))
                + ")"
            )
            for cat in categories:
                params += [cat, cat + SEPARATOR]
        return where, params, amount

    def _check_category(self, view: UserView, path: str | None) -> None:
        if path is None:
            return
        if path not in _SHIPPED and path not in view.categories():
            raise bad_request(
                f"unknown category {path!r}; GET /v1/categories lists them",
                {"category": path},
                code="unknown_category",
            )

    @staticmethod
    def _envelope(view: UserView, currency: str, **extra: Any) -> dict[str, Any]:
        return {
            "currency": currency,
            "currencies": view.currencies,
            "snapshot_version": view.version,
            **extra,
        }

    # -- endpoints -----------------------------------------------------------------------

    def categories(self, user_id: str, q: CategoriesQuery) -> dict[str, Any]:
        view = self.view(user_id, q.common.version)
        self._check_category(view, q.parent)
        cur = view.currency(q.common.currency)
        where, params, amount = self._filters(
            cur, q.range, q.direction, (q.parent,) if q.parent else ()
        )
        depth = q.parent.count(SEPARATOR) + 2 if q.parent else 1
        rows = self._sql(
            f"""
            SELECT array_to_string(list_slice(string_split(category, '/'), 1, ?), '/') AS path,
                   sum({amount})::BIGINT AS total, count(*) AS n,
                   max(len(string_split(category, '/'))) > ? AS has_children
            FROM c WHERE {" AND ".join(where)} GROUP BY path ORDER BY total DESC, path
            """,
            [depth, depth, *params],
            c=view.table,
        )
        total = sum(int(r["total"]) for r in rows)
        items = [
            {
                "path": r["path"],
                "name": r["path"].rsplit(SEPARATOR, 1)[-1],
                # Rows categorized at the parent itself (no finer category) are listed as it.
                "is_parent_itself": r["path"] == q.parent,
                **money(r["total"], cur),
                "count": int(r["n"]),
                "share": ratio(int(r["total"]), total),
                "has_children": bool(r["has_children"]),
            }
            for r in rows
        ]
        return self._envelope(
            view,
            cur,
            parent=q.parent,
            level=depth,
            direction=q.direction,
            range=q.range.to_json(),
            total=money(total, cur),
            categories=items,
        )

    def heatmap(self, user_id: str, q: HeatmapQuery) -> dict[str, Any]:
        view = self.view(user_id, q.common.version)
        self._check_category(view, q.category)
        cur = view.currency(q.common.currency)
        where, params, amount = self._filters(
            cur, q.range, q.direction, (q.category,) if q.category else ()
        )
        cond = " AND ".join(where)
        cells = self._sql(
            f"SELECT (isodow(local_at) - 1) AS wd, hour(local_at) AS h, sum({amount})::BIGINT AS "
            f"total, count(*) AS n FROM c WHERE {cond} GROUP BY ALL",
            params,
            c=view.table,
        )
        amounts = [[0] * 24 for _ in range(7)]
        counts = [[0] * 24 for _ in range(7)]
        for r in cells:
            amounts[r["wd"]][r["h"]] = int(r["total"])
            counts[r["wd"]][r["h"]] = int(r["n"])
        days = self._sql(
            f"SELECT day(local_at) AS d, sum({amount})::BIGINT AS total, count(*) AS n "
            f"FROM c WHERE {cond} GROUP BY ALL",
            params,
            c=view.table,
        )
        by_day = {int(r["d"]): r for r in days}
        dom = [
            {
                "day": d,
                **money(int(by_day[d]["total"]) if d in by_day else 0, cur),
                "count": int(by_day[d]["n"]) if d in by_day else 0,
            }
            for d in range(1, 32)
        ]
        total = sum(sum(row) for row in amounts)
        return self._envelope(
            view,
            cur,
            category=q.category,
            direction=q.direction,
            range=q.range.to_json(),
            total=money(total, cur),
            weekday_hour={
                "weekdays": list(WEEKDAY_NAMES),
                "hours": list(range(24)),
                "amount_minor": amounts,
                "count": counts,
            },
            day_of_month=dom,
            time_basis="local time of the booking, as the bank reported it",
        )

    def merchants(self, user_id: str, q: MerchantsQuery) -> dict[str, Any]:
        view = self.view(user_id, q.common.version)
        self._check_category(view, q.category)
        cur = view.currency(q.common.currency)
        where, params, amount = self._filters(
            cur, q.range, q.direction, (q.category,) if q.category else ()
        )
        order = "total DESC, n DESC" if q.by == "spend" else "n DESC, total DESC"
        rows = self._sql(
            f"""
            SELECT merchant_key, mode(merchant_name) AS merchant, sum({amount})::BIGINT AS total,
                   count(*) AS n, min(local_at) AS first_at, max(local_at) AS last_at,
                   mode(category) AS category
            FROM c WHERE {" AND ".join(where)} AND merchant_key <> ''
            GROUP BY merchant_key ORDER BY {order}, merchant_key LIMIT ?
            """,
            [*params, q.limit],
            c=view.table,
        )
        items = [
            {
                "rank": i + 1,
                "merchant": r["merchant"],
                "merchant_key": r["merchant_key"],
                **money(r["total"], cur),
                "count": int(r["n"]),
                "average": money(divide_minor(int(r["total"]), int(r["n"])), cur),
                "category": r["category"],
                "first_at": r["first_at"].isoformat(),
                "last_at": r["last_at"].isoformat(),
            }
            for i, r in enumerate(rows)
        ]
        return self._envelope(
            view, cur, by=q.by, direction=q.direction, range=q.range.to_json(), merchants=items
        )

    def cashflow(self, user_id: str, q: CashflowQuery) -> dict[str, Any]:
        view = self.view(user_id, q.common.version)
        cur = view.currency(q.common.currency)
        rows = self._sql(
            """
            SELECT date_trunc('month', local_at)::DATE AS month,
                   coalesce(sum(amount_minor) FILTER (WHERE amount_minor > 0 AND NOT tr), 0)
                       ::BIGINT AS income,
                   coalesce(-sum(amount_minor) FILTER (WHERE amount_minor < 0 AND NOT tr), 0)
                       ::BIGINT AS expense,
                   sum(amount_minor)::BIGINT AS flow
            FROM (SELECT *, split_part(category, '/', 1) = ? AS tr FROM c)
            WHERE currency = ? AND local_at < ? GROUP BY ALL ORDER BY month
            """,
            [TRANSFERS, cur, _local(q.range.end)],
            c=view.table,
        )
        opening = sum(a["opening_balance_minor"] for a in view.accounts if a["currency"] == cur)
        by_month = {r["month"]: r for r in rows}
        balance = opening + sum(int(r["flow"]) for r in rows if r["month"] < q.range.start)
        months = []
        m = q.range.start
        while m < q.range.end:
            r = by_month.get(m)
            income = int(r["income"]) if r else 0
            expense = int(r["expense"]) if r else 0
            flow = int(r["flow"]) if r else 0
            balance += flow
            months.append(
                {
                    "month": m.strftime("%Y-%m"),
                    "income": money(income, cur),
                    "expense": money(expense, cur),
                    "net": money(income - expense, cur),
                    # Flows between own accounts and card repayments (not income or spend).
                    "transfers_net": money(flow - income + expense, cur),
                    "closing_balance": money(balance, cur),
                    "savings_rate": ratio(income - expense, income),
                }
            )
            m = add_months(m, 1)
        return self._envelope(
            view,
            cur,
            range=q.range.to_json(),
            opening_balance=money(opening, cur),
            months=months,
            balance_basis="opening balances of accounts in this currency plus every flow",
        )

    def compare(self, user_id: str, q: CompareQuery) -> dict[str, Any]:
        view = self.view(user_id, q.common.version)
        for cat in q.category:
            self._check_category(view, cat)
        cur = view.currency(q.common.currency)
        where, params, amount = self._filters(cur, q.range, q.direction, q.category)
        if q.merchant:
            where.append("contains(merchant_key, ?)")
            params.append(merchant_key(q.merchant))
        if q.weekdays:
            where.append("list_contains(?, (isodow(local_at) - 1)::INTEGER)")
            params.append(list(q.weekdays))
        if q.hour_from is not None:
            where.append("hour(local_at) >= ?")
            params.append(q.hour_from)
        if q.hour_to is not None:
            where.append("hour(local_at) < ?")
            params.append(q.hour_to)
        if q.min_amount_minor is not None:
            where.append("abs(amount_minor) >= ?")
            params.append(q.min_amount_minor)
        if q.max_amount_minor is not None:
            where.append("abs(amount_minor) <= ?")
            params.append(q.max_amount_minor)
        if q.account_id is not None:
            where.append("account_id = ?")
            params.append(q.account_id)
        keys = [f"{GROUP_SQL[g]} AS g{i}" for i, g in enumerate(q.group_by)]
        select = ", ".join([*keys, f"sum({amount})::BIGINT AS total", "count(*) AS n"])
        group = f"GROUP BY {', '.join(f'g{i}' for i in range(len(keys)))}" if keys else ""
        rows = self._sql(
            f"SELECT {select} FROM c WHERE {' AND '.join(where)} {group}", params, c=view.table
        )
        periods = _Periods(q) if q.measure == "average_per_period" else None
        out = []
        if not q.group_by and not rows:
            rows = [{"total": 0, "n": 0}]
        for r in rows:
            total, n = int(r["total"] or 0), int(r["n"])
            group_values = {g: r[f"g{i}"] for i, g in enumerate(q.group_by)}
            item: dict[str, Any] = {
                "group": {
                    g: (WEEKDAY_NAMES[v] if g == "weekday" else v) for g, v in group_values.items()
                },
                "transactions": n,
                "total": money(total, cur),
            }
            if q.measure == "count":
                item["value"] = n
            elif q.measure == "total":
                item["value"] = money(total, cur)
            elif q.measure == "average_per_txn":
                item["value"] = money(divide_minor(total, n), cur)
            else:
                assert periods is not None
                k = periods(group_values)
                item["periods"] = k
                item["value"] = money(divide_minor(total, k), cur)
            out.append(item)
        if q.group_by and periods is not None:
            # Periods with no matching transaction still count: add their (zero) groups.
            out.extend(_empty_period_groups(q, out, cur, periods))
        time_keys = [
            g for g in q.group_by if g not in ("category", "category_group", "merchant", "account")
        ]
        if time_keys and len(time_keys) == len(q.group_by):
            out.sort(key=lambda it: tuple(_sort_key(g, it["group"][g]) for g in q.group_by))
        else:
            out.sort(key=lambda it: (-_value_sort(it["value"]), str(it["group"])))
        return self._envelope(
            view,
            cur,
            range=q.range.to_json(),
            measure=q.measure,
            per=q.per,
            group_by=list(q.group_by),
            filters={
                "category": list(q.category),
                "merchant": q.merchant,
                "weekday": [WEEKDAY_NAMES[d] for d in q.weekdays],
                "hour_from": q.hour_from,
                "hour_to": q.hour_to,
                "min_amount_minor": q.min_amount_minor,
                "max_amount_minor": q.max_amount_minor,
                "account_id": q.account_id,
                "direction": q.direction,
            },
            rows=out[: q.limit],
            truncated=len(out) > q.limit,
        )

    # -- overview pieces -----------------------------------------------------------------

    def balances(self, view: UserView) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Per account (opening + flows in its currency) and total per currency."""
        flows = {
            (r["account_id"], r["currency"]): r
            for r in self._sql(
                "SELECT account_id, currency, sum(amount_minor)::BIGINT AS flow, count(*) AS n, "
                "max(booked_at) AS last_at FROM c GROUP BY ALL",
                [],
                c=view.table,
            )
        }
        accounts = []
        totals: dict[str, int] = {}
        for a in view.accounts:
            cur = a["currency"]
            f = flows.get((a["account_id"], cur))
            balance = a["opening_balance_minor"] + (int(f["flow"]) if f else 0)
            totals[cur] = totals.get(cur, 0) + balance
            accounts.append(
                {
                    "account_id": a["account_id"],
                    "masked_number": a["masked_number"],
                    "institution": a["institution"],
                    "account_type": a["account_type"],
                    "currency": cur,
                    "balance": money(balance, cur),
                    "transactions": int(f["n"]) if f else 0,
                    "last_booked_at": f["last_at"].astimezone(UTC).isoformat() if f else None,
                }
            )
        total = [{"currency": c, **money(v, c)} for c, v in sorted(totals.items())]
        return accounts, total

    def month_summary(self, view: UserView, cur: str, month: date) -> dict[str, Any]:
        rng = DateRange(month, add_months(month, 1))
        rows = self._sql(
            """
            SELECT coalesce(sum(amount_minor) FILTER (WHERE amount_minor > 0), 0)::BIGINT AS income,
                   coalesce(-sum(amount_minor) FILTER (WHERE amount_minor < 0), 0)::BIGINT AS spend,
                   count(*) AS n
            FROM c WHERE currency = ? AND local_at >= ? AND local_at < ?
              AND split_part(category, '/', 1) <> ?
            """,
            [cur, _local(rng.start), _local(rng.end), TRANSFERS],
            c=view.table,
        )[0]
        income, spend = int(rows["income"]), int(rows["spend"])
        return {
            "month": month.strftime("%Y-%m"),
            "income": money(income, cur),
            "spend": money(spend, cur),
            "net": money(income - spend, cur),
            "savings_rate": ratio(income - spend, income),
            "transactions": int(rows["n"]),
        }

    def overview(
        self, user_id: str, q: OverviewQuery, *, recurring_days: int = 30
    ) -> dict[str, Any]:
        view = self.view(user_id, q.common.version)
        cur = view.currency(q.common.currency)
        today = q.today or today_utc()
        month = q.month or today.replace(day=1)
        accounts, totals = self.balances(view)
        this = self.month_summary(view, cur, month)
        last = self.month_summary(view, cur, add_months(month, -1))
        top = self.categories(
            user_id,
            CategoriesQuery(
                range=DateRange(month, add_months(month, 1)),
                common=q.common.__class__(version=view.version, currency=cur),
            ),
        )["categories"][:5]
        upcoming = [
            r
            for r in self.recurring(user_id, version=view.version, today=today)["recurring"]
            if r["active"]
            and r["direction"] == "debit"
            and r["currency"] == cur
            and today.isoformat()
            <= r["next_date"]
            <= (today + timedelta(days=recurring_days)).isoformat()
        ]
        upcoming.sort(key=lambda r: r["next_date"])
        flags = self.open_flags(view)
        unread = self.unread_count(user_id)
        return self._envelope(
            view,
            cur,
            as_of=today.isoformat(),
            accounts=accounts,
            total_balance=totals,
            this_month=this,
            last_month=last,
            change={
                "income": money(
                    this["income"]["amount_minor"] - last["income"]["amount_minor"], cur
                ),
                "spend": money(this["spend"]["amount_minor"] - last["spend"]["amount_minor"], cur),
                "savings_rate": (
                    round(this["savings_rate"] - last["savings_rate"], 4)
                    if this["savings_rate"] is not None and last["savings_rate"] is not None
                    else None
                ),
            },
            top_categories=top,
            upcoming_recurring=upcoming,
            open_flags={"count": len(flags), "latest": flags[:5]},
            unread_notifications=unread,
        )

    def recurring(
        self, user_id: str, *, version: int | None = None, today: date | None = None
    ) -> dict[str, Any]:
        from scale_ray.analytics.recurring import detect_recurring

        view = self.view(user_id, version)
        today = today or today_utc()
        memo_key = ("recurring", today)
        with view.lock:
            found = view.memo.get(memo_key)
            if found is None:
                frame = view.table.select(
                    [
                        "txn_id",
                        "account_id",
                        "amount_minor",
                        "currency",
                        "booked_at",
                        "merchant",
                        "narration",
                    ]
                ).to_pandas()
                found = detect_recurring(frame, as_of=today)
                view.memo[memo_key] = found
        items = [_recurring_json(r) for r in found]
        items.sort(key=lambda r: (not r["active"], r["next_date"], r["merchant"]))
        return {"snapshot_version": view.version, "as_of": today.isoformat(), "recurring": items}

    def open_flags(self, view: UserView) -> list[dict[str, Any]]:
        flags, _, _ = self._slice(self.flags_table, view.user_id)
        if flags.num_rows == 0:
            return []
        rows = self._sql(
            """
            SELECT f.txn_id, f.kind, f.score, f.reason, f.created_at, c.amount_minor, c.currency,
                   c.merchant_name, c.booked_at
            FROM (SELECT * EXCLUDE (rn) FROM (
                    SELECT *, row_number() OVER (PARTITION BY txn_id, kind ORDER BY seq DESC) AS rn
                    FROM f) WHERE rn = 1 AND status = 'open') f
            LEFT JOIN c USING (txn_id)
            ORDER BY f.created_at DESC, f.txn_id
            """,
            [],
            f=flags,
            c=view.table,
        )
        return [
            {
                "txn_id": r["txn_id"],
                "kind": r["kind"],
                "score": r["score"],
                "reason": r["reason"],
                "created_at": r["created_at"].astimezone(UTC).isoformat(),
                "merchant": r["merchant_name"],
                "booked_at": r["booked_at"].astimezone(UTC).isoformat() if r["booked_at"] else None,
                **(money(r["amount_minor"], r["currency"]) if r["currency"] else {}),
            }
            for r in rows
        ]

    def notifications(
        self, user_id: str, *, unread_only: bool = False, limit: int = 50
    ) -> list[dict[str, Any]]:
        table, _, _ = self._slice(self.notifications_table, user_id)
        read = {r["key"] for r in self.state.snapshot(user_id).of("notification_read")}
        rows = sorted(
            table.to_pylist(), key=lambda r: (r["created_at"], r["notification_id"]), reverse=True
        )
        out = []
        for r in rows:
            is_read = r["notification_id"] in read
            if unread_only and is_read:
                continue
            out.append(notification_json(r, is_read))
            if len(out) >= limit:
                break
        return out

    def unread_count(self, user_id: str) -> int:
        table, _, _ = self._slice(self.notifications_table, user_id)
        if table.num_rows == 0:
            return 0
        read = {r["key"] for r in self.state.snapshot(user_id).of("notification_read")}
        return sum(1 for n in table.column("notification_id").to_pylist() if n not in read)

    def budget_statuses(
        self, user_id: str, *, today: date | None = None, version: int | None = None
    ) -> list[tuple[dict[str, Any], BudgetStatus]]:
        """Every budget of the user with its spend in the period containing ``today``."""
        view = self.view(user_id, version)
        today = today or today_utc()
        return [(row, _budget_status(self, view, row, today)) for row in view.state.of("budget")]

    def spent(
        self, view: UserView, category: str, currency: str, rng: DateRange
    ) -> tuple[int, int]:
        """Spend (positive minor units) and count in ``category`` (and below) over ``rng``."""
        where, params, amount = self._filters(currency, rng, "spend", (category,))
        row = self._sql(
            f"SELECT coalesce(sum({amount}), 0)::BIGINT AS total, count(*) AS n FROM c "
            f"WHERE {' AND '.join(where)}",
            params,
            c=view.table,
        )[0]
        return int(row["total"]), int(row["n"])


def _budget_status(
    engine: AnalyticsEngine, view: UserView, row: dict[str, Any], today: date
) -> BudgetStatus:
    rng = period_range(row["period"], today)
    spent, n = engine.spent(view, row["category"], row["currency"], rng)
    return BudgetStatus(
        budget_id=row["key"],
        category=row["category"],
        period=row["period"],
        currency=row["currency"],
        limit_minor=int(row["limit_minor"]),
        spent_minor=spent,
        transactions=n,
        range=rng,
    )


def notification_json(row: dict[str, Any], is_read: bool) -> dict[str, Any]:
    import json

    return {
        "id": row["notification_id"],
        "kind": row["kind"],
        "title": row["title"],
        "message": row["message"],
        "data": json.loads(row["data_json"]) if row.get("data_json") else None,
        "created_at": row["created_at"].astimezone(UTC).isoformat(),
        "read": is_read,
    }


def _revision(view: UserView, version: int, state: StateSnapshot) -> UserView:
    """The same rows under a newer version number (the user's partition did not change)."""
    return UserView(
        view.user_id,
        version,
        state,
        view.table,
        view.accounts,
        view.currencies,
        view.memo,
        view.lock,
    )


def _accounts(table: pa.Table) -> list[dict[str, Any]]:
    by_id: dict[str, dict[str, Any]] = {}
    for row in sorted(table.to_pylist(), key=lambda r: (r["account_id"], r["created_at"])):
        by_id.setdefault(row["account_id"], row)
    return list(by_id.values())


def _recurring_json(r: Any) -> dict[str, Any]:
    return {
        "series_id": r.series_id,
        "merchant": r.merchant,
        "account_id": r.account_id,
        "period": r.period,
        "direction": r.direction,
        "currency": r.currency,
        "amount": money(r.amount_minor, r.currency),
        "amount_range": {
            "min": money(r.amount_min_minor, r.currency),
            "max": money(r.amount_max_minor, r.currency),
        },
        "last_date": r.last_date.isoformat(),
        "next_date": r.next_date.isoformat(),
        "next_amount": money(r.next_amount_minor, r.currency),
        "occurrences": r.occurrences,
        "confidence": round(float(r.confidence), 3),
        "active": bool(r.active),
        "txn_ids": list(r.txn_ids),
    }


def _day_attr(day: date, name: str) -> Any:
    """A calendar group key of ``day`` (the compare endpoint's time groups)."""
    if name == "weekday":
        return day.weekday()
    if name == "day_of_month":
        return day.day
    if name == "month_of_year":
        return day.month
    if name == "year":
        return day.year
    return day.strftime("%Y-%m")


class _Periods:
    """How many ``q.per`` periods of the range (respecting the weekday filter) fall in a group."""

    def __init__(self, q: CompareQuery) -> None:
        self.per = q.per
        span = (q.range.end - q.range.start).days
        every = (q.range.start + timedelta(days=i) for i in range(span))
        self.days = [d for d in every if not q.weekdays or d.weekday() in q.weekdays]
        self._counts: dict[tuple[Any, ...], int] = {}

    def _period_id(self, day: date) -> Any:
        if self.per == "day":
            return day
        if self.per == "week":
            return day.isocalendar()[:2]
        if self.per == "month":
            return (day.year, day.month)
        return day.year

    def __call__(self, group: dict[str, Any]) -> int:
        keys = tuple((g, v) for g, v in group.items() if g in _TIME_KEYS)
        if keys not in self._counts:
            self._counts[keys] = len(
                {
                    self._period_id(day)
                    for day in self.days
                    if all(_day_attr(day, g) == v for g, v in keys)
                }
            )
        return self._counts[keys]


_TIME_KEYS = {"weekday", "day_of_month", "month_of_year", "year", "month"}


def _empty_period_groups(
    q: CompareQuery, found: list[dict[str, Any]], cur: str, periods: _Periods
) -> list[dict[str, Any]]:
    """Zero rows for calendar groups that had periods but no transactions (e.g. a quiet Friday)."""
    if any(g not in _TIME_KEYS for g in q.group_by):
        return []
    seen = {
        tuple(
            WEEKDAY_NAMES.index(it["group"][g]) if g == "weekday" else it["group"][g]
            for g in q.group_by
        )
        for it in found
    }
    extra = []
    combos = {tuple(_day_attr(day, g) for g in q.group_by) for day in periods.days}
    for combo in sorted(combos, key=str):
        if combo in seen:
            continue
        group = dict(zip(q.group_by, combo, strict=True))
        item: dict[str, Any] = {
            "group": {g: (WEEKDAY_NAMES[v] if g == "weekday" else v) for g, v in group.items()},
            "transactions": 0,
            "total": money(0, cur),
            "periods": periods(group),
            "value": money(0, cur),
        }
        extra.append(item)
    return extra


def _sort_key(name: str, value: Any) -> Any:
    if name == "weekday":
        return WEEKDAY_NAMES.index(value)
    return value


def _value_sort(value: Any) -> int:
    return value["amount_minor"] if isinstance(value, dict) else int(value)


_SHIPPED = set(all_paths())

__all__ = ["AnalyticsEngine", "UnknownVersion", "UserView"]
