"""Training the anomaly model on the ledger, and the first model of a fresh install.

Reads pin one version of the ``transactions`` table, so a model records exactly which rows it
was fitted on (``table_version`` in its metadata) and a retrain racing new commits stays
consistent. Buckets hold whole users, and a row's features look only at its user's earlier
rows, so any set of buckets is a self-contained training set: the sharded retraining job
(``jobs/retrain_anomaly.py``) gives each Ray task a few buckets, and the pieces here are the
plain functions those tasks run (:func:`shard_features`, :func:`fit_shard`,
:func:`score_shard`), testable without Ray.

:func:`ensure_anomaly_model` makes the first version when the registry has none (``scale-ray
up`` and each ``AnomalyScorer`` replica call it): on the ledger when it holds at least
:data:`MIN_LEDGER_DEBITS` debits, otherwise on a few generated synthetic tenants (a fresh
install must flag something from the first request; the metadata says which). It holds an
``flock`` on ``<models>/anomaly/.lock`` so that processes starting together fit it once, and it
takes seconds: at most :data:`BOOTSTRAP_MAX_ROWS` ledger rows (whole buckets) are read.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable
from sklearn.ensemble import IsolationForest

from scale_ray.ledger.delta import open_table
from scale_ray.models.anomaly.features import SEGMENT_BANDS, Features, build_features
from scale_ray.models.anomaly.model import (
    DEFAULT_FLAG_RATE,
    DEFAULT_MAX_SAMPLES,
    AnomalyModel,
    fit_forest,
    reference_row,
    thresholds_from_scores,
)
from scale_ray.models.anomaly.serving import MODEL_NAME, publish_anomaly_model
from scale_ray.models.registry import ModelRegistry
from scale_ray.settings import Settings

log = logging.getLogger(__name__)

TABLE = "transactions"
#: The ``transactions`` columns the features use (plus ``user_bucket`` for sharding).
LEDGER_COLUMNS: tuple[str, ...] = (
    "user_id",
    "user_bucket",
    "txn_id",
    "amount_minor",
    "currency",
    "booked_at",
    "booked_offset_min",
    "narration",
    "merchant",
    "category_hint",
)
#: The first model is fitted on the ledger only when it holds at least this many debits.
MIN_LEDGER_DEBITS = 2_000
#: The first model reads whole buckets until it has at least this many rows (seconds to fit).
BOOTSTRAP_MAX_ROWS = 200_000
#: Synthetic tenants of the first model when the ledger is (nearly) empty: about 20,000
#: debits, enough for a threshold of its own in every segment (12 x 20 "new" rows).
SYNTHETIC_USERS = 12
SYNTHETIC_YEARS = 1.0
SYNTHETIC_SEED = 2024
#: Forest size and tree sample size (IsolationForest's usual 256).
DEFAULT_N_ESTIMATORS = 200
#: A segment needs this many training rows for a threshold of its own (else ``"*"``'s).
MIN_SEGMENT_ROWS = 200
#: Rows the job samples across shards for the reference row of reasons (a median).
REFERENCE_SAMPLE_ROWS = 20_000


# -- reading the ledger ----------------------------------------------------------------------
def table_version(settings: Settings) -> int:
    """The current version of the ``transactions`` table (created empty if missing)."""
    return int(open_table(settings, TABLE).version())


def _table_at(settings: Settings, version: int | None) -> DeltaTable:
    if version is None:
        return open_table(settings, TABLE)
    return DeltaTable(settings.table_uri(TABLE), version=version)


def bucket_rows(settings: Settings, version: int) -> dict[int, int]:
    """Rows per ``user_bucket`` at ``version``, from the Delta log's file statistics."""
    actions = pa.table(_table_at(settings, version).get_add_actions(flatten=True))
    out: dict[int, int] = {}
    if actions.num_rows == 0:
        return out
    buckets = actions.column("partition.user_bucket").to_pylist()
    records = actions.column("num_records").to_pylist()
    for bucket, n in zip(buckets, records, strict=True):
        out[int(bucket)] = out.get(int(bucket), 0) + int(n or 0)
    return dict(sorted(out.items()))


def read_ledger(
    settings: Settings,
    buckets: Iterable[int] | None = None,
    version: int | None = None,
) -> pa.Table:
    """The :data:`LEDGER_COLUMNS` of the ``transactions`` table at ``version`` (None: the
    latest), limited to ``buckets`` (None: all). Only the buckets' files are opened."""
    table = _table_at(settings, version)
    pruning = None
    if buckets is not None:
        wanted = sorted({int(b) for b in buckets})
        if not wanted:
            return _schema(table).empty_table()
        pruning = [("user_bucket", "in", [str(b) for b in wanted])]
    dataset = table.to_pyarrow_dataset(file_pruning_predicate=pruning)
    return dataset.to_table(columns=list(LEDGER_COLUMNS))


