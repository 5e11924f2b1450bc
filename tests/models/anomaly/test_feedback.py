"""Users' flag verdicts as labels: metrics against a hand count, bounded threshold tuning.

A real ledger (three generated users, one year) written with the offline writer into a
temporary data root, a small model fitted on it, and flags recorded and resolved through the
real :class:`FlagStore`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from scale_ray.ingest.records import ParsedTxn
from scale_ray.ledger.offline import OfflineLedgerWriter
from scale_ray.ledger.rows import transactions_table
from scale_ray.models.anomaly import feedback, training
from scale_ray.models.anomaly.features import build_features
from scale_ray.models.anomaly.feedback import (
    LabelledScores,
    feedback_metrics,
    labelled_scores,
    tune_thresholds,
)
from scale_ray.models.anomaly.flags import FlagStore, flag_id
from scale_ray.models.anomaly.model import AnomalyModel, AnomalyResult
from scale_ray.settings import Settings


@dataclass
class Ledger:
    settings: Settings
    version: int
    model: AnomalyModel
    #: Every debit: user_id, txn_id, segment, score, threshold, flagged (score order, high first).
    rows: pd.DataFrame


@pytest.fixture
def ledger(settings: Settings) -> Ledger:
    from scale_ray.demo.generator import generate_tenants

    tenants, _, _ = generate_tenants(3, years=1.0, seed=11, end=date(2025, 6, 30))
    table = pa.concat_tables(
        transactions_table(t.user_id, t.transactions, num_buckets=8, source="demo") for t in tenants
    )
    version = OfflineLedgerWriter(settings).write(table).version
    features = build_features(training.read_ledger(settings, version=version))
    model, _ = training.fit_features(features, n_estimators=40)
    scores = model.score(features.X)
    thresholds = model.thresholds_for(features.segments)
    rows = pd.DataFrame(
        {
            "user_id": features.rows["user_id"],
            "txn_id": features.rows["txn_id"],
            "segment": features.segments,
            "score": scores,
            "threshold": thresholds,
            "flagged": scores >= thresholds,
        }
    )
    rows = rows.sort_values("score", ascending=False, kind="mergesort").reset_index(drop=True)
    return Ledger(settings, version, model, rows)


def label(
    store: FlagStore, rows: pd.DataFrame, verdict: str | None, model_version: str = "v1"
) -> None:
    """Raise a flag on each row (as a monitor running ``model_version`` would) and resolve it."""
    results = [
        AnomalyResult(
            user_id=r.user_id,
            txn_id=r.txn_id,
            score=float(r.score),
            threshold=0.5,
            flagged=True,
            segment=r.segment,
            reason="unusual",
        )
        for r in rows.itertuples()
    ]
    store.record(results, model_version)
    if verdict is not None:
        for r in rows.itertuples():
            store.resolve(r.user_id, flag_id(r.txn_id), verdict)


def pairwise_auc(fraud: np.ndarray, legit: np.ndarray) -> float:
    wins = sum((f > g) + 0.5 * (f == g) for f in fraud for g in legit)
    return wins / (len(fraud) * len(legit))


def established(ledger: Ledger) -> tuple[pd.DataFrame, int]:
    """The established segment's rows (high score first) and how many the model flags."""
    rows = ledger.rows[ledger.rows["segment"] == "established"].reset_index(drop=True)
    return rows, int(rows["flagged"].sum())


