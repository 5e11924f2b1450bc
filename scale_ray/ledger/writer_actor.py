"""The LedgerWriter Ray actor: group commit in front of :class:`LedgerWriterCore`.

Requests queue up while a commit runs; the next commit takes everything queued (up to
``group_commit_max_rows``). When fewer than ``group_commit_min_rows`` rows wait, it first waits
at most ``group_commit_max_delay_ms`` for company: small writes share a commit, large ones
never wait.
Commits run one at a time on a worker thread so the actor keeps accepting requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import pyarrow as pa

from scale_ray.ledger.writer import LedgerWriterCore, WriteAck, WriteRequest
from scale_ray.settings import Settings

log = logging.getLogger(__name__)


class LedgerWriter:
    """Actor body; :mod:`scale_ray.ledger.writer_client` creates it with ``ray.remote``."""

    def __init__(self, settings_env: dict[str, str], shard: int) -> None:
        self.settings = Settings.from_env(settings_env)
        self.core = LedgerWriterCore(self.settings, shard)
        self._queue: list[tuple[WriteRequest, asyncio.Future[WriteAck]]] = []
        self._queued_rows = 0
        self._wakeup: asyncio.Event | None = None
        self._full: asyncio.Event | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._compaction: asyncio.Task[None] | None = None
        self._commits_at_last_compaction = 0
        self.started_at = time.time()

    def _ensure_loop(self) -> None:
        if self._loop_task is None or self._loop_task.done():
            self._wakeup = asyncio.Event()
            self._full = asyncio.Event()
            self._loop_task = asyncio.get_running_loop().create_task(self._commit_loop())

    async def write(self, transactions: pa.Table, accounts: pa.Table | None = None) -> WriteAck:
        """Queue one request; returns after the commit that holds its rows."""
        self._ensure_loop()
        assert self._wakeup is not None and self._full is not None
        future: asyncio.Future[WriteAck] = asyncio.get_running_loop().create_future()
        self._queue.append((WriteRequest(transactions, accounts), future))
        self._queued_rows += transactions.num_rows
        self._wakeup.set()
        if self._queued_rows >= self.settings.group_commit_min_rows:
            self._full.set()
        return await future

    async def _commit_loop(self) -> None:
        assert self._wakeup is not None and self._full is not None
        delay = self.settings.group_commit_max_delay_ms / 1000.0
        while True:
            await self._wakeup.wait()
            if not self._queue:
                self._wakeup.clear()
                continue
            if self._queued_rows < self.settings.group_commit_min_rows and delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), timeout=delay)
            group, rows = [], 0
            while self._queue and (not group or rows < self.settings.group_commit_max_rows):
                request, future = self._queue.pop(0)
                group.append((request, future))
                rows += request.transactions.num_rows
            self._queued_rows -= rows
            if self._queued_rows < self.settings.group_commit_min_rows:
                self._full.clear()
            if not self._queue:
                self._wakeup.clear()
            try:
                acks = await asyncio.to_thread(self.core.commit_group, [r for r, _ in group])
            except Exception as exc:  # a failed group fails every request in it; none is acked
                log.exception("group commit failed")
                for _, future in group:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), ack in zip(group, acks, strict=True):
                if not future.done():
                    future.set_result(ack)
            self._maybe_compact()

    def _maybe_compact(self) -> None:
        """Start a background compaction of this shard's buckets every N commits."""
        every = self.settings.auto_compact_commits
        if every <= 0 or self.core.commits - self._commits_at_last_compaction < every:
            return
        if self._compaction is not None and not self._compaction.done():
            return
        self._commits_at_last_compaction = self.core.commits
        self._compaction = asyncio.get_running_loop().create_task(self._compact())

    async def _compact(self) -> None:
        try:
            result = await asyncio.to_thread(self.core.compact_owned)
            log.info("shard %d compacted: %s", self.core.shard, result)
        except Exception:  # compaction is an optimization; the next round retries
            log.exception("background compaction failed")

    async def stats(self) -> dict[str, float]:
        return {
            **self.core.stats(),
            "queued_rows": self._queued_rows,
            "uptime_s": time.time() - self.started_at,
        }

    async def ping(self) -> bool:
        return True
