"""Evaluate HypCD against two baselines on labelled merchant data; prints JSON.

    D=../shared/data/birmingham_pcard_2016_2017/purchase-card-transactions
    python -m scale_ray.models.hypcd.evaluate --format birmingham --novel-classes 10 \\
        --train $D-201612.csv $D-20170[1-8].csv --test $D-2017{09,10,11}.csv

**Closed set** (every method trained on all training labels): leaf and group accuracy on the test
rows whose label was seen in training, the share each method calls known and its accuracy there,
and the same leaf accuracy with *user memory* (a spender's own earlier labels for a merchant win;
Birmingham's spender is the card), applied identically to every method.

**Discovery** (``--novel-classes K``): K categories are held out of training. Their training rows
and the test merchants join training unlabelled, as in generalized category discovery. Each
method calls a test merchant known (a training category) or unknown; unknowns go through
semi-supervised k-means (known categories anchored by the training merchants, the number of new
clusters estimated). All/Old/New accuracy: a known category's name counts only as itself and the
new clusters are matched one-to-one (Hungarian) to the held-out categories; the looser GCD "v2"
figure (one matching over all rows, which may rename known categories) is reported beside it.

Methods: ``hypcd`` (ours), ``minilm_euclidean`` (same MiniLM + head, cosine geometry) and
``tfidf_logreg`` (character n-grams + logistic regression), in the same run.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from scale_ray.models.hypcd.baselines import HypCDMethod, Scored, TfidfLogReg
from scale_ray.models.hypcd.data import LabelledRows, read_birmingham, read_labelled_csv
from scale_ray.models.hypcd.discover import estimate_new_k, name_clusters, semi_supervised_kmeans
from scale_ray.models.hypcd.metrics import accuracy, gcd_accuracy, named_gcd_accuracy
from scale_ray.models.hypcd.normalize import normalize_merchant, raw_text_key
from scale_ray.models.hypcd.train import TrainConfig

log = logging.getLogger("scale.hypcd.evaluate")
METHODS = ("hypcd", "minilm_euclidean", "tfidf_logreg", "tfidf_logreg_raw")
DEFAULT_METHODS = ("hypcd", "minilm_euclidean", "tfidf_logreg", "tfidf_logreg_raw")


def read_rows(paths: Sequence[str], fmt: str, text_column: str, label_column: str) -> LabelledRows:
    if fmt == "birmingham":
        return read_birmingham(paths)
    return read_labelled_csv(paths, text_column, label_column)


def make_method(args: argparse.Namespace, name: str) -> Any:
    if name == "tfidf_logreg":
        return TfidfLogReg(unknown_rate=args.unknown_rate, seed=args.seed)
    if name == "tfidf_logreg_raw":
        return TfidfLogReg(
            unknown_rate=args.unknown_rate, seed=args.seed, key=raw_text_key, name=name
        )
    geometry = "hyperbolic" if name == "hypcd" else "euclidean"
    config = TrainConfig(
        geometry=geometry,
        epochs=args.epochs,
        seed=args.seed,
        finetune_last_layer=args.finetune,
    )
    return HypCDMethod(config, args.unknown_rate)


def _score_rows(method: Any, keys: list[str]) -> tuple[Scored, dict[str, int]]:
    unique = sorted({k for k in keys if k})
    scored = method.score(unique)
    return scored, {k: i for i, k in enumerate(unique)}


def user_memory_overlay(
    train: LabelledRows,
    train_keys: list[str],
    test: LabelledRows,
    test_keys: list[str],
    preds: list[str],
) -> tuple[list[str], float]:
    """A spender's own most frequent earlier label for a merchant replaces the model's answer."""
    if train.users is None or test.users is None:
        return preds, 0.0
    own: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for user, key, path in zip(train.users, train_keys, train.paths(), strict=True):
        if user:  # rows without a spender share no memory
            own[(user, key)][path] += 1
    out, hits = [], 0
    for user, key, pred in zip(test.users, test_keys, preds, strict=True):
        mine = own.get((user, key)) if user else None
        if mine:
            out.append(mine.most_common(1)[0][0])
            hits += 1
        else:
            out.append(pred)
    return out, hits / max(1, len(preds))


def closed_set(
    train: LabelledRows, test: LabelledRows, methods: Sequence[str], args: argparse.Namespace
) -> dict[str, Any]:
    train_paths = train.paths()
    seen = set(train_paths)
    keep = [i for i, p in enumerate(test.paths()) if p in seen]
    test = test.subset(keep)
    truth = test.paths()
    train_keys = [normalize_merchant(t) for t in train.texts]
    keys = [normalize_merchant(t) for t in test.texts]
    train_key_set = set(train_keys)
    seen_merchant = np.array([k in train_key_set for k in keys])
    out: dict[str, Any] = {
        "test_rows": len(test),
        "test_rows_seen_merchant": float(seen_merchant.mean()) if len(keys) else 0.0,
    }
    for name in methods:
        method = make_method(args, name)
        started = time.perf_counter()
        method.fit(train.texts, train_paths, [])
        fit_s = time.perf_counter() - started
        mkeys = [method.key(t) for t in test.texts]
        scored, index = _score_rows(method, mkeys)
        preds, conf = [], []
        for k in mkeys:
            if k in index:
                preds.append(method.classes[scored.best[index[k]]])
                conf.append(float(scored.confidence[index[k]]))
            else:
                preds.append("")
                conf.append(0.0)
        hit = np.array([p == t for p, t in zip(preds, truth, strict=True)])
        known = np.array(conf) >= method.threshold
        group_hit = [p.split("/")[0] == t.split("/")[0] for p, t in zip(preds, truth, strict=True)]
        with_memory, coverage = user_memory_overlay(train, train_keys, test, keys, preds)
        out[name] = {
            "leaf_accuracy": float(hit.mean()),
            "group_accuracy": float(np.mean(group_hit)),
            "leaf_accuracy_seen_merchants": float(hit[seen_merchant].mean())
            if seen_merchant.any()
            else 0.0,
            "leaf_accuracy_new_merchants": float(hit[~seen_merchant].mean())
            if (~seen_merchant).any()
            else 0.0,
            "known_rate": float(known.mean()),
            "leaf_accuracy_when_known": float(hit[known].mean()) if known.any() else 0.0,
            "leaf_accuracy_with_user_memory": accuracy(truth, with_memory),
            "user_memory_coverage": coverage,
            "fit_seconds": round(fit_s, 1),
        }
        if not name.startswith("tfidf"):
            out[name]["hierarchy"] = method.model.hierarchy_report()
        log.info("closed set %s: %s", name, out[name])
    return out


def choose_novel(train: LabelledRows, test: LabelledRows, k: int, seed: int) -> list[str]:
    """K held-out categories, among those with enough rows to be discoverable."""
    tr, te = Counter(train.paths()), Counter(test.paths())
    eligible = sorted(p for p in tr if tr[p] >= 30 and te.get(p, 0) >= 10)
    if len(eligible) < k:
        raise SystemExit(f"only {len(eligible)} categories have enough rows to hold {k} out")
    return sorted(random.Random(seed).sample(eligible, k))


def discovery(
    train: LabelledRows, test: LabelledRows, methods: Sequence[str], args: argparse.Namespace
) -> dict[str, Any]:
    novel = set(choose_novel(train, test, args.novel_classes, args.seed))
    train_paths = train.paths()
    seen = set(train_paths)
    keep_test = [i for i, p in enumerate(test.paths()) if p in seen]
    test = test.subset(keep_test)
    truth = test.paths()
    old_mask = [p not in novel for p in truth]
    labelled = [i for i, p in enumerate(train_paths) if p not in novel]
    unlabelled = [train.texts[i] for i, p in enumerate(train_paths) if p in novel] + test.texts
    out: dict[str, Any] = {
        "novel_classes": sorted(novel),
        "novel_names": {p: test.names.get(p.split("/")[-1], p) for p in sorted(novel)},
        "test_rows": len(test),
        "test_rows_novel": int(len(truth) - sum(old_mask)),
    }
    for name in methods:
        method = make_method(args, name)
        method.fit(
            [train.texts[i] for i in labelled], [train_paths[i] for i in labelled], unlabelled
        )
        mkeys = [method.key(t) for t in test.texts]
        key_counts = Counter(mkeys)
        scored, index = _score_rows(method, mkeys)
        threshold = float(np.quantile(method.calibration, args.discovery_unknown_rate))
        unknown = scored.confidence < threshold
        unknown_idx = np.flatnonzero(unknown)
        weights = np.array([key_counts[scored.keys[i]] for i in unknown_idx], float)
        lab_x, lab_y, lab_w = method.labelled_features()
        unl_x = scored.features[unknown_idx]
        n_known = len(method.classes)
        if args.k is not None:
            k_used = args.k
        else:
            k_used = estimate_new_k(lab_x, lab_y, n_known, unl_x, args.k_max, args.seed, weights)
        assign, centres = semi_supervised_kmeans(
            lab_x, lab_y, n_known, unl_x, k_used, args.seed, 30, lab_w, weights
        )
        novel_of: dict[int, str] = {}
        for i, a in zip(unknown_idx.tolist(), assign.tolist(), strict=True):
            novel_of[i] = method.classes[a] if a < n_known else f"novel-{a - n_known}"
        is_new_cluster = assign >= n_known
        labels = assign - n_known
        preds = []
        for key in mkeys:
            i = index.get(key)
            if i is None:
                preds.append("unknown")
            elif i in novel_of:
                preds.append(novel_of[i])
            else:
                preds.append(method.classes[scored.best[i]])
        row_unknown = np.array([p.startswith("novel-") for p in preds])
        is_novel = ~np.array(old_mask)
        clusters = name_clusters(
            [scored.keys[i] for i in unknown_idx[is_new_cluster]],
            unl_x[is_new_cluster],
            labels[is_new_cluster],
            centres[n_known:],
            weights[is_new_cluster],
        )
        truth_by_cluster: dict[int, Counter[str]] = defaultdict(Counter)
        for p, t in zip(preds, truth, strict=True):
            if p.startswith("novel-"):
                truth_by_cluster[int(p[6:])][t] += 1
        out[name] = {
            **named_gcd_accuracy(truth, preds, old_mask),
            "hungarian_all_rows": gcd_accuracy(truth, preds, old_mask),
            "estimated_new_k": k_used,
            "discovery_threshold": threshold,
            "unknown_recall_on_novel": float(row_unknown[is_novel].mean())
            if is_novel.any()
            else 0.0,
            "unknown_rate_on_old": float(row_unknown[~is_novel].mean())
            if (~is_novel).any()
            else 0.0,
            "clusters": [
                {
                    **c.to_json(),
                    "majority_true_label": truth_by_cluster[c.cluster].most_common(1)[0][0]
                    if truth_by_cluster[c.cluster]
                    else None,
                }
                for c in clusters[:10]
            ],
        }
        log.info(
            "discovery %s: all/old/new %s", name, {k: out[name][k] for k in ("all", "old", "new")}
        )
    return out


def _date_range(rows: LabelledRows) -> list[str] | None:
    dates = [d for d in rows.dates if d]
    return [str(min(dates)), str(max(dates))] if dates else None


def _cap(rows: LabelledRows, limit: int | None, seed: int) -> LabelledRows:
    if not limit or len(rows) <= limit:
        return rows
    idx = sorted(random.Random(seed).sample(range(len(rows)), limit))
    return rows.subset(idx)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", nargs="+", required=True, help="CSV files or folders")
    parser.add_argument("--test", nargs="+", required=True, help="CSV files or folders")
    parser.add_argument("--format", choices=("birmingham", "csv"), default="birmingham")
    parser.add_argument("--text-column", default="description", help="--format csv")
    parser.add_argument("--label-column", default="category", help="--format csv")
    parser.add_argument("--novel-classes", type=int, default=0)
    parser.add_argument("--k", type=int, default=None, help="fix the number of new clusters")
    parser.add_argument("--k-max", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--unknown-rate", type=float, default=0.05)
    parser.add_argument(
        "--discovery-unknown-rate",
        type=float,
        default=0.3,
        help="confidence quantile of held-out training merchants below which a test merchant "
        "goes to discovery (SS-k-means) instead of its predicted category",
    )
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    parser.add_argument("--max-train-rows", type=int, default=None, help="subsample (CI)")
    parser.add_argument("--max-test-rows", type=int, default=None, help="subsample (CI)")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument(
        "--finetune",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="fine-tune MiniLM's last layer (HypCD and the Euclidean baseline alike)",
    )
    return parser.parse_args(argv)


def evaluate(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise SystemExit(f"unknown methods: {sorted(unknown)}; choose from {METHODS}")
    train = _cap(
        read_rows(args.train, args.format, args.text_column, args.label_column),
        args.max_train_rows,
        args.seed,
    )
    test = _cap(
        read_rows(args.test, args.format, args.text_column, args.label_column),
        args.max_test_rows,
        args.seed,
    )
    if not len(train) or not len(test):
        raise SystemExit("no labelled rows in --train or --test")
    started = time.perf_counter()
    result: dict[str, Any] = {
        "data": {
            "train_rows": len(train),
            "test_rows": len(test),
            "train_dates": _date_range(train),
            "test_dates": _date_range(test),
            "categories_train": len(set(train.paths())),
            "groups_train": len(set(train.parents)),
            "merchants_train": len({normalize_merchant(t) for t in train.texts}),
        },
        "config": {
            "epochs": args.epochs,
            "seed": args.seed,
            "unknown_rate": args.unknown_rate,
            "finetune_last_layer": args.finetune,
        },
        "closed_set": closed_set(train, test, methods, args),
    }
    if args.novel_classes:
        result["discovery"] = discovery(train, test, methods, args)
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level="INFO", stream=sys.stderr)
    print(json.dumps(evaluate(argv), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