def test_metrics_match_a_hand_count(ledger: Ledger) -> None:
    # Prepare: 6 fraud and 6 legitimate among the top-scoring (flagged) rows, raised by "v1";
    # 3 fraud and 5 legitimate among unflagged rows, raised by an older "v0".
    store = FlagStore(ledger.settings)
    top, low = ledger.rows.iloc[:12], ledger.rows.iloc[100:108]
    assert top["flagged"].all() and not low["flagged"].any()
    label(store, top.iloc[0::2], "fraud")
    label(store, top.iloc[1::2], "legitimate")
    label(store, low.iloc[:3], "fraud", model_version="v0")
    label(store, low.iloc[3:], "legitimate", model_version="v0")
    label(store, ledger.rows.iloc[200:201], None)  # still open: no label
    flip = ledger.rows.iloc[300:301]  # legitimate, then fraud: the latest verdict counts
    label(store, flip, "legitimate", model_version="v0")
    store.resolve(flip.iloc[0].user_id, flag_id(flip.iloc[0].txn_id), "fraud")
    # A user whose debit was committed after the pinned ledger version: resolved, unmatched.
    late = ParsedTxn(
        row_number=1,
        booked_at=datetime(2025, 6, 1, 12, tzinfo=UTC),
        amount_minor=-4_200,
        currency="GBP",
        narration="NEW SHOP",
        txn_id="late-1",
    )
    OfflineLedgerWriter(ledger.settings).write(
        transactions_table("late-user", [late], num_buckets=8, source="test")
    )
    late_row = {"user_id": "late-user", "txn_id": "late-1", "score": 0.7, "segment": "new"}
    label(store, pd.DataFrame([late_row]), "fraud")

    # Execute
    metrics = feedback_metrics(ledger.settings, ledger.model, version=ledger.version)

    # Assert: by hand.
    labelled = pd.concat([top, low, flip])
    is_fraud = np.array([True, False] * 6 + [True] * 3 + [False] * 5 + [True])
    fraud, legit = labelled[is_fraud], labelled[~is_fraud]
    assert metrics["table_version"] == ledger.version
    assert metrics["flags_version"] == store.latest_version()
    assert (metrics["resolved"], metrics["fraud"], metrics["legitimate"]) == (22, 11, 11)
    assert metrics["live_precision"] == round(11 / 22, 6)
    assert metrics["by_model_version"] == {
        "v0": {"fraud": 4, "legitimate": 5},
        "v1": {"fraud": 7, "legitimate": 6},
    }
    assert metrics["scored"] == {"fraud": 10, "legitimate": 11} and metrics["unmatched"] == 1
    fraud_flagged, legit_flagged = int(fraud["flagged"].sum()), int(legit["flagged"].sum())
    assert (fraud_flagged, legit_flagged) == (6, 6)
    assert metrics["fraud_flagged"] == 6 and metrics["legitimate_flagged"] == 6
    assert metrics["recall"] == round(6 / 10, 6)
    assert metrics["false_flag_rate"] == round(6 / 11, 6)
    assert metrics["precision"] == round(6 / 12, 6)
    expected_auc = pairwise_auc(fraud["score"].to_numpy(), legit["score"].to_numpy())
    assert metrics["roc_auc"] == pytest.approx(expected_auc, abs=1e-6)
    for name, seg in metrics["segments"].items():
        mine = labelled[labelled["segment"] == name]
        mine_fraud = is_fraud[(labelled["segment"] == name).to_numpy()]
        assert seg["fraud"] == int(mine_fraud.sum())
        assert seg["legitimate"] == int((~mine_fraud).sum())
        assert seg["fraud_flagged"] == int(mine["flagged"].to_numpy()[mine_fraud].sum())
        assert seg["threshold"] == ledger.model.thresholds.get(name, ledger.model.thresholds["*"])
    assert sum(s["fraud"] + s["legitimate"] for s in metrics["segments"].values()) == 21
    json.dumps(metrics)  # metadata-ready

    # At the latest ledger version the late debit is found (and scored: one more fraud).
    latest = feedback_metrics(ledger.settings, ledger.model)
    assert latest["unmatched"] == 0 and latest["scored"] == {"fraud": 11, "legitimate": 11}
    # An older flags version is the verdicts then: the flip still legitimate, no late flag.
    then = metrics["flags_version"] - 3
    before_flip = feedback_metrics(
        ledger.settings, ledger.model, version=ledger.version, flags_version=then
    )
    assert (before_flip["fraud"], before_flip["legitimate"]) == (9, 12)


