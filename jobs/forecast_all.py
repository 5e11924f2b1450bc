"""Forecast every user with the live forecaster, with Ray Data, into the ``forecasts`` table.

Run on a cluster with::

    RAY_AUTH_MODE=token ray job submit --working-dir . -- \\
        python jobs/forecast_all.py [--model-version live] [--workers 2] [--cpus-per-worker 1]

Steps:

1. **Pin** the ``transactions`` table's current version (``--table-version`` to choose one) and
   resolve the model version (``--model-version``: live, latest or a version): every user is
   forecast from the same snapshot by the same model, and each row records both.
2. **Plan**: the user buckets with rows at that version (row counts from the Delta log),
   largest first. Buckets hold whole users, so a bucket is a self-contained unit of work.
3. **Forecast**: a Ray Data pipeline over the buckets; ``map_batches`` with a callable class
   (:class:`BucketForecaster`, an actor pool of ``--workers``) loads the model once per
   worker, reads each bucket's rows at the pinned version (only that bucket's files), builds
   every user's history alone (:func:`~scale_ray.models.forecast.service.user_histories`),
   skips users already forecast for the same ``(as_of, model_version)``, predicts
   ``--users-per-predict`` users per network call, projects balances (threshold 0) and
   explains them. Users with too little history are counted, not forecast.
4. **Write**: one Delta ``MERGE`` into ``forecasts`` on (user_bucket, user_id, as_of,
   model_version, horizon_day), inserting only rows that are not there yet, so a rerun (or two
   runs racing) never duplicates a forecast; the commit's metadata names the job's inputs.

The job prints one JSON summary. ``--local`` starts a local Ray in this process; otherwise it
joins the cluster it was submitted to (``address="auto"``), or uses the Ray this process has
already initialized. Without a published forecaster it exits with status 2 and says so. The
job's working directory is a copy of the repository, so give ``SCALE_DATA_ROOT`` as an
absolute path (or shared storage).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from collections import Counter
from collections.abc import Collection, Iterable
from datetime import UTC, date, datetime
from typing import Any

import pandas as pd
import pyarrow as pa

from scale_ray.models.forecast.service import MODEL_NAME
from scale_ray.settings import Settings

log = logging.getLogger("scale.jobs.forecast_all")

TABLE = "forecasts"
EXIT_NO_MODEL = 2
DEFAULT_WORKERS = 2
DEFAULT_USERS_PER_PREDICT = 64
#: Status of each user in the pipeline's output (one marker row per user not forecast).
FORECAST, DONE_BEFORE, INSUFFICIENT, FAILED = (
    "forecast",
    "already_forecast",
    "insufficient_history",
    "failed",
)
MERGE_PREDICATE = (
    "t.user_bucket = s.user_bucket AND t.user_id = s.user_id AND t.as_of = s.as_of "
    "AND t.model_version = s.model_version AND t.horizon_day = s.horizon_day"
)


class NoModel(LookupError):
    """No forecaster is published (or the requested version is missing)."""


def _absolute(settings: Settings) -> Settings:
    """Settings whose local paths no longer depend on this process's working directory."""
    if settings.is_local:
        return dataclasses.replace(settings, data_root=settings.path())
    return settings


def output_schema() -> pa.Schema:
    """The pipeline's rows: the ``forecasts`` columns (nullable) plus ``status``."""
    from scale_ray.ledger.schema import FORECASTS

    fields = [f.with_nullable(True) for f in FORECASTS]
    return pa.schema([*fields, pa.field("status", pa.string())])


def existing_keys(settings: Settings, model_version: str) -> set[tuple[str, date]]:
    """``(user_id, as_of)`` already forecast by ``model_version`` in the ``forecasts`` table."""
    import pyarrow.compute as pc

    from scale_ray.ledger.delta import open_table

    dataset = open_table(settings, TABLE).to_pyarrow_dataset()
    table = dataset.to_table(
        columns=["user_id", "as_of"], filter=pc.field("model_version") == model_version
    )
    if table.num_rows == 0:
        return set()
    pairs = table.group_by(["user_id", "as_of"]).aggregate([])
    return set(
        zip(pairs.column("user_id").to_pylist(), pairs.column("as_of").to_pylist(), strict=True)
    )


def read_bucket(settings: Settings, version: int, bucket: int) -> pa.Table:
    """One bucket's ledger rows at ``version`` (only that partition's files are opened)."""
    from deltalake import DeltaTable

    from scale_ray.models.forecast.service import LEDGER_COLUMNS

    table = DeltaTable(settings.table_uri("transactions"), version=version)
    dataset = table.to_pyarrow_dataset(file_pruning_predicate=[("user_bucket", "=", str(bucket))])
    return dataset.to_table(columns=list(LEDGER_COLUMNS))


