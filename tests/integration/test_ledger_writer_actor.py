"""LedgerWriter actors: group commit, crash mid-stream, client retries, exactly-once rows."""

from __future__ import annotations

import asyncio
import random

import pytest
import ray
from deltalake import DeltaTable

from scale_ray.ledger.keys import shard_of_bucket, user_bucket
from scale_ray.ledger.rows import transactions_table
from scale_ray.ledger.writer_client import LedgerWriterClient
from tests.conftest import make_txns

from .conftest import App

pytestmark = pytest.mark.integration


def _table(app: App, user: str, start: int, n: int):  # type: ignore[no-untyped-def]
    rows = make_txns(n, start=start, prefix=f"{user}-")
    return transactions_table(user, rows, num_buckets=app.settings.num_buckets, source="test")


def test_concurrent_small_writes_share_commits(app: App) -> None:
    client = LedgerWriterClient(app.settings)
    user = "groupy"
    shard = shard_of_bucket(user_bucket(user, app.settings.num_buckets), app.settings.writer_shards)
    before = ray.get(client.actor(shard).stats.remote())["commits"]

    async def go() -> list:
        return await asyncio.gather(
            *(client.write_async(_table(app, user, i, 1)) for i in range(64))
        )

    acks = asyncio.run(go())
    assert sum(a.written for a in acks) == 64
    commits = ray.get(client.actor(shard).stats.remote())["commits"] - before
    assert commits < 64  # several requests per commit


def test_killed_writer_loses_no_acknowledged_write(app: App) -> None:
    """Kill the writer actors repeatedly while clients stream batches; retry until acked.

    Every acknowledged transaction must be present exactly once afterwards.
    """
    client = LedgerWriterClient(app.settings, retry_deadline_s=60)
    users = [f"crash-{k}" for k in range(6)]
    acked: set[tuple[str, str]] = set()
    rng = random.Random(3)

    async def stream(user: str) -> None:
        for batch in range(12):
            table = _table(app, user, batch * 25, 25)
            ack = await client.write_async(table)  # retries through actor deaths
            assert ack.written + ack.duplicates == 25
            acked.update((user, t) for t in table.column("txn_id").to_pylist())
            await asyncio.sleep(rng.random() * 0.02)

    async def killer() -> None:
        for _ in range(4):
            await asyncio.sleep(0.15)
            shard = rng.randrange(app.settings.writer_shards)
            ray.kill(client.actor(shard), no_restart=False)

    async def main() -> None:
        await asyncio.gather(killer(), *(stream(u) for u in users))

    asyncio.run(main())
    table = DeltaTable(app.settings.table_uri("transactions")).to_pyarrow_table(
        columns=["user_id", "txn_id"]
    )
    rows = [
        (u, t)
        for u, t in zip(
            table.column("user_id").to_pylist(), table.column("txn_id").to_pylist(), strict=True
        )
        if u.startswith("crash-")
    ]
    assert len(rows) == len(set(rows)), "a transaction was written twice"
    assert acked <= set(rows), "an acknowledged transaction is missing"
    assert len(acked) == 6 * 12 * 25
    assert client.retries > 0, "no write was in flight when a writer died; the test proved nothing"
