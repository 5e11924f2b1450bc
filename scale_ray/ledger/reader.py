"""Reads of one user's ledger at one snapshot version, through DuckDB over Delta snapshots.

Every query is parameterized (never string-formatted user input) and scoped by
``user_bucket`` (partition pruning) and ``user_id``. Pagination cursors carry the snapshot
version, so paging through a listing never sees rows committed after the first page.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import duckdb
from deltalake.exceptions import DeltaError

from scale_ray.ledger.delta import SnapshotCache
from scale_ray.ledger.keys import user_bucket
from scale_ray.money import from_minor
from scale_ray.settings import Settings

TXN_COLUMNS = (
    "txn_id, account_id, amount_minor, currency, booked_at, booked_offset_min, value_date, "
    "narration, merchant, mode, balance_after_minor, category_hint, source, import_id, ingested_at"
)


class InvalidCursor(ValueError):
    """A pagination cursor that was not produced by this API."""


class UnknownVersion(ValueError):
    """A snapshot version the table does not have."""


@dataclass(frozen=True)
class TxnFilter:
    """Filters of a transaction listing; ``None`` means unfiltered."""

    date_from: datetime | None = None
    date_to: datetime | None = None
    account_id: str | None = None
    min_amount_minor: int | None = None
    max_amount_minor: int | None = None
    currency: str | None = None
    text: str | None = None


@dataclass(frozen=True)
class Cursor:
    """Position after the last row of a page, at a snapshot ``version``."""

    version: int
    booked_at_us: int
    txn_id: str

    def encode(self) -> str:
        raw = json.dumps([self.version, self.booked_at_us, self.txn_id], separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> Cursor:
        try:
            padded = token + "=" * (-len(token) % 4)
            version, booked_at_us, txn_id = json.loads(base64.urlsafe_b64decode(padded))
            if not (isinstance(version, int) and isinstance(booked_at_us, int)) or not isinstance(
                txn_id, str
            ):
                raise TypeError
            if version < 0:
                raise ValueError
            return cls(version, booked_at_us, txn_id)
        except (ValueError, TypeError, binascii.Error, json.JSONDecodeError) as exc:
            raise InvalidCursor(
                "cursor is malformed; use next_cursor from a previous page"
            ) from exc


def _iso_utc(ts: datetime | None) -> str | None:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z") if ts is not None else None


def txn_to_json(row: dict[str, Any]) -> dict[str, Any]:
    """A transaction row as the API shows it (amounts as exact decimal strings too)."""
    booked: datetime = row["booked_at"]
    out = dict(row)
    out["amount"] = from_minor(row["amount_minor"], row["currency"])
    out["booked_at"] = _iso_utc(booked)
    offset = row.get("booked_offset_min") or 0
    out["booked_at_local"] = booked.astimezone(timezone(timedelta(minutes=offset))).isoformat()
    out["value_date"] = row["value_date"].isoformat() if row.get("value_date") else None
    if row.get("balance_after_minor") is not None:
        out["balance_after"] = from_minor(row["balance_after_minor"], row["currency"])
    out["ingested_at"] = _iso_utc(row.get("ingested_at"))
    return out


class LedgerReader:
    """Snapshot reads of transactions and accounts for one process (thread-safe)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.transactions = SnapshotCache(settings, "transactions")
        self.accounts = SnapshotCache(settings, "accounts")
        self._db = duckdb.connect()
        self._db_lock = threading.Lock()

    def _query(self, sql: str, params: list[Any], **tables: Any) -> list[dict[str, Any]]:
        with self._db_lock:
            cur = self._db.cursor()
        try:
            for name, dataset in tables.items():
                cur.register(name, dataset)
            result = cur.execute(sql, params)
            columns = [d[0] for d in result.description]
            return [dict(zip(columns, row, strict=True)) for row in result.fetchall()]
        finally:
            cur.close()

    def _dataset(self, cache: SnapshotCache, version: int | None, bucket: int) -> tuple[Any, int]:
        latest = cache.latest_version()
        if version is None:
            version = latest
        elif version > latest:
            raise UnknownVersion(f"version {version} does not exist yet (latest is {latest})")
        try:
            return cache.dataset(version, bucket), version
        except DeltaError as exc:
            raise UnknownVersion(f"version {version} is not available: {exc}") from exc

    def latest_versions(self) -> dict[str, int]:
        return {
            "transactions": self.transactions.latest_version(),
            "accounts": self.accounts.latest_version(),
        }

    def list_transactions(
        self,
        user_id: str,
        *,
        filters: TxnFilter | None = None,
        cursor: Cursor | None = None,
        limit: int = 100,
        version: int | None = None,
    ) -> tuple[list[dict[str, Any]], Cursor | None, int]:
        """One page, newest first (booked_at, then txn_id, descending), at one version."""
        f = filters or TxnFilter()
        if cursor is not None:
            version = cursor.version
        bucket = user_bucket(user_id, self.settings.num_buckets)
        dataset, version = self._dataset(self.transactions, version, bucket)
        where = ["user_bucket = ?", "user_id = ?"]
        params: list[Any] = [bucket, user_id]
        if f.date_from is not None:
            where.append("booked_at >= ?")
            params.append(f.date_from)
        if f.date_to is not None:
            where.append("booked_at < ?")
            params.append(f.date_to)
        if f.account_id is not None:
            where.append("account_id = ?")
            params.append(f.account_id)
        if f.currency is not None:
            where.append("currency = ?")
            params.append(f.currency)
        if f.min_amount_minor is not None:
            where.append("amount_minor >= ?")
            params.append(f.min_amount_minor)
        if f.max_amount_minor is not None:
            where.append("amount_minor <= ?")
            params.append(f.max_amount_minor)
        if f.text:
            where.append(
                "(contains(lower(narration), ?) OR contains(lower(coalesce(merchant, '')), ?))"
            )
            needle = f.text.lower()
            params += [needle, needle]
        if cursor is not None:
            where.append("(epoch_us(booked_at) < ? OR (epoch_us(booked_at) = ? AND txn_id < ?))")
            params += [cursor.booked_at_us, cursor.booked_at_us, cursor.txn_id]
        sql = (
            f"SELECT {TXN_COLUMNS}, epoch_us(booked_at) AS _key FROM t WHERE {' AND '.join(where)} "
            "ORDER BY booked_at DESC, txn_id DESC LIMIT ?"
        )
        params.append(limit + 1)
        rows = self._query(sql, params, t=dataset)
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            last = rows[-1]
            next_cursor = Cursor(version, int(last["_key"]), last["txn_id"])
        for row in rows:
            row.pop("_key", None)
        return rows, next_cursor, version

    def get_transaction(
        self, user_id: str, txn_id: str, version: int | None = None
    ) -> dict[str, Any] | None:
        bucket = user_bucket(user_id, self.settings.num_buckets)
        dataset, _ = self._dataset(self.transactions, version, bucket)
        rows = self._query(
            f"SELECT {TXN_COLUMNS} FROM t "
            "WHERE user_bucket = ? AND user_id = ? AND txn_id = ? LIMIT 1",
            [bucket, user_id, txn_id],
            t=dataset,
        )
        return rows[0] if rows else None

    def list_accounts(
        self, user_id: str, *, version: int | None = None
    ) -> tuple[list[dict[str, Any]], dict[str, int]]:
        """The user's accounts with balances (opening + every transaction) at ``version``."""
        bucket = user_bucket(user_id, self.settings.num_buckets)
        txns, txn_version = self._dataset(self.transactions, version, bucket)
        accounts, acc_version = self._dataset(self.accounts, None, bucket)
        sql = """
            WITH a AS (
                SELECT account_id, any_value(masked_number) AS masked_number,
                       any_value(institution) AS institution,
                       any_value(account_type) AS account_type,
                       any_value(currency) AS currency,
                       any_value(opening_balance_minor) AS opening_balance_minor,
                       min(created_at) AS created_at
                FROM acc WHERE user_bucket = ? AND user_id = ? GROUP BY account_id
            ), s AS (
                SELECT account_id, currency, sum(amount_minor)::BIGINT AS flow_minor,
                       count(*) AS transactions, max(booked_at) AS last_booked_at,
                       arg_max(balance_after_minor, (booked_at, txn_id)) AS reported_balance_minor
                FROM t WHERE user_bucket = ? AND user_id = ? GROUP BY account_id, currency
            )
            SELECT a.*, s.currency AS flow_currency, coalesce(s.flow_minor, 0) AS flow_minor,
                   coalesce(s.transactions, 0) AS transactions, s.last_booked_at,
                   s.reported_balance_minor
            FROM a LEFT JOIN s ON a.account_id = s.account_id
            ORDER BY a.account_id, s.currency = a.currency DESC, s.currency
        """
        rows = self._query(sql, [bucket, user_id, bucket, user_id], t=txns, acc=accounts)
        by_account: dict[str, dict[str, Any]] = {}
        for row in rows:
            cur = row["currency"]
            item = by_account.get(row["account_id"])
            if item is None:
                opening = int(row["opening_balance_minor"])
                item = by_account[row["account_id"]] = {
                    "account_id": row["account_id"],
                    "masked_number": row["masked_number"],
                    "institution": row["institution"],
                    "account_type": row["account_type"],
                    "currency": cur,
                    "opening_balance_minor": opening,
                    "balance_minor": opening,
                    "balance": from_minor(opening, cur),
                    "reported_balance_minor": None,
                    "transactions": 0,
                    "last_booked_at": None,
                    # Flows booked in another currency than the account's (not in the balance).
                    "other_currency_flows": [],
                }
            if row["flow_currency"] is None:
                continue
            item["transactions"] += int(row["transactions"])
            last = _iso_utc(row["last_booked_at"])
            if last and (item["last_booked_at"] is None or last > item["last_booked_at"]):
                item["last_booked_at"] = last
            if row["flow_currency"] == cur:
                item["balance_minor"] = item["opening_balance_minor"] + int(row["flow_minor"])
                item["balance"] = from_minor(item["balance_minor"], cur)
                item["reported_balance_minor"] = row["reported_balance_minor"]
            else:
                flow = int(row["flow_minor"])
                item["other_currency_flows"].append(
                    {
                        "currency": row["flow_currency"],
                        "flow_minor": flow,
                        "flow": from_minor(flow, row["flow_currency"]),
                        "transactions": int(row["transactions"]),
                    }
                )
        out = list(by_account.values())
        return out, {"transactions": txn_version, "accounts": acc_version}
