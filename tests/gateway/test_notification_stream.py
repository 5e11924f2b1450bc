"""`GET /v1/notifications/stream` over real HTTP: replay after Last-Event-ID, live, auth."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from scale_ray.analytics.notifier import NotificationWriter
from scale_ray.auth import TokenVerifier, mint_token
from scale_ray.errors import ApiError
from scale_ray.gateway.notification_stream import NotificationHub, stream_notifications
from scale_ray.ledger.delta import ensure_tables
from scale_ray.settings import Settings

PATH = "/v1/notifications/stream"


@dataclass
class _Services:
    settings: Settings
    verifier: TokenVerifier
    hub: NotificationHub


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return JSONResponse(exc.body(), status_code=exc.status)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    settings: Settings
    url: str
    hub: NotificationHub

    def headers(self, user: str, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {mint_token(self.settings, user)}", **extra}


@pytest.fixture
def server(settings: Settings, request: pytest.FixtureRequest) -> Iterator[Server]:
    ensure_tables(settings, ("notifications",))
    options = getattr(request, "param", {})
    hub = NotificationHub(settings, poll_interval_s=0.05, keepalive_s=0.3, **options)
    app = Starlette(
        routes=[Route(PATH, stream_notifications, methods=["GET"])],
        exception_handlers={ApiError: _api_error},
    )
    app.state.services = _Services(settings, TokenVerifier(settings), hub)
    port = _free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not uv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    yield Server(settings, f"http://127.0.0.1:{port}", hub)
    uv.should_exit = True
    thread.join(timeout=10)


def notify(settings: Settings, user: str, *ids: str) -> None:
    """Append notifications (one commit) as the monitor would."""
    NotificationWriter(settings).append(
        [
            (
                user,
                {
                    "notification_id": i,
                    "kind": "budget_threshold",
                    "title": f"title {i}",
                    "message": f"message {i}",
                    "data_json": json.dumps({"threshold": 80}),
                },
            )
            for i in ids
        ]
    )


class EventReader:
    """Parses a text/event-stream response into (field -> value) dicts, comments included."""

    def __init__(self, response: httpx.Response) -> None:
        self.lines = response.iter_lines()

    def next(self) -> dict[str, str]:
        event: dict[str, str] = {}
        for line in self.lines:
            if line == "":
                if event:
                    return event
                continue
            name, _, value = line.partition(":")
            event[name or "comment"] = value.removeprefix(" ")
        raise EOFError

    def next_notification(self) -> dict[str, Any]:
        while True:
            event = self.next()
            if event.get("event") == "notification":
                data = json.loads(event["data"])
                assert data["id"] == event["id"]
                return data


def test_replay_then_live(server: Server) -> None:
    settings = server.settings
    notify(settings, "alice", "ntf_a1", "ntf_a2")
    notify(settings, "alice", "ntf_a3")
    notify(settings, "bob", "ntf_b1")
    with (
        httpx.Client(base_url=server.url, timeout=10) as client,
        client.stream(
            "GET", PATH, headers=server.headers("alice", **{"Last-Event-ID": "ntf_a1"})
        ) as r,
    ):
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["cache-control"] == "no-cache"
        assert r.headers["x-accel-buffering"] == "no"
        events = EventReader(r)
        assert events.next() == {"retry": "3000"}
        # Replay: what came after ntf_a1, in order.
        first = events.next_notification()
        assert first["id"] == "ntf_a2"
        assert first["title"] == "title ntf_a2" and first["data"] == {"threshold": 80}
        assert first["read"] is False
        assert events.next_notification()["id"] == "ntf_a3"
        # Live: bob's is not alice's; alice's arrives.
        notify(settings, "bob", "ntf_b2")
        notify(settings, "alice", "ntf_a4")
        assert events.next_notification()["id"] == "ntf_a4"
        # Nothing more for alice: only keep-alive comments.
        assert events.next() == {"comment": "keep-alive"}
        assert server.hub.subscriber_count == 1

    # The client hung up: the subscription and then the poller go away.
    deadline = time.monotonic() + 5
    while server.hub.subscriber_count or server.hub.running:
        assert time.monotonic() < deadline, "the hub kept a subscription of a closed stream"
        time.sleep(0.05)


def test_resume_by_query_parameter_and_no_replay_without_id(server: Server) -> None:
    settings = server.settings
    notify(settings, "alice", "ntf_a1")
    notify(settings, "alice", "ntf_a2")
    with httpx.Client(base_url=server.url, timeout=10) as client:
        url = f"{PATH}?last_event_id=ntf_a1"
        with client.stream("GET", url, headers=server.headers("alice")) as r:
            assert EventReader(r).next_notification()["id"] == "ntf_a2"
        # Without an id: live only.
        with client.stream("GET", PATH, headers=server.headers("alice")) as r:
            events = EventReader(r)
            assert events.next() == {"retry": "3000"}
            assert events.next() == {"comment": "keep-alive"}
            notify(settings, "alice", "ntf_a3")
            assert events.next_notification()["id"] == "ntf_a3"


def test_unauthorized_and_bad_parameters(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        r = client.get(PATH)
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "unauthorized"
        r = client.get(PATH, headers={"Authorization": "Bearer forged.token.here"})
        assert r.status_code == 401
        r = client.get(f"{PATH}?user_id=bob", headers=server.headers("alice"))
        assert r.status_code == 400
    assert server.hub.subscriber_count == 0


@pytest.mark.parametrize("server", [{"max_stream_s": 1.0}], indirect=True)
def test_stream_ends_cleanly_after_max_stream_s(server: Server) -> None:
    notify(server.settings, "alice", "ntf_a1")
    started = time.monotonic()
    with (
        httpx.Client(base_url=server.url, timeout=10) as client,
        client.stream("GET", PATH, headers=server.headers("alice")) as r,
    ):
        events = EventReader(r)
        assert events.next() == {"retry": "3000"}
        with pytest.raises(EOFError):
            while True:
                events.next()
    assert 0.9 < time.monotonic() - started < 5
