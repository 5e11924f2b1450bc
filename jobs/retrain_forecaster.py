"""Retrain the TFT forecaster with Ray Data and Ray Train and publish it to the registry.

Run on a cluster with::

    RAY_AUTH_MODE=token ray job submit --working-dir . -- \\
        python jobs/retrain_forecaster.py [--max-epochs N] [--num-workers 2] [--promote]

Steps:

1. **Pin** the ``transactions`` table's current version (or ``--table-version``); the ledger
   is read at that version only, so rows committed meanwhile do not leak in, and the metadata
   names it.
2. **Series with Ray Data**: the pinned rows become a dataset (``ray.data.from_arrow``) and
   ``groupby("user_id").map_groups`` builds each user's daily series and covariates in
   parallel (:func:`user_frame`). That is the expensive, per-user part (reindexing days,
   detecting paydays and bills) and needs nothing but the user's own rows. What needs every
   user (the top spend categories, fixed up front so every group has the same columns, and
   the income brackets, quartiles over users) is computed on the driver, which also
   collects the frame: pytorch-forecasting's ``TimeSeriesDataSet`` is in memory, and each
   training worker needs every user's whole series (windows must not be cut at shard
   borders), so the frame goes to the workers through the object store, not as shards.
   Each user's schedule is learnt from the days before the validation horizon only.
3. **Train with Ray Train**: a ``TorchTrainer`` whose workers build the dataset and the TFT
   and fit a ``lightning.Trainer`` with ``RayDDPStrategy``, ``RayLightningEnvironment`` and
   ``RayTrainReportCallback`` (``prepare_trainer``): every epoch's Lightning checkpoint and
   losses go to Ray Train, which keeps the best two by validation loss under
   ``<data root>/train_runs``. The last ``--horizon`` days of every user are held out.
4. **Publish** the best checkpoint as a new ``forecaster`` version, with its validation
   quantile losses (each against the zero forecast, daily and 30-day totals) in the metadata;
   ``--promote`` makes it live.

``--local`` does steps 2-4 in this process without Ray (same series, same model code). The
job prints one JSON summary; a ledger with no user long enough to train on exits with
status 2. Give ``SCALE_DATA_ROOT`` as an absolute path (the job's working directory is a
copy of the repository).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from scale_ray.models.anomaly import training
from scale_ray.models.forecast.series import (
    daily_series,
    income_brackets,
    top_categories,
    user_schedule,
    with_covariates,
)
from scale_ray.models.forecast.tft import (
    MODEL_NAME,
    ForecastModel,
    TFTConfig,
    fit_tft,
    publish_forecaster,
    quantile_losses,
)
from scale_ray.models.registry import ModelRegistry
from scale_ray.settings import Settings

log = logging.getLogger("scale.jobs.retrain_forecaster")

EXIT_EMPTY = 2
#: On Berka (354 users, 2 CPUs) 8 epochs of 100 batches take about 11 minutes.
DEFAULT_CONFIG = TFTConfig(max_epochs=8, limit_train_batches=100)


class EmptyLedger(ValueError):
    """The pinned ledger has no user with enough days to train on."""


# -- series ------------------------------------------------------------------------------------


def user_frame(
    rows: pd.DataFrame, *, categories: list[str], country: str | None, horizon: int
) -> pd.DataFrame:
    """One user's daily series with calendar and schedule covariates (statics are
    placeholders: the driver sets them over all users). The schedule is learnt from the rows
    booked up to ``horizon`` days before the user's last day, so the held-out days never
    shape their own covariates."""
    series = daily_series(rows, categories=categories)
    if series.empty:
        return series
    user = str(series["user_id"].iloc[0])
    as_of = (series["date"].max() - timedelta(days=horizon)).date()
    schedule = user_schedule(rows, as_of=as_of)
    return with_covariates(series, {user: schedule}, country=country, brackets={user: "q1"})


def finish_frame(frame: pd.DataFrame, horizon: int) -> pd.DataFrame:
    """Sorted, with income brackets over all users (from the days before the held-out ones)."""
    if frame.empty:
        return frame
    frame = frame.sort_values(["user_id", "time_idx"], kind="mergesort").reset_index(drop=True)
    frame["date"] = pd.to_datetime(frame["date"])
    last = frame.groupby("user_id")["time_idx"].transform("max")
    brackets = income_brackets(frame[frame["time_idx"] <= last - horizon])
    frame["income_bracket"] = frame["user_id"].map(brackets).fillna("q1").astype(str)
    return frame


def split(frame: pd.DataFrame, horizon: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(train, validation)``: validation is every user's whole series, whose last
    ``horizon`` days are scored; training stops before them."""
    last = frame.groupby("user_id")["time_idx"].transform("max")
    return frame[frame["time_idx"] <= last - horizon], frame


def build_frame_local(
    table: pa.Table, *, categories: list[str], country: str | None, horizon: int
) -> pd.DataFrame:
    """The training frame built in this process (what the Ray Data path computes)."""
    rows = table.to_pandas()
    parts = [
        user_frame(part, categories=categories, country=country, horizon=horizon)
        for _, part in rows.groupby("user_id", sort=True)
    ]
    parts = [p for p in parts if not p.empty]
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    return finish_frame(frame, horizon)


