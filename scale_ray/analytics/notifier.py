"""Budget threshold notifications, written exactly once to the ``notifications`` table.

:class:`BudgetNotifier` computes each user's budget statuses
(:meth:`AnalyticsEngine.budget_statuses`) and, for every threshold reached (80 %, 100 %),
appends the notification unless it already exists. :class:`NotificationWriter` does the
appends: one Delta commit per call.

Why each notification is written exactly once:

1. **One producer.** Only the ``budget-monitor`` actor (:mod:`scale_ray.analytics.monitor_actor`)
   runs a :class:`BudgetNotifier` against the ledger; it is a named, detached actor, so Ray
   keeps at most one alive (a restart replaces a dead one, it never runs beside it). Inside
   it, the check-then-append runs under one lock, so its polling loop and ``evaluate_now``
   calls cannot both write the same notification.
2. **Deterministic ids.** A notification's id is a hash of (budget, period start, threshold)
   (:func:`~scale_ray.analytics.budgets.notification_id`), so "already written" is a
   membership test on ids, however often or late the statuses are recomputed.
3. **The table is the memory.** The known-id set of a user is loaded from the table itself
   (its latest version, read fresh, not through a cache that could be behind) the first time
   the user is evaluated, and an id joins the set only after the append that holds it has
   committed. If the process dies between the commit and the set update, the restarted
   notifier rebuilds the set from the table, which has the row, so it does not write it
   again; if it dies before the commit, nothing was written and the next evaluation writes it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from scale_ray.analytics.budgets import threshold_notification
from scale_ray.analytics.engine import AnalyticsEngine
from scale_ray.ledger.delta import DeltaAppender, SnapshotCache, ensure_tables
from scale_ray.ledger.keys import user_bucket
from scale_ray.ledger.schema import NOTIFICATIONS
from scale_ray.settings import Settings

log = logging.getLogger(__name__)

#: Columns a caller gives per notification; the writer fills user_id, user_bucket, created_at.
NOTIFICATION_FIELDS = ("notification_id", "kind", "title", "message", "data_json")

#: Users with a live budget: the latest ``seq`` of its (user_id, key) is not a tombstone. A
#: key's period never changes (the key is derived from it), so filtering periods first is exact.
_USERS_WITH_BUDGETS_SQL = """
    SELECT DISTINCT user_id FROM (
        SELECT user_id FROM s WHERE kind = ? AND (? OR list_contains(?, period))
        GROUP BY user_id, key HAVING NOT arg_max(deleted, seq)
    ) ORDER BY user_id
