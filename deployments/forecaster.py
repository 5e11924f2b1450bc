"""The ``Forecaster`` Serve deployment: users' cash-flow forecasts from the TFT, batched.

``GET /v1/forecast`` reaches :meth:`Forecaster.forecast_request` through a
``DeploymentHandle``; ``@serve.batch`` merges concurrent requests (many users) into one
:meth:`~scale_ray.models.forecast.service.ForecastService.forecast_many` call: one ledger read
per bucket, one network pass for the users not in the cache. Answers are cached per (user,
ledger fingerprint of their bucket, model version, threshold, horizon), so an unchanged ledger
is answered without the model and a new transaction of the user moves the forecast on.

Resources: ``serve_config.yaml`` gives each replica 0.4 of a GPU (DESIGN §3). The decorator
asks for none, so the 2-CPU test cluster (whose one logical GPU the Categorizer's test
measures) schedules it. The network runs on the CPU for now: ``ForecastModel.predict`` feeds
it CPU tensors (``stats()`` says whether CUDA would be available).

The model comes from the registry (name ``forecaster``); ``user_config: {model_version: live |
latest | <version>}`` picks one, and changing it hot-swaps it: the new version is loaded and
checked (one forecast of a synthetic user) before the reference is swapped, and a failed load
keeps the old model serving. Fitting is not the replica's job (it takes a minute): ``scale-ray
up`` fits the first model (:func:`~scale_ray.models.forecast.training.ensure_forecaster`);
until a version exists, requests answer 503 ``forecaster_unavailable`` and the replica looks
in the registry again at most every :data:`RETRY_LOAD_S` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

from ray import serve

from scale_ray.models.forecast.service import (
    MODEL_NAME,
    ForecasterUnavailable,
    ForecastRequest,
    Result,
    err,
    forecast_request,
)
from scale_ray.settings import Settings

log = logging.getLogger("scale.forecaster")

DEFAULT_USER_CONFIG: dict[str, Any] = {"model_version": "live"}
_USER_CONFIG_KEYS = frozenset(DEFAULT_USER_CONFIG)
MAX_BATCH_SIZE = 32
BATCH_WAIT_TIMEOUT_S = 0.02
#: Without a model, look in the registry again at most this often.
RETRY_LOAD_S = 2.0


def parse_user_config(user_config: Any) -> str:
    """The ``model_version`` of a deployment's ``user_config``; a bad value raises
    ``ValueError`` (Serve then reports the update as failed and keeps the old config)."""
    if user_config is None:
        user_config = {}
    if not isinstance(user_config, dict):
        raise ValueError(f"user_config must be a mapping, got {type(user_config).__name__}")
    unknown = sorted(set(user_config) - _USER_CONFIG_KEYS)
    if unknown:
        raise ValueError(
            f"unknown user_config key(s) {unknown}; allowed {sorted(_USER_CONFIG_KEYS)}"
        )
    version = user_config.get("model_version", DEFAULT_USER_CONFIG["model_version"])
    if not isinstance(version, str) or not version.strip():
        raise ValueError("model_version must be 'live', 'latest' or a version string")
    return version.strip()


def check_model(model: Any) -> None:
    """Forecast one synthetic user with ``model``; raises when it does not give finite,
    ordered quantiles over its horizon (a model that cannot serve is never swapped in)."""
    import numpy as np

    from scale_ray.models.forecast.service import model_frame, user_histories
    from scale_ray.models.forecast.training import synthetic_rows

    rows = synthetic_rows(1, years=1.0, seed=7)  # a year: longer than any encoder here
    histories, errors = user_histories(model, rows, {rows.column("user_id")[0].as_py()})
    if errors or not histories:
        raise ValueError(f"the check user has no history: {errors}")
    forecasts = model.predict(model_frame(model, list(histories.values()), "GB"))
    if len(forecasts) != 1:
        raise ValueError("the model gave no forecast for the check user")
    for target, values in forecasts[0].quantiles.items():
        values = np.asarray(values)
        if values.shape[0] != model.config.horizon or not np.isfinite(values).all():
            raise ValueError(f"the model's {target} quantiles are not finite over its horizon")


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


@serve.deployment(
    name="Forecaster",
    # serve_config.yaml reserves half a CPU and 0.4 GPU per replica; the bare default reserves
    # neither, so the 2-CPU test cluster (one logical GPU, 0.2 of it the Categorizer's) has room.
    ray_actor_options={"num_cpus": 0},
    max_ongoing_requests=64,
    health_check_period_s=10,
    health_check_timeout_s=60,
)
class Forecaster:
    """One replica: one loaded model version, the forecast caches and the batching queue."""

    def __init__(self, settings_env: dict[str, str] | None = None) -> None:
        from scale_ray.models.forecast.service import ForecastService
        from scale_ray.models.registry import ModelRegistry

        self.settings = Settings.from_env(settings_env) if settings_env else Settings.from_env()
        logging.getLogger("scale").setLevel(self.settings.log_level)
        self.registry = ModelRegistry.from_settings(self.settings)
        self.requested_version = parse_user_config(None)
        self.version: str | None = None
        self.model: Any = None
        self._swap_lock = asyncio.Lock()
        self._load_lock = threading.Lock()
        self._next_try = 0.0
        self.load_error: str | None = None
        self.device = self._device()
        self.service = ForecastService(self.settings, self._model_source)
        self._try_load()

    @staticmethod
    def _device() -> str:
        """Where the network runs: CUDA when this replica sees a GPU (its 0.4 share in
        ``serve_config.yaml``), else the CPU."""
        return "cuda" if _cuda_available() else "cpu"

    # ------------------------------------------------------------------ loading
    def _load(self, requested: str) -> tuple[str, Any]:
        """``(version, model)`` that ``requested`` names, loaded and checked; blocking."""
        import torch

        from scale_ray.models.forecast.tft import load_forecaster

        torch.set_num_threads(1)  # a replica shares the node's CPUs with the others
        version, model = load_forecaster(self.registry, requested)
        model.to(self.device)
        check_model(model)
        return version, model

    def _try_load(self) -> None:
        """Load the requested version if none is loaded (at most every ``RETRY_LOAD_S``)."""
        if self.model is not None or time.monotonic() < self._next_try:
            return
        with self._load_lock:
            if self.model is not None:
                return
            self._next_try = time.monotonic() + RETRY_LOAD_S
            try:
                self.version, self.model = self._load(self.requested_version)
            except LookupError:
                log.info("no forecaster %r published yet", self.requested_version)
                self.load_error = None
                return
            except Exception as exc:  # a broken version: answer 503 naming it, retry later
                log.exception("could not load forecaster %r", self.requested_version)
                self.load_error = f"{type(exc).__name__}: {exc}"
                return
            self.load_error = None
            log.info("forecaster %s ready (device %s)", self.version, self.device)

    def _model_source(self) -> tuple[str, Any]:
        """The serving ``(version, model)`` for one batch (the service's model source)."""
        self._try_load()
        version, model = self.version, self.model
        if model is None or version is None:
            if self.load_error:
                raise ForecasterUnavailable(
                    f"the forecasting model {self.requested_version!r} could not be loaded"
                )
            raise ForecasterUnavailable(
                "no forecasting model is published yet; `scale-ray up` fits the first one "
                "(or publish one with the training job)"
            )
        return version, model

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Apply ``user_config``: load the version it names (if not the one serving) and swap."""
        requested = parse_user_config(user_config)
        async with self._swap_lock:
            self.requested_version = requested
            try:
                version, _ = self.registry.resolve(MODEL_NAME, requested)
            except LookupError:
                if self.model is None:  # nothing published: keep answering 503, retry later
                    self._next_try = 0.0
                    return
                raise
            if version == self.version:
                return
            old = self.version
            try:
                loaded = await asyncio.to_thread(self._load, requested)
            except Exception:
                log.exception("could not load forecaster %r; still serving %s", requested, old)
                raise
            # One reference swap: in-flight batches finish on the model they started with.
            self.version, self.model = loaded
            log.info("forecaster swapped %s -> %s", old, self.version)

    # ------------------------------------------------------------------ inference
    @serve.batch(max_batch_size=MAX_BATCH_SIZE, batch_wait_timeout_s=BATCH_WAIT_TIMEOUT_S)
    async def forecast_batch(self, requests: list[ForecastRequest]) -> list[Result]:
        """One result per request, from one :meth:`ForecastService.forecast_many` call."""
        return await asyncio.to_thread(self.service.forecast_many, list(requests))

    async def forecast_request(
        self,
        user_id: str,
        threshold: str | None = None,
        threshold_minor: int | None = None,
        horizon: int | None = None,
    ) -> Result:
        """``("ok", forecast)`` or ``("err", status, code, message, details)`` for one user
        (the gateway's call; ``user_id`` comes from the caller's token)."""
        from scale_ray.errors import ApiError

        try:
            request = forecast_request(user_id, threshold, threshold_minor, horizon)
        except ValueError as exc:
            return err(ApiError(400, "bad_request", str(exc)))
        return await self.forecast_batch(request)

    # ------------------------------------------------------------------ operations
    def model_version(self) -> str | None:
        return self.version

    async def check_health(self) -> None:
        """Serve calls this every ``health_check_period_s``: the ledger must stay readable; a
        replica without a model is healthy (it answers 503) and looks for one again."""
        await asyncio.to_thread(self._try_load)
        await asyncio.to_thread(self.service.snapshots.latest_version)

    def stats(self) -> dict[str, Any]:
        import ray

        context = ray.get_runtime_context()
        return {
            "model_version": self.version,
            "requested_version": self.requested_version,
            "load_error": self.load_error,
            "device": self.device,
            "cuda_available": _cuda_available(),
            "horizon": None if self.model is None else int(self.model.config.horizon),
            # What Ray reserved for this replica (serve_config.yaml: 0.5 CPU, 0.4 GPU).
            "resources": context.get_assigned_resources(),
            "gpu_ids": [str(g) for g in context.get_accelerator_ids().get("GPU", [])],
            **self.service.stats(),
        }