def build_frame_ray(
    table: pa.Table,
    *,
    categories: list[str],
    country: str | None,
    horizon: int,
    cpus_per_task: float = 1.0,
) -> pd.DataFrame:
    """The training frame, built per user by Ray Data."""
    import ray.data

    dataset = ray.data.from_arrow(table)
    frames = dataset.groupby("user_id").map_groups(
        user_frame,
        batch_format="pandas",
        fn_kwargs={"categories": categories, "country": country, "horizon": horizon},
        num_cpus=cpus_per_task,
    )
    parts = [p for p in frames.iter_batches(batch_format="pandas", batch_size=None) if len(p)]
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    return finish_frame(frame, horizon)


def _check_trainable(frame: pd.DataFrame, config: TFTConfig, pinned: int) -> None:
    need = config.min_encoder + 2 * config.horizon
    sizes = frame.groupby("user_id").size() if not frame.empty else pd.Series(dtype=int)
    if not (sizes >= need).any():
        raise EmptyLedger(
            f"the transactions table at version {pinned} has no user with {need} days "
            f"(history of {config.min_encoder} + training and validation horizons)"
        )


# -- training ----------------------------------------------------------------------------------


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train loop: every worker builds the dataset and fits one DDP replica; the
    report callback hands each epoch's checkpoint and losses to Ray Train."""
    import ray
    import torch
    from ray.train.lightning import (
        RayDDPStrategy,
        RayLightningEnvironment,
        RayTrainReportCallback,
        prepare_trainer,
    )

    torch.set_num_threads(max(1, int(loop_config.get("threads", 1))))
    frame = loop_config["frame"]
    if isinstance(frame, ray.ObjectRef):
        frame = ray.get(frame)
    config = TFTConfig.from_json(loop_config["config"])
    train, validation = split(frame, config.horizon)
    fit_tft(
        train,
        config,
        val_frame=validation,
        trainer_kwargs={
            "strategy": RayDDPStrategy(),
            "plugins": [RayLightningEnvironment()],
            "callbacks": [RayTrainReportCallback()],
            "devices": "auto",
        },
        prepare_trainer=prepare_trainer,
        score=False,
    )


def train_on_ray(
    settings: Settings,
    frame: pd.DataFrame,
    config: TFTConfig,
    *,
    num_workers: int,
    cpus_per_worker: float,
) -> tuple[ForecastModel, dict[str, Any]]:
    """Fit with a ``TorchTrainer``; the best checkpoint's model and facts about the run."""
    import ray
    import torch
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.lightning import RayTrainReportCallback
    from ray.train.torch import TorchTrainer

    storage = Path(settings.path("train_runs"))
    storage.mkdir(parents=True, exist_ok=True)
    use_gpu = torch.cuda.is_available()
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "frame": ray.put(frame),
            "config": config.to_json(),
            "threads": max(1, int(cpus_per_worker)),
        },
        scaling_config=ScalingConfig(
            num_workers=num_workers,
            use_gpu=use_gpu,
            resources_per_worker={"CPU": cpus_per_worker},
        ),
        run_config=RunConfig(
            name=f"forecaster-{datetime.now(UTC):%Y%m%dT%H%M%S%f}",
            storage_path=str(storage),
            checkpoint_config=CheckpointConfig(
                num_to_keep=2,
                checkpoint_score_attribute="val_loss",
                checkpoint_score_order="min",
            ),
        ),
    )
    result = trainer.fit()
    if result.error is not None:
        raise result.error
    best = result.get_best_checkpoint("val_loss", "min") or result.checkpoint
    if best is None:
        raise RuntimeError("the training run reported no checkpoint")
    metrics = next((m for c, m in result.best_checkpoints or [] if c.path == best.path), {})
    with best.as_directory() as folder:
        model = ForecastModel.from_checkpoint(
            Path(folder) / RayTrainReportCallback.CHECKPOINT_NAME, config
        )
    run = {
        "trained_by": "ray",
        "num_workers": num_workers,
        "use_gpu": use_gpu,
        "checkpoint": best.path,
        "best_epoch": metrics.get("epoch"),
        "val_loss": metrics.get("val_loss"),
        "train_loss": metrics.get("train_loss_epoch", metrics.get("train_loss")),
    }
    return model, run


