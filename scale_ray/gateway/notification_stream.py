"""``GET /v1/notifications/stream``: a user's notifications as Server-Sent Events.

One :class:`NotificationHub` per gateway process polls the ``notifications`` table's Delta log
(a stat per poll on local disk) and, when a version appears, reads only the data files it
added in buckets that have subscribers, then fans the rows out by ``user_id``. So the cost is
one poller per replica, not one per connection, and nothing is read while nothing is written.

Resuming follows the SSE standard: each event's ``id`` is the notification id; a client that
reconnects with ``Last-Event-ID`` (or ``?last_event_id=`` on a first connect, since the browser's
``EventSource`` cannot set headers) first gets the notifications created after that one, then
live ones, with no gap and no duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from scale_ray.analytics.engine import notification_json
from scale_ray.analytics.monitor import TableWatcher
from scale_ray.auth import AuthError
from scale_ray.errors import bad_request, unauthorized
from scale_ray.ledger.delta import SnapshotCache
from scale_ray.ledger.keys import user_bucket
from scale_ray.ledger.schema import NOTIFICATIONS
from scale_ray.settings import Settings

log = logging.getLogger(__name__)

_COLUMNS = NOTIFICATIONS.names


@dataclass(eq=False)
class _Subscriber:
    user_id: str
    queue: asyncio.Queue[dict[str, Any]]
    #: Ids already sent on this connection (replay and live overlap for a moment).
    sent: set[str] = field(default_factory=set)
    overflowed: bool = False


class NotificationHub:
    """Fans new rows of the ``notifications`` table out to per-user subscribers.

    The poller is an asyncio task started by the first subscriber and stopped when the last
    one leaves; table reads run in worker threads. Use from one event loop.

    Compaction commits add no data-changing files, so they are never pushed; as a second
    guard, a row is delivered live only if it was created at most ``max_live_age_s`` ago.
    """

    def __init__(
        self,
        settings: Settings,
        poll_interval_s: float = 0.5,
        *,
        keepalive_s: float = 15.0,
        queue_size: int = 256,
        max_live_age_s: float = 600.0,
        max_stream_s: float | None = None,
    ) -> None:
        self.settings = settings
        #: End each HTTP stream after this long (None: never). Serve's proxy cuts requests at
        #: ``http_options.request_timeout_s``, streams included; ending first, cleanly, lets
        #: the client reconnect with ``Last-Event-ID`` and lose nothing.
        self.max_stream_s = max_stream_s
        self.poll_interval_s = poll_interval_s
        self.keepalive_s = keepalive_s
        self.queue_size = queue_size
        self.max_live_age_s = max_live_age_s
        self._snapshots = SnapshotCache(settings, "notifications")
        self._subscribers: dict[str, set[_Subscriber]] = {}
        self._task: asyncio.Task[None] | None = None
        self._start_lock: asyncio.Lock | None = None
        self.stats = {"polls": 0, "versions": 0, "rows_read": 0, "delivered": 0}

    # -- poller --------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def subscriber_count(self) -> int:
        return sum(len(s) for s in self._subscribers.values())

    async def _ensure_poller(self) -> None:
        """Start the poller (baseline: the table as it is now) unless it runs."""
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self.running:
                return
            watcher = TableWatcher(self.settings, "notifications")
            await asyncio.to_thread(watcher.start)
            self._task = asyncio.get_running_loop().create_task(self._poll_loop(watcher))

    async def _poll_loop(self, watcher: TableWatcher) -> None:
        while self._subscribers:
            try:
                await self._poll_once(watcher)
            except asyncio.CancelledError:
                raise
            except Exception:  # a transient storage error must not end every stream
                log.exception("notification poll failed")
            await asyncio.sleep(self.poll_interval_s)
        # No subscribers left; checked and exited with no await in between, so a subscriber
        # that arrives now finds the task done and starts a fresh one.

    async def _poll_once(self, watcher: TableWatcher) -> None:
        self.stats["polls"] += 1
        change = await asyncio.to_thread(watcher.poll)
        if change is None:
            return
        self.stats["versions"] += 1
        buckets = {user_bucket(u, self.settings.num_buckets) for u in self._subscribers}
        wanted = change.buckets & buckets if change.buckets else None
        if wanted is not None and not wanted:
            return
        rows = await asyncio.to_thread(watcher.read, change, _COLUMNS, buckets=wanted)
        self.stats["rows_read"] += rows.num_rows
        if rows.num_rows == 0:
            return
        users = pa.array(list(self._subscribers), pa.string())
        rows = rows.filter(pc.is_in(rows.column("user_id"), value_set=users))
        oldest = datetime.now(UTC) - timedelta(seconds=self.max_live_age_s)
        for row in sorted(rows.to_pylist(), key=_order):
            if row["created_at"] < oldest:
                continue
            for sub in list(self._subscribers.get(row["user_id"], ())):
                self._offer(sub, row)

    def _offer(self, sub: _Subscriber, row: dict[str, Any]) -> None:
        try:
            sub.queue.put_nowait(row)
        except asyncio.QueueFull:
            # A consumer this slow is cut off; it reconnects with Last-Event-ID and replays.
            sub.overflowed = True

    # -- subscriptions -------------------------------------------------------------------

    def _replay_rows(
        self, user_id: str, last_event_id: str
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The user's notifications up to and including ``last_event_id``, and those after it,
        in (created_at, id) order; ``([], [])`` for an id the table does not have."""
        version = self._snapshots.latest_version()
        bucket = user_bucket(user_id, self.settings.num_buckets)
        table = self._snapshots.dataset(version, bucket).to_table(
            columns=_COLUMNS, filter=pc.field("user_id") == user_id
        )
        rows = sorted(table.to_pylist(), key=_order)
        for i, row in enumerate(rows):
            if row["notification_id"] == last_event_id:
                return rows[: i + 1], rows[i + 1 :]
        return [], []  # an id we do not have: nothing to resume from

    async def subscribe(
        self, user_id: str, last_event_id: str | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """The user's notification rows: those after ``last_event_id`` first, then live ones.

        Ends when the subscriber falls ``queue_size`` rows behind (the client resumes).
        """
        stream = self.stream(user_id, last_event_id)
        try:
            async for row in stream:
                if row is not None:
                    yield row
        finally:
            await stream.aclose()

    async def stream(
        self,
        user_id: str,
        last_event_id: str | None = None,
        keepalive_s: float | None = None,
        max_s: float | None = None,
    ) -> AsyncIterator[dict[str, Any] | None]:
        """:meth:`subscribe`, plus a ``None`` after every ``keepalive_s`` without a row; ends
        after ``max_s`` seconds when given.

        Its cleanup is synchronous, so closing it from a cancelled task (a client that hung
        up) cannot be interrupted half-way.
        """
        loop = asyncio.get_running_loop()
        deadline = None if max_s is None else loop.time() + max_s
        sub = _Subscriber(user_id, asyncio.Queue(self.queue_size))
        # Register before the poller's baseline and the replay read: a row committed in
        # between is then in the replay or delivered live (or both, and sent once).
        self._subscribers.setdefault(user_id, set()).add(sub)
        try:
            await self._ensure_poller()
            if last_event_id:
                seen, after = await asyncio.to_thread(self._replay_rows, user_id, last_event_id)
                # The client has these; the poller may not have passed them yet.
                sub.sent.update(r["notification_id"] for r in seen)
                for row in after:
                    if row["notification_id"] not in sub.sent:
                        sub.sent.add(row["notification_id"])
                        yield row
            while not sub.overflowed:
                wait = keepalive_s
                if deadline is not None:
                    left = deadline - loop.time()
                    if left <= 0:
                        return
                    wait = left if wait is None else min(wait, left)
                try:
                    row = await asyncio.wait_for(sub.queue.get(), wait)
                except TimeoutError:
                    if deadline is None or loop.time() < deadline:
                        yield None
                    continue
                if row["notification_id"] in sub.sent:
                    continue
                sub.sent.add(row["notification_id"])
                self.stats["delivered"] += 1
                yield row
        finally:
            subs = self._subscribers.get(user_id)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subscribers[user_id]

    async def close(self) -> None:
        """Stop the poller (process shutdown, tests)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _order(row: dict[str, Any]) -> tuple[datetime, str]:
    return row["created_at"], row["notification_id"]


def format_event(row: dict[str, Any]) -> str:
    """One SSE event for a notification row (``data`` is one line of JSON)."""
    data = json.dumps(notification_json(row, False), separators=(",", ":"))
    return f"id: {row['notification_id']}\nevent: notification\ndata: {data}\n\n"


async def _events(
    hub: NotificationHub, user_id: str, last_event_id: str | None
) -> AsyncIterator[str]:
    yield "retry: 3000\n\n"
    stream = hub.stream(user_id, last_event_id, keepalive_s=hub.keepalive_s, max_s=hub.max_stream_s)
    try:
        async for row in stream:
            yield ": keep-alive\n\n" if row is None else format_event(row)
    finally:
        await stream.aclose()


async def stream_notifications(request: Request) -> Response:
    """
    summary: Stream the user's notifications (Server-Sent Events)
    description: >
      A text/event-stream of `notification` events; each event's `id` is the notification id
      and its `data` the notification as GET /v1/notifications shows it. Reconnect with the
      `Last-Event-ID` header (or the `last_event_id` query parameter, for a first connect
      from EventSource) to receive first the notifications created after that one. A
      `: keep-alive` comment is sent every 15 seconds.
    tags: [notifications]
    parameters:
      - {name: last_event_id, in: query, required: false, schema: {type: string}}
      - name: access_token
        in: query
        required: false
        schema: {type: string}
        description: For EventSource, which cannot send an Authorization header.
      - {name: Last-Event-ID, in: header, required: false, schema: {type: string}}
    responses:
      200:
        description: The event stream.
        content:
          text/event-stream:
            schema: {type: string}
      400: {description: Unknown query parameter.}
      401: {description: Missing, forged or expired token.}
    """
    services = request.app.state.services
    header = request.headers.get("authorization")
    if header is None and request.query_params.get("access_token"):
        # Browsers' EventSource cannot set headers; the token may come as a query parameter
        # on this one route (the request log never records query strings).
        header = "Bearer " + request.query_params["access_token"]
    try:
        principal = services.verifier.verify(header)
    except AuthError as exc:
        raise unauthorized(str(exc)) from exc
    allowed = {"last_event_id", "access_token"}
    unknown = sorted(set(request.query_params) - allowed)
    if unknown:
        raise bad_request(
            f"unknown query parameter(s): {', '.join(unknown)}", {"allowed": sorted(allowed)}
        )
    last_event_id = request.headers.get("last-event-id") or request.query_params.get(
        "last_event_id"
    )
    hub: NotificationHub = services.hub
    return StreamingResponse(
        _events(hub, principal.user_id, last_event_id or None),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


__all__ = ["NotificationHub", "format_event", "stream_notifications"]
