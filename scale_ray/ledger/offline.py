"""In-process ledger writes without Ray: the same dedup and commits as the writer actors.

For loading demo data before the app starts, and for benchmarks' anchors. Never run it
while the app's LedgerWriter actors are up: a bucket must have exactly one writer.
"""

from __future__ import annotations

import pyarrow as pa

from scale_ray.ledger.delta import ensure_tables
from scale_ray.ledger.writer import LedgerWriterCore, WriteAck, WriteRequest
from scale_ray.ledger.writer_client import split_by_shard
from scale_ray.settings import Settings


class OfflineLedgerWriter:
    """Routes writes to one :class:`LedgerWriterCore` per shard, in this process."""

    def __init__(self, settings: Settings) -> None:
        ensure_tables(settings)
        self.settings = settings
        self.cores = {s: LedgerWriterCore(settings, s) for s in range(settings.writer_shards)}

    def write(self, transactions: pa.Table, accounts: pa.Table | None = None) -> WriteAck:
        shards = self.settings.writer_shards
        txn_parts = split_by_shard(transactions, shards)
        acc_parts = split_by_shard(accounts, shards)
        total = WriteAck()
        for shard in sorted(set(txn_parts) | set(acc_parts)):
            txns = txn_parts.get(shard, transactions.slice(0, 0))
            (ack,) = self.cores[shard].commit_group([WriteRequest(txns, acc_parts.get(shard))])
            total = total.merge(ack)
        return total
