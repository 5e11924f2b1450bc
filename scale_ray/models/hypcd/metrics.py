"""Accuracy measures of generalized category discovery (GCD).

Discovered clusters carry no names, so they are matched to true categories by the Hungarian
algorithm before counting. As in the GCD literature ("v2" evaluation), one matching is computed
over all test rows, then accuracy is reported on all rows, on rows of categories seen in training
("Old") and on rows of held-out categories ("New").
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment


def _encode(values: Sequence[object]) -> np.ndarray:
    _, codes = np.unique(np.asarray([str(v) for v in values]), return_inverse=True)
    return codes


def hungarian_match(y_true: Sequence[object], y_pred: Sequence[object]) -> dict[int, int]:
    """Prediction code → true code maximizing agreement (codes from :func:`_encode`)."""
    t, p = _encode(y_true), _encode(y_pred)
    size = max(t.max(initial=0), p.max(initial=0)) + 1
    w = np.zeros((size, size), dtype=np.int64)
    np.add.at(w, (p, t), 1)
    rows, cols = linear_sum_assignment(w.max() - w)
    return dict(zip(rows.tolist(), cols.tolist(), strict=True))


def gcd_accuracy(
    y_true: Sequence[object], y_pred: Sequence[object], old_mask: Sequence[bool]
) -> dict[str, float]:
    """All / Old / New accuracy after one Hungarian matching over all rows."""
    if len(y_true) == 0:
        return {"all": 0.0, "old": 0.0, "new": 0.0}
    t, p = _encode(y_true), _encode(y_pred)
    mapping = hungarian_match(y_true, y_pred)
    mapped = np.array([mapping.get(int(x), -1) for x in p])
    hit = mapped == t
    old = np.asarray(old_mask, dtype=bool)
    return {
        "all": float(hit.mean()),
        "old": float(hit[old].mean()) if old.any() else 0.0,
        "new": float(hit[~old].mean()) if (~old).any() else 0.0,
    }


def accuracy(y_true: Sequence[object], y_pred: Sequence[object]) -> float:
    if len(y_true) == 0:
        return 0.0
    return float(np.mean([str(a) == str(b) for a, b in zip(y_true, y_pred, strict=True)]))


def named_gcd_accuracy(
    y_true: Sequence[str],
    y_pred: Sequence[str],
    old_mask: Sequence[bool],
    new_prefix: str = "novel-",
) -> dict[str, float]:
    """All / Old / New accuracy where a known category's name means itself.

    Stricter than :func:`gcd_accuracy`, whose one matching over all rows may rename a known
    category into a held-out one. Here only discovered clusters (``new_prefix``) are matched,
    one-to-one, to the true categories of held-out rows; every other prediction counts only
    when it names the true category.
    """
    truth = [str(t) for t in y_true]
    preds = [str(p) for p in y_pred]
    old = np.asarray(old_mask, dtype=bool)
    if not truth:
        return {"all": 0.0, "old": 0.0, "new": 0.0}
    clusters = sorted({p for p in preds if p.startswith(new_prefix)})
    novel = sorted({t for t, o in zip(truth, old, strict=True) if not o})
    mapping: dict[str, str] = {}
    if clusters and novel:
        w = np.zeros((len(clusters), len(novel)), dtype=np.int64)
        ci = {c: i for i, c in enumerate(clusters)}
        ni = {n: i for i, n in enumerate(novel)}
        for t, p in zip(truth, preds, strict=True):
            if p in ci and t in ni:
                w[ci[p], ni[t]] += 1
        rows, cols = linear_sum_assignment(w.max() - w)
        mapping = {clusters[r]: novel[c] for r, c in zip(rows, cols, strict=True)}
    hit = np.array([mapping.get(p, p) == t for t, p in zip(truth, preds, strict=True)])
    return {
        "all": float(hit.mean()),
        "old": float(hit[old].mean()) if old.any() else 0.0,
        "new": float(hit[~old].mean()) if (~old).any() else 0.0,
    }
