"""One session-scoped local Ray (2 CPUs, one logical GPU, no dashboard) and one gateway."""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from scale_ray.auth import mint_token
from scale_ray.settings import Settings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class App:
    settings: Settings
    url: str

    def client(self, user: str = "alice", **kw: object) -> httpx.Client:
        token = mint_token(self.settings, user)
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=60, **kw
        )


@pytest.fixture(scope="session")
def app(ray_cluster: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    from ray import serve

    from deployments.app import AppArgs, build_app

    root = Path(tmp_path_factory.mktemp("scale")) / "var"
    settings = Settings.from_env(
        data_root=str(root),
        num_buckets=8,
        writer_shards=2,
        ray_namespace=f"scale-test-{uuid.uuid4().hex[:8]}",
        max_upload_bytes=2 * 1024 * 1024,
        categorizer_bootstrap="builtin",
    )
    for key, value in settings.as_env().items():
        os.environ[key] = value
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(AppArgs()), name="scale", route_prefix="/")
    yield App(settings=settings, url=f"http://127.0.0.1:{port}")
    serve.shutdown()
    import ray

    from scale_ray.analytics.monitor_actor import MONITOR_NAME
    from scale_ray.models.anomaly.monitor_actor import MONITOR_NAME as ANOMALY_MONITOR_NAME

    for name in (MONITOR_NAME, ANOMALY_MONITOR_NAME):
        with contextlib.suppress(ValueError):  # detached: it would outlive the session's app
            ray.kill(ray.get_actor(name, namespace=settings.ray_namespace), no_restart=True)
