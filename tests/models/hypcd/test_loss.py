"""HypCD's hybrid contrastive loss: the λ ramp, InfoNCE, SupCon and the angle/distance mix."""

from __future__ import annotations

import math

import pytest
import torch

from scale_ray.models.hypcd.hyperbolic import make_ball, pairwise_cos, to_ball
from scale_ray.models.hypcd.loss import (
    LossWeights,
    geometry_loss,
    hybrid_loss,
    info_nce,
    ramp,
    sup_con,
)

C = 0.1


def _views(b: int, dim: int, seed: int, noise: float = 0.05) -> tuple[torch.Tensor, torch.Tensor]:
    """Two ball views of ``b`` examples: the second a slightly perturbed copy of the first."""
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(b, dim, generator=gen)
    ball = make_ball(C)
    z1 = to_ball(base, ball)
    z2 = to_ball(base + noise * torch.randn(b, dim, generator=gen), ball)
    return z1, z2


def test_ramp_schedule() -> None:
    assert ramp(0, 2, 6) == 0.0
    assert ramp(2, 2, 6) == 0.0
    assert ramp(3, 2, 6) == pytest.approx(0.25)
    assert ramp(4, 2, 6, max_weight=0.8) == pytest.approx(0.4)
    assert ramp(6, 2, 6, max_weight=0.8) == pytest.approx(0.8)
    assert ramp(100, 2, 6, max_weight=0.8) == pytest.approx(0.8)
    assert ramp(-5, 2, 6) == 0.0
    # A degenerate window (end ≤ start) means "full weight from the start".
    assert ramp(0, 3, 3, max_weight=0.7) == 0.7
    assert ramp(0, 5, 1) == 1.0


def test_info_nce_prefers_aligned_views() -> None:
    # Prepare: the same two views, once aligned row by row and once with the second shuffled.
    z1, z2 = _views(16, 32, seed=0)
    shuffled = z2[torch.roll(torch.arange(16), 5)]

    # Execute
    aligned, mixed = torch.cat([z1, z2]), torch.cat([z1, shuffled])
    aligned_loss = info_nce(pairwise_cos(aligned, aligned), 0.1)
    shuffled_loss = info_nce(pairwise_cos(mixed, mixed), 0.1)

    # Assert: aligned views are near the minimum; shuffled ones cost more than chance (log 31).
    assert float(aligned_loss) < 0.1
    assert float(shuffled_loss) > math.log(31)
    assert float(aligned_loss) < float(shuffled_loss)


def test_info_nce_by_hand() -> None:
    # Two examples, four rows; row i's positive is row (i + 2) % 4, itself is masked out.
    sim = torch.tensor(
        [
            [1.0, 0.0, 0.5, 0.2],
            [0.0, 1.0, 0.1, 0.9],
            [0.5, 0.1, 1.0, 0.3],
            [0.2, 0.9, 0.3, 1.0],
        ]
    )
    t = 0.5
    expected = 0.0
    for i, pos in enumerate([2, 3, 0, 1]):
        others = [j for j in range(4) if j != i]
        expected -= float(sim[i, pos] / t) - math.log(sum(math.exp(sim[i, j] / t) for j in others))
    expected /= 4

    assert float(info_nce(sim, t)) == pytest.approx(expected, rel=1e-5)


def test_sup_con_skips_unlabelled_rows() -> None:
    # Prepare: rows 0–1 share class 0; rows 2–3 are unlabelled (−1) and nearly identical.
    sim = torch.tensor(
        [
            [1.0, 0.8, 0.1, 0.0],
            [0.8, 1.0, 0.2, 0.1],
            [0.1, 0.2, 1.0, 0.99],
            [0.0, 0.1, 0.99, 1.0],
        ]
    )
    labels = torch.tensor([0, 0, -1, -1])
    t = 0.2

    # Execute
    loss = sup_con(sim, labels, t)
    # An unlabelled anchor's row does not matter at all...
    changed = sim.clone()
    changed[2] = torch.tensor([5.0, -3.0, 1.0, -7.0])
    loss_changed = sup_con(changed, labels, t)

    # Assert: ...and two unlabelled rows are no positives of each other (−1 is not a class).
    def row_term(i: int, pos: int) -> float:
        others = [j for j in range(4) if j != i]
        log_z = math.log(sum(math.exp(float(sim[i, j]) / t) for j in others))
        return float(sim[i, pos]) / t - log_z

    expected = -(row_term(0, 1) + row_term(1, 0)) / 2
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert float(loss_changed) == pytest.approx(float(loss), rel=1e-6)


@pytest.mark.parametrize(
    "labels",
    [[-1, -1, -1, -1], [0, 1, 2, 3], [-1, -1, 0, 1]],
    ids=["all-unlabelled", "all-distinct", "unlabelled-pair"],
)
def test_sup_con_is_zero_without_positives(labels: list[int]) -> None:
    sim = torch.rand(4, 4, generator=torch.Generator().manual_seed(0))

    loss = sup_con(sim, torch.tensor(labels), 0.1)

    assert loss.shape == ()
    assert float(loss) == 0.0


def test_hybrid_loss_mixes_angle_and_distance() -> None:
    # Prepare: labelled and unlabelled rows; no dropout anywhere, so every call is deterministic.
    z1, z2 = _views(12, 16, seed=1, noise=0.3)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, -1, -1, 0, 1, 2, -1])
    groups = torch.tensor([0, 0, 0, 0, 1, 1, -1, -1, 0, 0, 1, -1])
    weights = LossWeights()
    z, y, g = torch.cat([z1, z2]), torch.cat([labels, labels]), torch.cat([groups, groups])
    angle = float(geometry_loss(z, y, g, "angle", C, weights))
    distance = float(geometry_loss(z, y, g, "distance", C, weights))

    # Execute
    at_0, parts_0 = hybrid_loss(z1, z2, labels, groups, 0.0, C, weights)
    at_1, parts_1 = hybrid_loss(z1, z2, labels, groups, 1.0, C, weights)
    at_half, parts_half = hybrid_loss(z1, z2, labels, groups, 0.25, C, weights)

    # Assert: λ = 0 is the angle loss only, λ = 1 the distance loss only, in between linear.
    assert angle != pytest.approx(distance, rel=1e-3)
    assert float(at_0) == pytest.approx(angle, rel=1e-6)
    assert parts_0 == {"angle": pytest.approx(angle), "distance": 0.0, "lambda": 0.0}
    assert float(at_1) == pytest.approx(distance, rel=1e-6)
    assert parts_1["distance"] == pytest.approx(distance)
    assert parts_1["lambda"] == 1.0
    assert float(at_half) == pytest.approx(0.75 * angle + 0.25 * distance, rel=1e-6)
    assert parts_half["angle"] == pytest.approx(angle)


def test_hybrid_loss_backpropagates_finite_gradients() -> None:
    z1, z2 = _views(8, 16, seed=2)
    z1.requires_grad_()
    labels = torch.tensor([0, 0, 1, 1, -1, -1, 0, 1])

    loss, _ = hybrid_loss(z1, z2, labels, labels.clamp(max=0), 0.5, C, LossWeights())
    loss.backward()

    assert z1.grad is not None
    assert bool(torch.isfinite(z1.grad).all())
    assert float(z1.grad.abs().sum()) > 0
