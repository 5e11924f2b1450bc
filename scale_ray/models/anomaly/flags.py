"""Flags on transactions, and the user's verdict on each, in the ``flags`` Delta table.

The anomaly monitor raises a flag on a debit its model finds unusual; the user then says whether
the charge was *legitimate* or *fraud*. Those verdicts are the only labels the anomaly model gets
(:meth:`FlagStore.labelled`): they tune thresholds and measure precision on real ledgers.

Rows are events, like ``user_state``: the latest ``seq`` per (user_id, txn_id, kind) is the
flag's current state. A flag is *raised* by an ``open`` row and *resolved* by a row with the
user's verdict that keeps the score, reason and model version; resolving again appends another
row (the latest wins). A flag's ``created_at`` is that of its first row, ``resolved_at`` that of
its latest row when it is not open.

``flag_id = content_key(txn_id, kind)`` is deterministic, so the monitor can replay a ledger
version after a crash and write nothing twice: :meth:`FlagStore.record` keeps, per user, the set
of flags already in the table (loaded from the table itself the first time the user is seen,
joined only after the append that holds them committed), exactly as
:class:`~scale_ray.analytics.notifier.BudgetNotifier` does for notifications. The id does not
name the user: every per-user read and write here is scoped by ``user_bucket`` and ``user_id``,
so one user's flag id never reaches another user's flag (only :meth:`FlagStore.labelled`, for
evaluation jobs, reads across users).
"""

from __future__ import annotations

import base64
import binascii
import builtins
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from deltalake.exceptions import DeltaError

from scale_ray.analytics.state import DUCKDB_CONFIG, content_key
from scale_ray.ledger.delta import DeltaAppender, SnapshotCache, ensure_tables
from scale_ray.ledger.keys import user_bucket
from scale_ray.ledger.schema import FLAGS
from scale_ray.models.anomaly.model import AnomalyResult
from scale_ray.settings import Settings

#: The kind of flag the anomaly engine raises.
KIND_ANOMALY = "anomaly"
OPEN = "open"
#: The verdicts a user can give.
RESOLUTIONS = ("legitimate", "fraud")
STATUSES = (OPEN, *RESOLUTIONS)

K = TypeVar("K")

#: The current state of each flag: the latest ``seq`` per (user_id, txn_id, kind), with the
#: time of its first row (raised) and of its latest row (resolved, when not open).
_CURRENT_SQL = """
    SELECT user_id, txn_id, kind, score, reason, status, model_version, seq,
           first_at AS created_at, created_at AS updated_at
    FROM (
        SELECT *,
               row_number() OVER (PARTITION BY user_id, txn_id, kind ORDER BY seq DESC) AS rn,
               min(created_at) OVER (PARTITION BY user_id, txn_id, kind) AS first_at
        FROM f WHERE {where}
    ) WHERE rn = 1 {status}
"""


def flag_id(txn_id: str, kind: str = KIND_ANOMALY) -> str:
    """The deterministic id of the flag of ``kind`` on ``txn_id``."""
    return content_key(txn_id, kind)


class FlagNotFound(LookupError):
    """No flag with that id for that user."""


class InvalidFlagCursor(ValueError):
    """A pagination cursor that :meth:`FlagStore.list` did not produce."""


