"""Score every new debit of the ledger as it commits; flag the unusual ones and tell the user.

:class:`AnomalyMonitorCore` follows the ``transactions`` table's commits with a
:class:`~scale_ray.analytics.monitor.TableWatcher` (the Delta log is the event bus, DESIGN §1).
For each new change it reads the added rows, and for the users with new debits loads each
user's full history from the latest snapshot (features look only at a row's past, so a full
ledger gives the same features as the ledger at the time), scores the new debits with the live
anomaly model (:func:`~.serving.score_new`), records flags (:class:`~.flags.FlagStore`) and
writes one notification per new flag (:class:`AnomalyNotifier`).

Why every flag and notification is written exactly once, through crashes and retries:

1. **Durable offset.** After a change is fully processed its table version is written to
   ``<data root>/offsets/anomaly-monitor.json`` (atomically: a temporary file renamed over the
   old one). A restarted monitor resumes after that version, so rows committed while it was
   down are scored. With no offset file the first start pins the table's current version V
   and writes it at once: with ``backfill`` off (``SCALE_ANOMALY_BACKFILL=false``) V is the
   offset and the existing ledger is never scored; with it on (the default) the existing
   ledger is backfilled first (below), then V becomes the offset.
2. **Idempotent writes, flags first.** A crash after some commits of a change replays the
   change. Flags are keyed by (user, txn, kind) and skipped when already in the table;
   notifications have deterministic ids (``content_key("anomaly", txn_id)``) and are skipped
   when already in the table. While replaying, the flags to notify about are read back from
   the ``flags`` table (not only the ones this pass wrote), so a crash between the flags
   commit and the notifications commit still notifies, once.
3. **One producer.** Only the ``anomaly-monitor`` actor runs this core (a named, detached
   actor: Ray keeps at most one alive).

A user whose scoring raises (one bad row must not stop everyone's alerts) is retried after
``failed_retry_s``, and sooner when new rows of theirs arrive; the offset still advances, but
the user's unscored txn ids are saved *in the offset file* with it, so no row is ever left
behind unscored, and a permanently failing user does not pin the offset (which would make every
restart replay ever more of the log, and eventually ask for commit files the log no longer
keeps).

**Backfill.** A ledger that existed before the monitor's first start (a demo ledger, one loaded
before the anomaly engine shipped) is scored from the snapshot at V, one ``user_bucket`` per
:meth:`~AnomalyMonitorCore.step` (buckets with no debits are skipped within the step), so the
actor's loop stays responsive. Each bucket's users are scored, flagged and notified exactly
like new rows (``chunk_users`` per commit; failing users saved for retry). After each bucket
the offset file records the progress, ``{"version": null, "backfill": {"version": V,
"next_bucket": b}}``; a restart resumes at bucket ``b`` (replaying it, idempotently, as
above). After the last bucket the offset becomes V and the log is followed from there, so
commits made during the backfill are scored once, by the normal path (the backfill scores
exactly the rows of the snapshot at V). Files without ``backfill`` (older ones too) are plain
offsets. An empty ledger at V needs no backfill. Retries of failed users wait until the
backfill is done.

Notifications only go out for transactions booked within ``notify_within`` (14 days) of now:
an imported two-year statement (or a backfilled ledger) is flagged in full (the flags are there
to review) but does not send a notification per old charge.

With no anomaly model published the monitor does not poll (nor backfill) at all, so the offset
stays put and everything committed meanwhile is scored once a model appears. The live model is
re-checked every ``check_every_s`` and reloaded when the registry's live version changes.

Everything here is plain Python (no Ray); :mod:`.monitor_actor` runs it.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from scale_ray.analytics.monitor import TableWatcher
from scale_ray.analytics.notifier import NotificationWriter
from scale_ray.analytics.state import content_key
from scale_ray.ledger.delta import SnapshotCache, ensure_tables
from scale_ray.ledger.keys import user_bucket
from scale_ray.models.anomaly.flags import KIND_ANOMALY, OPEN, FlagStore, KnownKeys
from scale_ray.models.anomaly.model import AnomalyModel, AnomalyResult
from scale_ray.models.anomaly.reasons import money
from scale_ray.models.anomaly.serving import MODEL_NAME, load_anomaly_model, score_new
from scale_ray.models.registry import ModelRegistry
from scale_ray.settings import Settings

log = logging.getLogger(__name__)

#: Name of the offset file under ``<data root>/offsets``.
OFFSET_FILE = "anomaly-monitor.json"
#: Notification kind of anomaly alerts.
NOTIFICATION_KIND = "anomaly"
#: Only transactions booked this recently are notified about.
NOTIFY_WITHIN = timedelta(days=14)
#: The ledger columns the features read (see :mod:`.features`).
HISTORY_COLUMNS = (
    "user_id",
    "txn_id",
    "amount_minor",
    "currency",
    "booked_at",
    "booked_offset_min",
    "merchant",
    "narration",
    "category_hint",
)

#: ``() -> (version, model)``, or None when no model is published (a ``LookupError`` counts as
#: None too): :class:`RegistryModelSource` by default.
ModelSource = Callable[[], "tuple[str, AnomalyModel] | None"]


# -- the durable offset -----------------------------------------------------------------------


def offset_path(settings: Settings) -> str:
    return settings.path("offsets", OFFSET_FILE)


def read_offset(settings: Settings) -> dict[str, Any] | None:
    """The saved offset state, or None when there is none.

    ``version`` (int; None while a backfill runs), ``retry`` (user -> unscored txn ids) and,
    during a backfill, ``backfill``: ``{"version": V, "next_bucket": b}``.
    """
    path = offset_path(settings)
    try:
        if settings.is_local:
            with open(path, encoding="utf-8") as f:
                return json.load(f)
        from pyarrow import fs

        filesystem, where = fs.FileSystem.from_uri(path)
        with filesystem.open_input_stream(where) as f:
            return json.loads(f.read())
    except FileNotFoundError:
        return None


def write_offset(settings: Settings, state: Mapping[str, Any]) -> None:
    """Replace the offset file atomically (a reader sees the old or the new state, whole)."""
    path = offset_path(settings)
    data = json.dumps(state, sort_keys=True, separators=(",", ":")).encode()
    if not settings.is_local:
        from pyarrow import fs

        # An object store's put replaces the object atomically.
        filesystem, where = fs.FileSystem.from_uri(path)
        with filesystem.open_output_stream(where) as f:
            f.write(data)
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class ResumableWatcher(TableWatcher):
    """A :class:`TableWatcher` that can resume after a saved version."""

    def seek(self, version: int) -> None:
        """Report, at the next poll, the commits after ``version``."""
        self._version = version

    def has_commit(self, version: int) -> bool:
        return self._commit(version) is not None


# -- the model --------------------------------------------------------------------------------


class RegistryModelSource:
    """The registry's live anomaly model, reloaded when the live version changes.

    The registry is asked at most every ``check_every_s``; a version that fails to load is
    logged and the previous model kept (retried at the next check).
    """

    def __init__(self, settings: Settings, *, check_every_s: float = 5.0) -> None:
        self.registry = ModelRegistry.from_settings(settings)
        self.check_every_s = check_every_s
        self._current: tuple[str, AnomalyModel] | None = None
        self._checked = float("-inf")
        self.loads = 0

    def __call__(self) -> tuple[str, AnomalyModel] | None:
        now = time.monotonic()
        if now - self._checked < self.check_every_s:
            return self._current
        self._checked = now
        live = self.registry.live(MODEL_NAME)
        if live is None:
            self._current = None
        elif self._current is None or self._current[0] != live:
            try:
                self._current = load_anomaly_model(self.registry, live)
                self.loads += 1
                log.info("anomaly monitor loaded model version %s", live)
            except Exception:
                log.exception("could not load anomaly model %s; keeping the previous one", live)
        return self._current


# -- notifications ----------------------------------------------------------------------------


def notification_id(txn_id: str) -> str:
    return content_key(NOTIFICATION_KIND, txn_id)


def anomaly_notification(flag: Mapping[str, Any], txn: Mapping[str, Any]) -> dict[str, Any]:
    """The notification of a new flag: ``Unusual payment of £45.13 at TESCO``, its reason."""
    amount = money(int(txn["amount_minor"]), str(txn["currency"]))
    where = str(txn.get("merchant") or txn.get("narration") or "").strip()
    title = f"Unusual payment of {amount}" + (f" at {where[:60]}" if where else "")
    return {
        "notification_id": notification_id(flag["txn_id"]),
        "kind": NOTIFICATION_KIND,
        "title": title,
        "message": flag.get("reason") or title,
        "data_json": json.dumps(
            {
                "flag_id": flag["flag_id"],
                "txn_id": flag["txn_id"],
                "score": round(float(flag["score"]), 6),
            }
        ),
    }


class AnomalyNotifier:
    """Writes each anomaly notification at most once (ids already in the table are skipped).

    Thread-safe; one commit per :meth:`notify` call.
    """

    def __init__(
        self,
        settings: Settings,
        writer: NotificationWriter | None = None,
        *,
        known_users: int = 100_000,
    ) -> None:
        ensure_tables(settings, ("notifications",))
        self.settings = settings
        self.writer = writer or NotificationWriter(settings, producer="anomaly-monitor")
        self._table = SnapshotCache(settings, "notifications")
        self._known: KnownKeys[str] = KnownKeys(known_users)
        self._lock = threading.Lock()
        self.stats = {"written": 0, "known_loads": 0}

    def _load_known(self, users: Iterable[str]) -> None:
        missing = self._known.missing(users)
        if not missing:
            return
        version = self._table.latest_version()
        by_bucket: dict[int, list[str]] = {}
        for user in missing:
            by_bucket.setdefault(user_bucket(user, self.settings.num_buckets), []).append(user)
        for bucket, group in sorted(by_bucket.items()):
            found = self._table.dataset(version, bucket).to_table(
                columns=["user_id", "notification_id"],
                filter=pc.field("user_id").isin(group) & (pc.field("kind") == NOTIFICATION_KIND),
            )
            sets: dict[str, set[str]] = {u: set() for u in group}
            for user, ntf in zip(
                found.column("user_id").to_pylist(),
                found.column("notification_id").to_pylist(),
                strict=True,
            ):
                sets[user].add(ntf)
            for user, ids in sets.items():
                self._known.put(user, ids)
        self.stats["known_loads"] += len(missing)

    def known_ids(self, user_id: str) -> set[str]:
        with self._lock:
            self._load_known([user_id])
            return set(self._known.of(user_id))

    def notify(self, items: Sequence[tuple[str, Mapping[str, Any]]]) -> list[dict[str, Any]]:
        """Append the ``(user_id, notification)`` pairs not already in the table; the rows."""
        if not items:
            return []
        with self._lock:
            users = {u for u, _ in items}
            self._load_known(users)
            fresh: list[tuple[str, Mapping[str, Any]]] = []
            ids: set[tuple[str, str]] = set()
            for user, item in items:
                key = (user, item["notification_id"])
                if item["notification_id"] in self._known.of(user) or key in ids:
                    continue
                ids.add(key)
                fresh.append((user, item))
            rows: list[dict[str, Any]] = []
            if fresh:
                _, rows = self.writer.append(fresh)
                # Committed: only now are the ids known (a crash before this re-reads them).
                for user, ntf in ids:
                    self._known.of(user).add(ntf)
                self.stats["written"] += len(rows)
            self._known.trim()
            return rows


# -- the monitor ------------------------------------------------------------------------------


@dataclass
class AnomalyStepReport:
    """What one :meth:`AnomalyMonitorCore.step` did (for stats and tests)."""

    #: The transactions version processed (None: no new change).
    version: int | None = None
    model_version: str | None = None
    no_model: bool = False
    replay: bool = False
    #: Users scored (new debits, and retries that were due).
    users: int = 0
    #: Debits scored.
    scored: int = 0
    flagged: int = 0
    flags_written: int = 0
    notifications_written: int = 0
    #: Flags not notified because the transaction is older than ``notify_within``.
    not_notified_old: int = 0
    failed_users: int = 0
    #: A backfill step: the snapshot version backfilled (None: a normal step).
    backfill_version: int | None = None
    #: Buckets the backfill finished in this step (empty ones included) and debits it scored.
    backfill_buckets: int = 0
    backfill_rows: int = 0
    #: The backfill finished in this step (the offset is now ``backfill_version``).
    backfill_done: bool = False
    seconds: float = 0.0


class AnomalyMonitorCore:
    """Scores the ledger's new debits, raising flags and notifications (see the module doc).

    Only one thread may call :meth:`step`.
    """

    def __init__(
        self,
        settings: Settings,
        model_source: ModelSource | None = None,
        *,
        flags: FlagStore | None = None,
        notifier: AnomalyNotifier | None = None,
        chunk_users: int = 256,
        notify_within: timedelta = NOTIFY_WITHIN,
        failed_retry_s: float = 30.0,
        clock: Callable[[], datetime] | None = None,
        backfill: bool | None = None,
    ) -> None:
        ensure_tables(settings, ("transactions", "flags", "notifications"))
        self.settings = settings
        #: Score the existing ledger on a first start (None: ``settings.anomaly_backfill``).
        self.backfill = settings.anomaly_backfill if backfill is None else backfill
        self.model_source: ModelSource = model_source or RegistryModelSource(settings)
        self.flags = flags or FlagStore(settings)
        self.notifier = notifier or AnomalyNotifier(settings)
        #: Users per scoring call (and per flags / notifications commit).
        self.chunk_users = chunk_users
        self.notify_within = notify_within
        self.failed_retry_s = failed_retry_s
        self.clock = clock or (lambda: datetime.now(UTC))
        self.transactions = SnapshotCache(settings, "transactions")
        self.watcher = ResumableWatcher(settings, "transactions")
        #: Users whose scoring failed -> their txn ids not scored yet; and when to retry them.
        self._retry: dict[str, set[str]] = {}
        self._retry_at: dict[str, float] = {}
        #: A change read from the log but not fully processed yet (retried at the next step).
        self._inflight: Any = None
        self.last = AnomalyStepReport()
        self.stats: dict[str, Any] = {
            "steps": 0,
            "no_model_steps": 0,
            "changes": 0,
            "scored": 0,
            "flagged": 0,
            "flags_written": 0,
            "notifications_written": 0,
            "failed": 0,
            #: Backfill progress: buckets done (durable, across restarts) and debits scored.
            "backfill_buckets_done": 0,
            "backfill_rows": 0,
        }
        self.resumed_from: int | None = None
        #: The backfill under way (``version``, ``next_bucket``), or None.
        self._backfill: dict[str, int] | None = None
        #: The offset: the last transactions version fully processed (None while backfilling).
        self.offset: int | None
        saved = read_offset(settings)
        current = self.watcher.start()
        self._retry = {u: set(t) for u, t in ((saved or {}).get("retry") or {}).items()}
        self._retry_at = dict.fromkeys(self._retry, 0.0)
        backfill = (saved or {}).get("backfill")
        if saved is None or (saved.get("version") is None and not backfill):
            self._replay = False
            if self.backfill and self._has_rows(current):
                self._begin_backfill(current, 0)
                log.info("anomaly monitor backfills transactions version %d (no offset)", current)
            else:
                self.offset = current
                log.info("anomaly monitor starts at transactions version %d (no offset)", current)
            self._save_offset()
            return
        if saved.get("version") is None:
            pinned, next_bucket = int(backfill["version"]), int(backfill["next_bucket"])
            if pinned > current or (pinned < current and not self.watcher.has_commit(pinned + 1)):
                log.error(
                    "cannot resume the anomaly backfill of transactions version %d (the table "
                    "is at %d: recreated, or the log no longer keeps commit %d); backfilling "
                    "version %d from the start",
                    pinned,
                    current,
                    pinned + 1,
                    current,
                )
                pinned, next_bucket = current, 0
            self._begin_backfill(pinned, next_bucket)
            # The next bucket may be half done by the previous process: read flags back.
            self._replay = True
            self._save_offset()
            return
        offset = int(saved["version"])
        if offset > current:
            log.error(
                "anomaly offset %d is ahead of the transactions table (%d); was the table "
                "recreated? starting at %d",
                offset,
                current,
                current,
            )
            offset = current
        elif offset < current and not self.watcher.has_commit(offset + 1):
            log.error(
                "commit %d is no longer in the transactions log (retention); rows between "
                "versions %d and %d are not scored",
                offset + 1,
                offset,
                current,
            )
            offset = current
        self.watcher.seek(offset)
        self.offset = self.resumed_from = offset
        # Until the first step after a restart completes, some of its work (the next change,
        # the saved retries) may have been written by the previous process: read the flags
        # back from the table to notify.
        self._replay = offset < current or bool(self._retry)

    # -- state -----------------------------------------------------------------------------

    def _save_offset(self) -> None:
        state: dict[str, Any] = {
            "version": self.offset,
            "retry": {u: sorted(t) for u, t in sorted(self._retry.items())},
            "updated_at": datetime.now(UTC).isoformat(),
        }
        if self._backfill is not None:
            state["backfill"] = dict(self._backfill)
        write_offset(self.settings, state)

    def _has_rows(self, version: int) -> bool:
        """Whether the transactions snapshot at ``version`` has any data file."""
        return bool(self.transactions.table_at(version).file_uris())

    def _begin_backfill(self, version: int, next_bucket: int) -> None:
        self._backfill = {"version": version, "next_bucket": next_bucket}
        self.offset = None
        # Once the backfill is done, the log is followed from the pinned version.
        self.watcher.seek(version)
        self.stats["backfill_buckets_done"] = next_bucket

    @property
    def backfilling(self) -> bool:
        return self._backfill is not None

    @property
    def retry_users(self) -> set[str]:
        return set(self._retry)

    def _model(self) -> tuple[str, AnomalyModel] | None:
        try:
            return self.model_source()
        except LookupError:
            return None

    # -- one poll --------------------------------------------------------------------------

    def step(self) -> AnomalyStepReport:
        """One poll: score what committed since the last one (and due retries)."""
        started = time.perf_counter()
        report = AnomalyStepReport()
        self.stats["steps"] += 1
        loaded = self._model()
        if loaded is None:
            report.no_model = True
            self.stats["no_model_steps"] += 1
            self.last = report
            return report
        version, model = loaded
        report.model_version = version
        if self._backfill is not None:
            self._backfill_step(version, model, report)
            return self._finish(report, started)
        if self._inflight is None:
            self._inflight = self.watcher.poll()
        change = self._inflight
        report.replay = self._replay
        now = time.monotonic()
        work: dict[str, set[str]] = {}
        due: set[str] = set()
        try:
            if change is not None:
                report.version = change.version
                rows = self.watcher.read(change, ["user_id", "txn_id", "amount_minor"])
                rows = rows.filter(pc.less(rows.column("amount_minor"), 0))
                for user, txn in zip(
                    rows.column("user_id").to_pylist(),
                    rows.column("txn_id").to_pylist(),
                    strict=True,
                ):
                    work.setdefault(user, set()).add(txn)
            due = {u for u, at in self._retry_at.items() if at <= now}
            # A failed user's unscored rows go along whenever the user is scored again.
            for user in due | (work.keys() & self._retry.keys()):
                work.setdefault(user, set()).update(self._retry[user])
            failed = self._process(version, model, work, report) if work else {}
        except BaseException:
            # Part of it may be written: the retry reads flags back before notifying.
            self._replay = True
            raise
        for user in work:
            if user not in failed:
                self._retry.pop(user, None)
                self._retry_at.pop(user, None)
        for user, txns in failed.items():
            self._retry[user] = self._retry.get(user, set()) | txns
            self._retry_at[user] = now + self.failed_retry_s
        if work:
            self._replay = False
        if change is not None:
            self.offset = change.version
            self._save_offset()
            self._inflight = None
            self._replay = False
            self.stats["changes"] += 1
        elif due or failed:
            self._save_offset()
        report.failed_users = len(failed)
        return self._finish(report, started)

    def _finish(self, report: AnomalyStepReport, started: float) -> AnomalyStepReport:
        report.seconds = time.perf_counter() - started
        self.last = report
        for name in ("scored", "flagged", "flags_written", "notifications_written"):
            self.stats[name] += getattr(report, name)
        self.stats["failed"] += report.failed_users
        return report

    def _backfill_step(
        self, model_version: str, model: AnomalyModel, report: AnomalyStepReport
    ) -> None:
        """Score the next bucket of the snapshot being backfilled that has debits (one)."""
        state = self._backfill
        assert state is not None
        pinned, nb = state["version"], self.settings.num_buckets
        report.backfill_version = pinned
        report.replay = self._replay
        failed: dict[str, set[str]] = {}
        try:
            while state["next_bucket"] < nb:
                bucket = state["next_bucket"]
                table = self.transactions.dataset(pinned, bucket).to_table(
                    columns=list(HISTORY_COLUMNS)
                )
                debits = table.filter(pc.less(table.column("amount_minor"), 0))
                work: dict[str, set[str]] = {}
                for user, txn in zip(
                    debits.column("user_id").to_pylist(),
                    debits.column("txn_id").to_pylist(),
                    strict=True,
                ):
                    work.setdefault(user, set()).add(txn)
                if work:

                    def history(users: Sequence[str], table: pa.Table = table) -> pd.DataFrame:
                        mask = pc.is_in(
                            table.column("user_id"), pa.array(users, table.column("user_id").type)
                        )
                        return table.filter(mask).to_pandas()

                    failed = self._process(model_version, model, work, report, history)
                    report.backfill_rows += debits.num_rows
                state["next_bucket"] = bucket + 1
                report.backfill_buckets += 1
                if work:
                    break  # one bucket of work per step
        except BaseException:
            # Part of the bucket may be written: its retry reads flags back before notifying.
            self._replay = True
            raise
        self._replay = False
        now = time.monotonic()
        for user, txns in failed.items():
            self._retry[user] = self._retry.get(user, set()) | txns
            self._retry_at[user] = now + self.failed_retry_s
        report.failed_users = len(failed)
        self.stats["backfill_buckets_done"] = state["next_bucket"]
        self.stats["backfill_rows"] += report.backfill_rows
        if state["next_bucket"] >= nb:
            self._backfill = None
            self.offset = pinned
            report.backfill_done = True
            log.info(
                "anomaly backfill of transactions version %d done; following the log from there",
                pinned,
            )
        self._save_offset()

    def _history(self, users: Sequence[str]) -> pd.DataFrame:
        """The users' full ledgers at the latest snapshot (one read per bucket)."""
        version = self.transactions.latest_version()
        by_bucket: dict[int, list[str]] = {}
        for user in users:
            by_bucket.setdefault(user_bucket(user, self.settings.num_buckets), []).append(user)
        parts = [
            self.transactions.dataset(version, bucket).to_table(
                columns=list(HISTORY_COLUMNS), filter=pc.field("user_id").isin(group)
            )
            for bucket, group in sorted(by_bucket.items())
        ]
        return pa.concat_tables(parts).to_pandas()

    def _score(
        self, model: AnomalyModel, history: pd.DataFrame, users: Sequence[str], work: Mapping
    ) -> tuple[list[AnomalyResult], set[str]]:
        """Verdicts on the users' new debits, and the users whose scoring raised."""
        wanted: set[str] = set().union(*(work[u] for u in users))
        try:
            return score_new(model, history, wanted), set()
        except Exception:
            log.warning("scoring %d users at once failed; scoring them one by one", len(users))
        results: list[AnomalyResult] = []
        failed: set[str] = set()
        groups = dict(tuple(history.groupby("user_id", sort=False)))
        for user in users:
            rows = groups.get(user)
            if rows is None:
                continue
            try:
                results.extend(score_new(model, rows, work[user]))
            except Exception:
                log.exception("anomaly scoring failed for a user; will retry")
                failed.add(user)
        return results, failed

    def _process(
        self,
        model_version: str,
        model: AnomalyModel,
        work: dict[str, set[str]],
        report: AnomalyStepReport,
        history_of: Callable[[Sequence[str]], pd.DataFrame] | None = None,
    ) -> dict[str, set[str]]:
        """Score, flag and notify, ``chunk_users`` users per commit; the users that failed.

        ``history_of(users)`` gives the users' full ledgers (:meth:`_history`: the latest
        snapshot).
        """
        history_of = history_of or self._history
        nb = self.settings.num_buckets
        users = sorted(work, key=lambda u: (user_bucket(u, nb), u))
        failed: dict[str, set[str]] = {}
        cutoff = self.clock() - self.notify_within
        for start in range(0, len(users), self.chunk_users):
            chunk = users[start : start + self.chunk_users]
            history = history_of(chunk)
            results, bad = self._score(model, history, chunk, work)
            for user in bad:
                failed[user] = work[user]
            pairs = {(u, t) for u in chunk if u not in bad for t in work[u]}
            # A txn_id is unique per user only: keep exactly the new rows of each user.
            results = [r for r in results if (r.user_id, r.txn_id) in pairs]
            report.users += len(chunk) - len(bad)
            report.scored += len(results)
            report.flagged += sum(r.flagged for r in results)
            written = self.flags.record(results, model_version)
            report.flags_written += len(written)
            if report.replay:
                candidates = [
                    f
                    for u in chunk
                    if u not in bad
                    for f in self.flags.flags_of(u, txn_ids=work[u])
                    if f["kind"] == KIND_ANOMALY
                ]
            else:
                candidates = written
            if not candidates:
                continue
            keys = {(f["user_id"], f["txn_id"]) for f in candidates}
            rows = history[history["txn_id"].isin({t for _, t in keys})]
            txns = {
                (r["user_id"], r["txn_id"]): r
                for r in rows.to_dict("records")
                if (r["user_id"], r["txn_id"]) in keys
            }
            items: list[tuple[str, dict[str, Any]]] = []
            for flag in candidates:
                txn = txns.get((flag["user_id"], flag["txn_id"]))
                if txn is None or flag["status"] != OPEN:
                    continue
                booked = pd.Timestamp(txn["booked_at"]).to_pydatetime()
                if booked < cutoff:
                    report.not_notified_old += 1
                    continue
                items.append((flag["user_id"], anomaly_notification(flag, txn)))
            report.notifications_written += len(self.notifier.notify(items))
        return failed

    def snapshot(self) -> dict[str, Any]:
        """Stats for the actor: counters, offset, retries, backfill progress, the last step."""
        return {
            **self.stats,
            "offset": self.offset,
            "resumed_from": self.resumed_from,
            "backfill": (
                {**self._backfill, "buckets": self.settings.num_buckets}
                if self._backfill is not None
                else None
            ),
            "watcher_version": self.watcher.version,
            "retry_users": len(self._retry),
            "flags": dict(self.flags.stats),
            "notifier": dict(self.notifier.stats),
            "last": asdict(self.last),
        }


__all__ = [
    "HISTORY_COLUMNS",
    "NOTIFICATION_KIND",
    "NOTIFY_WITHIN",
    "OFFSET_FILE",
    "AnomalyMonitorCore",
    "AnomalyNotifier",
    "AnomalyStepReport",
    "ModelSource",
    "RegistryModelSource",
    "ResumableWatcher",
    "anomaly_notification",
    "notification_id",
    "offset_path",
    "read_offset",
    "write_offset",
]
