"""Retrain the anomaly model on the ledger with Ray tasks, one per shard of user buckets.

Run on a cluster with::

    RAY_AUTH_MODE=token ray job submit --working-dir . -- \\
        python jobs/retrain_anomaly.py [--shards 4] [--n-estimators 200] [--flag-rate 0.005] \\
        [--promote]

Steps (:mod:`scale_ray.models.anomaly.training` holds the plain functions each task runs):

1. **Pin** the ``transactions`` table's current version; every read below is of that version,
   so commits landing meanwhile do not leak into the model, and the metadata names the version.
2. **Plan**: split the user buckets into ``--shards`` groups of about equal rows (row counts
   from the Delta log). Buckets hold whole users, and features look only at a user's own
   history, so each shard's features are exactly what a single process would compute.
3. **Features**: one task per shard reads its buckets and builds the features; the matrix stays
   in the object store (the driver gets a small summary).
4. **Fit**: one task per shard fits an IsolationForest of ``n_estimators / shards`` trees, all
   with the same ``max_samples`` (merged trees must have drawn the same sample size, so a
   shard with fewer rows fits no trees; when no shard has that many, ``max_samples`` drops to
   the smallest shard's rows). The driver merges them with ``merge_forests``: an isolation
   score is an average over trees, so the union is one forest over all rows.
5. **Score**: one task per shard scores its rows with the merged forest and returns the scores
   per segment (and a small uniform sample of rows for the reference row of reasons); the
   driver sets per-segment thresholds from them (``thresholds_from_scores``).
6. **Feedback**: one task reads the flags users resolved (``legitimate`` / ``fraud``) and those
   users' ledgers at the pinned version, and scores the labelled rows with the new model
   (:mod:`scale_ray.models.anomaly.feedback`): counts, the live precision users judged, and
   this model's recall on confirmed fraud, false-flag rate on legitimate rows and ROC-AUC.
   Always computed; in the summary and the metadata (``"feedback"``). With
   ``--tune-thresholds`` the per-segment thresholds are then adjusted by
   :func:`~scale_ray.models.anomaly.feedback.tune_thresholds` (segments with at least
   ``--min-labels`` labelled rows; bounded by the training scores to between half and twice
   the flag rate) before publishing; the metadata's ``"threshold_tuning"`` records the
   thresholds before and after, each segment's explanation and the feedback at the untuned
   thresholds. No resolved flags: zeros and nulls, and nothing changes.
7. **Publish** a new ``anomaly`` version with its metadata (pinned version, shards, rows,
   users, date range, thresholds, flag rate, flagged share per segment, feedback); ``--promote``
   makes it live, and replicas running ``model_version: live`` pick it up on their next
   reconfigure.

Features are built once (step 3) and reused by steps 4 and 5 through object references. The
job prints one JSON summary. An empty ledger (fewer than two debits at the pinned version)
exits with status 2 and says so. ``--local`` starts a local Ray in this process; otherwise it
joins the cluster it was submitted to (``address="auto"``), or uses the Ray this process has
already initialized. The job's working directory is a copy of the repository, so give
``SCALE_DATA_ROOT`` as an absolute path (or shared storage).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from typing import Any

import numpy as np

from scale_ray.models.anomaly import feedback, training
from scale_ray.models.anomaly.model import DEFAULT_FLAG_RATE, merge_forests
from scale_ray.models.anomaly.serving import MODEL_NAME, publish_anomaly_model
from scale_ray.models.registry import ModelRegistry
from scale_ray.settings import Settings

log = logging.getLogger("scale.jobs.retrain_anomaly")

DEFAULT_SHARDS = 4
EXIT_EMPTY = 2


class EmptyLedger(ValueError):
    """The pinned ledger has nothing to train on."""


def _absolute(settings: Settings) -> Settings:
    """Settings whose local paths no longer depend on this process's working directory."""
    if settings.is_local:
        return dataclasses.replace(settings, data_root=settings.path())
    return settings