def test_no_verdicts_report_zeros_and_change_nothing(ledger: Ledger, tmp_path: Path) -> None:
    # A data root without a flags table: zeros and nulls, and no table is created.
    bare = Settings(data_root=str(tmp_path / "bare"), num_buckets=8, writer_shards=2)
    nothing = feedback_metrics(bare, ledger.model)
    assert nothing["flags_version"] is None and nothing["resolved"] == 0
    assert not Path(bare.table_uri("flags")).exists()
    # An empty flags table.
    metrics = feedback_metrics(ledger.settings, ledger.model, version=ledger.version)
    assert metrics["resolved"] == metrics["fraud"] == metrics["legitimate"] == 0
    assert metrics["flags_version"] == 0 and metrics["segments"] == {}
    assert metrics["scored"] == {"fraud": 0, "legitimate": 0} and metrics["unmatched"] == 0
    for key in ("live_precision", "recall", "false_flag_rate", "precision", "roc_auc"):
        assert metrics[key] is None
    # Open flags only: still no labels.
    label(FlagStore(ledger.settings), ledger.rows.iloc[:5], None)
    labelled = labelled_scores(ledger.settings, ledger.model, version=ledger.version)
    assert len(labelled) == 0 and labelled.resolved == {"fraud": 0, "legitimate": 0}
    tuning = tune_thresholds(ledger.model, labelled, min_labels=1)
    assert not tuning.changed and tuning.thresholds == ledger.model.thresholds
    assert {s["action"] for s in tuning.segments.values()} == {"kept"}


def test_tuning_lowers_to_keep_confirmed_fraud_flagged(ledger: Ledger) -> None:
    # Prepare: two confirmed frauds just below the established threshold, 28 legitimate
    # verdicts on ordinary low-scoring rows.
    rows, base = established(ledger)
    store = FlagStore(ledger.settings)
    frauds = rows.iloc[[base + 1, base + 3]]
    assert not frauds["flagged"].any()
    label(store, frauds, "fraud")
    label(store, rows.iloc[1000:1028], "legitimate")
    labelled = labelled_scores(ledger.settings, ledger.model, version=ledger.version)
    t0 = ledger.model.thresholds["established"]

    # Execute
    tuning = tune_thresholds(ledger.model, labelled)

    # Assert: lowered exactly to the lowest confirmed fraud, within twice the base flag rate.
    seg = tuning.segments["established"]
    assert seg["labelled"] == 30 and seg["action"] == "lowered"
    assert tuning.thresholds["established"] == float(frauds["score"].min()) < t0
    assert seg["fraud_flagged_before"] == 0 and seg["fraud_flagged_after"] == 2
    assert seg["legitimate_flagged_after"] == 0
    assert seg["reference_flagged_before"] < seg["reference_flagged_after"]
    assert seg["reference_flagged_after"] <= 2 * seg["reference_flagged_before"] + 1e-9
    assert "lowest confirmed-fraud score" in seg["reason"]
    # Other segments (too few labels) and "*" keep theirs; the model itself is untouched.
    assert {k: v for k, v in tuning.thresholds.items() if k != "established"} == {
        k: v for k, v in ledger.model.thresholds.items() if k != "established"
    }
    assert tuning.segments["growing"]["action"] == "kept"
    assert ledger.model.thresholds["established"] == t0 and tuning.before["established"] == t0
    # The tuned model flags every confirmed fraud.
    tuned = feedback.summarize(labelled, tuning.thresholds)
    assert tuned["recall"] == 1.0 and feedback.summarize(labelled, tuning.before)["recall"] == 0.0
    json.dumps(tuning.as_dict())

    # Fewer labelled rows than min_labels: nothing moves.
    assert not tune_thresholds(ledger.model, labelled, min_labels=31).changed


def test_tuning_lowers_at_most_to_twice_the_flag_rate(ledger: Ledger) -> None:
    rows, base = established(ledger)
    store = FlagStore(ledger.settings)
    label(store, rows.iloc[[base + 1, 2000]], "fraud")  # one far below every flagged row
    label(store, rows.iloc[1000:1028], "legitimate")
    labelled = labelled_scores(ledger.settings, ledger.model, version=ledger.version)
    t0 = ledger.model.thresholds["established"]
    tuning = tune_thresholds(ledger.model, labelled)
    seg = tuning.segments["established"]
    t1 = tuning.thresholds["established"]
    assert seg["action"] == "lowered" and rows.iloc[2000]["score"] < t1 < t0
    assert seg["fraud_flagged_after"] == 1 and "still below" in seg["reason"]
    # The bound, checked against the reference rows (the labelled users' other debits).
    ref = labelled.reference["established"]
    assert (ref >= t1).sum() <= 2 * (ref >= t0).sum()
    assert seg["reference_flagged_after"] == round(float((ref >= t1).mean()), 6)


