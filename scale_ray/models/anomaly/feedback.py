"""Users' verdicts on flags as labels: how a model does on them, and cautious threshold tuning.

A user resolves a flag as ``legitimate`` or ``fraud`` (``POST /v1/flags/{id}``,
:meth:`~.flags.FlagStore.resolve`). Those verdicts are the anomaly engine's only labels. They
are few, and biased (only rows some model flagged get one), so they measure and nudge; they
never fit anything.

**Metrics** (:func:`feedback_metrics`). The resolved flags (:meth:`~.flags.FlagStore.labelled`,
one version of the ``flags`` table) give the counts and the *live precision* users judged:
``fraud / resolved`` of what the models that raised them flagged. Then the labelled users'
ledgers are read at one version of ``transactions`` (only their buckets' files, only their
rows), featured as in training (features look only at a user's earlier rows, so a user's whole
ledger is what the monitor saw), and every labelled row is scored by *the model given*:

* ``recall``: share of confirmed fraud it flags at its thresholds;
* ``false_flag_rate``: share of rows users called legitimate that it flags;
* ``precision``: fraud among the labelled rows it flags (a labelled subset only, so an upper
  bound: it knows nothing of unflagged fraud that was never labelled);
* ``roc_auc``: fraud against legitimate by score, when each class has at least
  :data:`MIN_AUC_ROWS` rows (else null);

overall and per segment. A verdict on a transaction not in the ledger at that version (a ledger
pinned before it) is counted as ``unmatched``. No resolved flags: zeros and nulls.

**Tuning** (:func:`tune_thresholds`). Per segment (the history bands of :mod:`.features`), and
only where there is evidence and a yardstick:

1. *Evidence*: the segment has at least ``min_labels`` (default :data:`MIN_LABELS`) labelled
   rows; otherwise its threshold stays.
2. *Yardstick*: the segment has at least ``min_reference_rows`` ordinary rows scored by the
   model (the job passes its training scores; by default, the labelled users' unlabelled
   debits). The threshold may only move so that it flags between ``1 / max_rate_factor`` and
   ``max_rate_factor`` (default 2) times as many of these rows as it does now: at most twice the
   base flag rate, at least half of it.
3. *Lower* when a confirmed fraud scores below the threshold: to the lowest confirmed-fraud
   score (the highest threshold that flags every confirmed fraud), or as far as the 2x bound
   allows (some may stay missed, and the explanation says how many).
4. *Raise* when no confirmed fraud is missed and at least ``min_band_legitimate`` rows users
   called legitimate sit between the threshold and the lowest confirmed fraud (legitimate
   verdicts dominate just above the threshold; there is no fraud there by construction): to
   just above the highest of them, so they are no longer flagged and every confirmed fraud still
   is, or as far as the half-rate bound allows.
5. Otherwise the threshold stays.

Each step is the smallest move that does its job; the ``"*"`` threshold (the fallback of
segments too thin for their own) is never tuned, and a segment that used it gets an entry of its
own only when its threshold moves. Every segment gets an explanation: its counts, the threshold
before and after, the action and why, and what it flags before and after (confirmed fraud and
legitimate rows among the labels, share of the reference rows).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError
from sklearn.metrics import roc_auc_score

from scale_ray.ledger.delta import open_table
from scale_ray.ledger.keys import user_bucket
from scale_ray.models.anomaly import training
from scale_ray.models.anomaly.features import SEGMENT_BANDS, build_features
from scale_ray.models.anomaly.flags import KIND_ANOMALY, FlagStore
from scale_ray.models.anomaly.model import AnomalyModel
from scale_ray.settings import Settings

FRAUD = "fraud"
LEGITIMATE = "legitimate"
#: ROC-AUC is reported only when both classes have at least this many scored rows.
MIN_AUC_ROWS = 5
#: Labelled rows a segment needs before its threshold is tuned.
MIN_LABELS = 30
#: Tuned thresholds flag at most this many times (and at least 1/this) the ordinary rows the
#: untuned threshold flags.
MAX_RATE_FACTOR = 2.0
#: Legitimate rows just above the threshold (below every confirmed fraud) needed to raise it.
MIN_BAND_LEGITIMATE = 5
#: Ordinary rows a segment needs to bound its flag rate (as a threshold of its own needs).
MIN_REFERENCE_ROWS = training.MIN_SEGMENT_ROWS
SEGMENTS: tuple[str, ...] = tuple(name for name, _ in SEGMENT_BANDS)


@dataclass(frozen=True)
class LabelledScores:
    """The resolved flags, and this model's score of each labelled row found in the ledger.

    Arrays line up (one entry per matched label). ``reference`` holds, per segment, the model's
    scores of the labelled users' other debits (empty when not asked for).
    """

    user_ids: np.ndarray
    txn_ids: np.ndarray
    segments: np.ndarray
    scores: np.ndarray
    fraud: np.ndarray
    #: Counts over every resolved flag read (matched or not), for the live precision.
    resolved: dict[str, int] = field(default_factory=lambda: {FRAUD: 0, LEGITIMATE: 0})
    #: ``{model_version: {"fraud": n, "legitimate": n}}`` of the models that raised the flags.
    by_model_version: dict[str, dict[str, int]] = field(default_factory=dict)
    unmatched: int = 0
    table_version: int | None = None
    flags_version: int | None = None
    reference: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def empty(
        cls, *, table_version: int | None = None, flags_version: int | None = None
    ) -> LabelledScores:
        none = np.zeros(0, dtype=object)
        return cls(
            none,
            none,
            none,
            np.zeros(0),
            np.zeros(0, dtype=bool),
            table_version=table_version,
            flags_version=flags_version,
        )


# -- reading -----------------------------------------------------------------------------------
def read_labels(
    settings: Settings, *, kind: str = KIND_ANOMALY, version: int | None = None
) -> tuple[list[dict[str, Any]], int | None]:
    """The resolved flags of ``kind`` at ``version`` of ``flags`` (latest when None), and that
    version; ``([], None)`` when the table does not exist (nothing is created)."""
    try:
        open_table(settings, "flags", create=False)
    except TableNotFoundError:
        return [], None
    store = FlagStore(settings)
    pinned = store.latest_version() if version is None else int(version)
    return store.labelled(kind=kind, version=pinned), pinned


def read_users(settings: Settings, user_ids: list[str], version: int) -> pa.Table:
    """The :data:`~.training.LEDGER_COLUMNS` rows of ``user_ids`` in ``transactions`` at
    ``version``: only their buckets' files are opened, only their rows are kept."""
    buckets = sorted({user_bucket(u, settings.num_buckets) for u in user_ids})
    table = DeltaTable(settings.table_uri(training.TABLE), version=int(version))
    dataset = table.to_pyarrow_dataset(
        file_pruning_predicate=[("user_bucket", "in", [str(b) for b in buckets])]
    )
    return dataset.to_table(
        columns=list(training.LEDGER_COLUMNS), filter=pc.field("user_id").isin(sorted(user_ids))
    )


