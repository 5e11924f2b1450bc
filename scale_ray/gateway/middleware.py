"""ASGI middleware: request ids and a request body size limit."""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from scale_ray.errors import ApiError

log = logging.getLogger("scale.gateway")


async def _send_json(send: Send, status: int, body: dict[str, Any], request_id: str) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"x-request-id", request_id.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class RequestContextMiddleware:
    """Gives each request an id (``X-Request-ID`` in and out), logs it, limits body size."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        incoming = headers.get("x-request-id", "")
        request_id = (
            incoming if 0 < len(incoming) <= 64 and incoming.isprintable() else uuid.uuid4().hex
        )
        scope.setdefault("state", {})["request_id"] = request_id
        too_large = {
            "error": {
                "code": "payload_too_large",
                "message": f"request body exceeds {self.max_body_bytes} bytes",
                "details": {"max_bytes": self.max_body_bytes},
                "request_id": request_id,
            }
        }
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            await _send_json(send, 413, too_large, request_id)
            return
        received = 0
        status_code = 0
        t0 = time.perf_counter()

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    # Rendered by the app's ApiError handler as a 413 JSON error.
                    raise ApiError(
                        413,
                        "payload_too_large",
                        too_large["error"]["message"],
                        too_large["error"]["details"],
                    )
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, limited_receive, send_with_id)
        finally:
            log.info(
                "%s %s -> %s in %.1f ms [request_id=%s]",
                scope.get("method"),
                scope.get("path"),
                status_code,
                (time.perf_counter() - t0) * 1000,
                request_id,
            )