def _schema(table: DeltaTable) -> pa.Schema:
    full = table.to_pyarrow_dataset().schema
    return pa.schema([full.field(c) for c in LEDGER_COLUMNS])


def plan_shards(rows_per_bucket: dict[int, int], shards: int) -> list[list[int]]:
    """Buckets split into at most ``shards`` groups of about equal rows (largest bucket to
    the lightest shard first); empty shards are dropped, each shard's buckets sorted."""
    if shards < 1:
        raise ValueError("shards must be >= 1")
    loads = [0] * shards
    groups: list[list[int]] = [[] for _ in range(shards)]
    for bucket, n in sorted(rows_per_bucket.items(), key=lambda kv: (-kv[1], kv[0])):
        if n <= 0:
            continue
        i = min(range(shards), key=lambda k: (loads[k], k))
        groups[i].append(bucket)
        loads[i] += n
    return [sorted(g) for g in groups if g]


def describe_ledger(table: pa.Table) -> dict[str, Any]:
    """Rows, debits, users and the booked date range of a ledger frame (metadata)."""
    out: dict[str, Any] = {"ledger_rows": table.num_rows}
    if table.num_rows == 0:
        return {**out, "debits": 0, "users": 0, "date_from": None, "date_to": None}
    debits = pc.less(table.column("amount_minor"), 0)
    bounds = pc.min_max(table.column("booked_at"))
    lo, hi = bounds["min"].as_py(), bounds["max"].as_py()
    return {
        **out,
        "debits": int(pc.sum(debits).as_py() or 0),
        "users": len(pc.unique(table.column("user_id"))),
        "date_from": lo.isoformat() if lo is not None else None,
        "date_to": hi.isoformat() if hi is not None else None,
    }


# -- fitting -----------------------------------------------------------------------------------
def flagged_fraction(
    scores: np.ndarray, segments: np.ndarray, thresholds: dict[str, float]
) -> dict[str, float]:
    """Share of training rows at or above their threshold, per segment and over all (``*``)."""
    scores = np.asarray(scores, dtype=np.float64)
    segments = np.asarray(segments, dtype=object)
    limit = np.array([thresholds.get(s, thresholds["*"]) for s in segments], dtype=np.float64)
    flagged = scores >= limit
    out = {"*": round(float(flagged.mean()), 6) if len(flagged) else 0.0}
    for name, _ in SEGMENT_BANDS:
        mask = segments == name
        if mask.any():
            out[name] = round(float(flagged[mask].mean()), 6)
    return out


def segment_rows(segments: np.ndarray) -> dict[str, int]:
    segments = np.asarray(segments, dtype=object)
    return {name: int((segments == name).sum()) for name, _ in SEGMENT_BANDS}


def model_from_scores(
    forest: IsolationForest,
    scores: np.ndarray,
    segments: np.ndarray,
    reference: np.ndarray,
    *,
    flag_rate: float = DEFAULT_FLAG_RATE,
    min_segment_rows: int = MIN_SEGMENT_ROWS,
) -> tuple[AnomalyModel, dict[str, Any]]:
    """The model of a fitted (or merged) forest from its training scores, and what to record:
    thresholds, rows and flagged share per segment."""
    thresholds = thresholds_from_scores(
        scores, segments, flag_rate=flag_rate, min_segment_rows=min_segment_rows
    )
    model = AnomalyModel(
        forest, thresholds, reference, flag_rate=flag_rate, metadata={"training_rows": len(scores)}
    )
    stats = {
        "thresholds": thresholds,
        "flag_rate": flag_rate,
        "segment_rows": segment_rows(segments),
        "flagged_fraction": flagged_fraction(scores, segments, thresholds),
    }
    return model, stats


def fit_features(
    features: Features,
    *,
    flag_rate: float = DEFAULT_FLAG_RATE,
    n_estimators: int = DEFAULT_N_ESTIMATORS,
    max_samples: int = DEFAULT_MAX_SAMPLES,
    random_state: int = 0,
    min_segment_rows: int = MIN_SEGMENT_ROWS,
) -> tuple[AnomalyModel, dict[str, Any]]:
    """Fit a forest on ``features`` in this process; ``(model, stats)`` as
    :func:`model_from_scores` (one scoring pass gives both thresholds and flagged shares)."""
    started = time.perf_counter()
    forest = fit_forest(
        features.X, n_estimators=n_estimators, max_samples=max_samples, random_state=random_state
    )
    scores = -forest.score_samples(features.X)
    model, stats = model_from_scores(
        forest,
        scores,
        features.segments,
        reference_row(features.X),
        flag_rate=flag_rate,
        min_segment_rows=min_segment_rows,
    )
    stats.update(
        n_estimators=len(forest.estimators_),
        max_samples=int(forest.max_samples_),
        fit_seconds=round(time.perf_counter() - started, 3),
    )
    return model, stats