def labelled_scores(
    settings: Settings,
    model: AnomalyModel,
    *,
    version: int | None = None,
    flags_version: int | None = None,
    kind: str = KIND_ANOMALY,
    with_reference: bool = True,
) -> LabelledScores:
    """Score the rows users resolved flags on with ``model``.

    ``version`` pins ``transactions`` (None: the current version), ``flags_version`` the
    ``flags`` table (None: the latest). ``with_reference`` keeps the model's scores of the
    labelled users' other debits per segment (the default yardstick of :func:`tune_thresholds`).
    """
    labels, flags_pinned = read_labels(settings, kind=kind, version=flags_version)
    pinned = training.table_version(settings) if version is None else int(version)
    if not labels:
        return LabelledScores.empty(table_version=pinned, flags_version=flags_pinned)
    resolved = {FRAUD: 0, LEGITIMATE: 0}
    by_version: dict[str, dict[str, int]] = {}
    for flag in labels:
        resolved[flag["status"]] += 1
        counts = by_version.setdefault(str(flag["model_version"]), {FRAUD: 0, LEGITIMATE: 0})
        counts[flag["status"]] += 1

    users = sorted({f["user_id"] for f in labels})
    features = build_features(read_users(settings, users, pinned))
    scores = model.score(features.X)
    position = {
        (u, t): i
        for i, (u, t) in enumerate(
            zip(features.rows["user_id"].tolist(), features.rows["txn_id"].tolist(), strict=True)
        )
    }
    matched: list[tuple[int, bool]] = []
    for flag in labels:
        i = position.get((flag["user_id"], flag["txn_id"]))
        if i is not None:
            matched.append((i, flag["status"] == FRAUD))
    index = np.array([i for i, _ in matched], dtype=np.int64)
    reference: dict[str, np.ndarray] = {}
    if with_reference:
        ordinary = np.ones(len(features), dtype=bool)
        ordinary[index] = False
        for name in SEGMENTS:
            reference[name] = scores[ordinary & (features.segments == name)]
    return LabelledScores(
        user_ids=features.rows["user_id"].to_numpy(dtype=object)[index],
        txn_ids=features.rows["txn_id"].to_numpy(dtype=object)[index],
        segments=features.segments[index],
        scores=scores[index],
        fraud=np.array([f for _, f in matched], dtype=bool),
        resolved=resolved,
        by_model_version=dict(sorted(by_version.items())),
        unmatched=len(labels) - len(matched),
        table_version=pinned,
        flags_version=flags_pinned,
        reference=reference,
    )


