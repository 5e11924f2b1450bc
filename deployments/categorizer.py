"""The ``Categorizer`` Serve deployment: the HypCD model behind the gateway, batched.

Why a deployment of its own: the model (MiniLM + projection head) is the one piece of SCALE that
wants an accelerator, so it gets a fractional GPU (``num_gpus: 0.2``, five replicas per device)
and scales on its own; the gateway validates and calls :meth:`Categorizer.categorize_request`
through a ``DeploymentHandle``. Concurrent requests are merged by ``@serve.batch`` into one
``predict`` call, so one encoder pass serves many callers (:mod:`scale_ray.models.hypcd.batching`
holds the bookkeeping).

Model versions come from the registry (:class:`scale_ray.models.registry.ModelRegistry`);
``user_config: {model_version: live | latest | <version>}`` picks one, and changing it hot-swaps
the model: the new version is loaded completely before the reference is swapped, and a failed
load keeps the old model serving. Users' own labels (their corrections and rules) sit in the
model's user memory: loaded from the ledger at start, updated at once by :meth:`remember` /
:meth:`forget` on the replica the gateway reaches, and reloaded by every replica whenever the
``user_state`` table moves on (every ``memory_refresh_s``), so all replicas converge.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from typing import Any

from ray import serve

from scale_ray.models.hypcd.batching import BatchStats, flatten_requests, split_results
from scale_ray.settings import Settings

log = logging.getLogger("scale.categorizer")

MODEL_NAME = "categorizer"
DEFAULT_USER_CONFIG: dict[str, Any] = {"model_version": "live", "memory_refresh_s": 30.0}
_USER_CONFIG_KEYS = frozenset(DEFAULT_USER_CONFIG)


def parse_user_config(user_config: Any) -> tuple[str, float]:
    """``(model_version, memory_refresh_s)`` from a deployment's ``user_config``; a bad value
    raises ``ValueError`` (Serve then reports the update as failed and keeps the old config)."""
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
    refresh = user_config.get("memory_refresh_s", DEFAULT_USER_CONFIG["memory_refresh_s"])
    if isinstance(refresh, bool) or not isinstance(refresh, int | float) or refresh < 0:
        raise ValueError("memory_refresh_s must be a number >= 0 (0 disables the refresh)")
    return version.strip(), float(refresh)


@serve.deployment(
    name="Categorizer",
    ray_actor_options={"num_cpus": 0.5, "num_gpus": 0.2},
    max_ongoing_requests=256,
    health_check_period_s=10,
    health_check_timeout_s=30,
)
class Categorizer:
    """One replica: one loaded model version, its user memory, and the batching queue."""

    def __init__(self, settings_env: dict[str, str] | None = None) -> None:
        from scale_ray.models.hypcd.training_data import ensure_categorizer
        from scale_ray.models.registry import ModelRegistry

        self.settings = Settings.from_env(settings_env) if settings_env else Settings.from_env()
        logging.getLogger("scale").setLevel(self.settings.log_level)
        self.registry = ModelRegistry.from_settings(self.settings)
        started = time.perf_counter()
        ensure_categorizer(self.settings, self.registry)
        self.requested_version, self.memory_refresh_s = parse_user_config(None)
        self.model: Any = None
        self.user_memory: Any = None
        self._state: Any = None
        self._memory_version = -1
        self._swap_lock = asyncio.Lock()
        self._label_lock = threading.Lock()
        self._pending: list[tuple[str, str, str | None]] | None = None
        self.batch_stats = BatchStats()
        self._refresher: asyncio.Task[None] | None = None
        try:
            self._reload_user_memory()
        except Exception:  # serve the model without user labels; the refresher retries
            from scale_ray.models.hypcd.categorizer import UserMemory

            log.warning("could not load the user memory; starting without it", exc_info=True)
            self.user_memory = UserMemory()
        self.model = self._load(self.requested_version, previous=None)
        log.info(
            "categorizer %s ready in %.1f s (device %s)",
            self.model.version,
            time.perf_counter() - started,
            self.model.encoder.device,
        )

    # ------------------------------------------------------------------ loading
    def _load(self, requested: str, previous: Any) -> Any:
        """The model ``requested`` names, fully loaded, with user memory; blocking."""
        from scale_ray.models.hypcd.categorizer import HypCDCategorizer

        version, folder = self.registry.resolve(MODEL_NAME, requested)
        model = HypCDCategorizer.load(folder, version=version)
        if previous is not None:
            # Same backbone, same merchant keys: the embeddings stay valid across versions.
            model.cache = previous.cache
        # The replica's user memory (with any label remembered since the last reload) is shared
        # by every version it loads.
        model.user_memory = self.user_memory
        model.predict(["warm up"])  # loads the encoder now, not on the first request
        return model

    def _reload_user_memory(self) -> None:
        """Fill a fresh user memory from the ledger's corrections and rules, then swap it in."""
        from scale_ray.models.hypcd.categorizer import UserMemory
        from scale_ray.models.hypcd.training_data import user_label_rows

        with self._label_lock:
            self._pending = []  # labels arriving during the rebuild, replayed onto it
        try:
            version = self._state_version()
            memory = UserMemory()
            rows = user_label_rows(self.settings)
            for user_id, text, path in rows:
                memory.remember(user_id, text, path)
            with self._label_lock:
                for user_id, text, path in self._pending:
                    if path is None:
                        memory.forget(user_id, text)
                    else:
                        memory.remember(user_id, text, path)
                self.user_memory = memory
                if self.model is not None:
                    self.model.user_memory = memory
                self._memory_version = version
        finally:
            with self._label_lock:
                self._pending = None
        log.info("user memory: %d labels at user_state version %d", len(rows), version)

    def _state_version(self) -> int:
        """The ``user_state`` table's version (a stat of the next commit file on local disk)."""
        from scale_ray.ledger.delta import SnapshotCache

        if self._state is None:
            self._state = SnapshotCache(self.settings, "user_state")
        return self._state.latest_version()

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Apply ``user_config``: load the version it names (if not the one serving) and swap."""
        requested, refresh = parse_user_config(user_config)
        self.memory_refresh_s = refresh
        self._ensure_refresher()
        async with self._swap_lock:
            version, _ = self.registry.resolve(MODEL_NAME, requested)
            if self.model is not None and version == self.model.version:
                self.requested_version = requested
                return
            old = self.model
            try:
                new = await asyncio.to_thread(self._load, requested, old)
            except Exception:
                log.exception("could not load categorizer %r; still serving %s", requested, old)
                raise
            self.model = new  # one reference swap: in-flight batches finish on the old model
            self.requested_version = requested
            log.info("categorizer swapped %s -> %s", getattr(old, "version", None), version)

    # ------------------------------------------------------------------ user memory refresh
    def _ensure_refresher(self) -> None:
        if self._refresher is None or self._refresher.done():
            with contextlib.suppress(RuntimeError):  # no running loop (constructed in a test)
                self._refresher = asyncio.get_running_loop().create_task(self._refresh_loop())

    async def _refresh_loop(self) -> None:
        """Reload the user memory whenever ``user_state`` has a new version (other replicas'
        remembers, and labels written while this one was down)."""
        checked = time.monotonic()
        while True:
            # Short sleeps, so a new memory_refresh_s (user_config) takes effect within a second.
            await asyncio.sleep(min(self.memory_refresh_s or 1.0, 1.0))
            if not self.memory_refresh_s or time.monotonic() - checked < self.memory_refresh_s:
                continue
            checked = time.monotonic()
            try:
                latest = await asyncio.to_thread(self._state_version)
                if latest != self._memory_version:
                    async with self._swap_lock:
                        await asyncio.to_thread(self._reload_user_memory)
            except Exception:  # the next round tries again; predictions go on meanwhile
                log.warning("could not refresh the user memory", exc_info=True)

    # ------------------------------------------------------------------ inference
    @serve.batch(max_batch_size=256, batch_wait_timeout_s=0.005)
    async def categorize_batch(
        self, requests: list[tuple[list[str], list[str | None]]]
    ) -> list[tuple[str, list[dict[str, Any]]]]:
        """One ``(model_version, results)`` per request, from one ``predict`` call."""
        self._ensure_refresher()
        texts, users, offsets = flatten_requests(requests)
        self.batch_stats.record(len(requests), len(texts))
        model = self.model  # the batch runs on one version even if a swap lands meanwhile
        predictions = await asyncio.to_thread(model.predict, texts, users)
        return [
            (model.version, [p.to_json() for p in part])
            for part in split_results(predictions, offsets)
        ]

    async def categorize_request(
        self, texts: list[str], user_ids: list[str | None]
    ) -> dict[str, Any]:
        """``{"model_version", "results"}`` for one caller's descriptions (the gateway's call)."""
        version, results = await self.categorize_batch((list(texts), list(user_ids)))
        return {"model_version": version, "results": results}

    async def categorize(self, texts: list[str], user_ids: list[str | None]) -> list[dict]:
        """One prediction (``CategoryPrediction.to_json()``) per text."""
        _, results = await self.categorize_batch((list(texts), list(user_ids)))
        return results

    # ------------------------------------------------------------------ user labels
    def remember(self, user_id: str, text: str, path: str) -> None:
        """A user's correction or rule: their next prediction for this merchant is ``path``."""
        with self._label_lock:
            self.user_memory.remember(user_id, text, path)
            if self._pending is not None:
                self._pending.append((user_id, text, path))

    def forget(self, user_id: str, text: str) -> None:
        """A rule or correction was deleted: the model answers for this merchant again."""
        with self._label_lock:
            self.user_memory.forget(user_id, text)
            if self._pending is not None:
                self._pending.append((user_id, text, None))

    # ------------------------------------------------------------------ operations
    def model_version(self) -> str:
        return str(self.model.version)

    async def check_health(self) -> None:
        """Serve calls this every ``health_check_period_s``: it also keeps the refresher up."""
        self._ensure_refresher()
        if self.model is None:
            raise RuntimeError("no categorizer model loaded")
        out = await asyncio.to_thread(self.model.predict, ["health check"])
        if len(out) != 1:
            raise RuntimeError("categorizer predict returned the wrong number of results")

    def stats(self) -> dict[str, Any]:
        import ray

        context = ray.get_runtime_context()
        return {
            "model_version": self.model.version,
            # What Ray reserved for this replica, e.g. ``{"CPU": 0.5, "GPU": 0.2}``.
            "resources": context.get_assigned_resources(),
            "gpu_ids": [str(g) for g in context.get_accelerator_ids().get("GPU", [])],
            "requested_version": self.requested_version,
            "device": self.model.encoder.device,
            "cache": self.model.cache_stats(),
            "batches": self.batch_stats.to_json(),
            "user_memory_version": self._memory_version,
        }
