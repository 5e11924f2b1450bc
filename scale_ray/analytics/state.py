"""Per-user editable state (rules, corrections, budgets, read receipts) in the ``user_state`` table.

Rows are events: the latest ``seq`` per (user_id, kind, key) wins, ``deleted`` is a tombstone.
Keys are derived from content where the API is naturally idempotent (a rule's key is its
pattern and match type; a correction's key is the txn_id; a budget's key is its category and
period), so a retried request replaces instead of duplicating.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import duckdb
import pyarrow as pa

from scale_ray.ledger.delta import DeltaAppender, SnapshotCache
from scale_ray.ledger.keys import user_bucket
from scale_ray.ledger.schema import USER_STATE
from scale_ray.settings import Settings

#: UTC session time zone (never the machine's: ``booked_at::TIMESTAMP`` must be UTC wall time),
#: and no extension downloads (there is no network in production pods either).
DUCKDB_CONFIG = {"autoinstall_known_extensions": False, "TimeZone": "UTC"}

KINDS = ("rule", "correction", "budget", "notification_read")

STATE_FIELDS = ("category", "pattern", "match", "period", "limit_minor", "currency")


def content_key(*parts: str) -> str:
    """A short stable id from content (rule and budget ids)."""
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).hexdigest()


@dataclass(frozen=True)
class StateSnapshot:
    """One user's current state rows at one table version, grouped by kind."""

    version: int
    rows: dict[str, list[dict[str, Any]]]
    #: Digest of the user's bucket files at ``version``: equal digests, equal rows.
    fingerprint: str = ""

    def of(self, kind: str) -> list[dict[str, Any]]:
        return self.rows.get(kind, [])


_CURRENT_SQL = """
    SELECT * EXCLUDE (rn) FROM (
        SELECT *, row_number() OVER (PARTITION BY kind, key ORDER BY seq DESC) AS rn
        FROM s WHERE user_bucket = ? AND user_id = ?
    ) WHERE rn = 1 AND NOT deleted ORDER BY kind, created_at, key
"""


class UserStateStore:
    """Reads and writes of ``user_state`` for one process (thread-safe)."""

    def __init__(self, settings: Settings, cache_size: int = 20_000) -> None:
        self.settings = settings
        self.snapshots = SnapshotCache(settings, "user_state")
        self._appender: DeltaAppender | None = None
        self._write_lock = threading.Lock()
        self._db = duckdb.connect(config=DUCKDB_CONFIG)
        self._db_lock = threading.Lock()
        self._cache: OrderedDict[tuple[str, str], StateSnapshot] = OrderedDict()
        self._cache_size = cache_size
        self._last_seq = 0

    # -- reads ---------------------------------------------------------------------------

    def latest_version(self) -> int:
        return self.snapshots.latest_version()

    def snapshot(self, user_id: str, version: int | None = None) -> StateSnapshot:
        """The user's current rules, corrections, budgets and read receipts at ``version``."""
        if version is None:
            version = self.snapshots.latest_version()
        bucket = user_bucket(user_id, self.settings.num_buckets)
        fingerprint = self.snapshots.fingerprint(version, bucket)
        key = (user_id, fingerprint)
        with self._db_lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return StateSnapshot(version, cached.rows, fingerprint)
        dataset = self.snapshots.dataset(version, bucket)
        with self._db_lock:
            cur = self._db.cursor()
        try:
            cur.register("s", dataset)
            result = cur.execute(_CURRENT_SQL, [bucket, user_id])
            columns = [d[0] for d in result.description]
            rows = [dict(zip(columns, r, strict=True)) for r in result.fetchall()]
        finally:
            cur.close()
        grouped: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            grouped.setdefault(row["kind"], []).append(row)
        snap = StateSnapshot(version, grouped, fingerprint)
        with self._db_lock:
            self._cache[key] = snap
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return snap

    def get(self, user_id: str, kind: str, key: str) -> dict[str, Any] | None:
        for row in self.snapshot(user_id).of(kind):
            if row["key"] == key:
                return row
        return None

    # -- writes --------------------------------------------------------------------------

    def _next_seq(self) -> int:
        # Strictly increasing within this process; nanoseconds across processes.
        seq = max(time.time_ns(), self._last_seq + 1)
        self._last_seq = seq
        return seq

    def put(
        self,
        user_id: str,
        kind: str,
        items: list[tuple[str, dict[str, Any]]],
        *,
        deleted: bool = False,
        created_at: dict[str, datetime] | None = None,
    ) -> int:
        """Write ``(key, fields)`` rows of ``kind`` for the user in one commit; the new version.

        ``created_at`` keeps a row's original creation time on updates (keyed by row key).
        """
        if kind not in KINDS:
            raise ValueError(f"unknown state kind {kind!r}")
        if not items:
            return self.latest_version()
        now = datetime.now(UTC)
        bucket = user_bucket(user_id, self.settings.num_buckets)
        with self._write_lock:
            columns: dict[str, list[Any]] = {name: [] for name in USER_STATE.names}
            for key, fields in items:
                unknown = set(fields) - set(STATE_FIELDS)
                if unknown:
                    raise ValueError(f"unknown state fields {sorted(unknown)}")
                columns["user_id"].append(user_id)
                columns["user_bucket"].append(bucket)
                columns["kind"].append(kind)
                columns["key"].append(key)
                columns["seq"].append(self._next_seq())
                columns["deleted"].append(deleted)
                for name in STATE_FIELDS:
                    columns[name].append(fields.get(name))
                columns["created_at"].append((created_at or {}).get(key, now))
                columns["updated_at"].append(now)
            table = pa.Table.from_pydict(columns, schema=USER_STATE)
            if self._appender is None:
                self._appender = DeltaAppender(self.settings, "user_state")
            return self._appender.append(table)