# -- metrics -----------------------------------------------------------------------------------
def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 6) if whole else None


def _flagged(labelled: LabelledScores, thresholds: Mapping[str, float]) -> np.ndarray:
    default = thresholds["*"]
    limit = np.array([thresholds.get(s, default) for s in labelled.segments], dtype=np.float64)
    return labelled.scores >= limit


def _counts(fraud: np.ndarray, flagged: np.ndarray) -> dict[str, Any]:
    n_fraud = int(fraud.sum())
    n_legit = int((~fraud).sum())
    fraud_flagged = int((fraud & flagged).sum())
    legit_flagged = int((~fraud & flagged).sum())
    return {
        "fraud": n_fraud,
        "legitimate": n_legit,
        "fraud_flagged": fraud_flagged,
        "legitimate_flagged": legit_flagged,
        "recall": _share(fraud_flagged, n_fraud),
        "false_flag_rate": _share(legit_flagged, n_legit),
        "precision": _share(fraud_flagged, fraud_flagged + legit_flagged),
    }


def _auc(fraud: np.ndarray, scores: np.ndarray) -> float | None:
    if int(fraud.sum()) < MIN_AUC_ROWS or int((~fraud).sum()) < MIN_AUC_ROWS:
        return None
    return round(float(roc_auc_score(fraud, scores)), 6)


def summarize(labelled: LabelledScores, thresholds: Mapping[str, float]) -> dict[str, Any]:
    """The metrics of :func:`feedback_metrics` from scored labels at ``thresholds`` (JSON-ready)."""
    resolved = labelled.resolved[FRAUD] + labelled.resolved[LEGITIMATE]
    flagged = _flagged(labelled, thresholds)
    overall = _counts(labelled.fraud, flagged)
    segments: dict[str, Any] = {}
    for name in SEGMENTS:
        mask = labelled.segments == name
        if mask.any():
            segments[name] = {
                "threshold": float(thresholds.get(name, thresholds["*"])),
                **_counts(labelled.fraud[mask], flagged[mask]),
                "roc_auc": _auc(labelled.fraud[mask], labelled.scores[mask]),
            }
    return {
        "table_version": labelled.table_version,
        "flags_version": labelled.flags_version,
        "resolved": resolved,
        "fraud": labelled.resolved[FRAUD],
        "legitimate": labelled.resolved[LEGITIMATE],
        "live_precision": _share(labelled.resolved[FRAUD], resolved),
        "by_model_version": labelled.by_model_version,
        "scored": {"fraud": overall["fraud"], "legitimate": overall["legitimate"]},
        "unmatched": labelled.unmatched,
        "fraud_flagged": overall["fraud_flagged"],
        "legitimate_flagged": overall["legitimate_flagged"],
        "recall": overall["recall"],
        "false_flag_rate": overall["false_flag_rate"],
        "precision": overall["precision"],
        "roc_auc": _auc(labelled.fraud, labelled.scores),
        "segments": segments,
    }


