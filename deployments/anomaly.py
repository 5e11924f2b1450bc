"""The ``AnomalyScorer`` Serve deployment: the IsolationForest over users' own ledgers, batched.

A CPU deployment (half a CPU per replica in ``serve_config.yaml``, no GPU): the model is a
forest of small trees, and the features are pandas group-bys over each user's history.
:meth:`AnomalyScorer.score` takes a user and some of their transaction ids, reads that user's
ledger at the latest snapshot (one ``SnapshotCache`` dataset per bucket, filtered to the user)
and answers the verdicts (``AnomalyResult.as_dict()``: score, threshold, flagged, segment,
reason, drivers). ``@serve.batch`` merges concurrent requests, from many users, into one
ledger read per bucket and one ``build_features`` call, which is where the time goes.
:meth:`AnomalyScorer.score_rows` scores rows given inline (a user's history and candidates)
the same way, without the ledger.

The batching bookkeeping is plain functions here (:func:`score_requests` and friends), tested
without Ray: Serve's local testing mode cannot run ``@serve.batch`` in Ray 2.60.

Model versions come from the registry (name ``anomaly``); ``user_config: {model_version: live
| latest | <version>}`` picks one, and changing it hot-swaps the model: the new version is
loaded and checked completely before the reference is swapped, and a failed load keeps the old
model serving (the reconfigure raises, so Serve reports the update as failed).
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from ray import serve

from scale_ray.settings import Settings

log = logging.getLogger("scale.anomaly")

MODEL_NAME = "anomaly"
DEFAULT_USER_CONFIG: dict[str, Any] = {"model_version": "live"}
_USER_CONFIG_KEYS = frozenset(DEFAULT_USER_CONFIG)
#: Most transaction ids (or inline rows) one request may carry.
MAX_TXNS_PER_REQUEST = 10_000
MAX_BATCH_SIZE = 64
BATCH_WAIT_TIMEOUT_S = 0.01
#: Inline users are renamed ``<user_id><SEP><request index>`` inside a batch, so a user's
#: inline rows never mix with their ledger rows or with another request's rows.
_INLINE_SEP = "\x1finline:"
_PAIR_SEP = "\x1e"


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


# -- requests --------------------------------------------------------------------------------
@dataclass(frozen=True)
class LedgerRequest:
    """Score ``txn_ids`` of ``user_id`` against the user's ledger."""

    user_id: str
    txn_ids: tuple[str, ...]


@dataclass(frozen=True)
class RowsRequest:
    """Score rows given inline (one user's history and candidates); ``txn_ids`` None: all."""

    user_id: str
    frame: pd.DataFrame = field(compare=False)
    txn_ids: tuple[str, ...] | None = None


ScoreRequest = LedgerRequest | RowsRequest


def ledger_request(user_id: Any, txn_ids: Any) -> LedgerRequest:
    """A checked :class:`LedgerRequest` (``ValueError`` on bad input; ids de-duplicated)."""
    if not isinstance(user_id, str) or not user_id:
        raise ValueError("user_id must be a non-empty string")
    return LedgerRequest(user_id, _txn_ids(txn_ids))


def _txn_ids(txn_ids: Any) -> tuple[str, ...]:
    if isinstance(txn_ids, str) or not isinstance(txn_ids, Sequence):
        raise ValueError("txn_ids must be a list of strings")
    if len(txn_ids) > MAX_TXNS_PER_REQUEST:
        raise ValueError(f"at most {MAX_TXNS_PER_REQUEST} txn_ids per request")
    for i, txn_id in enumerate(txn_ids):
        if not isinstance(txn_id, str) or not txn_id:
            raise ValueError(f"txn_ids[{i}] must be a non-empty string")
    return tuple(dict.fromkeys(txn_ids))


