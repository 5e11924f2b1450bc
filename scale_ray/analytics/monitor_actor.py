"""The ``budget-monitor`` Ray actor: polls the ledger and writes budget notifications.

One named, detached actor per namespace (``get_if_exists``), restarted by Ray when it dies
(``max_restarts=-1``): it is the single producer the exactly-once argument of
:mod:`scale_ray.analytics.notifier` relies on. Its polling loop runs on a daemon thread started
by ``__init__``, so a restarted actor resumes polling without anyone calling it; the actor is
threaded (``max_concurrency``), so :meth:`BudgetMonitor.evaluate_now` runs beside the loop.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import ray

from scale_ray.analytics.monitor import BudgetMonitorCore
from scale_ray.settings import Settings

log = logging.getLogger(__name__)

MONITOR_NAME = "budget-monitor"


class BudgetMonitor:
    """Actor body; :func:`ensure_budget_monitor` creates it with ``ray.remote``."""

    def __init__(self, settings_env: dict[str, str], poll_interval_s: float = 0.5) -> None:
        self.settings = Settings.from_env(settings_env)
        self.poll_interval_s = poll_interval_s
        self.core = BudgetMonitorCore(self.settings)
        self.started_at = time.time()
        self.errors = 0
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="budget-monitor", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.core.step()
            except Exception as exc:  # keep polling; the core retries what failed
                self.errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("budget monitor step failed")
            self._stop.wait(self.poll_interval_s)

    def evaluate_now(self, user_ids: list[str]) -> list[dict[str, Any]]:
        """Check these users' budgets now; returns the notifications written.

        The gateway calls it after a user creates or changes a budget, so crossing a threshold
        is heard about at once rather than at the next poll (which would also find it).
        """
        return self.core.evaluate_now(user_ids)

    def ping(self) -> bool:
        return self._thread.is_alive()

    def stats(self) -> dict[str, Any]:
        last = self.core.last
        return {
            **self.core.stats,
            **{f"notifier_{k}": v for k, v in self.core.notifier.stats.items()},
            "errors": self.errors,
            "last_error": self.last_error,
            "last_step_seconds": last.seconds,
            "last_step_evaluated": len(last.users),
            "versions": {n: w.version for n, w in self.core.watchers.items()},
            "started_at": self.started_at,
            "uptime_s": time.time() - self.started_at,
        }

    def stop(self) -> None:
        """Stop polling (tests; a killed actor stops anyway)."""
        self._stop.set()


def ensure_budget_monitor(
    settings: Settings, *, poll_interval_s: float = 0.5
) -> ray.actor.ActorHandle:
    """The named ``budget-monitor`` actor of ``settings.ray_namespace``, created on first use.

    Race-free (``get_if_exists``); the first creator's ``poll_interval_s`` wins.
    """
    actor_cls = ray.remote(BudgetMonitor)
    return actor_cls.options(
        name=MONITOR_NAME,
        namespace=settings.ray_namespace,
        lifetime="detached",
        get_if_exists=True,
        max_restarts=-1,
        max_task_retries=0,
        max_concurrency=8,
        num_cpus=0,
    ).remote(settings.as_env(), poll_interval_s)


__all__ = ["MONITOR_NAME", "BudgetMonitor", "ensure_budget_monitor"]