def read_bucket_accounts(settings: Settings, bucket: int) -> pd.DataFrame | None:
    """The bucket's ``accounts`` rows (latest version: opening balances and types)."""
    from scale_ray.ledger.delta import open_table
    from scale_ray.models.forecast.service import ACCOUNT_COLUMNS

    table = open_table(settings, "accounts")
    dataset = table.to_pyarrow_dataset(partitions=[("user_bucket", "=", str(bucket))])
    rows = dataset.to_table(columns=ACCOUNT_COLUMNS)
    return rows.to_pandas() if rows.num_rows else None


def forecast_bucket(
    model: Any,
    model_version: str,
    rows: pa.Table | pd.DataFrame,
    *,
    bucket: int,
    ledger_version: int,
    accounts: pd.DataFrame | None = None,
    done: Collection[tuple[str, date]] = (),
    now: datetime | None = None,
    users_per_predict: int = DEFAULT_USERS_PER_PREDICT,
) -> pa.Table:
    """The pipeline's output for one bucket's rows: every forecast user's ``forecasts`` rows
    (threshold 0, the model's horizon) and one marker row for each user not forecast
    (``status``: already forecast, insufficient history, failed). Plain code, no Ray."""
    from scale_ray.models.forecast.service import forecast_histories, user_histories

    frame = rows.to_pandas() if isinstance(rows, pa.Table) else rows
    users = sorted(frame["user_id"].astype(str).unique()) if len(frame) else []
    histories, errors = user_histories(model, frame, users, accounts=accounts)
    done = set(done)
    todo = [h for _, h in sorted(histories.items()) if (h.user_id, h.as_of) not in done]
    now = now or datetime.now(UTC)
    out: list[dict[str, Any]] = []
    forecasts = forecast_histories(
        model,
        model_version,
        todo,
        ledger_version=ledger_version,
        now=now,
        users_per_predict=users_per_predict,
    )
    for user in users:
        if user in forecasts:
            out += [{**r, "status": FORECAST} for r in forecasts[user].to_rows(bucket)]
            continue
        if user in errors:
            status, as_of = INSUFFICIENT, None
        elif user in histories and (user, histories[user].as_of) in done:
            status, as_of = DONE_BEFORE, histories[user].as_of
        else:
            status, as_of = FAILED, histories[user].as_of if user in histories else None
        out.append(
            {
                "user_id": user,
                "user_bucket": bucket,
                "as_of": as_of,
                "model_version": model_version,
                "ledger_version": ledger_version,
                "status": status,
                "created_at": now,
            }
        )
    return pa.Table.from_pylist(out, schema=output_schema())


class BucketForecaster:
    """The ``map_batches`` callable: loads the model once per worker, forecasts buckets."""

    def __init__(
        self,
        settings_env: dict[str, str],
        *,
        ledger_version: int,
        model_version: str,
        done: Iterable[tuple[str, date]],
        now: datetime,
        users_per_predict: int,
        torch_threads: int = 1,
    ) -> None:
        import torch

        from scale_ray.models.forecast.tft import load_forecaster
        from scale_ray.models.registry import ModelRegistry

        torch.set_num_threads(max(1, int(torch_threads)))
        self.settings = Settings.from_env(settings_env)
        registry = ModelRegistry.from_settings(self.settings)
        self.model_version, self.model = load_forecaster(registry, model_version)
        self.ledger_version = ledger_version
        self.done = set(done)
        self.now = now
        self.users_per_predict = users_per_predict

    def __call__(self, batch: pa.Table) -> pa.Table:
        parts = []
        for bucket in batch.column("bucket").to_pylist():
            bucket = int(bucket)
            rows = read_bucket(self.settings, self.ledger_version, bucket)
            parts.append(
                forecast_bucket(
                    self.model,
                    self.model_version,
                    rows,
                    bucket=bucket,
                    ledger_version=self.ledger_version,
                    accounts=read_bucket_accounts(self.settings, bucket),
                    done=self.done,
                    now=self.now,
                    users_per_predict=self.users_per_predict,
                )
            )
        return pa.concat_tables(parts) if parts else output_schema().empty_table()


def write_forecasts(
    settings: Settings, rows: pa.Table, *, metadata: dict[str, str] | None = None
) -> dict[str, Any]:
    """Merge ``forecasts`` rows (the table's schema) in one commit, inserting only keys that
    are not there yet; ``{"version", "rows_inserted"}``."""
    from deltalake import CommitProperties

    from scale_ray.ledger.delta import open_table
    from scale_ray.ledger.schema import FORECASTS

    table = open_table(settings, TABLE)
    if rows.num_rows == 0:
        return {"version": int(table.version()), "rows_inserted": 0}
    source = rows.select(FORECASTS.names).cast(FORECASTS)
    metrics = (
        table.merge(
            source=source,
            predicate=MERGE_PREDICATE,
            source_alias="s",
            target_alias="t",
            commit_properties=CommitProperties(custom_metadata=metadata, max_commit_retries=8),
        )
        .when_not_matched_insert_all()
        .execute()
    )
    return {
        "version": int(table.version()),
        "rows_inserted": int(metrics.get("num_target_rows_inserted", 0)),
    }


