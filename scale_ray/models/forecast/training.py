"""The first forecasting model of a fresh install, and the training frame from ledger rows.

:func:`ensure_forecaster` makes a first ``forecaster`` version when the registry has none
(``scale-ray up`` calls it before Serve starts; the ``Forecaster`` deployment answers 503 until
one exists). It holds an ``flock`` on ``<models>/forecaster/.lock`` so processes starting
together fit it once. It fits a small TFT:

* on the ledger, when at least :data:`MIN_LEDGER_USERS` users have :data:`MIN_USER_DAYS` days
  of history and the rows span every month of the year (``month`` is an input: a model that
  never saw December has not learnt it); at most :data:`BOOTSTRAP_MAX_USERS` users
  and the last :data:`BOOTSTRAP_MAX_DAYS` days of each are used, so it takes about a minute
  or two on 2 CPUs;
* otherwise on generated synthetic tenants (:mod:`scale_ray.demo.generator`), so a fresh
  install forecasts from its first request; the metadata says which.

``Settings.forecaster_bootstrap == "fast"`` fits a tiny model on a few synthetic tenants in
seconds (the tests' mode). Retraining on the ledger at full size is a job's work.

:func:`training_frame` turns ledger rows into the TFT's frame (per-user series built alone,
schedules, covariates per holiday country, income brackets); the model's metadata keeps the
income-bracket edges (:func:`~.service.bracket_edges`), so serving one user puts them in the
bracket the training users defined.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from datetime import date
from typing import Any

import pandas as pd
import pyarrow as pa

from scale_ray.models.forecast.service import (
    CURRENCY_COUNTRY,
    LEDGER_COLUMNS,
    MODEL_NAME,
    bracket_edges,
)
from scale_ray.models.registry import ModelRegistry
from scale_ray.settings import Settings

log = logging.getLogger(__name__)

TABLE = "transactions"
#: A ledger user counts for training with at least this many days of history.
MIN_USER_DAYS = 120
#: The first model is fitted on the ledger only when this many users qualify.
MIN_LEDGER_USERS = 8
#: Bounds of the first model's training set (time on 2 CPUs).
BOOTSTRAP_MAX_USERS = 32
#: Each user's last days (more than a year, so every month is seen).
BOOTSTRAP_MAX_DAYS = 400
BOOTSTRAP_MAX_ROWS = 400_000
#: Synthetic tenants when the ledger has too few users with history.
SYNTHETIC_USERS = 16
SYNTHETIC_YEARS = 1.5
SYNTHETIC_SEED = 2025
#: Spend categories that become inputs (the top ones of the training rows).
TOP_CATEGORIES = 3
MODES = ("default", "fast")


def bootstrap_config(mode: str) -> Any:
    """The first model's :class:`~.tft.TFTConfig` (``fast``: a tiny one for tests)."""
    from scale_ray.models.forecast.tft import TFTConfig

    if mode == "fast":
        return TFTConfig(
            horizon=30,
            encoder_length=60,
            hidden_size=8,
            attention_head_size=1,
            hidden_continuous_size=4,
            batch_size=64,
            max_epochs=1,
            limit_train_batches=4,
        )
    # About a minute on 2 busy CPUs: 40 batches of 64 windows (1.5 s a batch there).
    return TFTConfig(
        horizon=30,
        encoder_length=60,
        hidden_size=16,
        attention_head_size=2,
        hidden_continuous_size=8,
        batch_size=64,
        max_epochs=2,
        limit_train_batches=20,
    )


