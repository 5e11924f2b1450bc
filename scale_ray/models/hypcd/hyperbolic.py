"""Poincaré-ball geometry for HypCD: clipping, the exponential map, pairwise distances, means.

The ball comes from geoopt (``PoincareBall(c)``); what geoopt leaves to the caller is numerical
safety. In float32, points whose norm reaches ``1/sqrt(c)`` round onto the boundary, where
``artanh`` is infinite and gradients turn into NaN (geoopt issues #227 and #202). Two guards keep
every point well inside:

* **Feature clipping** (Guo et al., "Clipped hyperbolic classifiers", used by HypCD): a tangent
  vector longer than ``clip_r`` is scaled down to ``clip_r`` before ``expmap0``. With the paper's
  ``c = 0.1`` and ``clip_r = 2.3`` the largest point norm is ``tanh(0.727)/sqrt(0.1) ≈ 0.62`` of
  the radius, far from where float32 loses precision.
* **Distances in float64 with a clamped ``artanh`` argument**, computed from Gram matrices so a
  batch of n points costs O(n²) memory rather than geoopt's broadcast O(n² · d).
"""

from __future__ import annotations

import geoopt
import torch

#: The paper's defaults (HypCD: ``--c 0.1 --cr 2.3``).
DEFAULT_CURVATURE = 0.1
DEFAULT_CLIP_R = 2.3
_ARTANH_MAX = 1.0 - 1e-7
_EPS = 1e-9


def make_ball(c: float = DEFAULT_CURVATURE) -> geoopt.PoincareBall:
    return geoopt.PoincareBall(c=c)


def clip_features(v: torch.Tensor, clip_r: float = DEFAULT_CLIP_R) -> torch.Tensor:
    """Scale every row longer than ``clip_r`` down to length ``clip_r`` (shorter rows unchanged)."""
    norm = v.norm(dim=-1, keepdim=True).clamp_min(_EPS)
    return v * torch.clamp(clip_r / norm, max=1.0)


def to_ball(
    v: torch.Tensor, ball: geoopt.PoincareBall, clip_r: float = DEFAULT_CLIP_R
) -> torch.Tensor:
    """Euclidean features → points on the ball: clip, then ``expmap0`` (projected inside)."""
    return ball.expmap0(clip_features(v, clip_r))


def pairwise_dist(x: torch.Tensor, y: torch.Tensor, c: float) -> torch.Tensor:
    """Poincaré distances between every row of ``x`` (n, d) and of ``y`` (m, d): an (n, m) matrix.

    ``d(x, y) = 2/sqrt(c) · artanh(sqrt(c) · ‖(−x) ⊕ y‖)``, with the Möbius sum's norm written in
    terms of ``‖x‖²``, ``‖y‖²`` and ``⟨x, y⟩`` only. Differentiable; equal to geoopt's ``dist``.
    """
    dtype = x.dtype
    x64, y64 = x.double(), y.double()
    xx = (x64 * x64).sum(-1, keepdim=True)  # (n, 1)
    yy = (y64 * y64).sum(-1, keepdim=True).T  # (1, m)
    xy = x64 @ y64.T  # (n, m)
    a = 1.0 - 2.0 * c * xy + c * yy
    b = 1.0 - c * xx
    num_sq = (a * a * xx - 2.0 * a * b * xy + b * b * yy).clamp_min(0.0)
    den = (1.0 - 2.0 * c * xy + c * c * xx * yy).clamp_min(_EPS)
    arg = (c**0.5) * torch.sqrt(num_sq + 1e-15) / den
    dist = 2.0 / (c**0.5) * torch.atanh(arg.clamp(max=_ARTANH_MAX))
    return dist.to(dtype)


def pairwise_cos(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cosine of the angle at the origin between ball points (``expmap0`` keeps directions)."""
    xn = x / x.norm(dim=-1, keepdim=True).clamp_min(_EPS)
    yn = y / y.norm(dim=-1, keepdim=True).clamp_min(_EPS)
    return xn @ yn.T


def tangent_mean(points: torch.Tensor, ball: geoopt.PoincareBall) -> torch.Tensor:
    """A class prototype: the mean in the tangent space at the origin, mapped back to the ball.

    Cheaper than the Fréchet mean and, like it, pulled toward the origin when the points spread
    in different directions: a parent's prototype (the mean of its children's) sits nearer the
    centre than the children, which is how the hierarchy shows in the ball.
    """
    return ball.expmap0(ball.logmap0(points).mean(dim=0))