def run(
    settings: Settings,
    *,
    model_version: str = "live",
    version: int | None = None,
    workers: int = DEFAULT_WORKERS,
    cpus_per_worker: float = 1.0,
    users_per_predict: int = DEFAULT_USERS_PER_PREDICT,
) -> dict[str, Any]:
    """The pipeline on the Ray this process is connected to; the JSON summary."""
    import pyarrow.compute as pc
    import ray

    from scale_ray.ledger.delta import ensure_tables
    from scale_ray.models.anomaly.training import bucket_rows, table_version
    from scale_ray.models.registry import ModelRegistry

    started = time.perf_counter()
    ensure_tables(settings, ("transactions", "accounts", TABLE))
    registry = ModelRegistry.from_settings(settings)
    try:
        resolved, _ = registry.resolve(MODEL_NAME, model_version)
    except LookupError as exc:
        raise NoModel(str(exc)) from exc
    pinned = table_version(settings) if version is None else int(version)
    per_bucket = bucket_rows(settings, pinned)
    buckets = [b for b, n in sorted(per_bucket.items(), key=lambda kv: (-kv[1], kv[0])) if n]
    done = existing_keys(settings, resolved)
    now = datetime.now(UTC)
    summary: dict[str, Any] = {
        "model_version": resolved,
        "table_version": pinned,
        "buckets": len(buckets),
    }
    if buckets:
        ds = ray.data.from_items([{"bucket": b} for b in buckets], override_num_blocks=len(buckets))
        ds = ds.map_batches(
            BucketForecaster,
            fn_constructor_kwargs={
                "settings_env": settings.as_env(),
                "ledger_version": pinned,
                "model_version": resolved,
                "done": sorted(done),
                "now": now,
                "users_per_predict": users_per_predict,
                "torch_threads": max(1, int(cpus_per_worker)),
            },
            batch_size=1,
            batch_format="pyarrow",
            concurrency=max(1, min(int(workers), len(buckets))),
            num_cpus=cpus_per_worker,
        )
        refs = ds.to_arrow_refs()
        parts = [t for t in ray.get(refs) if t.num_rows]
        out = pa.concat_tables(parts) if parts else output_schema().empty_table()
    else:
        out = output_schema().empty_table()
    forecast_rows = out.filter(pc.field("status") == FORECAST)
    markers = out.filter(pc.field("status") != FORECAST)
    statuses = Counter(markers.column("status").to_pylist())
    forecast_users = len(pc.unique(forecast_rows.column("user_id")))
    written = write_forecasts(
        settings,
        forecast_rows,
        metadata={
            "job": "forecast_all",
            "model_version": resolved,
            "transactions_version": str(pinned),
        },
    )
    summary.update(
        users_forecast=forecast_users,
        users_already_forecast=statuses.get(DONE_BEFORE, 0),
        users_insufficient_history=statuses.get(INSUFFICIENT, 0),
        users_failed=statuses.get(FAILED, 0),
        rows=forecast_rows.num_rows,
        rows_inserted=written["rows_inserted"],
        forecasts_version=written["version"],
        seconds=round(time.perf_counter() - started, 3),
    )
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-version", default="live", help="live, latest or a version")
    parser.add_argument("--table-version", type=int, help="forecast from this ledger version")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="actor pool size")
    parser.add_argument("--cpus-per-worker", type=float, default=1.0)
    parser.add_argument(
        "--users-per-predict", type=int, default=DEFAULT_USERS_PER_PREDICT, help="users per pass"
    )
    parser.add_argument("--local", action="store_true", help="start a local Ray in this process")
    args = parser.parse_args(argv)
    if args.workers < 1 or args.users_per_predict < 1 or args.cpus_per_worker <= 0:
        parser.error("need --workers >= 1, --users-per-predict >= 1 and --cpus-per-worker > 0")
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
            model_version=args.model_version,
            version=args.table_version,
            workers=args.workers,
            cpus_per_worker=args.cpus_per_worker,
            users_per_predict=args.users_per_predict,
        )
    except NoModel as exc:
        print(f"forecast_all: {exc}", file=sys.stderr)
        print(json.dumps({"error": {"code": "no_model", "message": str(exc)}}))
        return EXIT_NO_MODEL
    print(json.dumps(summary, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
