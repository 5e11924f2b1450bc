"""Discovery of new categories on synthetic 2-D blobs: SS-k-means, estimating k, naming."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from scale_ray.models.hypcd.discover import (
    cluster,
    estimate_k,
    estimate_new_k,
    name_clusters,
    semi_supervised_kmeans,
    tangent_features,
)
from scale_ray.models.hypcd.hyperbolic import make_ball

KNOWN_CENTRES = np.array([[0.0, 0.0], [8.0, 0.0], [0.0, 8.0]])
NEW_CENTRES = np.array([[8.0, 8.0], [-8.0, -8.0]])


@dataclass(frozen=True)
class Blobs:
    labelled: np.ndarray  # points of the three known classes
    labels: np.ndarray  # their class, 0..2
    unlabelled: np.ndarray  # a few points of the known classes, then the two new blobs
    truth: np.ndarray  # the unlabelled points' blob: 0..2 known, 3..4 new


def make_blobs(old_per_blob: int = 5, new_per_blob: int = 40, seed: int = 0) -> Blobs:
    rng = np.random.default_rng(seed)

    def blob(centre: np.ndarray, n: int) -> np.ndarray:
        return centre + 0.5 * rng.standard_normal((n, 2))

    labelled = np.concatenate([blob(c, 20) for c in KNOWN_CENTRES])
    old = [blob(c, old_per_blob) for c in KNOWN_CENTRES]
    new = [blob(c, new_per_blob) for c in NEW_CENTRES]
    return Blobs(
        labelled=labelled,
        labels=np.repeat(np.arange(3), 20),
        unlabelled=np.concatenate(old + new),
        truth=np.repeat(np.arange(5), [old_per_blob] * 3 + [new_per_blob] * 2),
    )


def _new_blobs_found(blobs: Blobs, assign: np.ndarray) -> bool:
    """Known-blob points keep their class; each new blob is one new cluster of its own."""
    old = blobs.truth < 3
    if not np.array_equal(assign[old], blobs.truth[old]):
        return False
    first = assign[blobs.truth == 3]
    second = assign[blobs.truth == 4]
    return (
        len(set(first.tolist())) == 1
        and len(set(second.tolist())) == 1
        and first[0] >= 3
        and second[0] >= 3
        and first[0] != second[0]
    )


def test_semi_supervised_kmeans_separates_new_blobs() -> None:
    # Prepare
    blobs = make_blobs()

    # Execute
    assign, centres = semi_supervised_kmeans(
        blobs.labelled, blobs.labels, 3, blobs.unlabelled, n_new=2
    )

    # Assert: old points stay with their class, each new blob gets a new cluster index (3 or 4).
    assert assign.shape == (len(blobs.unlabelled),)
    assert centres.shape == (5, 2)
    assert _new_blobs_found(blobs, assign)
    # Known centres stay at their class (labelled mean, pulled only by their own unlabelled
    # points); the new centres sit on the new blobs.
    np.testing.assert_allclose(centres[:3], KNOWN_CENTRES, atol=0.5)
    found = sorted(map(tuple, np.round(centres[3:] / 8)))
    assert found == [(-1.0, -1.0), (1.0, 1.0)]


def test_semi_supervised_kmeans_without_new_clusters_is_nearest_class() -> None:
    blobs = make_blobs()

    assign, centres = semi_supervised_kmeans(
        blobs.labelled, blobs.labels, 3, blobs.unlabelled, n_new=0
    )

    assert centres.shape == (3, 2)
    assert set(assign.tolist()) <= {0, 1, 2}
    old = blobs.truth < 3
    np.testing.assert_array_equal(assign[old], blobs.truth[old])


def test_semi_supervised_kmeans_weights_move_centres() -> None:
    # One heavy unlabelled point drags the class-0 centre toward itself.
    labelled = np.array([[0.0, 0.0], [1.0, 0.0]])
    unlabelled = np.array([[0.5, 1.0]])

    _, light = semi_supervised_kmeans(labelled, np.array([0, 0]), 1, unlabelled, 0)
    _, heavy = semi_supervised_kmeans(
        labelled, np.array([0, 0]), 1, unlabelled, 0, unlabelled_weights=np.array([98.0])
    )

    np.testing.assert_allclose(light[0], [0.5, 1 / 3])
    np.testing.assert_allclose(heavy[0], [0.5, 0.98])


def test_semi_supervised_kmeans_finds_new_blobs_for_any_seed() -> None:
    blobs = make_blobs(old_per_blob=10)
    failures = [
        seed
        for seed in range(20)
        if not _new_blobs_found(
            blobs,
            semi_supervised_kmeans(blobs.labelled, blobs.labels, 3, blobs.unlabelled, 2, seed)[0],
        )
    ]
    assert failures == []


def test_estimate_new_k_finds_the_two_new_blobs() -> None:
    blobs = make_blobs()

    k = estimate_new_k(blobs.labelled, blobs.labels, 3, blobs.unlabelled, k_max=8)

    assert k == 2


def test_estimate_new_k_when_only_new_blobs_are_unlabelled() -> None:
    blobs = make_blobs(old_per_blob=0)

    assert estimate_new_k(blobs.labelled, blobs.labels, 3, blobs.unlabelled, k_max=8) == 2


def test_estimate_new_k_small_inputs() -> None:
    blobs = make_blobs()
    args = (blobs.labelled, blobs.labels, 3)
    assert estimate_new_k(*args, np.zeros((0, 2))) == 0
    assert estimate_new_k(*args, blobs.unlabelled[-3:]) == 1


def test_estimate_k_finds_the_blob_count() -> None:
    blobs = make_blobs()
    everything = np.concatenate([blobs.labelled, blobs.unlabelled])

    assert estimate_k(everything, k_min=2, k_max=8) == 5
    assert estimate_k(everything[:2]) == 2  # fewer than three points: one cluster each


def test_cluster_estimates_k_and_returns_centres() -> None:
    blobs = make_blobs()
    everything = np.concatenate([blobs.labelled, blobs.unlabelled])

    labels, centres, k = cluster(everything, k_max=8)
    fixed_labels, fixed_centres, fixed_k = cluster(everything, k=2)
    empty = cluster(np.zeros((0, 2)))

    assert k == 5
    assert centres.shape == (5, 2)
    assert len(set(labels.tolist())) == 5
    assert fixed_k == 2 and fixed_centres.shape == (2, 2)
    assert len(fixed_labels) == len(everything)
    assert empty[2] == 0 and len(empty[0]) == 0


def test_name_clusters_uses_central_frequent_merchants() -> None:
    # Prepare: cluster 0 around (0, 0), cluster 1 around (10, 0).
    keys = ["tesco", "rare corner shop", "tesco express", "far outlier", "uber", "uber eats"]
    features = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.5], [5.0, 0.0], [10.0, 0.0], [10.0, 1.0]])
    labels = np.array([0, 0, 0, 0, 1, 1])
    centres = np.array([[0.0, 0.0], [10.0, 0.0]])
    counts = np.array([10, 1, 100, 1, 3, 2])

    # Execute
    named = name_clusters(keys, features, labels, centres, counts, top=3)

    # Assert: at the centre first, then the frequent merchant before the nearer rare one;
    # clusters sorted by size (the sum of counts); the far outlier does not make the top 3.
    assert [n.cluster for n in named] == [0, 1]
    biggest = named[0]
    assert biggest.merchants == ("tesco", "tesco express", "rare corner shop")
    assert biggest.name == "tesco / tesco express"
    assert biggest.size == 112
    assert named[1].name == "uber / uber eats"
    assert named[1].size == 5
    assert named[1].to_json() == {
        "cluster": 1,
        "name": "uber / uber eats",
        "size": 5,
        "merchants": ["uber", "uber eats"],
    }


def test_name_clusters_skips_empty_clusters() -> None:
    named = name_clusters(["a", "b"], np.array([[0.0], [1.0]]), np.array([2, 2]), np.zeros((3, 1)))

    assert [n.cluster for n in named] == [2]
    assert named[0].size == 2  # unit counts when none are given


def test_tangent_features_inverts_expmap0() -> None:
    tangent = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    points = make_ball(0.1).expmap0(torch.from_numpy(tangent)).numpy()

    back = tangent_features(points, "hyperbolic", 0.1)
    same = tangent_features(points, "euclidean", 0.1)

    np.testing.assert_allclose(back, tangent, atol=1e-4)
    np.testing.assert_array_equal(same, points)