# -- training frames ---------------------------------------------------------------------------
def training_frame(
    rows: pa.Table | pd.DataFrame,
    *,
    categories: list[str] | None = None,
    max_days: int | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The TFT frame of ledger rows: ``(frame, info)``, ``info`` naming the categories, the
    income-bracket edges and the users.

    Every user's series is built from their own rows (as the service does), with the same
    category columns; schedules are learnt from each user's whole history (a bootstrap model;
    a backtest would learn them at each origin); ``max_days`` keeps each user's last days.
    """
    from scale_ray.models.forecast.series import (
        daily_series,
        income_brackets,
        top_categories,
        user_schedule,
        with_covariates,
    )

    frame = rows.to_pandas() if isinstance(rows, pa.Table) else rows
    cats = list(categories) if categories is not None else top_categories(frame, TOP_CATEGORIES)
    parts: list[pd.DataFrame] = []
    schedules = {}
    for user_id, user_rows in frame.groupby("user_id", sort=True):
        series = daily_series(user_rows, categories=cats)
        currency = series["currency"].iloc[0]
        mine = user_rows[user_rows["currency"] == currency]
        schedules[str(user_id)] = user_schedule(mine)
        parts.append(series.tail(max_days) if max_days else series)
    series = pd.concat(parts, ignore_index=True)
    brackets = income_brackets(series)
    out = []
    for currency, part in series.groupby("currency", sort=True):
        out.append(
            with_covariates(
                part,
                schedules,
                country=CURRENCY_COUNTRY.get(str(currency)),
                brackets=brackets,
            )
        )
    full = pd.concat(out, ignore_index=True).sort_values(["user_id", "time_idx"])
    info = {
        "categories": cats,
        "income_bracket_edges": bracket_edges(series),
        "users": int(series["user_id"].nunique()),
        "rows": len(full),
    }
    return full.reset_index(drop=True), info


def fit_on_rows(
    rows: pa.Table | pd.DataFrame, config: Any, *, max_days: int | None = None
) -> tuple[Any, dict[str, Any]]:
    """A TFT fitted on ledger rows (:func:`training_frame`), with the training frame's
    categories in its config and its income-bracket edges in its metadata: ``(model, info)``."""
    from scale_ray.models.forecast.tft import fit_tft

    frame, info = training_frame(rows, max_days=max_days)
    config = replace(config, categories=tuple(info["categories"]))
    model = fit_tft(frame, config)
    model.metadata["income_bracket_edges"] = info["income_bracket_edges"]
    return model, {**info, "months": _months_covered(frame)}


def synthetic_rows(
    users: int, *, years: float, seed: int = SYNTHETIC_SEED, end: date | None = None
) -> pa.Table:
    """Generated demo tenants' transactions (:data:`~.service.LEDGER_COLUMNS`)."""
    from scale_ray.demo.generator import generate_tenants
    from scale_ray.ledger.rows import transactions_table

    tenants, _, _ = generate_tenants(users, years=years, seed=seed, end=end)
    parts = [
        transactions_table(t.user_id, t.transactions, num_buckets=64, source="synthetic")
        for t in tenants
    ]
    return pa.concat_tables(parts).select(list(LEDGER_COLUMNS))


def ledger_training_rows(
    settings: Settings,
    *,
    version: int,
    min_days: int = MIN_USER_DAYS,
    max_users: int = BOOTSTRAP_MAX_USERS,
    max_rows: int = BOOTSTRAP_MAX_ROWS,
) -> tuple[pa.Table | None, dict[str, Any]]:
    """Rows of the ledger's users with at least ``min_days`` days of history at ``version``
    (whole buckets in order until ``max_rows``; at most ``max_users`` users): ``(rows or
    None, info)``."""
    import pyarrow.compute as pc
    from deltalake import DeltaTable

    from scale_ray.models.anomaly.training import bucket_rows

    per_bucket = bucket_rows(settings, version)
    chosen, total = [], 0
    for bucket, n in per_bucket.items():
        if total >= max_rows:
            break
        chosen.append(bucket)
        total += n
    info: dict[str, Any] = {"table_version": version, "buckets": chosen, "ledger_rows": total}
    if not chosen:
        return None, {**info, "qualifying_users": 0}
    table = DeltaTable(settings.table_uri(TABLE), version=version)
    dataset = table.to_pyarrow_dataset(
        file_pruning_predicate=[("user_bucket", "in", [str(b) for b in chosen])]
    )
    rows = dataset.to_table(columns=list(LEDGER_COLUMNS))
    if rows.num_rows == 0:
        return None, {**info, "qualifying_users": 0}
    day = pc.floor_temporal(rows.column("booked_at"), unit="day")
    spans = (
        pa.table({"user_id": rows.column("user_id"), "day": day})
        .group_by("user_id")
        .aggregate([("day", "min"), ("day", "max")])
        .to_pandas()
    )
    spans["days"] = (spans["day_max"] - spans["day_min"]).dt.days + 1
    good = sorted(spans.loc[spans["days"] >= min_days, "user_id"].astype(str))[:max_users]
    info["qualifying_users"] = len(good)
    if not good:
        return None, info
    return rows.filter(pc.field("user_id").isin(good)), info


