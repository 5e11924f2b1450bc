"""Delta table access: creation, appends with conflict retries, snapshots by version."""

from __future__ import annotations

import hashlib
import logging
import os
import random
import threading
import time
from collections import OrderedDict

import pyarrow as pa
import pyarrow.dataset as ds
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError

from scale_ray.ledger.schema import PARTITIONS, TABLE_SCHEMAS
from scale_ray.settings import Settings

log = logging.getLogger(__name__)

#: Table properties: checkpoints often enough that opening a snapshot stays cheap.
TABLE_CONFIGURATION = {
    "delta.checkpointInterval": "50",
    "delta.logRetentionDuration": "interval 30 days",
}


def open_table(settings: Settings, name: str, *, create: bool = True) -> DeltaTable:
    """Open table ``name`` under the data root, creating it (schema, partitions) if missing."""
    uri = settings.table_uri(name)
    try:
        return DeltaTable(uri)
    except TableNotFoundError:
        if not create:
            raise
    try:
        return DeltaTable.create(
            uri,
            schema=TABLE_SCHEMAS[name],
            partition_by=PARTITIONS[name] or None,
            name=name,
            configuration=TABLE_CONFIGURATION,
            mode="ignore",
        )
    except (CommitFailedError, DeltaError):
        # Someone else created it between our two calls.
        return DeltaTable(uri)


def ensure_tables(settings: Settings, names: tuple[str, ...] | None = None) -> None:
    """Create every ledger table (or those named) that does not exist yet."""
    for name in names or tuple(TABLE_SCHEMAS):
        open_table(settings, name)


#: Re-open the appender's table after this many appends (see :meth:`DeltaAppender.append`).
REOPEN_EVERY_APPENDS = 50


class DeltaAppender:
    """Appends Arrow batches to one table, retrying conflicts and transient storage errors.

    Keeps the ``DeltaTable`` open so a commit only reads the log entries it has not seen yet.
    Not thread-safe; a LedgerWriter owns one per table.
    """

    def __init__(self, settings: Settings, name: str) -> None:
        self.settings = settings
        self.name = name
        self.table = open_table(settings, name)
        self.partition_by = PARTITIONS[name] or None
        self._appends_since_open = 0

    def append(self, data: pa.Table, *, metadata: dict[str, str] | None = None) -> int:
        """Append ``data`` in one commit; returns the committed table version."""
        attempts = self.settings.commit_retries
        for attempt in range(attempts + 1):
            try:
                write_deltalake(
                    self.table,
                    data,
                    mode="append",
                    partition_by=self.partition_by,
                    commit_properties=CommitProperties(
                        custom_metadata=metadata, max_commit_retries=attempts
                    ),
                )
                version = self.table.version()
                self._appends_since_open += 1
                if self._appends_since_open >= REOPEN_EVERY_APPENDS:
                    # With deltalake 1.6, every append into one open DeltaTable costs a little
                    # more than the last (13 ms -> 60 ms over 400 commits); a fresh open
                    # (a few ms, read from the latest checkpoint) resets it.
                    self.table = DeltaTable(self.settings.table_uri(self.name))
                    self._appends_since_open = 0
                return version
            except (CommitFailedError, OSError, DeltaError) as exc:
                if attempt == attempts or isinstance(exc, TableNotFoundError):
                    raise
                delay = min(0.5, 0.005 * 2**attempt) * (0.5 + random.random())
                log.warning(
                    "commit to %s failed (%s); retry %d in %.3fs",
                    self.name,
                    exc,
                    attempt + 1,
                    delay,
                )
                time.sleep(delay)
                self.table = open_table(self.settings, self.name)
        raise AssertionError("unreachable")


class SnapshotCache:
    """Arrow datasets of a table at given versions, for reads that must see one snapshot.

    ``latest_version`` refreshes incrementally; ``dataset(version, bucket)`` returns a dataset
    restricted to one ``user_bucket`` partition when the table is partitioned. Thread-safe.
    """

    def __init__(self, settings: Settings, name: str, capacity: int = 16) -> None:
        self.settings = settings
        self.name = name
        self.capacity = capacity
        self._lock = threading.Lock()
        self._head: DeltaTable | None = None
        self._tables: OrderedDict[int, DeltaTable] = OrderedDict()
        self._datasets: OrderedDict[tuple[int, int | None], ds.Dataset] = OrderedDict()
        self._fingerprints: OrderedDict[tuple[int, int | None], str] = OrderedDict()
        uri = settings.table_uri(name)
        self._local_log = os.path.join(uri, "_delta_log") if "://" not in uri else None

    def latest_version(self) -> int:
        with self._lock:
            if self._head is None:
                self._head = open_table(self.settings, self.name)
            elif self._local_log is None or os.path.exists(
                os.path.join(self._local_log, f"{self._head.version() + 1:020d}.json")
            ):
                # On local disk a stat of the next commit file (microseconds) says whether
                # there is anything to read; object stores always take the incremental update.
                self._head.update_incremental()
            return self._head.version()

    def table_at(self, version: int) -> DeltaTable:
        with self._lock:
            table = self._tables.get(version)
            if table is None:
                table = DeltaTable(self.settings.table_uri(self.name), version=version)
                self._tables[version] = table
                while len(self._tables) > self.capacity:
                    self._tables.popitem(last=False)
            else:
                self._tables.move_to_end(version)
            return table

    def dataset(self, version: int, bucket: int | None = None) -> ds.Dataset:
        key = (version, bucket)
        with self._lock:
            cached = self._datasets.get(key)
            if cached is not None:
                self._datasets.move_to_end(key)
                return cached
        table = self.table_at(version)
        partitions = [("user_bucket", "=", str(bucket))] if bucket is not None else None
        dataset = table.to_pyarrow_dataset(partitions=partitions)
        with self._lock:
            self._datasets[key] = dataset
            while len(self._datasets) > self.capacity * 8:
                self._datasets.popitem(last=False)
        return dataset

    def fingerprint(self, version: int, bucket: int | None = None) -> str:
        """A digest of the data files of ``bucket`` at ``version``.

        Two versions with the same fingerprint hold the same rows for that bucket, so whatever
        was computed from one still holds at the other: a commit to another bucket (or a
        metadata-only commit) does not invalidate per-user caches.
        """
        key = (version, bucket)
        with self._lock:
            cached = self._fingerprints.get(key)
            if cached is not None:
                return cached
        table = self.table_at(version)
        partitions = [("user_bucket", "=", str(bucket))] if bucket is not None else None
        files = sorted(table.file_uris(partition_filters=partitions))
        digest = hashlib.blake2b("\n".join(files).encode(), digest_size=12).hexdigest()
        with self._lock:
            self._fingerprints[key] = digest
            while len(self._fingerprints) > self.capacity * 64:
                self._fingerprints.popitem(last=False)
        return digest
