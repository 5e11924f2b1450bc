"""The ``Analytics`` Serve deployment: DuckDB over Delta snapshots, behind the gateway.

The gateway authenticates and validates; it calls :meth:`Analytics.call` through a
``DeploymentHandle`` with the user id from the token. Errors travel back as values (an
``ApiError`` raised here would reach the gateway wrapped in a ``RayTaskError``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ray import serve

from scale_ray.analytics.service import AnalyticsService, run_method
from scale_ray.settings import Settings

log = logging.getLogger("scale.analytics")


@serve.deployment(
    name="Analytics",
    ray_actor_options={"num_cpus": 0.5},
    max_ongoing_requests=64,
    health_check_period_s=10,
)
class Analytics:
    def __init__(self, settings_env: dict[str, str] | None = None) -> None:
        self.settings = Settings.from_env(settings_env) if settings_env else Settings.from_env()
        logging.getLogger("scale").setLevel(self.settings.log_level)
        self.service = AnalyticsService(self.settings, on_budget_change=self._budget_changed)
        self._monitor: Any = None
        self._ensure_monitor()
        self._anomaly_monitor: Any = None
        self._ensure_anomaly_monitor()

    def _ensure_monitor(self) -> Any:
        """The one budget monitor of the cluster (named, detached; Ray restarts it)."""
        if self._monitor is None:
            from scale_ray.analytics.monitor_actor import ensure_budget_monitor

            try:
                self._monitor = ensure_budget_monitor(self.settings)
            except Exception:
                log.warning("could not start the budget monitor", exc_info=True)
        return self._monitor

    def _ensure_anomaly_monitor(self) -> Any:
        """The one anomaly monitor of the cluster (named, detached; Ray restarts it).

        It idles until an ``anomaly`` model is published, then scores every new debit.
        """
        if self._anomaly_monitor is None:
            from scale_ray.models.anomaly.monitor_actor import ensure_anomaly_monitor

            try:
                self._anomaly_monitor = ensure_anomaly_monitor(self.settings)
            except Exception:
                log.warning("could not start the anomaly monitor", exc_info=True)
        return self._anomaly_monitor

    def _budget_changed(self, user_id: str) -> None:
        """Ask the budget monitor to look at this user now (it also polls on its own)."""
        try:
            self._ensure_monitor().evaluate_now.remote([user_id])
        except Exception:  # the monitor's own polling catches up; never fail the write
            log.warning("could not notify the budget monitor", exc_info=True)
            self._monitor = None

    async def call(self, method: str, *args: Any) -> tuple[Any, ...]:
        # DuckDB releases the GIL: run queries in threads so one replica serves many at once.
        return await asyncio.to_thread(run_method, self.service, method, args)

    def check_health(self) -> None:
        self.service.engine.transactions.latest_version()

    def cache_stats(self) -> dict[str, int]:
        return dict(self.service.engine.stats)
