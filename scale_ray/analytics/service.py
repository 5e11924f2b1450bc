"""What the Analytics deployment does, without Ray: queries, rules, corrections, budgets,
notifications. Every method takes the authenticated ``user_id`` first and touches only that
user's rows; bad input raises :class:`ApiError` (a 4xx with a message naming the problem).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from scale_ray.analytics.budgets import BUDGET_PERIODS, budget_id, budget_json
from scale_ray.analytics.categorize import MATCH_TYPES, merchant_key
from scale_ray.analytics.engine import AnalyticsEngine, UnknownVersion, _budget_status
from scale_ray.analytics.params import (
    CashflowQuery,
    CategoriesQuery,
    CompareQuery,
    HeatmapQuery,
    MerchantsQuery,
    OverviewQuery,
    today_utc,
)
from scale_ray.analytics.state import content_key
from scale_ray.errors import ApiError, bad_request, not_found, unprocessable
from scale_ray.money import MoneyError, normalize_currency, to_minor
from scale_ray.settings import Settings
from scale_ray.taxonomy import CategoryError, all_paths, normalize_path, tree_json

MAX_RULES = 500
MAX_BUDGETS = 100


def _object(body: Any, allowed: set[str], required: set[str]) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise unprocessable("the body must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise unprocessable(f"unknown field(s): {', '.join(unknown)}", {"allowed": sorted(allowed)})
    missing = sorted(required - set(body))
    if missing:
        raise unprocessable(f"missing field(s): {', '.join(missing)}")
    return body


def _category(value: Any, field: str = "category") -> str:
    try:
        return normalize_path(value)
    except CategoryError as exc:
        raise unprocessable(f"{field}: {exc}", {"field": field}) from exc


class AnalyticsService:
    """One per Analytics replica (thread-safe)."""

    def __init__(
        self,
        settings: Settings,
        *,
        on_budget_change: Callable[[str], None] | None = None,
        clock: Callable[[], date] = today_utc,
    ) -> None:
        self.settings = settings
        self.engine = AnalyticsEngine(settings)
        self.state = self.engine.state
        self.on_budget_change = on_budget_change
        self.clock = clock

    @staticmethod
    @contextmanager
    def _snapshot_errors() -> Iterator[None]:
        """An unknown ``?version=`` is the client's mistake: 400, not 500."""
        try:
            yield
        except UnknownVersion as exc:
            raise bad_request(str(exc), code="unknown_version") from exc

    def _wrap(self, fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
        with self._snapshot_errors():
            return fn(*args)

    # -- analytics -----------------------------------------------------------------------

    def overview(self, user_id: str, q: OverviewQuery) -> dict[str, Any]:
        return self._wrap(self.engine.overview, user_id, q)

    def categories(self, user_id: str, q: CategoriesQuery) -> dict[str, Any]:
        return self._wrap(self.engine.categories, user_id, q)

    def heatmap(self, user_id: str, q: HeatmapQuery) -> dict[str, Any]:
        return self._wrap(self.engine.heatmap, user_id, q)

    def merchants(self, user_id: str, q: MerchantsQuery) -> dict[str, Any]:
        return self._wrap(self.engine.merchants, user_id, q)

    def cashflow(self, user_id: str, q: CashflowQuery) -> dict[str, Any]:
        return self._wrap(self.engine.cashflow, user_id, q)

    def compare(self, user_id: str, q: CompareQuery) -> dict[str, Any]:
        return self._wrap(self.engine.compare, user_id, q)

    def recurring(
        self, user_id: str, version: int | None = None, include_inactive: bool = False
    ) -> dict[str, Any]:
        out = self._wrap(
            lambda: self.engine.recurring(user_id, version=version, today=self.clock())
        )
        if not include_inactive:
            out["recurring"] = [r for r in out["recurring"] if r["active"]]
        return out

    def category_tree(self, user_id: str) -> dict[str, Any]:
        view = self.engine.view(user_id)
        shipped = set(all_paths())
        custom = sorted(p for p in view.categories() if p not in shipped)
        return {"tree": tree_json(), "custom": custom}

    # -- rules -----------------------------------------------------------------------------

    def list_rules(self, user_id: str) -> dict[str, Any]:
        view = self.engine.view(user_id)
        return {"data": [self._rule_json(r, view) for r in view.state.of("rule")]}

    def _rule_json(self, row: dict[str, Any], view: Any = None) -> dict[str, Any]:
        out = {
            "id": row["key"],
            "pattern": row["pattern"],
            "match": row["match"],
            "category": row["category"],
            "created_at": row["created_at"].isoformat(),
        }
        if view is not None:
            keys = view.table.column("merchant_key").to_pylist()
            pattern = row["pattern"]
            out["matching_transactions"] = sum(
                1 for k in keys if (k == pattern if row["match"] == "exact" else pattern in k)
            )
        return out

    def create_rule(self, user_id: str, body: Any) -> tuple[int, dict[str, Any]]:
        body = _object(body, {"pattern", "match", "category"}, {"pattern", "category"})
        raw = body["pattern"]
        if not isinstance(raw, str) or not raw.strip():
            raise unprocessable("pattern must be a non-empty string (a merchant name or part)")
        if len(raw) > 100:
            raise unprocessable("pattern is longer than 100 characters")
        pattern = merchant_key(raw)
        if len(pattern) < 2:
            raise unprocessable(
                f"pattern {raw!r} has fewer than two letters once digits and punctuation "
                "are ignored; rules match merchant names"
            )
        match = body.get("match", "contains")
        if match not in MATCH_TYPES:
            raise unprocessable(f"match must be one of {', '.join(MATCH_TYPES)}")
        category = _category(body["category"])
        key = "rul_" + content_key(pattern, match)
        existing = self.state.get(user_id, "rule", key)
        if existing is None and len(self.state.snapshot(user_id).of("rule")) >= MAX_RULES:
            raise unprocessable(f"at most {MAX_RULES} rules per user")
        created = {key: existing["created_at"]} if existing else None
        fields = {"pattern": pattern, "match": match, "category": category}
        self.state.put(user_id, "rule", [(key, fields)], created_at=created)
        row = self.state.get(user_id, "rule", key)
        assert row is not None
        self._budgets_touched(user_id)
        return (200 if existing else 201), self._rule_json(row, self.engine.view(user_id))

    def delete_rule(self, user_id: str, rule_id: str) -> None:
        if self.state.get(user_id, "rule", rule_id) is None:
            raise not_found(f"rule {rule_id!r} not found")
        self.state.put(user_id, "rule", [(rule_id, {})], deleted=True)
        self._budgets_touched(user_id)

    # -- corrections -----------------------------------------------------------------------

    def _txn_category(self, user_id: str, txn_id: str) -> dict[str, Any]:
        view = self.engine.view(user_id)
        rows = self.engine._sql(
            "SELECT txn_id, category, category_source FROM c WHERE txn_id = ?",
            [txn_id],
            c=view.table,
        )
        if not rows:
            raise not_found(f"transaction {txn_id!r} not found")
        return rows[0]

    def put_correction(self, user_id: str, txn_id: str, body: Any) -> dict[str, Any]:
        body = _object(body, {"category"}, {"category"})
        category = _category(body["category"])
        self._txn_category(user_id, txn_id)
        self.state.put(user_id, "correction", [(txn_id, {"category": category})])
        self._budgets_touched(user_id)
        return self._txn_category(user_id, txn_id)

    def delete_correction(self, user_id: str, txn_id: str) -> dict[str, Any]:
        self._txn_category(user_id, txn_id)
        if self.state.get(user_id, "correction", txn_id) is not None:
            self.state.put(user_id, "correction", [(txn_id, {})], deleted=True)
            self._budgets_touched(user_id)
        return self._txn_category(user_id, txn_id)

    def get_category(self, user_id: str, txn_id: str) -> dict[str, Any]:
        return self._txn_category(user_id, txn_id)

    def txn_categories(
        self, user_id: str, txn_ids: list[str], version: int | None = None
    ) -> dict[str, list[str]]:
        """``{txn_id: [category, source]}`` for a page of the transaction listing."""
        if not txn_ids:
            return {}
        with self._snapshot_errors():
            view = self.engine.view(user_id, version)
        rows = self.engine._sql(
            "SELECT txn_id, category, category_source FROM c WHERE list_contains(?, txn_id)",
            [txn_ids],
            c=view.table,
        )
        return {r["txn_id"]: [r["category"], r["category_source"]] for r in rows}

    # -- budgets ---------------------------------------------------------------------------

    def _budgets_touched(self, user_id: str) -> None:
        if self.on_budget_change is not None and self.state.snapshot(user_id).of("budget"):
            self.on_budget_change(user_id)

    def _limit(self, body: dict[str, Any], currency: str) -> int:
        if "limit" in body and "limit_minor" in body:
            raise unprocessable("give limit or limit_minor, not both")
        try:
            if "limit_minor" in body:
                value = body["limit_minor"]
                if isinstance(value, bool) or not isinstance(value, int):
                    raise unprocessable("limit_minor must be an integer")
                limit = value
            elif "limit" in body:
                raw = body["limit"]
                if isinstance(raw, float):
                    raw = Decimal(repr(raw))
                limit = to_minor(
                    raw if isinstance(raw, (str, Decimal, int)) else str(raw), currency
                )
            else:
                raise unprocessable("missing field: limit (or limit_minor)")
        except (MoneyError, InvalidOperation, ValueError) as exc:
            raise unprocessable(f"limit: {exc}") from exc
        if limit <= 0:
            raise unprocessable("limit must be greater than zero")
        if limit > 10**15:
            raise unprocessable("limit is unreasonably large")
        return limit

    def list_budgets(self, user_id: str) -> dict[str, Any]:
        view = self.engine.view(user_id)
        today = self.clock()
        return {
            "data": [
                budget_json(row, _budget_status(self.engine, view, row, today))
                for row in view.state.of("budget")
            ],
            "as_of": today.isoformat(),
        }

    def get_budget(self, user_id: str, budget: str) -> dict[str, Any]:
        view = self.engine.view(user_id)
        for row in view.state.of("budget"):
            if row["key"] == budget:
                return budget_json(row, _budget_status(self.engine, view, row, self.clock()))
        raise not_found(f"budget {budget!r} not found")

    def create_budget(self, user_id: str, body: Any) -> tuple[int, dict[str, Any]]:
        body = _object(
            body, {"category", "period", "limit", "limit_minor", "currency"}, {"category"}
        )
        category = _category(body["category"])
        period = body.get("period", "monthly")
        if period not in BUDGET_PERIODS:
            raise unprocessable(f"period must be one of {', '.join(BUDGET_PERIODS)}")
        currency = body.get("currency")
        if currency is None:
            currency = self.engine.view(user_id).currency(None)
        try:
            currency = normalize_currency(str(currency))
        except MoneyError as exc:
            raise unprocessable(f"currency: {exc}") from exc
        limit = self._limit(body, currency)
        key = budget_id(category, period)
        existing = self.state.get(user_id, "budget", key)
        if existing is None and len(self.state.snapshot(user_id).of("budget")) >= MAX_BUDGETS:
            raise unprocessable(f"at most {MAX_BUDGETS} budgets per user")
        fields = {
            "category": category,
            "period": period,
            "limit_minor": limit,
            "currency": currency,
        }
        created = {key: existing["created_at"]} if existing else None
        self.state.put(user_id, "budget", [(key, fields)], created_at=created)
        self._budgets_touched(user_id)
        return (200 if existing else 201), self.get_budget(user_id, key)

    def update_budget(self, user_id: str, budget: str, body: Any) -> dict[str, Any]:
        row = self.state.get(user_id, "budget", budget)
        if row is None:
            raise not_found(f"budget {budget!r} not found")
        body = _object(body, {"category", "period", "limit", "limit_minor", "currency"}, set())
        if "category" in body and _category(body["category"]) != row["category"]:
            raise unprocessable("a budget's category cannot change; create another budget")
        if "period" in body and body["period"] != row["period"]:
            raise unprocessable("a budget's period cannot change; create another budget")
        currency = row["currency"]
        if "currency" in body:
            try:
                currency = normalize_currency(str(body["currency"]))
            except MoneyError as exc:
                raise unprocessable(f"currency: {exc}") from exc
        limit = (
            self._limit(body, currency)
            if ("limit" in body or "limit_minor" in body)
            else int(row["limit_minor"])
        )
        fields = {
            "category": row["category"],
            "period": row["period"],
            "limit_minor": limit,
            "currency": currency,
        }
        self.state.put(
            user_id, "budget", [(budget, fields)], created_at={budget: row["created_at"]}
        )
        self._budgets_touched(user_id)
        return self.get_budget(user_id, budget)

    def delete_budget(self, user_id: str, budget: str) -> None:
        if self.state.get(user_id, "budget", budget) is None:
            raise not_found(f"budget {budget!r} not found")
        self.state.put(user_id, "budget", [(budget, {})], deleted=True)

    # -- notifications -----------------------------------------------------------------------

    def list_notifications(
        self, user_id: str, unread_only: bool = False, limit: int = 50
    ) -> dict[str, Any]:
        return {
            "data": self.engine.notifications(user_id, unread_only=unread_only, limit=limit),
            "unread": self.engine.unread_count(user_id),
        }

    def mark_read(self, user_id: str, body: Any) -> dict[str, Any]:
        body = _object(body, {"ids", "all"}, set())
        if body.get("all") is True:
            ids = [
                n["id"] for n in self.engine.notifications(user_id, unread_only=True, limit=10**6)
            ]
        else:
            ids = body.get("ids")
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids) or not ids:
                raise unprocessable('give "ids": [notification ids] or "all": true')
            known = {n["id"] for n in self.engine.notifications(user_id, limit=10**6)}
            unknown = [i for i in ids if i not in known]
            if unknown:
                raise ApiError(
                    404, "not_found", "unknown notification id(s)", {"ids": unknown[:20]}
                )
        if ids:
            self.state.put(user_id, "notification_read", [(i, {}) for i in ids])
        return {"marked_read": len(ids), "unread": self.engine.unread_count(user_id)}


#: Service methods the gateway may call (an allow-list, not getattr on anything).
METHODS = frozenset(
    {
        "overview", "categories", "heatmap", "merchants", "cashflow", "compare", "recurring",
        "category_tree", "list_rules", "create_rule", "delete_rule", "put_correction",
        "delete_correction", "get_category", "txn_categories", "list_budgets", "get_budget",
        "create_budget", "update_budget", "delete_budget", "list_notifications", "mark_read",
    }
)  # fmt: skip


def run_method(service: AnalyticsService, method: str, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """``("ok", result)`` or ``("error", status, code, message, details)``."""
    if method not in METHODS:
        return ("error", 404, "not_found", f"no analytics method {method!r}", None)
    try:
        return ("ok", getattr(service, method)(*args))
    except ApiError as exc:
        return ("error", exc.status, exc.code, exc.message, exc.details)