def train_on_ledger(
    settings: Settings,
    *,
    version: int | None = None,
    buckets: Iterable[int] | None = None,
    flag_rate: float = DEFAULT_FLAG_RATE,
    n_estimators: int = DEFAULT_N_ESTIMATORS,
    max_samples: int = DEFAULT_MAX_SAMPLES,
    random_state: int = 0,
    registry: ModelRegistry | None = None,
    promote: bool = False,
    metadata: dict[str, Any] | None = None,
) -> str:
    """Fit on the ledger at ``version`` (None: pinned to the current one), in this process,
    and publish a new ``anomaly`` version; returns it. ``ValueError`` with fewer than two
    debits."""
    registry = registry or ModelRegistry.from_settings(settings)
    pinned = table_version(settings) if version is None else int(version)
    chosen = None if buckets is None else sorted({int(b) for b in buckets})
    table = read_ledger(settings, chosen, pinned)
    features = build_features(table)
    if len(features) < 2:
        raise ValueError(
            f"the transactions table at version {pinned} holds {len(features)} debit(s)"
            + ("" if chosen is None else f" in buckets {chosen}")
            + ": nothing to train on"
        )
    model, stats = fit_features(
        features,
        flag_rate=flag_rate,
        n_estimators=n_estimators,
        max_samples=max_samples,
        random_state=random_state,
    )
    meta = {
        "data_source": "ledger",
        "table": TABLE,
        "table_version": pinned,
        "buckets": chosen if chosen is not None else "all",
        **describe_ledger(table),
        "rows": len(features),
        **stats,
        **(metadata or {}),
    }
    return publish_anomaly_model(registry, model, meta, promote=promote)


# -- the first model -----------------------------------------------------------------------------
def synthetic_ledger(
    users: int = SYNTHETIC_USERS,
    *,
    years: float = SYNTHETIC_YEARS,
    seed: int = SYNTHETIC_SEED,
    num_buckets: int = 64,
    end: date | None = None,
) -> pa.Table:
    """Generated demo tenants (:mod:`scale_ray.demo.generator`) in the ledger's schema."""
    from scale_ray.demo.generator import generate_tenants
    from scale_ray.ledger.rows import transactions_table

    tenants, _, _ = generate_tenants(users, years=years, seed=seed, end=end)
    parts = [
        transactions_table(t.user_id, t.transactions, num_buckets=num_buckets, source="synthetic")
        for t in tenants
    ]
    return pa.concat_tables(parts).select(list(LEDGER_COLUMNS))


def _bootstrap_buckets(rows_per_bucket: dict[int, int], max_rows: int) -> list[int]:
    """Whole buckets, in bucket order, until at least ``max_rows`` rows are chosen."""
    chosen: list[int] = []
    total = 0
    for bucket, n in rows_per_bucket.items():
        if total >= max_rows:
            break
        chosen.append(bucket)
        total += n
    return chosen


def ensure_anomaly_model(
    settings: Settings,
    registry: ModelRegistry | None = None,
    *,
    min_ledger_debits: int = MIN_LEDGER_DEBITS,
    max_rows: int = BOOTSTRAP_MAX_ROWS,
    synthetic_users: int = SYNTHETIC_USERS,
    synthetic_years: float = SYNTHETIC_YEARS,
) -> str:
    """The live ``anomaly`` version, fitting and publishing a first one if there is none.

    Safe when several processes call it at once: one fits (holding an ``flock`` on
    ``<models>/anomaly/.lock``), the others wait and then return its version.
    """
    registry = registry or ModelRegistry.from_settings(settings)
    return registry.ensure_live(
        MODEL_NAME,
        lambda: _bootstrap(
            settings,
            registry,
            min_ledger_debits=min_ledger_debits,
            max_rows=max_rows,
            synthetic_users=synthetic_users,
            synthetic_years=synthetic_years,
        ),
    )


