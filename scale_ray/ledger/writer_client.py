"""Routes ledger writes to the LedgerWriter actor that owns each user's bucket.

Writers are named, detached actors (``ledger-writer-<shard>`` in the settings' namespace) that
Ray restarts when they die. A write that fails because its actor died is retried: the write is
idempotent by (user_id, txn_id), so a retry of a write that did commit only reports duplicates.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

from scale_ray.ledger.writer import WriteAck
from scale_ray.ledger.writer_actor import LedgerWriter
from scale_ray.settings import Settings

log = logging.getLogger(__name__)

_RETRYABLE = (RayActorError, ActorDiedError, ActorUnavailableError)


def writer_name(shard: int) -> str:
    return f"ledger-writer-{shard}"


def get_or_create_writer(settings: Settings, shard: int) -> ray.actor.ActorHandle:
    """The named writer actor for ``shard``, created on first use (race-free)."""
    actor_cls = ray.remote(LedgerWriter)
    return actor_cls.options(
        name=writer_name(shard),
        namespace=settings.ray_namespace,
        lifetime="detached",
        get_if_exists=True,
        max_restarts=-1,
        max_task_retries=0,
        max_concurrency=1000,
        num_cpus=0,
    ).remote(settings.as_env(), shard)


def split_by_shard(table: pa.Table | None, shards: int) -> dict[int, pa.Table]:
    if table is None or table.num_rows == 0:
        return {}
    buckets = table.column("user_bucket").to_numpy()
    owner = buckets % shards
    unique = np.unique(owner)
    if len(unique) == 1:
        return {int(unique[0]): table}
    return {int(s): table.filter(pc.equal(pa.array(owner), s)) for s in unique}


class LedgerWriterClient:
    """Sends transactions (and the accounts they imply) to the owning writers; retries deaths."""

    def __init__(self, settings: Settings, *, retry_deadline_s: float = 60.0) -> None:
        self.settings = settings
        self.retry_deadline_s = retry_deadline_s
        self._actors: dict[int, ray.actor.ActorHandle] = {}
        #: Writes re-sent because their writer actor died or was unavailable.
        self.retries = 0

    def actor(self, shard: int) -> ray.actor.ActorHandle:
        handle = self._actors.get(shard)
        if handle is None:
            handle = self._actors[shard] = get_or_create_writer(self.settings, shard)
        return handle

    def _plan(
        self, transactions: pa.Table, accounts: pa.Table | None
    ) -> dict[int, tuple[pa.Table, pa.Table | None]]:
        shards = self.settings.writer_shards
        txn_parts = split_by_shard(transactions, shards)
        acc_parts = split_by_shard(accounts, shards)
        plan: dict[int, tuple[pa.Table, pa.Table | None]] = {}
        for shard in set(txn_parts) | set(acc_parts):
            txns = txn_parts.get(shard, transactions.slice(0, 0))
            plan[shard] = (txns, acc_parts.get(shard))
        return plan

    async def write_async(
        self, transactions: pa.Table, accounts: pa.Table | None = None
    ) -> WriteAck:
        """Write and wait for every owning writer's commit; retries writers that died."""
        plan = self._plan(transactions, accounts)
        acks = await asyncio.gather(
            *(self._write_shard_async(s, t, a) for s, (t, a) in plan.items())
        )
        total = WriteAck()
        for ack in acks:
            total = total.merge(ack)
        return total

    def _backoff(self, shard: int, attempt: int, deadline: float, exc: Exception) -> float:
        """Seconds to wait before re-sending to ``shard``; re-raises past the deadline."""
        self.retries += 1
        if time.monotonic() > deadline:
            raise exc
        log.warning("writer %d unavailable (%s); retry %d", shard, type(exc).__name__, attempt)
        return min(1.0, 0.05 * 2**attempt)

    async def _write_shard_async(
        self, shard: int, txns: pa.Table, accounts: pa.Table | None
    ) -> WriteAck:
        deadline = time.monotonic() + self.retry_deadline_s
        for attempt in itertools.count(1):
            try:
                return await self.actor(shard).write.remote(txns, accounts)
            except _RETRYABLE as exc:
                await asyncio.sleep(self._backoff(shard, attempt, deadline, exc))
        raise AssertionError("unreachable")

    def write(self, transactions: pa.Table, accounts: pa.Table | None = None) -> WriteAck:
        """Blocking variant for tasks and scripts (not for use inside an event loop)."""
        plan = self._plan(transactions, accounts)
        refs = {s: self.actor(s).write.remote(t, a) for s, (t, a) in plan.items()}
        total = WriteAck()
        for shard, ref in refs.items():
            deadline = time.monotonic() + self.retry_deadline_s
            for attempt in itertools.count(1):
                try:
                    total = total.merge(ray.get(ref))
                    break
                except _RETRYABLE as exc:
                    time.sleep(self._backoff(shard, attempt, deadline, exc))
                    ref = self.actor(shard).write.remote(*plan[shard])
        return total

    def stats(self) -> list[dict[str, float]]:
        return ray.get([self.actor(s).stats.remote() for s in range(self.settings.writer_shards)])
