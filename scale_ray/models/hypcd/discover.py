"""Discovery of new categories: cluster what fits no known category, name each cluster.

Merchants the categorizer calls unknown are clustered on their ball features, taken to the tangent
space at the origin (``logmap0``), where Euclidean k-means is a good local approximation and
radius keeps its meaning (how specific a merchant is). The number of clusters is estimated by the
silhouette score over a range of k, since nobody tells us how many new categories there are. A
cluster is named by its most typical merchants: the frequent ones closest to its centre.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from scale_ray.models.hypcd.hyperbolic import make_ball


@dataclass(frozen=True)
class NovelCategory:
    cluster: int
    name: str
    size: int
    merchants: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        return {
            "cluster": self.cluster,
            "name": self.name,
            "size": self.size,
            "merchants": list(self.merchants),
        }


def tangent_features(points: np.ndarray, geometry: str, curvature: float) -> np.ndarray:
    """Ball points → tangent vectors at the origin (unit-sphere points are returned as they are)."""
    if geometry != "hyperbolic" or len(points) == 0:
        return np.asarray(points, np.float32)
    import torch

    ball = make_ball(curvature)
    return ball.logmap0(torch.from_numpy(np.asarray(points, np.float32))).numpy()


def estimate_k(
    features: np.ndarray,
    k_min: int = 2,
    k_max: int = 30,
    sample: int = 3000,
    seed: int = 0,
    weights: np.ndarray | None = None,
) -> int:
    """The k in ``[k_min, k_max]`` with the best silhouette score (on a sample, for speed)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    n = len(features)
    if n < 3:
        return max(1, n)
    k_max = max(k_min, min(k_max, n - 1))
    rng = np.random.default_rng(seed)
    idx = rng.choice(n, size=min(sample, n), replace=False)
    best_k, best_score = k_min, -np.inf
    for k in range(k_min, k_max + 1):
        km = KMeans(n_clusters=k, n_init=3, random_state=seed).fit(features, sample_weight=weights)
        labels = km.labels_[idx]
        if len(set(labels)) < 2:
            continue
        score = silhouette_score(features[idx], labels)
        if score > best_score:
            best_k, best_score = k, score
    return best_k