def test_tuning_raises_past_legitimate_verdicts_above_the_threshold(ledger: Ledger) -> None:
    # Prepare: the six lowest flagged established rows were legitimate, the top three fraud,
    # and 21 more legitimate verdicts on ordinary rows.
    rows, base = established(ledger)
    store = FlagStore(ledger.settings)
    band = rows.iloc[base - 6 : base]
    assert band["flagged"].all()
    label(store, rows.iloc[:3], "fraud")
    label(store, band, "legitimate")
    label(store, rows.iloc[1000:1021], "legitimate")
    labelled = labelled_scores(ledger.settings, ledger.model, version=ledger.version)
    t0 = ledger.model.thresholds["established"]

    tuning = tune_thresholds(ledger.model, labelled)

    seg = tuning.segments["established"]
    t1 = tuning.thresholds["established"]
    assert seg["action"] == "raised"
    # Just above the highest of those legitimate rows, below every confirmed fraud.
    assert t1 == np.nextafter(band["score"].max(), np.inf) and t0 < t1 < rows.iloc[2]["score"]
    assert seg["legitimate_flagged_before"] == 6 and seg["legitimate_flagged_after"] == 0
    assert seg["fraud_flagged_before"] == seg["fraud_flagged_after"] == 3
    assert seg["reference_flagged_after"] >= seg["reference_flagged_before"] / 2 - 1e-9
    # Too few legitimate verdicts just above the threshold: nothing to raise for.
    assert not tune_thresholds(ledger.model, labelled, min_band_legitimate=7).changed


def test_tuning_bounds_on_a_known_reference(ledger: Ledger) -> None:
    # A reference of 1,000 evenly spread scores; the threshold flags the top 20 (2 %).
    model = AnomalyModel(ledger.model.forest, {"*": 0.98}, ledger.model.reference)
    ref = {"established": np.arange(1000) / 1000.0}

    def scores(fraud: list[float], legit: list[float]) -> LabelledScores:
        n = len(fraud) + len(legit)
        return replace(
            LabelledScores.empty(),
            user_ids=np.array(["u"] * n, dtype=object),
            txn_ids=np.array([f"t{i}" for i in range(n)], dtype=object),
            segments=np.array(["established"] * n, dtype=object),
            scores=np.array(fraud + legit, dtype=np.float64),
            fraud=np.array([True] * len(fraud) + [False] * len(legit)),
        )

    # A fraud at 0.5: lowered only as far as 40 reference rows (twice 20).
    low = tune_thresholds(model, scores([0.5], [0.1] * 29), reference=ref)
    seg = low.segments["established"]
    assert seg["action"] == "lowered" and seg["own_threshold"] is False
    assert (ref["established"] >= low.thresholds["established"]).sum() == 40
    assert low.thresholds["*"] == 0.98  # the fallback stays
    # Thirty legitimate verdicts above the threshold, no fraud: raised only to half the rows.
    legit = [0.985 + i / 2_000 for i in range(30)]  # up to 0.9995
    high = tune_thresholds(model, scores([], legit), reference=ref)
    assert high.segments["established"]["action"] == "raised"
    assert (ref["established"] >= high.thresholds["established"]).sum() == 10
    assert "flag-rate bound" in high.segments["established"]["reason"]
    # A factor of 1 never flags more or fewer reference rows; too few of them: no move.
    same = tune_thresholds(model, scores([0.5], [0.1] * 29), reference=ref, max_rate_factor=1.0)
    assert (ref["established"] >= same.thresholds["established"]).sum() == 20
    short = {"established": ref["established"][:150]}
    assert not tune_thresholds(model, scores([0.5], [0.1] * 29), reference=short).changed
    with pytest.raises(ValueError):
        tune_thresholds(model, scores([], []), reference=ref, max_rate_factor=0.5)
