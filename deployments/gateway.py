"""The ``Gateway`` Serve deployment: the HTTP ingress of every SCALE route."""

from __future__ import annotations

import logging
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from scale_ray.gateway.app import create_app
from scale_ray.gateway.services import Services
from scale_ray.settings import Settings


@serve.deployment(
    name="Gateway",
    ray_actor_options={"num_cpus": 0.5},
    max_ongoing_requests=256,
    health_check_period_s=10,
)
@serve.ingress()
class Gateway:
    """Builds the Starlette app once per replica, with its own reader and writer client."""

    def __init__(
        self,
        settings_env: dict[str, str] | None = None,
        analytics: DeploymentHandle | None = None,
        categorizer: DeploymentHandle | None = None,
        anomaly: DeploymentHandle | None = None,
        forecaster: DeploymentHandle | None = None,
    ) -> None:
        self.settings = Settings.from_env(settings_env) if settings_env else Settings.from_env()
        logging.getLogger("scale").setLevel(self.settings.log_level)
        self.services = Services.create(
            self.settings,
            analytics_handle=analytics,
            categorizer_handle=categorizer,
            anomaly_handle=anomaly,
            forecaster_handle=forecaster,
        )

    def __serve_build_asgi_app__(self) -> Any:
        return create_app(self.services)

    def check_health(self) -> None:
        # The ledger must stay readable; a replica that cannot read it is restarted.
        self.services.reader.latest_versions()