def cluster(
    features: np.ndarray,
    k: int | None = None,
    k_max: int = 30,
    seed: int = 0,
    weights: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """k-means labels, centres and the k used (estimated when ``k`` is None)."""
    from sklearn.cluster import KMeans

    if len(features) == 0:
        return (
            np.zeros(0, dtype=int),
            np.zeros((0, features.shape[1] if features.ndim == 2 else 0)),
            0,
        )
    if k is None:
        k = estimate_k(features, k_max=k_max, seed=seed, weights=weights)
    k = max(1, min(k, len(features)))
    km = KMeans(n_clusters=k, n_init=5, random_state=seed).fit(features, sample_weight=weights)
    return km.labels_, km.cluster_centers_, k


def name_clusters(
    keys: Sequence[str],
    features: np.ndarray,
    labels: np.ndarray,
    centres: np.ndarray,
    counts: np.ndarray | None = None,
    top: int = 5,
) -> list[NovelCategory]:
    """Each cluster's most typical merchants: close to the centre, weighted by frequency."""
    counts = np.ones(len(keys)) if counts is None else np.asarray(counts, float)
    out: list[NovelCategory] = []
    for c in range(len(centres)):
        members = np.flatnonzero(labels == c)
        if len(members) == 0:
            continue
        dist = np.linalg.norm(features[members] - centres[c], axis=1)
        typical = np.argsort(dist / np.log1p(counts[members] + 1.0))
        names = tuple(dict.fromkeys(keys[members[i]] for i in typical[:top]))
        out.append(
            NovelCategory(
                cluster=c,
                name=" / ".join(names[:2]),
                size=int(counts[members].sum()),
                merchants=names,
            )
        )
    return sorted(out, key=lambda n: -n.size)


def semi_supervised_kmeans(
    labelled: np.ndarray,
    labels: np.ndarray,
    n_known: int,
    unlabelled: np.ndarray,
    n_new: int,
    seed: int = 0,
    iters: int = 30,
    labelled_weights: np.ndarray | None = None,
    unlabelled_weights: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """k-means where labelled points stay with their category (GCD's SS-k-means).

    Known categories start at their labelled means and keep their labelled members; ``n_new``
    more centres start by k-means++ on the unlabelled points. Each unlabelled point goes to its
    nearest centre: an index below ``n_known`` is a known category, above it a new one.
    Returns the unlabelled assignments and all centres.
    """
    dim = unlabelled.shape[1]
    lw = np.ones(len(labelled)) if labelled_weights is None else labelled_weights
    uw = np.ones(len(unlabelled)) if unlabelled_weights is None else unlabelled_weights
    centres = np.zeros((n_known + n_new, dim))
    lsum = np.zeros((n_known, dim))
    lmass = np.zeros(n_known)
    np.add.at(lsum, labels, labelled * lw[:, None])
    np.add.at(lmass, labels, lw)
    centres[:n_known] = lsum / np.maximum(lmass, 1e-9)[:, None]
    if n_new:
        # SS-k-means++: each new centre by D² sampling against every centre so far, the known
        # ones included, so that no new centre starts inside a known category.
        rng = np.random.default_rng(seed)
        d2 = np.full(len(unlabelled), np.inf)
        for c in range(n_known):
            d2 = np.minimum(d2, ((unlabelled - centres[c]) ** 2).sum(1))
        for j in range(n_new):
            if not np.isfinite(d2).any():
                pick = int(rng.integers(len(unlabelled)))
            else:
                p = np.where(np.isfinite(d2), d2, 0.0) * uw
                total = p.sum()
                pick = int(rng.choice(len(unlabelled), p=p / total)) if total > 0 else 0
            centres[n_known + j] = unlabelled[pick]
            d2 = np.minimum(d2, ((unlabelled - unlabelled[pick]) ** 2).sum(1))
    assign = np.zeros(len(unlabelled), dtype=int)
    for step in range(iters):
        d = (
            (unlabelled**2).sum(1)[:, None]
            - 2 * unlabelled @ centres.T
            + (centres**2).sum(1)[None, :]
        )
        new_assign = d.argmin(1)
        if step and np.array_equal(new_assign, assign):
            break
        assign = new_assign
        total = np.zeros_like(centres)
        mass = np.zeros(len(centres))
        total[:n_known] = lsum
        mass[:n_known] = lmass
        np.add.at(total, assign, unlabelled * uw[:, None])
        np.add.at(mass, assign, uw)
        filled = mass > 0
        centres[filled] = total[filled] / mass[filled][:, None]
    return assign, centres


def estimate_new_k(
    labelled: np.ndarray,
    labels: np.ndarray,
    n_known: int,
    unlabelled: np.ndarray,
    k_max: int = 30,
    seed: int = 0,
    unlabelled_weights: np.ndarray | None = None,
    sample: int = 3000,
) -> int:
    """The number of new categories whose SS-k-means split of the unlabelled points has the best
    silhouette score (categories nobody named: their count must be estimated)."""
    from sklearn.metrics import silhouette_score

    n = len(unlabelled)
    if n < 4:
        return 1 if n else 0
    rng = np.random.default_rng(seed)
    n_all = len(labelled) + n
    idx = rng.choice(n_all, size=min(sample, n_all), replace=False)
    both = np.concatenate([labelled, unlabelled])
    best_k, best = 1, -np.inf
    for k in range(1, max(1, min(k_max, n // 4)) + 1):
        assign, _ = semi_supervised_kmeans(
            labelled, labels, n_known, unlabelled, k, seed, 20, None, unlabelled_weights
        )
        # Scored on labelled and unlabelled points together: a new group absorbed into a known
        # category must cost silhouette, which it cannot if only the unlabelled points count.
        sub = np.concatenate([labels, assign])[idx]
        if len(set(sub.tolist())) < 2:
            continue
        score = silhouette_score(both[idx], sub)
        if score > best:
            best_k, best = k, score
    return best_k
