"""How the gateway reaches the Analytics service: a Serve handle, or in-process for tests."""

from __future__ import annotations

import asyncio
from typing import Any

from scale_ray.errors import ApiError


def _unwrap(result: tuple[Any, ...]) -> Any:
    if result[0] == "ok":
        return result[1]
    _, status, code, message, details = result
    raise ApiError(status, code, message, details)


class AnalyticsClient:
    """Calls ``Analytics.call`` on a ``DeploymentHandle``."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    async def call(self, method: str, *args: Any) -> Any:
        return _unwrap(await self.handle.call.remote(method, *args))


class LocalAnalyticsClient:
    """The same contract in this process (no Ray): for tests and tools."""

    def __init__(self, service: Any) -> None:
        from scale_ray.analytics.service import run_method

        self.service = service
        self._run = run_method

    async def call(self, method: str, *args: Any) -> Any:
        return _unwrap(await asyncio.to_thread(self._run, self.service, method, args))
