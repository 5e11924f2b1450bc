"""Evaluate the anomaly engine on real data; prints JSON.

``python -m scale_ray.models.anomaly.evaluate [--datasets fraud,berka,birmingham] [--quick]``

Two protocols, both unsupervised (labels are never used in fitting):

``fraud``
    The ULB credit-card sample (all 492 frauds and 4,920 normal rows; ``Time``, ``V1``-``V28``,
    ``Amount``). Per seed the rows are split 50/50, stratified by the label; an IsolationForest
    (:func:`~.model.fit_forest`) is fitted on the features as given in one half and scores the
    other. Baselines in the same run: a z-score detector (each feature standardized on the fit
    half, score = mean squared z, the distance from the centre) and the amount alone (``|z|``).
    Reported over ``--seeds`` splits as mean and std: ROC-AUC, average precision, precision at
    k = 50, 100 and the number of frauds in the test half.

``berka`` / ``birmingham``
    Real ledgers (:mod:`.real_ledgers`: Berka bank accounts; Birmingham purchase cards, user =
    card) with anomalies of four kinds planted at about ``--plant-rate`` of the debits
    (:mod:`.planting`). Both sources are date-only, so every real row gets a synthetic time of
    day (seeded; mostly 07:00-23:00, 3 % at night) and the hour is no giveaway. Features
    (:func:`~.features.build_features`) are computed over each user's full ledger (they only
    look back); the model is fitted on the debits booked in the first ``--train-share`` of the
    dataset's date range (plants included, unlabelled) and evaluated on the rest, where it flags
    at its own per-segment thresholds (``--flag-rate``). The baseline, in the same run, is a
    per-user amount z-score: the debit's amount against the mean and standard deviation of the
    user's *earlier* debits (signed: larger than usual is anomalous; ``|z|`` is reported too).
    Repeated over ``--seeds`` plantings (each with its own forest seed): AUCs, precision,
    recall, F1 and the false-flag rate are given as mean and std, per-kind recall pooled over the
    seeds; example reasons come from the first seed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from scale_ray.models.anomaly.features import Features, build_features
from scale_ray.models.anomaly.model import (
    DEFAULT_FLAG_RATE,
    DEFAULT_MAX_SAMPLES,
    AnomalyModel,
    fit_forest,
)
from scale_ray.models.anomaly.planting import (
    ANOMALY_KINDS,
    DEFAULT_PLANT_RATE,
    PlantedLedger,
    plant_anomalies,
)
from scale_ray.models.anomaly.real_ledgers import (
    NIGHT_SHARE,
    TIME_OF_DAY_NOTE,
    assign_times_of_day,
    berka_ledgers,
    birmingham_ledgers,
    limit_users,
    merchant_pool,
)
from scale_ray.settings import Settings

DATASETS = ("fraud", "berka", "birmingham")
FRAUD_FILE = "fraud/ulb_creditcard_sample_5412.csv"
BERKA_DIR = "berka_ecac"
BIRMINGHAM_DIR = "birmingham_pcard_2016_2017"
#: Fallback names for "never used" merchants when the Birmingham files are absent.
FALLBACK_NEW_MERCHANTS = (
    "city cabs 24h",
    "night owl off licence",
    "late stop convenience",
    "online electronics direct",
    "gaming credits ltd",
    "express fuel 24",
)
QUICK = {"max_users": 60, "seeds": 2, "n_estimators": 100}
N_EXAMPLES = 5


# -- metrics ---------------------------------------------------------------------------------


def _auc(y: np.ndarray, score: np.ndarray) -> float | None:
    y = np.asarray(y, dtype=bool)
    if y.all() or not y.any():
        return None
    return float(roc_auc_score(y, score))


def _ap(y: np.ndarray, score: np.ndarray) -> float | None:
    y = np.asarray(y, dtype=bool)
    return float(average_precision_score(y, score)) if y.any() else None


def precision_at_k(y: np.ndarray, score: np.ndarray, k: int) -> float:
    """Share of positives among the ``k`` highest scores (ties broken by position)."""
    k = min(int(k), len(y))
    if k <= 0:
        return 0.0
    top = np.argsort(-np.asarray(score), kind="stable")[:k]
    return float(np.asarray(y, dtype=bool)[top].mean())


def _mean_std(values: Sequence[float | None]) -> dict[str, float | int | None]:
    vals = np.array([v for v in values if v is not None], dtype=np.float64)
    if not len(vals):
        return {"mean": None, "std": None, "n": 0}
    return {
        "mean": round(float(vals.mean()), 4),
        "std": round(float(vals.std(ddof=1)) if len(vals) > 1 else 0.0, 4),
        "n": len(vals),
    }


def _summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and std of every numeric (possibly nested) entry over the runs."""
    out: dict[str, Any] = {}
    for key, value in runs[0].items():
        if isinstance(value, dict):
            out[key] = _summarize([r[key] for r in runs])
        elif isinstance(value, (int, float)) or value is None:
            out[key] = _mean_std([r[key] for r in runs])
    return out