def _offset_min(value: Any) -> int:
    offset = value.utcoffset() if isinstance(value, datetime) else None
    return int(offset.total_seconds() // 60) if offset is not None else 0


def rows_request(rows: Any, txn_ids: Any = None, *, user_id: str | None = None) -> RowsRequest:
    """A checked :class:`RowsRequest` from inline rows (``ValueError`` on bad input).

    Each row: ``txn_id``, ``amount_minor`` (int, debits negative), ``currency``,
    ``booked_at`` (timezone-aware ISO string or datetime; its offset is kept as the local
    time), and optionally ``narration``, ``merchant``, ``category`` (or ``category_hint``),
    ``user_id``. Every row must be of one user (``user_id`` when given).
    """
    if not isinstance(rows, Sequence) or isinstance(rows, str | bytes) or not rows:
        raise ValueError("rows must be a non-empty list of objects")
    if len(rows) > MAX_TXNS_PER_REQUEST:
        raise ValueError(f"at most {MAX_TXNS_PER_REQUEST} rows per request")
    records: list[dict[str, Any]] = []
    users: set[str] = set()
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise ValueError(f"rows[{i}] must be an object")
        txn_id, amount, currency = row.get("txn_id"), row.get("amount_minor"), row.get("currency")
        if not isinstance(txn_id, str) or not txn_id:
            raise ValueError(f"rows[{i}].txn_id must be a non-empty string")
        if isinstance(amount, bool) or not isinstance(amount, int | np.integer):
            raise ValueError(f"rows[{i}].amount_minor must be an integer (minor units)")
        if not isinstance(currency, str) or len(currency) != 3:
            raise ValueError(f"rows[{i}].currency must be a 3-letter code")
        booked = row.get("booked_at")
        if isinstance(booked, str):
            try:
                booked = datetime.fromisoformat(booked.replace("Z", "+00:00"))
            except ValueError:
                raise ValueError(f"rows[{i}].booked_at is not an ISO timestamp") from None
        if not isinstance(booked, datetime) or booked.utcoffset() is None:
            raise ValueError(f"rows[{i}].booked_at must be a timezone-aware timestamp")
        users.add(str(row.get("user_id") or user_id or ""))
        category = row.get("category_hint", row.get("category"))
        records.append(
            {
                "txn_id": txn_id,
                "amount_minor": int(amount),
                "currency": currency.upper(),
                "booked_at": booked,
                "booked_offset_min": int(row.get("booked_offset_min", _offset_min(booked))),
                "narration": str(row.get("narration") or ""),
                "merchant": row.get("merchant"),
                # The ledger's column: training and ledger scoring read categories from it.
                "category_hint": category,
            }
        )
    if len(users) != 1 or "" in users:
        raise ValueError("rows must all belong to one user (give user_id)")
    (owner,) = users
    if user_id is not None and owner != user_id:
        raise ValueError("rows belong to another user than user_id")
    frame = pd.DataFrame.from_records(records)
    frame["booked_at"] = pd.to_datetime(frame["booked_at"], utc=True)
    frame["user_id"] = owner
    return RowsRequest(owner, frame, None if txn_ids is None else _txn_ids(txn_ids))


# -- one batch ---------------------------------------------------------------------------------
def batch_frame(
    requests: Sequence[ScoreRequest], history: pa.Table | pd.DataFrame | None
) -> tuple[pd.DataFrame, list[tuple[str, tuple[str, ...] | None]]]:
    """The one frame a batch is featured from, and each request's ``(user key, txn ids)``.

    ``history`` holds the ledger rows of the batch's ledger users; inline rows are appended
    under per-request user keys.
    """
    frames: list[pd.DataFrame] = []
    if history is not None:
        hist = history.to_pandas() if isinstance(history, pa.Table) else history
        if len(hist):
            frames.append(hist)
    keys: list[tuple[str, tuple[str, ...] | None]] = []
    for i, request in enumerate(requests):
        if isinstance(request, LedgerRequest):
            keys.append((request.user_id, request.txn_ids))
        else:
            key = f"{request.user_id}{_INLINE_SEP}{i}"
            frames.append(request.frame.assign(user_id=key))
            keys.append((key, request.txn_ids))
    if not frames:
        return pd.DataFrame(
            columns=["user_id", "txn_id", "amount_minor", "currency", "booked_at"]
        ), keys
    return pd.concat(frames, ignore_index=True), keys


def split_verdicts(
    verdicts: Sequence[Any],
    keys: Sequence[tuple[str, tuple[str, ...] | None]],
    requests: Sequence[ScoreRequest],
) -> list[list[dict[str, Any]]]:
    """Each request's verdicts (``as_dict()``), in the order of its txn ids (all of its rows in
    booked order when it named none); ids that are not debits of the user are left out."""
    by_key: dict[tuple[str, str], Any] = {}
    by_user: dict[str, list[Any]] = {}
    for v in verdicts:
        by_key[(v.user_id, v.txn_id)] = v
        by_user.setdefault(v.user_id, []).append(v)
    out: list[list[dict[str, Any]]] = []
    for (user_key, txn_ids), request in zip(keys, requests, strict=True):
        if txn_ids is None:
            chosen = by_user.get(user_key, [])
        else:
            chosen = [by_key[(user_key, t)] for t in txn_ids if (user_key, t) in by_key]
        out.append([{**v.as_dict(), "user_id": request.user_id} for v in chosen])
    return out


def score_requests(
    model: Any,
    requests: Sequence[ScoreRequest],
    read_users: Callable[[Collection[str]], pa.Table],
) -> tuple[list[list[dict[str, Any]]], dict[str, int]]:
    """Verdicts for every request of a batch: one ledger read for all its ledger users
    (``read_users``), one ``build_features`` call, one ``model.results`` call on the rows
    asked for. Returns the per-request verdicts and the batch's sizes."""
    from scale_ray.models.anomaly.features import build_features

    ledger_users = sorted({r.user_id for r in requests if isinstance(r, LedgerRequest)})
    history = read_users(ledger_users) if ledger_users else None
    frame, keys = batch_frame(requests, history)
    features = build_features(frame)
    wanted_all = {k for k, ids in keys if ids is None}
    wanted = {(k, t) for k, ids in keys if ids is not None for t in ids}
    rows = features.rows
    if len(features):
        users = rows["user_id"].astype(str)
        joined = users + _PAIR_SEP + rows["txn_id"].astype(str)
        mask = (
            users.isin(wanted_all).to_numpy()
            | joined.isin({f"{k}{_PAIR_SEP}{t}" for k, t in wanted}).to_numpy()
        )
        subset = features.take(mask)
    else:
        subset = features
    verdicts = model.results(subset)
    sizes = {"rows_read": len(frame), "rows_featured": len(features), "rows_scored": len(subset)}
    return split_verdicts(verdicts, keys, requests), sizes


class ScoreStats:
    """Sizes and time of the batches a replica has run."""

    def __init__(self) -> None:
        self.batches = 0
        self.requests = 0
        self.max_requests = 0
        self.rows_read = 0
        self.rows_featured = 0
        self.rows_scored = 0
        self.flagged = 0
        self.seconds = 0.0
        self._lock = threading.Lock()

    def record(
        self, n_requests: int, sizes: Mapping[str, int], flagged: int, seconds: float
    ) -> None:
        with self._lock:
            self.batches += 1
            self.requests += n_requests
            self.max_requests = max(self.max_requests, n_requests)
            self.rows_read += sizes.get("rows_read", 0)
            self.rows_featured += sizes.get("rows_featured", 0)
            self.rows_scored += sizes.get("rows_scored", 0)
            self.flagged += flagged
            self.seconds += seconds

    def to_json(self) -> dict[str, Any]:
        with self._lock:
            return {
                "batches": self.batches,
                "requests": self.requests,
                "max_requests_per_batch": self.max_requests,
                "mean_requests_per_batch": round(self.requests / self.batches, 3)
                if self.batches
                else 0.0,
                "rows_read": self.rows_read,
                "rows_featured": self.rows_featured,
                "rows_scored": self.rows_scored,
                "flagged": self.flagged,
                "seconds": round(self.seconds, 3),
            }


# -- the deployment ------------------------------------------------------------------------------
@serve.deployment(
    name="AnomalyScorer",
    # serve_config.yaml reserves half a CPU per replica. The bare default reserves none, so
    # the 2-CPU test cluster (Gateway, Analytics and Categorizer already take 1.5) still has
    # room for the import and compaction tasks that run beside the app.
    ray_actor_options={"num_cpus": 0},
    max_ongoing_requests=128,
    health_check_period_s=10,
    health_check_timeout_s=30,
)
class AnomalyScorer:
    """One replica: one loaded model version, the ledger snapshots, and the batching queue."""

    def __init__(self, settings_env: dict[str, str] | None = None) -> None:
        from scale_ray.ledger.delta import SnapshotCache
        from scale_ray.models.anomaly.training import ensure_anomaly_model
        from scale_ray.models.registry import ModelRegistry

        self.settings = Settings.from_env(settings_env) if settings_env else Settings.from_env()
        logging.getLogger("scale").setLevel(self.settings.log_level)
        self.registry = ModelRegistry.from_settings(self.settings)
        started = time.perf_counter()
        ensure_anomaly_model(self.settings, self.registry)
        self.snapshots = SnapshotCache(self.settings, "transactions")
        self.requested_version = parse_user_config(None)
        self._swap_lock = asyncio.Lock()
        self.batch_stats = ScoreStats()
        self.table_version = -1
        self.version, self.model = self._load(self.requested_version)
        log.info("anomaly model %s ready in %.1f s", self.version, time.perf_counter() - started)

    # ------------------------------------------------------------------ loading
    def _load(self, requested: str) -> tuple[str, Any]:
        """``(version, model)`` that ``requested`` names, loaded and checked; blocking."""
        from scale_ray.models.anomaly.serving import load_anomaly_model

        version, model = load_anomaly_model(self.registry, requested)
        check = model.score(model.reference[None, :])
        if check.shape != (1,) or not math.isfinite(float(check[0])):
            raise ValueError(f"anomaly model {version} does not score its reference row")
        return version, model

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Apply ``user_config``: load the version it names (if not the one serving) and swap."""
        requested = parse_user_config(user_config)
        async with self._swap_lock:
            version, _ = self.registry.resolve(MODEL_NAME, requested)
            if version == self.version:
                self.requested_version = requested
                return
            old = self.version
            try:
                loaded = await asyncio.to_thread(self._load, requested)
            except Exception:
                log.exception("could not load anomaly model %r; still serving %s", requested, old)
                raise
            # One reference swap: in-flight batches finish on the model they started with.
            self.version, self.model = loaded
            self.requested_version = requested
            log.info("anomaly model swapped %s -> %s", old, self.version)

    # ------------------------------------------------------------------ ledger reads
    def _read_users(self, user_ids: Collection[str]) -> pa.Table:
        """The ledger rows of ``user_ids`` at the latest snapshot (one read per bucket)."""
        import pyarrow.compute as pc

        from scale_ray.ledger.keys import user_bucket
        from scale_ray.models.anomaly.training import LEDGER_COLUMNS

        version = self.snapshots.latest_version()
        self.table_version = version
        by_bucket: dict[int, list[str]] = {}
        for user in user_ids:
            by_bucket.setdefault(user_bucket(user, self.settings.num_buckets), []).append(user)
        parts = [
            self.snapshots.dataset(version, bucket).to_table(
                columns=list(LEDGER_COLUMNS), filter=pc.field("user_id").isin(users)
            )
            for bucket, users in sorted(by_bucket.items())
        ]
        return pa.concat_tables(parts)

    # ------------------------------------------------------------------ inference
    def _score_sync(self, model: Any, requests: list[ScoreRequest]) -> list[list[dict[str, Any]]]:
        started = time.perf_counter()
        results, sizes = score_requests(model, requests, self._read_users)
        flagged = sum(1 for part in results for r in part if r["flagged"])
        self.batch_stats.record(len(requests), sizes, flagged, time.perf_counter() - started)
        return results

    @serve.batch(max_batch_size=MAX_BATCH_SIZE, batch_wait_timeout_s=BATCH_WAIT_TIMEOUT_S)
    async def score_batch(
        self, requests: list[ScoreRequest]
    ) -> list[tuple[str, list[dict[str, Any]]]]:
        """One ``(model_version, verdicts)`` per request, from one feature build."""
        version, model = self.version, self.model  # one version for the whole batch
        results = await asyncio.to_thread(self._score_sync, model, list(requests))
        return [(version, part) for part in results]

    async def score_request(self, user_id: str, txn_ids: list[str]) -> dict[str, Any]:
        """``{"model_version", "results"}`` for some of a user's ledger transactions."""
        version, results = await self.score_batch(ledger_request(user_id, txn_ids))
        return {"model_version": version, "results": results}

    async def score(self, user_id: str, txn_ids: list[str]) -> list[dict[str, Any]]:
        """Verdicts (``AnomalyResult.as_dict()``) on ``txn_ids`` of ``user_id``'s ledger, in
        the order asked; ids that are not debits in the ledger are left out."""
        _, results = await self.score_batch(ledger_request(user_id, txn_ids))
        return results

    async def score_rows(
        self,
        rows: list[dict[str, Any]],
        txn_ids: list[str] | None = None,
        user_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """Verdicts on inline rows (one user's history and candidates; see
        :func:`rows_request`): on ``txn_ids``, or on every debit when None. The user is
        ``user_id`` or the rows' own ``user_id``."""
        _, results = await self.score_batch(rows_request(rows, txn_ids, user_id=user_id))
        return results

    # ------------------------------------------------------------------ operations
    def model_version(self) -> str:
        return str(self.version)

    async def check_health(self) -> None:
        """Serve calls this every ``health_check_period_s``: the model scores, the ledger reads."""
        if self.model is None:
            raise RuntimeError("no anomaly model loaded")
        out = self.model.score(self.model.reference[None, :])
        if not math.isfinite(float(out[0])):
            raise RuntimeError("the anomaly model returned a non-finite score")
        await asyncio.to_thread(self.snapshots.latest_version)

    def stats(self) -> dict[str, Any]:
        import ray

        context = ray.get_runtime_context()
        return {
            "model_version": self.version,
            "requested_version": self.requested_version,
            "thresholds": dict(self.model.thresholds),
            "flag_rate": self.model.flag_rate,
            # What Ray reserved for this replica, e.g. ``{"CPU": 0.5}``: never a GPU.
            "resources": context.get_assigned_resources(),
            "gpu_ids": [str(g) for g in context.get_accelerator_ids().get("GPU", [])],
            "table_version": self.table_version,
            "batches": self.batch_stats.to_json(),
        }
