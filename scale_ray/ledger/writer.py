"""Group commit of ledger writes for one writer shard (no Ray here; the actor wraps this).

A shard owns the user buckets ``b`` with ``b % writer_shards == shard`` and is their only
writer, so its in-memory duplicate index, loaded lazily per bucket from the table, is
authoritative. A write is acknowledged only after its Delta commit; a retried write whose rows
were committed before a crash finds them in the index (rebuilt from the table on restart) and
counts them as duplicates instead of writing them twice.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from scale_ray.ledger.delta import DeltaAppender
from scale_ray.ledger.key_index import BucketKeyIndex, load_bucket_index
from scale_ray.ledger.keys import key_hashes, shard_of_bucket
from scale_ray.ledger.schema import ACCOUNTS, TRANSACTIONS
from scale_ray.settings import Settings

log = logging.getLogger(__name__)

#: At most this many duplicate ids are echoed back per request.
MAX_ECHOED_DUPLICATES = 100


@dataclass
class WriteAck:
    """What a write request achieved, known only after its commit."""

    written: int = 0
    duplicates: int = 0
    duplicate_txn_ids: list[str] = field(default_factory=list)
    accounts_created: int = 0
    #: Version of ``transactions`` that holds the rows (the latest one, when all were duplicates).
    version: int | None = None

    def merge(self, other: WriteAck) -> WriteAck:
        versions = [v for v in (self.version, other.version) if v is not None]
        return WriteAck(
            written=self.written + other.written,
            duplicates=self.duplicates + other.duplicates,
            duplicate_txn_ids=(self.duplicate_txn_ids + other.duplicate_txn_ids)[
                :MAX_ECHOED_DUPLICATES
            ],
            accounts_created=self.accounts_created + other.accounts_created,
            version=max(versions) if versions else None,
        )


@dataclass
class WriteRequest:
    transactions: pa.Table
    accounts: pa.Table | None = None


class ShardOwnershipError(ValueError):
    """A row was routed to a writer that does not own its bucket."""


class LedgerWriterCore:
    """Deduplicate and commit groups of write requests for one shard."""

    def __init__(self, settings: Settings, shard: int) -> None:
        self.settings = settings
        self.shard = shard
        self.transactions = DeltaAppender(settings, "transactions")
        self.accounts = DeltaAppender(settings, "accounts")
        self._txn_index: dict[int, BucketKeyIndex] = {}
        self._account_index: dict[int, BucketKeyIndex] = {}
        self.commits = 0
        self.rows_committed = 0
        self.compactions = 0

    # -- indexes -----------------------------------------------------------------------------
    def _index(self, bucket: int, *, accounts: bool) -> BucketKeyIndex:
        cache = self._account_index if accounts else self._txn_index
        index = cache.get(bucket)
        if index is None:
            appender = self.accounts if accounts else self.transactions
            dataset = appender.table.to_pyarrow_dataset(
                partitions=[("user_bucket", "=", str(bucket))]
            )
            index = load_bucket_index(dataset, bucket, "account_id" if accounts else "txn_id")
            cache[bucket] = index
        return index

    def _check_owned(self, buckets: np.ndarray) -> None:
        for bucket in np.unique(buckets):
            if shard_of_bucket(int(bucket), self.settings.writer_shards) != self.shard:
                raise ShardOwnershipError(
                    f"bucket {bucket} does not belong to writer shard {self.shard}"
                )

    def _new_mask(
        self, table: pa.Table, key_column: str, *, accounts: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """Mask of rows that are new (not in the index, first of their key in the batch)."""
        users = table.column("user_id").to_numpy(zero_copy_only=False)
        keys = table.column(key_column).to_numpy(zero_copy_only=False)
        buckets = table.column("user_bucket").to_numpy()
        self._check_owned(buckets)
        hashes = key_hashes(users, keys)
        new = np.zeros(table.num_rows, dtype=bool)
        _, first = np.unique(hashes, return_index=True)
        new[first] = True
        for bucket in np.unique(buckets):
            rows = np.flatnonzero(buckets == bucket)
            present = self._index(int(bucket), accounts=accounts).contains(hashes[rows])
            new[rows[present]] = False
        return new, hashes

    def _remember(
        self, table: pa.Table, hashes: np.ndarray, new: np.ndarray, *, accounts: bool
    ) -> None:
        buckets = table.column("user_bucket").to_numpy()
        for bucket in np.unique(buckets[new]):
            rows = new & (buckets == bucket)
            self._index(int(bucket), accounts=accounts).add(hashes[rows])

    # -- commit ------------------------------------------------------------------------------
    def commit_group(self, requests: Sequence[WriteRequest]) -> list[WriteAck]:
        """Commit every request of the group (accounts first, then transactions) and ack each.

        Raises if a commit fails after its retries; then nothing of the group is acknowledged
        and the indexes are unchanged, so the client's retry is safe.
        """
        acks = [WriteAck() for _ in requests]
        account_tables = [
            r.accounts for r in requests if r.accounts is not None and r.accounts.num_rows
        ]
        if account_tables:
            owners = [
                i for i, r in enumerate(requests) if r.accounts is not None and r.accounts.num_rows
            ]
            accounts = pa.concat_tables(
                [t.select(ACCOUNTS.names).cast(ACCOUNTS) for t in account_tables]
            )
            new, hashes = self._new_mask(accounts, "account_id", accounts=True)
            if new.any():
                self.accounts.append(accounts.filter(pa.array(new)))
                self._remember(accounts, hashes, new, accounts=True)
            counts = np.add.reduceat(
                new.astype(np.int64), _offsets([t.num_rows for t in account_tables])
            )
            for owner, count in zip(owners, counts, strict=True):
                acks[owner].accounts_created = int(count)

        sizes = [r.transactions.num_rows for r in requests]
        if sum(sizes) == 0:
            return acks
        txns = pa.concat_tables(
            [r.transactions.select(TRANSACTIONS.names).cast(TRANSACTIONS) for r in requests]
        )
        new, hashes = self._new_mask(txns, "txn_id", accounts=False)
        if new.any():
            version = self.transactions.append(txns.filter(pa.array(new)))
            self._remember(txns, hashes, new, accounts=False)
            self.commits += 1
            self.rows_committed += int(new.sum())
        else:
            version = self.transactions.table.version()
        txn_ids = txns.column("txn_id")
        start = 0
        for ack, size in zip(acks, sizes, strict=True):
            part = new[start : start + size]
            ack.written = int(part.sum())
            ack.duplicates = size - ack.written
            ack.version = version
            if ack.duplicates:
                dup_rows = np.flatnonzero(~part)[:MAX_ECHOED_DUPLICATES] + start
                ack.duplicate_txn_ids = pc.take(txn_ids, pa.array(dup_rows)).to_pylist()
            start += size
        return acks

    def compact_owned(self) -> dict[str, int]:
        """Bin-pack the small files of this shard's buckets (safe beside concurrent appends).

        Every commit adds a file per bucket it touches, and a Delta commit costs time in
        proportion to the table's live files, so single-row posts slow down as files pile up.
        Uses its own ``DeltaTable`` so it can run on another thread than the commits.
        """
        from deltalake import DeltaTable

        buckets = [
            str(b)
            for b in range(self.settings.num_buckets)
            if shard_of_bucket(b, self.settings.writer_shards) == self.shard
        ]
        table = DeltaTable(self.settings.table_uri("transactions"))
        metrics = table.optimize.compact(partition_filters=[("user_bucket", "in", buckets)])
        self.compactions += 1
        return {
            "files_removed": int(metrics.get("numFilesRemoved", 0)),
            "files_added": int(metrics.get("numFilesAdded", 0)),
        }

    def stats(self) -> dict[str, int]:
        return {
            "shard": self.shard,
            "commits": self.commits,
            "rows_committed": self.rows_committed,
            "buckets_indexed": len(self._txn_index),
            "keys_indexed": sum(len(i) for i in self._txn_index.values()),
            "compactions": self.compactions,
            "version": self.transactions.table.version(),
        }


def _offsets(sizes: Sequence[int]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
