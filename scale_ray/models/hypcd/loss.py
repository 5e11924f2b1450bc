"""HypCD's hybrid contrastive loss.

For a batch of two views per example, each geometry contributes an unsupervised InfoNCE term (the
other view of the same example is the positive) and a supervised-contrastive term (every labelled
example of the same class is a positive), mixed as ``(1 − w)·InfoNCE + w·SupCon``. The two
geometries are combined with the paper's ramp::

    loss = (1 − λ)·loss_angle + λ·loss_distance
    λ = clip((epoch − start)/(end − start), 0, 1)·λ_max

so training begins with angles on the ball (as in spherical GCD) and moves to hyperbolic distance,
which is what carries the hierarchy. ``geometry="euclidean"`` is the baseline with the same
architecture and cosine similarity only (λ stays 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from scale_ray.models.hypcd.hyperbolic import pairwise_cos, pairwise_dist


@dataclass(frozen=True)
class LossWeights:
    sup_con_weight: float = 0.5
    group_weight: float = 0.25
    temperature_angle: float = 0.1
    temperature_distance: float = 0.5


def ramp(epoch: float, start: float, end: float, max_weight: float = 1.0) -> float:
    """The λ schedule: 0 before ``start``, linear to ``max_weight`` at ``end``."""
    if end <= start:
        return max_weight
    return float(min(1.0, max(0.0, (epoch - start) / (end - start)))) * max_weight


def _similarity(z: torch.Tensor, kind: str, c: float) -> torch.Tensor:
    if kind == "distance":
        return -pairwise_dist(z, z, c)
    return pairwise_cos(z, z)


def info_nce(sim: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE over ``2b`` rows; rows ``i`` and ``i ± b`` are the two views of one example."""
    n = sim.shape[0]
    half = n // 2
    logits = sim / temperature
    logits = logits.masked_fill(torch.eye(n, dtype=torch.bool, device=sim.device), float("-inf"))
    target = torch.cat([torch.arange(half, n), torch.arange(0, half)]).to(sim.device)
    return F.cross_entropy(logits, target)


def sup_con(sim: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al.); rows with label < 0 are skipped."""
    n = sim.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=sim.device)
    logits = (sim / temperature).masked_fill(eye, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    valid = labels >= 0
    positive = (labels[:, None] == labels[None, :]) & ~eye & valid[:, None] & valid[None, :]
    counts = positive.sum(1)
    rows = counts > 0
    if not bool(rows.any()):
        return sim.new_zeros(())
    pos_log_prob = torch.where(positive, log_prob, torch.zeros_like(log_prob)).sum(1)
    return -(pos_log_prob[rows] / counts[rows]).mean()


def geometry_loss(
    z: torch.Tensor,
    labels: torch.Tensor,
    groups: torch.Tensor,
    kind: str,
    c: float,
    weights: LossWeights,
) -> torch.Tensor:
    """``(1 − w)·InfoNCE + w·(SupCon(leaf) + g·SupCon(group))`` in one geometry."""
    sim = _similarity(z, kind, c)
    t = weights.temperature_distance if kind == "distance" else weights.temperature_angle
    unsup = info_nce(sim, t)
    sup = sup_con(sim, labels, t)
    if weights.group_weight > 0:
        sup = sup + weights.group_weight * sup_con(sim, groups, t)
    return (1.0 - weights.sup_con_weight) * unsup + weights.sup_con_weight * sup


def hybrid_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    labels: torch.Tensor,
    groups: torch.Tensor,
    lam: float,
    c: float,
    weights: LossWeights,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The HypCD loss for two views ``z1``, ``z2`` (b, d) on the ball; returns the parts too."""
    z = torch.cat([z1, z2], dim=0)
    y = torch.cat([labels, labels])
    g = torch.cat([groups, groups])
    angle = geometry_loss(z, y, g, "angle", c, weights)
    if lam <= 0:
        return angle, {"angle": float(angle.detach()), "distance": 0.0, "lambda": 0.0}
    distance = geometry_loss(z, y, g, "distance", c, weights)
    loss = (1.0 - lam) * angle + lam * distance
    parts = {"angle": float(angle.detach()), "distance": float(distance.detach()), "lambda": lam}
    return loss, parts