def run(
    settings: Settings,
    config: TFTConfig,
    *,
    local: bool = False,
    num_workers: int = 1,
    cpus_per_worker: float = 1.0,
    cpus_per_task: float = 1.0,
    country: str | None = None,
    version: int | None = None,
    promote: bool = False,
) -> dict[str, Any]:
    """Pin, build the series, train, publish; the JSON summary."""
    started = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        now = time.perf_counter()
        timings[name] = round(now - since, 3)
        return now

    pinned = training.table_version(settings) if version is None else int(version)
    table = training.read_ledger(settings, version=pinned)
    t = lap("read", started)
    categories = list(config.categories) or top_categories(table.to_pandas())
    config = dataclasses.replace(config, categories=tuple(categories))
    if local:
        frame = build_frame_local(
            table, categories=categories, country=country, horizon=config.horizon
        )
    else:
        frame = build_frame_ray(
            table,
            categories=categories,
            country=country,
            horizon=config.horizon,
            cpus_per_task=cpus_per_task,
        )
    _check_trainable(frame, config, pinned)
    t = lap("series", t)
    train, validation = split(frame, config.horizon)
    if local:
        model = fit_tft(train, config, val_frame=validation, score=False)
        run_facts: dict[str, Any] = {"trained_by": "local", "num_workers": 0}
        run_facts.update({k: model.metadata.get(k) for k in ("val_loss", "train_loss")})
    else:
        model, run_facts = train_on_ray(
            settings, frame, config, num_workers=num_workers, cpus_per_worker=cpus_per_worker
        )
    t = lap("train", t)
    scores = quantile_losses(model.predict(validation), validation)
    t = lap("validate", t)
    dates = pd.to_datetime(frame["date"])
    meta = {
        "data_source": "ledger",
        "table": training.TABLE,
        "table_version": pinned,
        "ledger_rows": table.num_rows,
        "users": int(frame["user_id"].nunique()),
        "series_rows": len(frame),
        "train_rows": len(train),
        "date_from": dates.min().date().isoformat(),
        "date_to": dates.max().date().isoformat(),
        "holdout_days": config.horizon,
        "country": country,
        "categories": list(config.categories),
        **run_facts,
        "validation": scores,
    }
    from scale_ray.models.forecast.service import bracket_edges

    # A user forecast alone is put in the income bracket the training users defined.
    model.metadata["income_bracket_edges"] = bracket_edges(train)
    registry = ModelRegistry.from_settings(settings)
    published = publish_forecaster(registry, model, meta, promote=promote)
    lap("publish", t)
    return {
        "version": published,
        "promoted": promote,
        "live": registry.live(MODEL_NAME),
        "table_version": pinned,
        "users": meta["users"],
        "series_rows": meta["series_rows"],
        **{k: run_facts.get(k) for k in ("trained_by", "num_workers", "best_epoch", "val_loss")},
        "validation": {
            target: {"relative": v.get("relative"), "total_relative": v.get("total_relative")}
            for target, v in scores.items()
            if isinstance(v, dict)
        },
        "seconds": round(time.perf_counter() - started, 3),
        "timings": timings,
    }


def _absolute(settings: Settings) -> Settings:
    """Settings whose local paths no longer depend on this process's working directory."""
    if settings.is_local:
        return dataclasses.replace(settings, data_root=settings.path())
    return settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    d = DEFAULT_CONFIG
    parser.add_argument("--max-epochs", type=int, default=d.max_epochs)
    parser.add_argument(
        "--limit-train-batches", type=float, default=d.limit_train_batches,
        help="batches per epoch (>1) or a fraction of them (<=1)",
    )  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--hidden-size", type=int, default=d.hidden_size)
    parser.add_argument("--horizon", type=int, default=d.horizon)
    parser.add_argument("--encoder-length", type=int, default=d.encoder_length)
    parser.add_argument("--learning-rate", type=float, default=d.learning_rate)
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--country", help="public-holiday calendar (ISO code), e.g. GB, CZ, IN")
    parser.add_argument("--table-version", type=int, help="train on this version (default: now)")
    parser.add_argument("--num-workers", type=int, default=1, help="Ray Train workers (DDP)")
    parser.add_argument("--cpus-per-worker", type=float, default=1.0)
    parser.add_argument("--cpus-per-task", type=float, default=1.0, help="per Ray Data task")
    parser.add_argument("--promote", action="store_true", help="make the new version live")
    parser.add_argument("--local", action="store_true", help="run in this process, no Ray")
    args = parser.parse_args(argv)
    if args.num_workers < 1 or args.max_epochs < 1:
        parser.error("--num-workers and --max-epochs must be >= 1")
    limit = args.limit_train_batches
    config = dataclasses.replace(
        d,
        max_epochs=args.max_epochs,
        limit_train_batches=int(limit) if limit > 1 else float(limit),
        batch_size=args.batch_size,
        hidden_size=args.hidden_size,
        horizon=args.horizon,
        encoder_length=args.encoder_length,
        learning_rate=args.learning_rate,
        seed=args.seed,
    )
    logging.basicConfig(level="INFO", stream=sys.stderr)
    settings = _absolute(Settings.from_env())
    if not args.local:
        import ray

        if not ray.is_initialized():
            ray.init(address="auto", log_to_driver=False)
    try:
        summary = run(
            settings,
            config,
            local=args.local,
            num_workers=args.num_workers,
            cpus_per_worker=args.cpus_per_worker,
            cpus_per_task=args.cpus_per_task,
            country=args.country,
            version=args.table_version,
            promote=args.promote,
        )
    except EmptyLedger as exc:
        print(f"retrain_forecaster: {exc}", file=sys.stderr)
        print(json.dumps({"error": {"code": "empty_ledger", "message": str(exc)}}))
        return EXIT_EMPTY
    print(json.dumps(summary, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