def feedback_metrics(
    settings: Settings,
    model: AnomalyModel,
    *,
    version: int | None = None,
    flags_version: int | None = None,
    kind: str = KIND_ANOMALY,
) -> dict[str, Any]:
    """How ``model`` does on the users' verdicts (see the module doc); JSON-ready.

    ``version`` pins the ``transactions`` table (None: current), ``flags_version`` the
    ``flags`` table (None: latest).
    """
    labelled = labelled_scores(
        settings,
        model,
        version=version,
        flags_version=flags_version,
        kind=kind,
        with_reference=False,
    )
    return summarize(labelled, model.thresholds)


# -- tuning ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ThresholdTuning:
    """The tuned thresholds and, per segment, what was done and why."""

    before: dict[str, float]
    thresholds: dict[str, float]
    segments: dict[str, dict[str, Any]]
    settings: dict[str, Any]

    @property
    def changed(self) -> bool:
        return self.thresholds != self.before

    def as_dict(self) -> dict[str, Any]:
        return {
            "changed": self.changed,
            "before": self.before,
            "after": self.thresholds,
            "segments": self.segments,
            "settings": self.settings,
        }


def _at_or_above(sorted_desc: np.ndarray, t: float) -> int:
    """How many of ``sorted_desc`` (descending) are >= ``t``."""
    return int(np.searchsorted(-sorted_desc, -t, side="right"))


