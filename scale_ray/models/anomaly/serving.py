"""Registry I/O and scoring of new rows against their users' history.

The registry name is ``anomaly``; a version folder holds :data:`~.model.MODEL_FILE` and the
registry's ``metadata.json``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from scale_ray.models.anomaly.features import build_features
from scale_ray.models.anomaly.model import AnomalyModel, AnomalyResult
from scale_ray.models.registry import ModelRegistry

MODEL_NAME = "anomaly"


def publish_anomaly_model(
    registry: ModelRegistry,
    model: AnomalyModel,
    metadata: dict[str, Any] | None = None,
    *,
    promote: bool = False,
) -> str:
    """Publish ``model`` as a new version of ``anomaly``; returns the version."""
    meta = {
        "kind": "isolation_forest",
        "thresholds": model.thresholds,
        "flag_rate": model.flag_rate,
        "n_estimators": len(model.forest.estimators_),
        "features": list(model.feature_names),
        **model.metadata,
        **(metadata or {}),
    }

    def write(folder: Path) -> None:
        model.save(folder)

    version = registry.publish(MODEL_NAME, write, meta)
    if promote:
        registry.promote(MODEL_NAME, version)
    return version


def load_anomaly_model(
    registry: ModelRegistry, version: str | None = None
) -> tuple[str, AnomalyModel]:
    """The model named by ``version`` (None or ``"live"``: the live one; ``"latest"``)."""
    resolved, folder = registry.resolve(MODEL_NAME, version)
    return resolved, AnomalyModel.load(folder)


def score_new(
    model: AnomalyModel,
    history: pa.Table | pd.DataFrame,
    new_txn_ids: Collection[str] | None = None,
    *,
    explain: str = "flagged",
    category_column: str = "category",
) -> list[AnomalyResult]:
    """Verdicts on the debits of ``history`` whose ``txn_id`` is in ``new_txn_ids`` (all: None).

    ``history`` holds the users' complete ledgers up to and including the new rows (rows booked
    later than a new row do not change its features, so a full ledger is fine too).
    """
    features = build_features(history, category_column=category_column)
    if new_txn_ids is not None:
        wanted = set(new_txn_ids)
        features = features.take(features.rows["txn_id"].isin(wanted).to_numpy())
    return model.results(features, explain=explain)


#: A function that returns the live (version, model), reloading when the registry changes.
ModelSource = Callable[[], tuple[str, AnomalyModel]]

__all__ = [
    "MODEL_NAME",
    "ModelSource",
    "load_anomaly_model",
    "publish_anomaly_model",
    "score_new",
]