def _months_covered(frame: pd.DataFrame) -> int:
    return int(pd.to_datetime(frame["date"]).dt.month.nunique())


# -- the first model ---------------------------------------------------------------------------
def ensure_forecaster(settings: Settings, registry: ModelRegistry | None = None) -> str:
    """The live ``forecaster`` version, fitting and publishing a first one if there is none.

    Safe when several processes call it at once: one fits (holding an ``flock`` on
    ``<models>/forecaster/.lock``), the others wait and then return its version.
    """
    mode = settings.forecaster_bootstrap
    if mode not in MODES:
        raise ValueError(f"forecaster_bootstrap must be one of {MODES}, got {mode!r}")
    registry = registry or ModelRegistry.from_settings(settings)
    return registry.ensure_live(MODEL_NAME, lambda: _bootstrap(settings, registry, mode))


def _bootstrap(settings: Settings, registry: ModelRegistry, mode: str) -> str:
    from scale_ray.models.anomaly.training import table_version
    from scale_ray.models.forecast.tft import publish_forecaster

    started = time.perf_counter()
    config = bootstrap_config(mode)
    pinned = table_version(settings)
    ledger_info: dict[str, Any] = {"table_version": pinned, "qualifying_users": 0}
    rows = None
    if mode == "default":
        rows, ledger_info = ledger_training_rows(settings, version=pinned)
        if rows is not None and ledger_info["qualifying_users"] < MIN_LEDGER_USERS:
            rows = None
        if rows is not None and _months_in_rows(rows) < 12:
            ledger_info["note"] = "the ledger's rows do not cover every month of the year"
            rows = None
    meta: dict[str, Any]
    if rows is not None:
        meta = {"data_source": "ledger", "table": TABLE, **ledger_info}
        log.info(
            "no forecaster: fitting the first on %d ledger users", ledger_info["qualifying_users"]
        )
        model, info = fit_on_rows(rows, config, max_days=BOOTSTRAP_MAX_DAYS)
    else:
        users, years = (6, 1.1) if mode == "fast" else (SYNTHETIC_USERS, SYNTHETIC_YEARS)
        meta = {
            "data_source": "synthetic",
            "note": (
                f"fitted on {users} generated synthetic tenants: the ledger (transactions "
                f"version {pinned}) had {ledger_info['qualifying_users']} user(s) with "
                f"{MIN_USER_DAYS}+ days of history, fewer than {MIN_LEDGER_USERS}"
                + (f" ({ledger_info['note']})" if "note" in ledger_info else "")
                + "; retrain on the ledger once it has them"
            ),
            "synthetic": {"users": users, "years": years, "seed": SYNTHETIC_SEED},
            "ledger_table_version": pinned,
        }
        log.info("no forecaster and too little ledger history: fitting on synthetic tenants")
        model, info = fit_on_rows(synthetic_rows(users, years=years), config)
    meta.update(
        bootstrap=mode,
        trained_by="bootstrap",
        users=info["users"],
        rows=info["rows"],
        categories=info["categories"],
        seconds=round(time.perf_counter() - started, 3),
    )
    version = publish_forecaster(registry, model, meta)
    log.info("forecaster %s published in %.1f s", version, time.perf_counter() - started)
    return version


def _months_in_rows(rows: pa.Table) -> int:
    import pyarrow.compute as pc

    return len(pc.unique(pc.month(rows.column("booked_at"))))


__all__ = [
    "MIN_LEDGER_USERS",
    "MIN_USER_DAYS",
    "bootstrap_config",
    "ensure_forecaster",
    "fit_on_rows",
    "ledger_training_rows",
    "synthetic_rows",
    "training_frame",
]
