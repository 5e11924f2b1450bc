"""App builders referenced by ``serve_config.yaml`` (``import_path: deployments.app:build_app``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from scale_ray.settings import Settings


class AppArgs(BaseModel):
    """Typed builder arguments; unset fields come from ``SCALE_*`` environment variables."""

    data_root: str | None = None
    num_buckets: int | None = None
    writer_shards: int | None = None

    def settings(self) -> Settings:
        overrides = {k: v for k, v in self.model_dump().items() if v is not None}
        return Settings.from_env(**overrides)


def build_app(args: AppArgs | dict[str, Any]) -> Any:
    """The main SCALE application: the HTTP gateway in front of the Analytics, Categorizer and
    AnomalyScorer deployments.

    Ledger writes go from the gateway to the LedgerWriter actors; reads of the dashboard go
    through a ``DeploymentHandle`` to ``Analytics`` (DuckDB over Delta snapshots), and
    ``/v1/categorize`` to ``Categorizer`` (the HypCD model, on a fractional GPU).
    ``AnomalyScorer`` (IsolationForest, CPU) scores a user's transactions against their own
    history; the anomaly monitor flags new ones as they commit. ``Forecaster`` (the TFT, 0.4
    GPU) answers ``/v1/forecast``.
    """
    from deployments.analytics import Analytics
    from deployments.anomaly import AnomalyScorer
    from deployments.categorizer import Categorizer
    from deployments.forecaster import Forecaster
    from deployments.gateway import Gateway

    settings = AppArgs.model_validate(args).settings()
    env = settings.as_env()
    return Gateway.bind(
        env,
        Analytics.bind(env),
        Categorizer.bind(env),
        anomaly=AnomalyScorer.bind(env),
        forecaster=Forecaster.bind(env),
    )
