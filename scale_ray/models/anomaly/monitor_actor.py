"""The ``anomaly-monitor`` Ray actor: scores new ledger rows, writes flags and notifications.

One named, detached actor per namespace (``get_if_exists``), restarted by Ray when it dies
(``max_restarts=-1``): it is the single producer the exactly-once argument of
:mod:`scale_ray.models.anomaly.monitor` relies on, and a restarted one resumes from the durable
offset. On a first start it backfills the existing ledger (``SCALE_ANOMALY_BACKFILL``), one
bucket per poll; its stats show the progress. Its polling loop runs on a daemon thread started
by ``__init__`` (so a restarted actor resumes without anyone calling it); the core is built on
that thread, retried until the data root answers, so a storage hiccup at start does not fail
the actor's creation for good.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict
from typing import Any

import ray

from scale_ray.models.anomaly.monitor import AnomalyMonitorCore
from scale_ray.settings import Settings

log = logging.getLogger(__name__)

MONITOR_NAME = "anomaly-monitor"


class AnomalyMonitor:
    """Actor body; :func:`ensure_anomaly_monitor` creates it with ``ray.remote``."""

    def __init__(
        self,
        settings_env: dict[str, str],
        poll_interval_s: float = 0.5,
        model_check_s: float = 5.0,
    ) -> None:
        self.settings = Settings.from_env(settings_env)
        self.poll_interval_s = poll_interval_s
        self.model_check_s = model_check_s
        self.core: AnomalyMonitorCore | None = None
        self.started_at = time.time()
        self.errors = 0
        self.last_error: str | None = None
        #: One step at a time: the loop's and :meth:`step_now`'s.
        self._step_lock = threading.Lock()
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="anomaly-monitor", daemon=True)
        self._thread.start()

    def _build(self) -> AnomalyMonitorCore:
        from scale_ray.models.anomaly.monitor import RegistryModelSource

        source = RegistryModelSource(self.settings, check_every_s=self.model_check_s)
        return AnomalyMonitorCore(self.settings, source, backfill=self.settings.anomaly_backfill)

    def _failed(self, what: str, exc: Exception) -> None:
        self.errors += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        log.exception("anomaly monitor %s failed", what)

    def _loop(self) -> None:
        while not self._stop.is_set() and self.core is None:
            try:
                self.core = self._build()
                self._ready.set()
            except Exception as exc:  # e.g. the data root is briefly unreachable
                self._failed("start", exc)
                self._stop.wait(max(self.poll_interval_s, 1.0))
        while not self._stop.is_set():
            try:
                with self._step_lock:
                    assert self.core is not None
                    self.core.step()
            except Exception as exc:  # keep polling; a failed change is retried
                self._failed("step", exc)
            self._stop.wait(self.poll_interval_s)

    def step_now(self, timeout_s: float = 30.0) -> dict[str, Any]:
        """Run one step now (tests); returns its report."""
        if not self._ready.wait(timeout_s):
            raise TimeoutError("the anomaly monitor has not started")
        with self._step_lock:
            assert self.core is not None
            return asdict(self.core.step())

    def ping(self) -> bool:
        return self._thread.is_alive()

    def stats(self) -> dict[str, Any]:
        core = self.core
        return {
            **(core.snapshot() if core is not None else {"ready": False}),
            "errors": self.errors,
            "last_error": self.last_error,
            "started_at": self.started_at,
            "uptime_s": time.time() - self.started_at,
        }

    def stop(self) -> None:
        """Stop polling (tests; a killed actor stops anyway)."""
        self._stop.set()


def ensure_anomaly_monitor(
    settings: Settings, *, poll_interval_s: float = 0.5, model_check_s: float = 5.0
) -> ray.actor.ActorHandle:
    """The named ``anomaly-monitor`` actor of ``settings.ray_namespace``, created on first use.

    Race-free (``get_if_exists``); the first creator's intervals win.
    """
    actor_cls = ray.remote(AnomalyMonitor)
    return actor_cls.options(
        name=MONITOR_NAME,
        namespace=settings.ray_namespace,
        lifetime="detached",
        get_if_exists=True,
        max_restarts=-1,
        max_task_retries=0,
        max_concurrency=4,
        num_cpus=0,
    ).remote(settings.as_env(), poll_interval_s, model_check_s)


__all__ = ["MONITOR_NAME", "AnomalyMonitor", "ensure_anomaly_monitor"]