# -- (a) fraud sample ------------------------------------------------------------------------


def zscore_scores(fit: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Mean squared z of each test row, standardized on ``fit`` (distance from the centre)."""
    mu = fit.mean(axis=0)
    sd = fit.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    return np.mean(((test - mu) / sd) ** 2, axis=1)


def _ranking(y: np.ndarray, score: np.ndarray, n_pos: int) -> dict[str, Any]:
    return {
        "roc_auc": _auc(y, score),
        "average_precision": _ap(y, score),
        "precision_at_50": precision_at_k(y, score, 50),
        "precision_at_100": precision_at_k(y, score, 100),
        "precision_at_n_frauds": precision_at_k(y, score, n_pos),
    }


def evaluate_fraud(
    path: Path, *, seeds: int, seed: int, n_estimators: int, max_samples: int
) -> dict[str, Any]:
    from sklearn.model_selection import train_test_split

    frame = pd.read_csv(path)
    if "Class" not in frame.columns:
        raise SystemExit(f"{path}: no Class column")
    y = frame["Class"].to_numpy().astype(bool)
    feature_names = [c for c in frame.columns if c != "Class"]
    X = frame[feature_names].to_numpy(dtype=np.float64)
    amount = feature_names.index("Amount") if "Amount" in feature_names else None
    runs = []
    for i in range(seeds):
        s = seed + i
        fit_i, test_i = train_test_split(
            np.arange(len(y)), test_size=0.5, stratify=y, random_state=s
        )
        forest = fit_forest(
            X[fit_i], n_estimators=n_estimators, max_samples=max_samples, random_state=s
        )
        yt = y[test_i]
        n_pos = int(yt.sum())
        run = {
            "isolation_forest": _ranking(yt, -forest.score_samples(X[test_i]), n_pos),
            "zscore": _ranking(yt, zscore_scores(X[fit_i], X[test_i]), n_pos),
        }
        if amount is not None:
            amt = zscore_scores(X[fit_i][:, [amount]], X[test_i][:, [amount]])
            run["amount_abs_z"] = _ranking(yt, amt, n_pos)
        run["frauds_in_test"] = n_pos
        runs.append(run)
    summary = _summarize(runs)
    if_auc = summary["isolation_forest"]["roc_auc"]["mean"]
    return {
        "file": str(path),
        "rows": len(y),
        "frauds": int(y.sum()),
        "features": len(feature_names),
        "protocol": "stratified 50/50 split per seed; fit unsupervised on one half (labels "
        "unused), score the other",
        "seeds": seeds,
        "n_estimators": n_estimators,
        "max_samples": max_samples,
        **summary,
        "targets": {
            "isolation_forest_roc_auc_ge_0.93": bool(if_auc is not None and if_auc >= 0.93)
        },
    }


# -- (b) planted anomalies on real ledgers ---------------------------------------------------


def user_amount_z(rows: pd.DataFrame) -> np.ndarray:
    """Signed z of each debit's size against the mean/std of the user's *earlier* debits.

    ``rows`` are :attr:`Features.rows` (sorted by user, then time). Fewer than two earlier
    debits, or no spread, give 0.
    """
    a = -rows["amount_minor"].to_numpy().astype(np.float64) / 100.0
    user = rows["user_id"].astype(str) + "\x1f" + rows["currency"].astype(str)
    grouped = pd.Series(a).groupby(user.to_numpy(), sort=False)
    n = grouped.cumcount().to_numpy().astype(np.float64)
    s1 = grouped.cumsum().to_numpy() - a
    s2 = pd.Series(a * a).groupby(user.to_numpy(), sort=False).cumsum().to_numpy() - a * a
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s1 / n
        var = np.maximum(s2 / n - mean * mean, 0.0)
        sd = np.sqrt(var)
        z = (a - mean) / sd
    ok = (n >= 2) & (sd > 1e-9 * np.maximum(np.abs(mean), 1.0))
    return np.where(ok, z, 0.0)


def _cutoff(frame: pd.DataFrame, train_share: float) -> pd.Timestamp:
    """The instant ``train_share`` of the way through the ledgers' date range."""
    t = pd.to_datetime(frame["booked_at"], utc=True)
    lo, hi = t.min().normalize(), t.max().normalize() + pd.Timedelta(days=1)
    return (lo + (hi - lo) * train_share).normalize()


def _example(features: Features, i: int, result: Any, kind: str) -> dict[str, Any]:
    row = features.rows.iloc[i]
    return {
        "kind": kind or "normal",
        "user_id": str(row["user_id"]),
        "txn_id": str(row["txn_id"]),
        "merchant": str(row["merchant_name"]),
        "amount_minor": int(row["amount_minor"]),
        "local_time": str(row["local_time"]),
        "segment": result.segment,
        "score": round(result.score, 4),
        "threshold": round(result.threshold, 4),
        "reason": result.reason,
    }


def _examples(
    model: AnomalyModel, test: Features, kinds: np.ndarray, scores: np.ndarray, flagged: np.ndarray
) -> dict[str, list[dict[str, Any]]]:
    """Reasons for flagged plants (the top one of each kind first) and the top false flags."""
    planted = np.flatnonzero(flagged & (kinds != ""))
    planted = planted[np.argsort(-scores[planted], kind="stable")]
    chosen: list[int] = []
    for kind in ANOMALY_KINDS:
        of_kind = [i for i in planted.tolist() if kinds[i] == kind]
        chosen.extend(of_kind[:1])
    chosen.extend(i for i in planted.tolist() if i not in chosen)
    chosen = chosen[:N_EXAMPLES]
    false = np.flatnonzero(flagged & (kinds == ""))
    false = false[np.argsort(-scores[false], kind="stable")][:N_EXAMPLES].tolist()
    out: dict[str, list[dict[str, Any]]] = {}
    for name, idx in (("flagged_plants", chosen), ("false_flags", false)):
        if not idx:
            out[name] = []
            continue
        sub = test.take(np.asarray(idx, dtype=np.int64))
        results = model.results(sub, explain="all")
        out[name] = [_example(test, i, r, str(kinds[i])) for i, r in zip(idx, results, strict=True)]
    return out


def evaluate_planted_run(
    planted: PlantedLedger,
    cutoff: pd.Timestamp,
    *,
    flag_rate: float,
    n_estimators: int,
    max_samples: int,
    random_state: int,
    with_examples: bool,
) -> dict[str, Any]:
    """One planting: fit on the debits before ``cutoff``, measure on the rest."""
    features = build_features(planted.frame)
    kinds_all = planted.kinds_for(features.rows["txn_id"].to_numpy())
    local = pd.to_datetime(features.rows["local_time"])
    train = (local < cutoff.tz_localize(None)).to_numpy()
    if train.sum() < 2 or (~train).sum() == 0:
        raise SystemExit("the time split leaves no training or no test debits")
    model = AnomalyModel.fit(
        features.take(train),
        flag_rate=flag_rate,
        n_estimators=n_estimators,
        max_samples=max_samples,
        random_state=random_state,
    )
    z_all = user_amount_z(features.rows)
    test = features.take(~train)
    kinds = kinds_all[~train]
    y = kinds != ""
    scores = model.score(test.X)
    flagged = scores >= model.thresholds_for(test.segments)
    z = z_all[~train]
    tp = int((flagged & y).sum())
    fp = int((flagged & ~y).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / int(y.sum()) if y.any() else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    model_auc, base_auc, base_abs_auc = _auc(y, scores), _auc(y, z), _auc(y, np.abs(z))
    best_base = max((a for a in (base_auc, base_abs_auc) if a is not None), default=None)
    per_kind: dict[str, Any] = {}
    for kind in ANOMALY_KINDS:
        mask = kinds == kind
        sub = mask | ~y
        per_kind[kind] = {
            "test_rows": int(mask.sum()),
            "flagged": int((flagged & mask).sum()),
            "roc_auc": _auc(mask[sub], scores[sub]),
            "baseline_roc_auc": _auc(mask[sub], z[sub]),
        }
    train_kinds = kinds_all[train]
    run: dict[str, Any] = {
        "metrics": {
            "roc_auc": model_auc,
            "average_precision": _ap(y, scores),
            "baseline_amount_z_roc_auc": base_auc,
            "baseline_amount_abs_z_roc_auc": base_abs_auc,
            "baseline_amount_z_average_precision": _ap(y, z),
            "auc_gap_vs_best_baseline": (
                model_auc - best_base if model_auc is not None and best_base is not None else None
            ),
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "false_flag_rate": fp / int((~y).sum()) if (~y).any() else 0.0,
            "flag_rate_test": float(flagged.mean()),
        },
        "per_kind": per_kind,
        "counts": {
            "debits": len(features),
            "train_debits": int(train.sum()),
            "test_debits": int((~train).sum()),
            "planted_rows": int((kinds_all != "").sum()),
            "planted_train": int((train_kinds != "").sum()),
            "planted_test": int(y.sum()),
            "flagged_test": int(flagged.sum()),
            "true_flags": tp,
            "false_flags": fp,
            "planted_by_kind": {k: int((kinds_all == k).sum()) for k in ANOMALY_KINDS},
        },
        "thresholds": {k: round(v, 4) for k, v in model.thresholds.items()},
    }
    if with_examples:
        run["examples"] = _examples(model, test, kinds, scores, flagged)
    return run


def evaluate_ledgers(
    name: str,
    ledger: pd.DataFrame,
    new_merchants: pd.DataFrame | Sequence[str],
    args: argparse.Namespace,
) -> dict[str, Any]:
    timed = assign_times_of_day(ledger, args.seed)
    cutoff = _cutoff(timed, args.train_share)
    runs = []
    for i in range(args.seeds):
        s = args.seed + i
        planted = plant_anomalies(timed, new_merchants=new_merchants, rate=args.plant_rate, seed=s)
        runs.append(
            evaluate_planted_run(
                planted,
                cutoff,
                flag_rate=args.flag_rate,
                n_estimators=args.n_estimators,
                max_samples=args.max_samples,
                random_state=s,
                with_examples=i == 0,
            )
        )
    metrics = _summarize([r["metrics"] for r in runs])
    per_kind = {}
    for kind in ANOMALY_KINDS:
        rows = sum(r["per_kind"][kind]["test_rows"] for r in runs)
        hits = sum(r["per_kind"][kind]["flagged"] for r in runs)
        per_kind[kind] = {
            "test_rows_all_seeds": rows,
            "recall": round(hits / rows, 4) if rows else None,
            "roc_auc": _mean_std([r["per_kind"][kind]["roc_auc"] for r in runs]),
            "baseline_roc_auc": _mean_std([r["per_kind"][kind]["baseline_roc_auc"] for r in runs]),
        }
    counts = _summarize(
        [{k: v for k, v in r["counts"].items() if k != "planted_by_kind"} for r in runs]
    )
    first = runs[0]
    dates = pd.to_datetime(timed["booked_at"], utc=True)
    gap = metrics["auc_gap_vs_best_baseline"]["mean"]
    ffr = metrics["false_flag_rate"]["mean"]
    return {
        "users": int(timed["user_id"].nunique()),
        "rows": len(timed),
        "date_range": [str(dates.min().date()), str(dates.max().date())],
        "train_before": str(cutoff.date()),
        "protocol": f"fit unsupervised on debits before train_before (first {args.train_share:.0%} "
        "of the date range, plants included, labels unused); evaluate on the rest; features over "
        "each user's full ledger (they only look back); flags at the model's per-segment "
        "thresholds",
        "baseline": "per-user amount z: the debit against the mean/std of the user's earlier "
        "debits (signed); auc_gap is against the better of z and |z|",
        "time_of_day": TIME_OF_DAY_NOTE,
        "night_share_of_synthetic_times": NIGHT_SHARE,
        "plant_rate": args.plant_rate,
        "planted_share_of_debits": round(
            first["counts"]["planted_rows"] / max(1, first["counts"]["debits"]), 4
        ),
        "seeds": args.seeds,
        "metrics": metrics,
        "per_kind": per_kind,
        "counts": counts,
        "counts_first_seed": first["counts"],
        "thresholds_first_seed": first["thresholds"],
        "examples_first_seed": first.get("examples", {}),
        "targets": {
            "auc_ge_baseline_plus_0.05": bool(gap is not None and gap >= 0.05),
            "false_flags_le_1pct": bool(ffr is not None and ffr <= 0.01),
        },
    }


# -- CLI -------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    shared = Settings.from_env().shared_data_path()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fraud", type=Path, default=shared / FRAUD_FILE)
    parser.add_argument("--berka", type=Path, default=shared / BERKA_DIR, help="berka_ecac folder")
    parser.add_argument("--birmingham", type=Path, default=shared / BIRMINGHAM_DIR)
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--max-users", type=int, default=None, help="per ledger dataset")
    parser.add_argument("--seeds", type=int, default=None, help="splits / plantings (default 10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--flag-rate", type=float, default=DEFAULT_FLAG_RATE)
    parser.add_argument("--plant-rate", type=float, default=DEFAULT_PLANT_RATE)
    parser.add_argument("--train-share", type=float, default=0.7)
    parser.add_argument("--n-estimators", type=int, default=None, help="default 200")
    parser.add_argument(
        "--max-samples",
        type=int,
        default=DEFAULT_MAX_SAMPLES,
        help=f"rows per tree on the ledgers (default {DEFAULT_MAX_SAMPLES}, the model's)",
    )
    parser.add_argument(
        "--fraud-max-samples",
        type=int,
        default=256,
        help="rows per tree on the fraud sample (default 256, the paper's)",
    )
    parser.add_argument("--quick", action="store_true", help="small version (CI)")
    args = parser.parse_args(argv)
    defaults = {"max_users": None, "seeds": 10, "n_estimators": 200}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, QUICK[key] if args.quick else value)
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    if not 0.0 < args.train_share < 1.0:
        parser.error("--train-share must be within (0, 1)")
    if not 0.0 < args.flag_rate < 1.0:
        parser.error("--flag-rate must be within (0, 1)")
    if not 0.0 <= args.plant_rate < 1.0:
        parser.error("--plant-rate must be within [0, 1)")
    return args


def evaluate(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    unknown = set(datasets) - set(DATASETS)
    if unknown:
        raise SystemExit(f"unknown datasets: {sorted(unknown)}; choose from {DATASETS}")
    started = time.perf_counter()
    result: dict[str, Any] = {
        "config": {
            "seeds": args.seeds,
            "seed": args.seed,
            "flag_rate": args.flag_rate,
            "plant_rate": args.plant_rate,
            "train_share": args.train_share,
            "n_estimators": args.n_estimators,
            "max_samples": args.max_samples,
            "fraud_max_samples": args.fraud_max_samples,
            "max_users": args.max_users,
            "quick": args.quick,
        }
    }
    if "fraud" in datasets:
        if not args.fraud.is_file():
            raise SystemExit(f"fraud sample not found: {args.fraud}")
        t0 = time.perf_counter()
        result["fraud"] = evaluate_fraud(
            args.fraud,
            seeds=args.seeds,
            seed=args.seed,
            n_estimators=args.n_estimators,
            max_samples=args.fraud_max_samples,
        )
        result["fraud"]["seconds"] = round(time.perf_counter() - t0, 1)
    birmingham: pd.DataFrame | None = None
    if "birmingham" in datasets or "berka" in datasets:
        if args.birmingham.is_dir():
            birmingham = birmingham_ledgers(args.birmingham)
        elif "birmingham" in datasets:
            raise SystemExit(f"Birmingham folder not found: {args.birmingham}")
    if "berka" in datasets:
        if not (args.berka / "trans_test.csv").is_file():
            raise SystemExit(f"Berka trans_test.csv not found in {args.berka}")
        t0 = time.perf_counter()
        # "Never used" merchants for bank ledgers: real merchant names from the card data.
        pool = merchant_pool(birmingham) if birmingham is not None else FALLBACK_NEW_MERCHANTS
        ledger = berka_ledgers(args.berka, max_users=args.max_users)
        result["berka"] = evaluate_ledgers("berka", ledger, pool, args)
        result["berka"]["new_merchant_names"] = (
            "Birmingham merchants" if birmingham is not None else "fallback list"
        )
        result["berka"]["seconds"] = round(time.perf_counter() - t0, 1)
    if "birmingham" in datasets and birmingham is not None:
        t0 = time.perf_counter()
        ledger = limit_users(birmingham, args.max_users)
        # "Never used" merchants for a card: real merchants of the other cards it never used.
        result["birmingham"] = evaluate_ledgers(
            "birmingham", ledger, merchant_pool(birmingham), args
        )
        result["birmingham"]["new_merchant_names"] = "Birmingham merchants the card never used"
        result["birmingham"]["seconds"] = round(time.perf_counter() - t0, 1)
    result["targets"] = {name: result[name]["targets"] for name in DATASETS if name in result}
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    print(json.dumps(evaluate(argv), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