"""


class NotificationWriter:
    """Appends notification rows to the ``notifications`` table, one commit per call.

    Not thread-safe on its own (it owns one :class:`DeltaAppender`); :class:`BudgetNotifier`
    calls it under its lock. ``producer`` names the writer in each commit's metadata.
    """

    def __init__(self, settings: Settings, *, producer: str = "budget-notifier") -> None:
        self.settings = settings
        self.producer = producer
        self._appender: DeltaAppender | None = None

    def rows(
        self, notifications: Iterable[tuple[str, Mapping[str, Any]]], now: datetime
    ) -> list[dict[str, Any]]:
        """Complete table rows for ``(user_id, notification)`` pairs."""
        out = []
        for user_id, item in notifications:
            row: dict[str, Any] = {
                "user_id": user_id,
                "user_bucket": user_bucket(user_id, self.settings.num_buckets),
            }
            row.update({name: item.get(name) for name in NOTIFICATION_FIELDS})
            row["created_at"] = now
            out.append(row)
        return out

    def append(
        self,
        notifications: Sequence[tuple[str, Mapping[str, Any]]],
        *,
        now: datetime | None = None,
    ) -> tuple[int | None, list[dict[str, Any]]]:
        """Append ``(user_id, notification)`` pairs in one commit.

        Returns the committed version (None when there was nothing to write) and the rows as
        written. ``now`` (default: the current UTC time) becomes every row's ``created_at``.
        """
        if not notifications:
            return None, []
        rows = self.rows(notifications, now or datetime.now(UTC))
        table = pa.Table.from_pylist(rows, schema=NOTIFICATIONS)
        if self._appender is None:
            self._appender = DeltaAppender(self.settings, "notifications")
        version = self._appender.append(table, metadata={"producer": self.producer})
        return version, rows


class BudgetNotifier:
    """Writes each budget threshold notification exactly once (see the module docstring).

    Thread-safe: statuses are computed concurrently, the check-and-append is serialized.
    """

    def __init__(
        self,
        settings: Settings,
        engine: AnalyticsEngine | None = None,
        writer: NotificationWriter | None = None,
        *,
        chunk_users: int = 256,
    ) -> None:
        ensure_tables(settings, ("transactions", "accounts", "user_state", "notifications"))
        self.settings = settings
        self.engine = engine or AnalyticsEngine(settings, cache_rows=1_000_000)
        self.writer = writer or NotificationWriter(settings)
        #: Users evaluated per commit in one :meth:`evaluate` call (a sweep of many users
        #: writes in chunks, so notifications for the first users do not wait for the last).
        self.chunk_users = chunk_users
        # A private snapshot cache: ``latest_version`` re-reads the log on every call, so the
        # known ids are loaded from the table as it is now, never from an older cached version.
        self._table = SnapshotCache(settings, "notifications")
        self._known: dict[str, set[str]] = {}
        self._lock = threading.Lock()
        self._db = duckdb.connect(config={"threads": 1})
        self._db_lock = threading.Lock()
        self.stats = {"evaluated": 0, "written": 0, "failed": 0, "known_loads": 0}

    # -- known ids -----------------------------------------------------------------------

    def _load_known(self, user_ids: Iterable[str]) -> None:
        """Load the ids already in the table for users not loaded yet (caller holds the lock)."""
        missing = sorted(set(user_ids) - self._known.keys())
        if not missing:
            return
        version = self._table.latest_version()
        by_bucket: dict[int, list[str]] = {}
        for user in missing:
            by_bucket.setdefault(user_bucket(user, self.settings.num_buckets), []).append(user)
        for bucket, users in sorted(by_bucket.items()):
            found = self._table.dataset(version, bucket).to_table(
                columns=["user_id", "notification_id"],
                filter=pc.field("user_id").isin(users),
            )
            for user in users:
                self._known[user] = set()
            for user, ntf in zip(
                found.column("user_id").to_pylist(),
                found.column("notification_id").to_pylist(),
                strict=True,
            ):
                self._known[user].add(ntf)
        self.stats["known_loads"] += len(missing)

    def known_ids(self, user_id: str) -> set[str]:
        """The ids of the user's notifications (loaded from the table on first use)."""
        with self._lock:
            self._load_known([user_id])
            return set(self._known[user_id])

    # -- evaluation ----------------------------------------------------------------------

    def _candidates(self, user_id: str, today: date | None) -> list[dict[str, Any]]:
        out = []
        for _row, status in self.engine.budget_statuses(user_id, today=today):
            out.extend(threshold_notification(status, t) for t in status.reached())
        return out

    def evaluate(
        self,
        user_ids: Iterable[str],
        today: date | None = None,
        *,
        failed: set[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Check the users' budgets and write every reached threshold not written before.

        Returns the rows written (table rows: user_id, notification_id, kind, title, ...).
        When ``failed`` is given, a user whose statuses cannot be computed is logged and added
        to it instead of failing the whole call (a monitor retries them); otherwise the error
        propagates. A failed append always propagates: nothing of that chunk was written.
        """
        users = sorted(set(user_ids))
        written: list[dict[str, Any]] = []
        for start in range(0, len(users), self.chunk_users):
            chunk = users[start : start + self.chunk_users]
            pending: list[tuple[str, dict[str, Any]]] = []
            for user in chunk:
                try:
                    pending.extend((user, n) for n in self._candidates(user, today))
                except Exception:
                    if failed is None:
                        raise
                    log.exception("budget evaluation failed for a user; will retry")
                    failed.add(user)
                    self.stats["failed"] += 1
            self.stats["evaluated"] += len(chunk)
            written.extend(self._write_new(chunk, pending))
        return written

    def _write_new(
        self, users: list[str], pending: list[tuple[str, dict[str, Any]]]
    ) -> list[dict[str, Any]]:
        with self._lock:
            self._load_known(users)
            fresh: list[tuple[str, dict[str, Any]]] = []
            ids: set[tuple[str, str]] = set()
            for user, item in pending:
                key = (user, item["notification_id"])
                if item["notification_id"] in self._known[user] or key in ids:
                    continue
                ids.add(key)
                fresh.append((user, item))
            if not fresh:
                return []
            _, rows = self.writer.append(fresh)
            # Committed: only now are the ids known (a crash before this line re-reads them).
            for user, ntf in ids:
                self._known[user].add(ntf)
            self.stats["written"] += len(rows)
            return rows

    # -- who has budgets -----------------------------------------------------------------

    def users_with_budgets(
        self,
        buckets: set[int] | None = None,
        *,
        periods: set[str] | None = None,
        version: int | None = None,
    ) -> set[str]:
        """Users with at least one live budget in ``buckets`` (all when None), optionally only
        budgets of the given ``periods`` (weekly, monthly, yearly).

        Reads ``user_state`` at ``version`` (its latest when None) through the engine's
        snapshot cache, so the per-bucket datasets built here are the ones the following
        budget evaluations of those users reuse.
        """
        cache = self.engine.state.snapshots
        if version is None:
            version = cache.latest_version()
        if buckets is None:
            dataset: ds.Dataset = cache.dataset(version)
        elif not buckets:
            return set()
        else:
            parts = [cache.dataset(version, b) for b in sorted(buckets)]
            dataset = parts[0] if len(parts) == 1 else ds.dataset(parts)
        with self._db_lock:
            cur = self._db.cursor()
        try:
            cur.register("s", dataset)
            params = ["budget", periods is None, sorted(periods or ())]
            rows = cur.execute(_USERS_WITH_BUDGETS_SQL, params).fetchall()
        finally:
            cur.close()
        return {r[0] for r in rows}


__all__ = ["BudgetNotifier", "NotificationWriter"]
