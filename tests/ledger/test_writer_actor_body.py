"""The LedgerWriter actor body driven by asyncio directly (no Ray): group commit, compaction."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from deltalake import DeltaTable

from scale_ray.ledger.keys import shard_of_bucket, user_bucket
from scale_ray.ledger.rows import transactions_table
from scale_ray.ledger.writer_actor import LedgerWriter
from scale_ray.settings import Settings
from tests.conftest import make_txns


def test_group_commit_and_background_compaction(settings: Settings) -> None:
    settings = replace(settings, auto_compact_commits=5, group_commit_max_delay_ms=20)
    user = "alice"
    shard = shard_of_bucket(user_bucket(user, settings.num_buckets), settings.writer_shards)
    writer = LedgerWriter(settings.as_env(), shard)

    def table(i: int):  # type: ignore[no-untyped-def]
        return transactions_table(
            user, make_txns(1, start=i), num_buckets=settings.num_buckets, source="t"
        )

    async def main() -> dict[str, float]:
        # 16 concurrent single-row writes share commits within the 20 ms window.
        acks = await asyncio.gather(*(writer.write(table(i)) for i in range(16)))
        assert sum(a.written for a in acks) == 16
        for i in range(16, 40):  # sequential writes: one commit each, compaction every 5
            await writer.write(table(i))
        if writer._compaction is not None:
            await writer._compaction
        return await writer.stats()

    stats = asyncio.run(main())
    assert stats["commits"] < 16 + 24
    assert stats["compactions"] >= 1
    dt = DeltaTable(settings.table_uri("transactions"))
    assert dt.to_pyarrow_table().num_rows == 40
    assert len(dt.file_uris()) < stats["commits"]