def tune_thresholds(
    model: AnomalyModel,
    labelled: LabelledScores,
    *,
    reference: Mapping[str, np.ndarray] | None = None,
    min_labels: int = MIN_LABELS,
    max_rate_factor: float = MAX_RATE_FACTOR,
    min_band_legitimate: int = MIN_BAND_LEGITIMATE,
    min_reference_rows: int = MIN_REFERENCE_ROWS,
) -> ThresholdTuning:
    """Cautious per-segment thresholds from the users' verdicts (rules in the module doc).

    ``labelled`` must hold ``model``'s scores (:func:`labelled_scores`). ``reference``: per
    segment, the model's scores of ordinary rows that bound the flag rate (the job's training
    scores); None uses ``labelled.reference``. ``model`` is not changed.
    """
    if min_labels < 1 or min_band_legitimate < 1:
        raise ValueError("min_labels and min_band_legitimate must be >= 1")
    if max_rate_factor < 1.0:
        raise ValueError("max_rate_factor must be >= 1")
    reference = labelled.reference if reference is None else reference
    before = dict(model.thresholds)
    after = dict(before)
    explained: dict[str, dict[str, Any]] = {}
    for name in SEGMENTS:
        t0 = float(before.get(name, before["*"]))
        mask = labelled.segments == name
        fraud = np.sort(labelled.scores[mask & labelled.fraud])
        legit = np.sort(labelled.scores[mask & ~labelled.fraud])
        ref = np.sort(np.asarray(reference.get(name, np.zeros(0)), dtype=np.float64))[::-1]
        info: dict[str, Any] = {
            "labelled": len(fraud) + len(legit),
            "fraud": len(fraud),
            "legitimate": len(legit),
            "reference_rows": len(ref),
            "threshold_before": t0,
            "threshold_after": t0,
            "own_threshold": name in before,
        }
        t1, action, reason = t0, "kept", ""
        base = _at_or_above(ref, t0)
        if len(fraud) + len(legit) < min_labels:
            reason = f"{len(fraud) + len(legit)} labelled rows, fewer than {min_labels}"
        elif len(ref) < min_reference_rows:
            reason = (
                f"{len(ref)} reference rows, fewer than {min_reference_rows}: "
                "no flag rate to bound a change by"
            )
        elif base == 0:
            reason = "the threshold flags none of the reference rows: no base rate to bound by"
        else:
            # Flag at most factor x base reference rows: t must lie above the next one down.
            k_max = math.floor(max_rate_factor * base)
            floor = float(np.nextafter(ref[k_max], np.inf)) if k_max < len(ref) else -np.inf
            # Flag at least base / factor reference rows: t must not pass the k_min-th one.
            k_min = max(1, math.ceil(base / max_rate_factor))
            ceiling = float(ref[k_min - 1])
            missed = int((fraud < t0).sum())
            if missed:
                target = max(float(fraud[0]), floor)
                if target < t0:
                    t1, action = target, "lowered"
                    still = int((fraud < t1).sum())
                    reason = f"{missed} confirmed fraud scored below the threshold; lowered to " + (
                        "the lowest confirmed-fraud score"
                        if still == 0
                        else f"the {max_rate_factor:g}x flag-rate bound ({still} still below)"
                    )
                else:
                    reason = (
                        f"{missed} confirmed fraud below the threshold, but lowering would flag "
                        f"more than {max_rate_factor:g}x the reference rows it flags now"
                    )
            else:
                lowest_fraud = float(fraud[0]) if len(fraud) else np.inf
                band = legit[(legit >= t0) & (legit < lowest_fraud)]
                if len(band) >= min_band_legitimate:
                    target = min(float(np.nextafter(band[-1], np.inf)), ceiling)
                    if target > t0:
                        t1, action = target, "raised"
                        cleared = int((band < t1).sum())
                        reason = (
                            f"{len(band)} legitimate and no confirmed fraud just above the "
                            f"threshold; raised past {cleared} of them"
                            + (
                                ""
                                if cleared == len(band)
                                else f" (the 1/{max_rate_factor:g} flag-rate bound)"
                            )
                            + ", every confirmed fraud still flagged"
                        )
                    else:
                        reason = (
                            f"{len(band)} legitimate just above the threshold, but raising would "
                            f"flag fewer than 1/{max_rate_factor:g} of the reference rows it "
                            "flags now"
                        )
                else:
                    reason = (
                        f"every confirmed fraud flagged and {len(band)} legitimate between the "
                        f"threshold and the lowest confirmed fraud (fewer than "
                        f"{min_band_legitimate}): nothing to raise for"
                    )
        if action != "kept":
            after[name] = t1
        info.update(
            threshold_after=t1,
            action=action,
            reason=reason,
            fraud_flagged_before=int((fraud >= t0).sum()),
            fraud_flagged_after=int((fraud >= t1).sum()),
            legitimate_flagged_before=int((legit >= t0).sum()),
            legitimate_flagged_after=int((legit >= t1).sum()),
            reference_flagged_before=_share(base, len(ref)),
            reference_flagged_after=_share(_at_or_above(ref, t1), len(ref)),
        )
        explained[name] = info
    return ThresholdTuning(
        before=before,
        thresholds=after,
        segments=explained,
        settings={
            "min_labels": min_labels,
            "max_rate_factor": max_rate_factor,
            "min_band_legitimate": min_band_legitimate,
            "min_reference_rows": min_reference_rows,
        },
    )


__all__ = [
    "MAX_RATE_FACTOR",
    "MIN_AUC_ROWS",
    "MIN_BAND_LEGITIMATE",
    "MIN_LABELS",
    "LabelledScores",
    "ThresholdTuning",
    "feedback_metrics",
    "labelled_scores",
    "read_labels",
    "read_users",
    "summarize",
    "tune_thresholds",
]
