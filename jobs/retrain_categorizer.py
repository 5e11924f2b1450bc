"""Retrain the HypCD categorizer with Ray Train and publish it to the model registry.

Run on a cluster with::

    RAY_AUTH_MODE=token ray job submit --working-dir . -- \\
        python jobs/retrain_categorizer.py [--epochs N] [--promote]
    ... python jobs/retrain_categorizer.py --format birmingham --train /data/pcard/*.csv

The default rows are the shipped model's (:func:`collect_training_rows`): scheme descriptions,
real merchant strings, and every user's corrections and rules from the ledger, so a retrain
turns users' labels into model knowledge. ``--format birmingham`` instead trains on the
council's own hierarchy (expense-code letter → code) read from purchase-card CSVs.

A ``TorchTrainer`` with one worker (on a GPU when this machine sees one; MiniLM encoding is
where a GPU helps) fits, publishes a new registry version from rank 0, and reports the
version and metrics with ``ray.train.report``; ``--promote`` then makes it live. The job's
working directory is a copy of the repository, so give ``SCALE_DATA_ROOT``,
``SCALE_SHARED_DATA`` and ``--train`` as absolute paths (or shared storage). ``--local`` runs
the same training in this process without Ray.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import random
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from scale_ray.models.hypcd.train import TrainConfig
from scale_ray.models.hypcd.training_data import (
    DEFAULT_CONFIG,
    MODEL_NAME,
    collect_training_rows,
    train_and_publish,
)
from scale_ray.models.registry import ModelRegistry
from scale_ray.settings import Settings

log = logging.getLogger("scale.jobs.retrain_categorizer")

#: Scalar entries of the published metadata reported to Ray Train and printed.
_REPORTED = ("rows", "merchants", "classes", "train_seconds")


def load_rows(
    settings: Settings, options: dict[str, Any]
) -> tuple[list[str], list[str], dict[str, str], dict[str, Any]]:
    """``(texts, paths, names, metadata)`` of the rows ``options`` ask for.

    ``options``: ``format`` (``"default"`` or ``"birmingham"``), ``train`` (CSV files or
    folders, for birmingham), ``start``/``end`` (ISO dates, birmingham only), ``max_rows``
    (a seeded random subset; 0 keeps all), ``seed``.
    """
    names: dict[str, str] = {}
    meta: dict[str, Any]
    if options["format"] == "birmingham":
        from scale_ray.models.hypcd.data import read_birmingham

        start = datetime.fromisoformat(options["start"]).date() if options.get("start") else None
        end = datetime.fromisoformat(options["end"]).date() if options.get("end") else None
        files = list(options["train"])
        rows = read_birmingham(files, start=start, end=end)
        texts, paths = rows.texts, rows.paths()
        labels = zip(paths, rows.labels, strict=True)
        names = {path: rows.names.get(label, label) for path, label in labels}
        dates = sorted(d for d in rows.dates if d is not None)
        meta = {
            "data_source": "birmingham",
            "files": [str(f) for f in files],
            "skipped_rows": rows.skipped,
            "date_from": dates[0].isoformat() if dates else None,
            "date_to": dates[-1].isoformat() if dates else None,
        }
    else:
        collected = collect_training_rows(settings)
        texts, paths = collected.texts, collected.paths
        meta = {"data_source": "default", "sources": dict(collected.sources)}
    max_rows = int(options.get("max_rows") or 0)
    if 0 < max_rows < len(texts):
        keep = sorted(random.Random(options.get("seed", 0)).sample(range(len(texts)), max_rows))
        texts, paths = [texts[i] for i in keep], [paths[i] for i in keep]
        meta["sampled_rows"] = max_rows
    if not texts:
        raise ValueError(f"no training rows ({meta['data_source']})")
    return texts, paths, names, meta


def run_training(settings: Settings, options: dict[str, Any]) -> dict[str, Any]:
    """Build the rows, fit, publish; the registry metadata of the new version."""
    texts, paths, names, meta = load_rows(settings, options)
    config = TrainConfig.from_json({**DEFAULT_CONFIG.to_json(), "epochs": options["epochs"]})
    meta["trained_by"] = options.get("trained_by", "local")
    log.info("training the categorizer on %d rows (%s)", len(texts), meta["data_source"])
    version = train_and_publish(settings, config, (texts, paths), metadata=meta, names=names)
    return ModelRegistry.from_settings(settings).metadata(MODEL_NAME, version)


def summary(metadata: dict[str, Any]) -> dict[str, Any]:
    """Flat scalar metrics of a published version (what Ray Train reports)."""
    out: dict[str, Any] = {"version": metadata["version"]}
    out.update({k: metadata[k] for k in _REPORTED if k in metadata})
    out["train_loss"] = (metadata.get("metrics") or {}).get("train_loss")
    out["unknown_threshold"] = (metadata.get("inference") or {}).get("unknown_threshold")
    out.update({f"hierarchy_{k}": v for k, v in (metadata.get("hierarchy") or {}).items()})
    return out


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """The Ray Train loop: rank 0 trains and publishes, then reports the version."""
    import ray.train

    if ray.train.get_context().get_world_rank() != 0:
        ray.train.report({"published": False})
        return
    metadata = run_training(config["settings"], config["options"])
    metrics = summary(metadata)
    with tempfile.TemporaryDirectory() as folder:
        # A checkpoint makes the metrics the run's result; it holds a pointer, not the model.
        Path(folder, "published.json").write_text(json.dumps(metadata, default=str))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))


def run_on_ray(settings: Settings, options: dict[str, Any]) -> dict[str, Any]:
    """One-worker ``TorchTrainer`` run; the reported metrics of the new version."""
    import torch
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    storage = Path(settings.path("train_runs"))
    storage.mkdir(parents=True, exist_ok=True)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"settings": settings, "options": {**options, "trained_by": "ray"}},
        scaling_config=ScalingConfig(
            num_workers=1,
            use_gpu=torch.cuda.is_available(),
            resources_per_worker={"CPU": float(options.get("cpus_per_worker", 1.0))},
        ),
        run_config=RunConfig(
            name=f"categorizer-{datetime.now(UTC):%Y%m%dT%H%M%S}", storage_path=str(storage)
        ),
    )
    result = trainer.fit()
    if result.error is not None:
        raise result.error
    if not result.metrics or "version" not in result.metrics:
        raise RuntimeError(f"the training run reported no version: {result.metrics}")
    return {k: v for k, v in result.metrics.items() if not k.startswith("_")}


def _absolute(settings: Settings) -> Settings:
    """Settings whose local paths no longer depend on this process's working directory."""
    overrides: dict[str, Any] = {"shared_data": str(settings.shared_data_path())}
    if settings.is_local:
        overrides["data_root"] = settings.path()
    return dataclasses.replace(settings, **overrides)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=DEFAULT_CONFIG.epochs)
    parser.add_argument("--format", choices=("default", "birmingham"), default="default")
    parser.add_argument("--train", nargs="+", default=[], help="CSV files or folders")
    parser.add_argument("--start", help="first date kept, YYYY-MM-DD (birmingham)")
    parser.add_argument("--end", help="last date kept, YYYY-MM-DD (birmingham)")
    parser.add_argument("--max-rows", type=int, default=0, help="train on a random subset")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--promote", action="store_true", help="make the new version live")
    parser.add_argument("--local", action="store_true", help="run in this process, no Ray")
    parser.add_argument(
        "--cpus-per-worker",
        type=float,
        default=1.0,
        help="CPUs the training worker reserves (less on a busy local cluster)",
    )
    args = parser.parse_args(argv)
    if args.format == "birmingham" and not args.train:
        parser.error("--format birmingham needs --train PATH...")
    logging.basicConfig(level="INFO", stream=sys.stderr)
    settings = _absolute(Settings.from_env())
    options: dict[str, Any] = {
        "format": args.format,
        "train": [str(Path(p).resolve()) for p in args.train],
        "start": args.start,
        "end": args.end,
        "max_rows": args.max_rows,
        "seed": args.seed,
        "epochs": args.epochs,
        "cpus_per_worker": args.cpus_per_worker,
    }
    started = time.perf_counter()
    if args.local:
        metrics = summary(run_training(settings, options))
    else:
        metrics = run_on_ray(settings, options)
    version = str(metrics["version"])
    if args.promote:
        ModelRegistry.from_settings(settings).promote(MODEL_NAME, version)
    report = {
        "version": version,
        "promoted": args.promote,
        "seconds": round(time.perf_counter() - started, 2),
        "metrics": metrics,
    }
    print(json.dumps(report, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