def run(
    settings: Settings,
    *,
    shards: int = DEFAULT_SHARDS,
    n_estimators: int = training.DEFAULT_N_ESTIMATORS,
    max_samples: int = training.DEFAULT_MAX_SAMPLES,
    flag_rate: float = DEFAULT_FLAG_RATE,
    seed: int = 0,
    cpus_per_task: float = 1.0,
    promote: bool = False,
    version: int | None = None,
    tune_thresholds: bool = False,
    min_labels: int = feedback.MIN_LABELS,
) -> dict[str, Any]:
    """The sharded retrain on the Ray this process is connected to; the JSON summary."""
    import ray

    started = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        now = time.perf_counter()
        timings[name] = round(now - since, 3)
        return now

    pinned = training.table_version(settings) if version is None else int(version)
    rows_per_bucket = training.bucket_rows(settings, pinned)
    plan = training.plan_shards(rows_per_bucket, shards)
    if not plan:
        raise EmptyLedger(f"the transactions table at version {pinned} holds no rows")
    t = lap("plan", started)

    remote = ray.remote(num_cpus=cpus_per_task, max_retries=2)
    features_task = remote(training.shard_features).options(num_returns=2)
    fit_task = remote(training.fit_shard)
    score_task = remote(training.score_shard)

    # 3. features: the matrices stay in the object store.
    refs = [features_task.remote(settings, pinned, buckets) for buckets in plan]
    feature_refs = [r[0] for r in refs]
    summaries = ray.get([r[1] for r in refs])
    t = lap("features", t)
    rows = [int(s["rows"]) for s in summaries]
    debits = sum(rows)
    if debits < 2:
        raise EmptyLedger(
            f"the transactions table at version {pinned} holds {debits} debit(s): "
            "nothing to train on"
        )
    # Merged trees must all have drawn max_samples rows: a shard with fewer rows fits none
    # (its rows are still scored); when no shard has that many, max_samples drops instead.
    fitting = [i for i, n in enumerate(rows) if n >= max_samples] or [
        i for i, n in enumerate(rows) if n >= 2
    ]
    samples = min(max_samples, min(rows[i] for i in fitting))
    if samples < max_samples:
        log.warning("max_samples lowered to %d: no shard has more rows", samples)
    if n_estimators < len(fitting):
        fitting = fitting[:n_estimators]
    trees = training.split_trees(n_estimators, len(fitting))

    # 4. fit: one forest per shard, merged into one.
    forests = ray.get(
        [
            fit_task.remote(
                feature_refs[i], n_estimators=k, max_samples=samples, random_state=seed * 1000 + i
            )
            for i, k in zip(fitting, trees, strict=True)
        ]
    )
    merged = merge_forests(forests)
    t = lap("fit", t)

    # 5. score every shard with the merged forest.
    merged_ref = ray.put(merged)
    scored = ray.get(
        [
            score_task.remote(merged_ref, feature_refs[i], sample_rows=k, seed=seed + i)
            for i, k in enumerate(training.sample_sizes(rows))
        ]
    )
    scores = np.concatenate([s for part in scored for s in part["scores"].values()])
    segments = np.concatenate(
        [
            np.full(len(s), name, dtype=object)
            for part in scored
            for name, s in part["scores"].items()
        ]
    )
    reference = np.median(np.concatenate([part["sample"] for part in scored]), axis=0)
    model, stats = training.model_from_scores(
        merged, scores, segments, reference, flag_rate=flag_rate
    )
    t = lap("score", t)

    # 6. feedback: the users' verdicts on flags, scored by this model; optional tuning.
    labels_task = remote(feedback.labelled_scores)
    labelled = ray.get(labels_task.remote(settings, model, version=pinned, with_reference=False))
    tuning: dict[str, Any] | None = None
    if tune_thresholds:
        reference = {name: scores[segments == name] for name in feedback.SEGMENTS}
        tuned = feedback.tune_thresholds(
            model, labelled, reference=reference, min_labels=min_labels
        )
        untuned = feedback.summarize(labelled, tuned.before)
        tuning = {
            **tuned.as_dict(),
            "feedback_before": {
                k: untuned[k]
                for k in ("fraud_flagged", "legitimate_flagged", "recall", "false_flag_rate")
            },
            "flagged_fraction_before": stats["flagged_fraction"],
        }
        if tuned.changed:
            model.thresholds = dict(tuned.thresholds)
            stats["thresholds"] = model.thresholds
            stats["flagged_fraction"] = training.flagged_fraction(
                scores, segments, model.thresholds
            )
    metrics = feedback.summarize(labelled, model.thresholds)
    t = lap("feedback", t)

    # 7. publish.
    dates = [s for s in summaries if s["date_from"] is not None]
    meta = {
        "data_source": "ledger",
        "table": training.TABLE,
        "table_version": pinned,
        "trained_by": "ray",
        "shards": len(plan),
        "shard_buckets": plan,
        "shard_rows": rows,
        "rows": debits,
        "ledger_rows": sum(int(s["ledger_rows"]) for s in summaries),
        "users": sum(int(s["users"]) for s in summaries),
        "date_from": min(s["date_from"] for s in dates) if dates else None,
        "date_to": max(s["date_to"] for s in dates) if dates else None,
        "max_samples": samples,
        "fitting_shards": fitting,
        "trees_per_shard": trees,
        "reference_sample_rows": sum(len(part["sample"]) for part in scored),
        **stats,
        "feedback": metrics,
    }
    if tuning is not None:
        meta["threshold_tuning"] = tuning
    registry = ModelRegistry.from_settings(settings)
    published = publish_anomaly_model(registry, model, meta, promote=promote)
    lap("publish", t)
    return {
        "version": published,
        "promoted": promote,
        "live": registry.live(MODEL_NAME),
        "table_version": pinned,
        "shards": len(plan),
        "fitting_shards": len(fitting),
        "rows": debits,
        "users": meta["users"],
        "n_estimators": len(merged.estimators_),
        "max_samples": samples,
        "flag_rate": flag_rate,
        "thresholds": stats["thresholds"],
        "flagged_fraction": stats["flagged_fraction"],
        "feedback": metrics,
        "threshold_tuning": tuning,
        "seconds": round(time.perf_counter() - started, 3),
        "timings": timings,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=DEFAULT_SHARDS, help="Ray tasks per round")
    parser.add_argument("--n-estimators", type=int, default=training.DEFAULT_N_ESTIMATORS)
    parser.add_argument("--max-samples", type=int, default=training.DEFAULT_MAX_SAMPLES)
    parser.add_argument("--flag-rate", type=float, default=DEFAULT_FLAG_RATE)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--table-version", type=int, help="train on this version (default: now)")
    parser.add_argument("--cpus-per-task", type=float, default=1.0, help="CPUs each task takes")
    parser.add_argument("--promote", action="store_true", help="make the new version live")
    parser.add_argument("--local", action="store_true", help="start a local Ray in this process")
    parser.add_argument(
        "--tune-thresholds",
        action="store_true",
        help="adjust per-segment thresholds from users' flag verdicts before publishing",
    )
    parser.add_argument(
        "--min-labels",
        type=int,
        default=feedback.MIN_LABELS,
        help="labelled rows a segment needs before --tune-thresholds moves its threshold",
    )
    args = parser.parse_args(argv)
    if args.shards < 1 or args.n_estimators < args.shards:
        parser.error("need --shards >= 1 and --n-estimators >= --shards")
    if not 0.0 < args.flag_rate < 1.0:
        parser.error("--flag-rate must be within (0, 1)")
    if args.min_labels < 1:
        parser.error("--min-labels must be >= 1")
    logging.basicConfig(level="INFO", stream=sys.stderr)
    settings = _absolute(Settings.from_env())

    import ray

    if not ray.is_initialized():
        if args.local:
            ray.init(address="local", include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address="auto", log_to_driver=False)
    try:
        summary = run(
            settings,
            shards=args.shards,
            n_estimators=args.n_estimators,
            max_samples=args.max_samples,
            flag_rate=args.flag_rate,
            seed=args.seed,
            cpus_per_task=args.cpus_per_task,
            promote=args.promote,
            version=args.table_version,
            tune_thresholds=args.tune_thresholds,
            min_labels=args.min_labels,
        )
    except EmptyLedger as exc:
        print(f"retrain_anomaly: {exc}", file=sys.stderr)
        print(json.dumps({"error": {"code": "empty_ledger", "message": str(exc)}}))
        return EXIT_EMPTY
    print(json.dumps(summary, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