@dataclass(frozen=True)
class FlagCursor:
    """Position after the last flag of a page, at one ``flags`` table version."""

    version: int
    created_at_us: int
    flag_id: str

    def encode(self) -> str:
        raw = json.dumps([self.version, self.created_at_us, self.flag_id], separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> FlagCursor:
        try:
            padded = token + "=" * (-len(token) % 4)
            version, created_us, fid = json.loads(base64.urlsafe_b64decode(padded))
            if (
                not isinstance(version, int)
                or not isinstance(created_us, int)
                or not isinstance(fid, str)
                or version < 0
            ):
                raise TypeError
            return cls(version, created_us, fid)
        except (ValueError, TypeError, binascii.Error, json.JSONDecodeError) as exc:
            raise InvalidFlagCursor(
                "cursor is malformed; use next_cursor from a previous page"
            ) from exc


def _epoch_us(ts: datetime) -> int:
    delta = ts.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _flag(row: Mapping[str, Any]) -> dict[str, Any]:
    """A current-state row as the store hands it out (``created_at``/``resolved_at`` in UTC)."""
    created = row["created_at"].astimezone(UTC)
    status = row["status"]
    return {
        "flag_id": flag_id(row["txn_id"], row["kind"]),
        "user_id": row["user_id"],
        "txn_id": row["txn_id"],
        "kind": row["kind"],
        "score": row["score"],
        "reason": row["reason"],
        "status": status,
        "model_version": row["model_version"],
        "seq": int(row["seq"]),
        "created_at": created,
        "resolved_at": row["updated_at"].astimezone(UTC) if status != OPEN else None,
    }


def flag_json(flag: Mapping[str, Any]) -> dict[str, Any]:
    """A flag as the API shows it (no user id, no seq; ISO 8601 UTC times)."""

    def iso(ts: datetime | None) -> str | None:
        return ts.astimezone(UTC).isoformat().replace("+00:00", "Z") if ts else None

    return {
        "flag_id": flag["flag_id"],
        "txn_id": flag["txn_id"],
        "kind": flag["kind"],
        "score": round(float(flag["score"]), 6) if flag["score"] is not None else None,
        "reason": flag["reason"],
        "status": flag["status"],
        "model_version": flag["model_version"],
        "created_at": iso(flag["created_at"]),
        "resolved_at": iso(flag["resolved_at"]),
    }


class KnownKeys(Generic[K]):
    """Per-user key sets loaded from a table; the least recently used users are forgotten.

    Forgetting is safe: the table is the memory, and a forgotten user is loaded again. Not
    thread-safe (its owner holds a lock).
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._sets: OrderedDict[str, set[K]] = OrderedDict()

    def missing(self, users: Iterable[str]) -> list[str]:
        """The users not loaded, sorted."""
        return sorted({u for u in users if u not in self._sets})

    def of(self, user: str) -> set[K]:
        self._sets.move_to_end(user)
        return self._sets[user]

    def put(self, user: str, keys: set[K]) -> None:
        self._sets[user] = keys
        self._sets.move_to_end(user)

    def trim(self) -> None:
        """Forget the least recently used users beyond ``capacity`` (call after a batch)."""
        while len(self._sets) > self.capacity:
            self._sets.popitem(last=False)


class FlagStore:
    """Reads and writes of the ``flags`` table for one process (thread-safe).

    :meth:`record` (the monitor) and :meth:`resolve` (the gateway) serialize their writes under
    one lock; reads need none.
    """

    def __init__(self, settings: Settings, *, known_users: int = 100_000) -> None:
        ensure_tables(settings, ("flags",))
        self.settings = settings
        #: ``latest_version`` re-reads the log each call: reads see the table as it is now.
        self.snapshots = SnapshotCache(settings, "flags")
        self._appender: DeltaAppender | None = None
        self._lock = threading.Lock()
        self._db = duckdb.connect(config={**DUCKDB_CONFIG, "threads": 1})
        self._db_lock = threading.Lock()
        #: user -> the (txn_id, kind) of every flag the table holds for them (see module doc).
        self._known: KnownKeys[tuple[str, str]] = KnownKeys(known_users)
        self._last_seq = 0
        self.stats = {"recorded": 0, "resolved": 0, "known_loads": 0}

    # -- reads ---------------------------------------------------------------------------

    def latest_version(self) -> int:
        return self.snapshots.latest_version()

    def _current(
        self,
        dataset: Any,
        where: str,
        params: list[Any],
        statuses: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        status_sql = ""
        if statuses is not None:
            status_sql = "AND list_contains(?, status)"
            params = [*params, list(statuses)]
        sql = _CURRENT_SQL.format(where=where, status=status_sql)
        with self._db_lock:
            cur = self._db.cursor()
        try:
            cur.register("f", dataset)
            result = cur.execute(sql, params)
            columns = [d[0] for d in result.description]
            rows = [dict(zip(columns, r, strict=True)) for r in result.fetchall()]
        finally:
            cur.close()
        return [_flag(r) for r in rows]

    def flags_of(
        self,
        user_id: str,
        *,
        statuses: Sequence[str] | None = None,
        txn_ids: Iterable[str] | None = None,
        version: int | None = None,
    ) -> list[dict[str, Any]]:
        """The user's flags (current state) at ``version`` (latest when None), unordered."""
        if version is None:
            version = self.snapshots.latest_version()
        bucket = user_bucket(user_id, self.settings.num_buckets)
        dataset = self.snapshots.dataset(version, bucket)
        where, params = "user_bucket = ? AND user_id = ?", [bucket, user_id]
        if txn_ids is not None:
            wanted = sorted(set(txn_ids))
            if not wanted:
                return []
            where += " AND list_contains(?, txn_id)"
            params.append(wanted)
        return self._current(dataset, where, params, statuses)

    def get(self, user_id: str, flag_id_: str) -> dict[str, Any] | None:
        """The user's flag with this id (current state), or None."""
        for flag in self.flags_of(user_id):
            if flag["flag_id"] == flag_id_:
                return flag
        return None

    def labelled(
        self,
        *,
        kind: str = KIND_ANOMALY,
        user_ids: Iterable[str] | None = None,
        version: int | None = None,
    ) -> list[dict[str, Any]]:
        """Every resolved flag of ``kind`` (all users, or those named): the users' labels.

        Sorted by ``resolved_at``; each carries the score and model version it was raised
        with, so thresholds can be tuned on what users called legitimate versus fraud.
        """
        if version is None:
            version = self.snapshots.latest_version()
        where, params = "kind = ?", [kind]
        if user_ids is None:
            dataset: Any = self.snapshots.dataset(version)
        else:
            users = sorted(set(user_ids))
            if not users:
                return []
            buckets = sorted({user_bucket(u, self.settings.num_buckets) for u in users})
            import pyarrow.dataset as ds

            parts = [self.snapshots.dataset(version, b) for b in buckets]
            dataset = parts[0] if len(parts) == 1 else ds.dataset(parts)
            where += " AND list_contains(?, user_id)"
            params.append(users)
        flags = self._current(dataset, where, params, RESOLUTIONS)
        flags.sort(key=lambda f: (f["resolved_at"], f["user_id"], f["txn_id"]))
        return flags

    # -- writes --------------------------------------------------------------------------

    def _next_seq(self) -> int:
        # Strictly increasing within this process; nanoseconds across processes.
        seq = max(time.time_ns(), self._last_seq + 1)
        self._last_seq = seq
        return seq

    def _append(self, rows: list[dict[str, Any]], producer: str) -> int:
        table = pa.Table.from_pylist(rows, schema=FLAGS)
        if self._appender is None:
            self._appender = DeltaAppender(self.settings, "flags")
        return self._appender.append(table, metadata={"producer": producer})

    def _load_known(self, user_ids: Iterable[str]) -> None:
        """Load the flags in the table of users not loaded yet (caller holds the lock)."""
        missing = self._known.missing(user_ids)
        if not missing:
            return
        version = self.snapshots.latest_version()
        by_bucket: dict[int, list[str]] = {}
        for user in missing:
            by_bucket.setdefault(user_bucket(user, self.settings.num_buckets), []).append(user)
        for bucket, users in sorted(by_bucket.items()):
            found = self.snapshots.dataset(version, bucket).to_table(
                columns=["user_id", "txn_id", "kind"], filter=pc.field("user_id").isin(users)
            )
            sets: dict[str, set[tuple[str, str]]] = {u: set() for u in users}
            for user, txn, kind in zip(
                found.column("user_id").to_pylist(),
                found.column("txn_id").to_pylist(),
                found.column("kind").to_pylist(),
                strict=True,
            ):
                sets[user].add((txn, kind))
            for user, keys in sets.items():
                self._known.put(user, keys)
        self.stats["known_loads"] += len(missing)

    def record(
        self,
        results: Iterable[AnomalyResult],
        model_version: str,
        *,
        kind: str = KIND_ANOMALY,
    ) -> list[dict[str, Any]]:
        """Raise an ``open`` flag for each flagged result that has no flag yet; one commit.

        Idempotent: results already flagged in the table (by an earlier call, this process or
        another before a restart) are skipped. Returns the new flags (current-state dicts).
        """
        flagged = [r for r in results if r.flagged]
        if not flagged:
            return []
        with self._lock:
            self._load_known(r.user_id for r in flagged)
            now = datetime.now(UTC)
            rows: list[dict[str, Any]] = []
            keys: set[tuple[str, str]] = set()
            for r in flagged:
                key = (r.user_id, r.txn_id)
                if (r.txn_id, kind) in self._known.of(r.user_id) or key in keys:
                    continue
                keys.add(key)
                rows.append(
                    {
                        "user_id": r.user_id,
                        "user_bucket": user_bucket(r.user_id, self.settings.num_buckets),
                        "txn_id": r.txn_id,
                        "kind": kind,
                        "score": float(r.score),
                        "reason": r.reason,
                        "status": OPEN,
                        "model_version": model_version,
                        "seq": self._next_seq(),
                        "created_at": now,
                    }
                )
            if rows:
                self._append(rows, "anomaly-monitor")
                # Committed: only now are they known (a crash before this re-reads the table).
                for user, txn in keys:
                    self._known.of(user).add((txn, kind))
                self.stats["recorded"] += len(rows)
            self._known.trim()
        return [_flag({**row, "updated_at": now}) for row in rows]

    def resolve(self, user_id: str, flag_id_: str, resolution: str) -> dict[str, Any]:
        """Record the user's verdict (``legitimate`` or ``fraud``) on their flag; the new state.

        Raises ``ValueError`` for another resolution and :class:`FlagNotFound` when the user
        has no such flag (another user's id included). Giving the verdict the flag already has
        writes nothing (a retried request stays one event).
        """
        if resolution not in RESOLUTIONS:
            raise ValueError(f"resolution must be one of {', '.join(RESOLUTIONS)}")
        with self._lock:
            current = self.get(user_id, flag_id_)
            if current is None:
                raise FlagNotFound(f"flag {flag_id_!r} not found")
            if current["status"] == resolution:
                return current
            now = datetime.now(UTC)
            seq = max(self._next_seq(), current["seq"] + 1)
            self._last_seq = seq
            row = {
                "user_id": user_id,
                "user_bucket": user_bucket(user_id, self.settings.num_buckets),
                "txn_id": current["txn_id"],
                "kind": current["kind"],
                "score": current["score"],
                "reason": current["reason"],
                "status": resolution,
                "model_version": current["model_version"],
                "seq": seq,
                "created_at": now,
            }
            self._append([row], "flag-resolution")
            self.stats["resolved"] += 1
        return {**current, "status": resolution, "seq": seq, "resolved_at": now}

    # -- pages ---------------------------------------------------------------------------

    def list(
        self,
        user_id: str,
        *,
        status: str | None = OPEN,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[builtins.list[dict[str, Any]], str | None]:
        """One page of the user's flags, newest first, and the next page's cursor (or None).

        ``status`` is one of :data:`STATUSES` (None or ``"all"``: every flag). A cursor keeps
        the table version of the first page, so paging never sees flags raised or resolved
        after it began. Raises ``ValueError`` for a bad status or limit and
        :class:`InvalidFlagCursor` for a cursor this method did not produce.
        """
        if status == "all":
            status = None
        if status is not None and status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join((*STATUSES, 'all'))}")
        if limit < 1:
            raise ValueError("limit must be >= 1")
        after = FlagCursor.decode(cursor) if cursor else None
        version = after.version if after else self.snapshots.latest_version()
        if after is not None and version > self.snapshots.latest_version():
            raise InvalidFlagCursor("cursor names a table version that does not exist")
        try:
            flags = self.flags_of(
                user_id, statuses=None if status is None else [status], version=version
            )
        except DeltaError as exc:
            raise InvalidFlagCursor(f"cursor's snapshot is no longer available: {exc}") from exc
        keyed = sorted(
            ((_epoch_us(f["created_at"]), f["flag_id"], f) for f in flags),
            key=lambda t: (t[0], t[1]),
            reverse=True,
        )
        if after is not None:
            keyed = [t for t in keyed if (t[0], t[1]) < (after.created_at_us, after.flag_id)]
        page = keyed[: limit + 1]
        next_cursor = None
        if len(page) > limit:
            page = page[:limit]
            last = page[-1]
            next_cursor = FlagCursor(version, last[0], last[1]).encode()
        return [t[2] for t in page], next_cursor


__all__ = [
    "KIND_ANOMALY",
    "OPEN",
    "RESOLUTIONS",
    "STATUSES",
    "FlagCursor",
    "FlagNotFound",
    "FlagStore",
    "InvalidFlagCursor",
    "KnownKeys",
    "flag_id",
    "flag_json",
]