def _bootstrap(
    settings: Settings,
    registry: ModelRegistry,
    *,
    min_ledger_debits: int,
    max_rows: int,
    synthetic_users: int,
    synthetic_years: float,
) -> str:
    started = time.perf_counter()
    pinned = table_version(settings)
    rows = bucket_rows(settings, pinned)
    buckets = _bootstrap_buckets(rows, max_rows)
    table = read_ledger(settings, buckets, pinned) if buckets else None
    features = build_features(table) if table is not None else None
    meta: dict[str, Any]
    if features is not None and len(features) >= min_ledger_debits:
        meta = {
            "data_source": "ledger",
            "table": TABLE,
            "table_version": pinned,
            "buckets": buckets if len(buckets) < len(rows) else "all",
            **describe_ledger(table),
        }
        log.info("no anomaly model: fitting the first on %d ledger debits", len(features))
    else:
        found = 0 if features is None else len(features)
        table = synthetic_ledger(
            synthetic_users, years=synthetic_years, num_buckets=settings.num_buckets
        )
        features = build_features(table)
        meta = {
            "data_source": "synthetic",
            "note": (
                f"fitted on {synthetic_users} generated synthetic tenants: the ledger "
                f"(transactions version {pinned}) held {found} debits, fewer than "
                f"{min_ledger_debits}; retrain on the ledger (jobs/retrain_anomaly.py) "
                "once it has data"
            ),
            "synthetic": {
                "users": synthetic_users,
                "years": synthetic_years,
                "seed": SYNTHETIC_SEED,
            },
            "ledger_table_version": pinned,
            "ledger_debits": found,
            **describe_ledger(table),
        }
        log.info(
            "no anomaly model and %d ledger debits: fitting the first on synthetic data", found
        )
    model, stats = fit_features(features)
    meta.update(rows=len(features), **stats, trained_by="bootstrap")
    meta["seconds"] = round(time.perf_counter() - started, 3)
    return publish_anomaly_model(registry, model, meta)


# -- the sharded job's steps (plain functions; jobs/retrain_anomaly.py runs them as tasks) ------
@dataclass(frozen=True)
class ShardFeatures:
    """What scoring a shard needs of its features: the matrix and each row's segment."""

    X: np.ndarray
    segments: np.ndarray

    def __len__(self) -> int:
        return int(self.X.shape[0])


def shard_features(
    settings: Settings, version: int, buckets: Sequence[int]
) -> tuple[ShardFeatures, dict[str, Any]]:
    """Read ``buckets`` at ``version`` and build their features; ``(features, summary)``."""
    started = time.perf_counter()
    table = read_ledger(settings, buckets, version)
    features = build_features(table)
    summary = {
        "buckets": list(buckets),
        **describe_ledger(table),
        "rows": len(features),
        "seconds": round(time.perf_counter() - started, 3),
    }
    return ShardFeatures(features.X, features.segments), summary


def fit_shard(
    shard: ShardFeatures, *, n_estimators: int, max_samples: int, random_state: int
) -> IsolationForest:
    """A forest of ``n_estimators`` trees on one shard (``max_samples`` must not exceed its
    rows: the merged forests must all have drawn the same sample size)."""
    if max_samples > len(shard):
        raise ValueError(f"max_samples {max_samples} exceeds the shard's {len(shard)} rows")
    return fit_forest(
        shard.X, n_estimators=n_estimators, max_samples=max_samples, random_state=random_state
    )


def score_shard(
    forest: IsolationForest, shard: ShardFeatures, *, sample_rows: int = 0, seed: int = 0
) -> dict[str, Any]:
    """Scores of a shard's rows by ``forest``, per segment, and a uniform sample of its rows
    (``sample_rows`` of them) for the reference row."""
    scores = -forest.score_samples(shard.X) if len(shard) else np.zeros(0)
    by_segment = {name: scores[shard.segments == name] for name, _ in SEGMENT_BANDS if len(scores)}
    k = min(int(sample_rows), len(shard))
    pick = np.random.default_rng(seed).choice(len(shard), size=k, replace=False) if k else []
    return {"scores": by_segment, "sample": shard.X[np.sort(np.asarray(pick, dtype=np.int64))]}


def split_trees(n_estimators: int, shards: int) -> list[int]:
    """``n_estimators`` trees over ``shards`` fits, as even as can be (sum is exact)."""
    if shards < 1 or n_estimators < shards:
        raise ValueError(f"cannot split {n_estimators} trees over {shards} shards")
    base, extra = divmod(n_estimators, shards)
    return [base + (1 if i < extra else 0) for i in range(shards)]


def sample_sizes(rows: Sequence[int], total: int = REFERENCE_SAMPLE_ROWS) -> list[int]:
    """Rows each shard contributes to a ``total``-row uniform sample (proportional)."""
    n = sum(rows)
    if n == 0:
        return [0 for _ in rows]
    return [min(r, math.ceil(total * r / n)) for r in rows]


__all__ = [
    "BOOTSTRAP_MAX_ROWS",
    "LEDGER_COLUMNS",
    "MIN_LEDGER_DEBITS",
    "ShardFeatures",
    "bucket_rows",
    "describe_ledger",
    "ensure_anomaly_model",
    "fit_features",
    "fit_shard",
    "flagged_fraction",
    "model_from_scores",
    "plan_shards",
    "read_ledger",
    "sample_sizes",
    "score_shard",
    "shard_features",
    "split_trees",
    "synthetic_ledger",
    "table_version",
    "train_on_ledger",
]
