"""Poincaré-ball helpers: distances against geoopt, clipping, and the float32 NaN pitfalls."""

from __future__ import annotations

import math

import geoopt
import pytest
import torch

from scale_ray.models.hypcd.hyperbolic import (
    DEFAULT_CLIP_R,
    DEFAULT_CURVATURE,
    clip_features,
    make_ball,
    pairwise_cos,
    pairwise_dist,
    tangent_mean,
    to_ball,
)


def _ball_points(n: int, dim: int, c: float, seed: int, scale: float = 1.0) -> torch.Tensor:
    """``n`` float64 points spread over the ball (random tangent vectors through ``expmap0``)."""
    gen = torch.Generator().manual_seed(seed)
    tangent = torch.randn(n, dim, generator=gen, dtype=torch.float64) * scale
    return geoopt.PoincareBall(c=c).expmap0(tangent)


@pytest.mark.parametrize("c", [0.1, 1.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_pairwise_dist_matches_geoopt(c: float, dtype: torch.dtype) -> None:
    # Prepare: points up to ~0.85 of the radius; geoopt's reference in float64.
    x = _ball_points(7, 16, c, seed=1, scale=0.3)
    y = _ball_points(5, 16, c, seed=2, scale=0.3)
    reference = geoopt.PoincareBall(c=c).dist(x[:, None, :], y[None, :, :])

    # Execute
    got = pairwise_dist(x.to(dtype), y.to(dtype), c)

    # Assert: same shape, the input dtype back, and geoopt's values (geoopt's own clamps leave
    # it ~1e-7 off the exact value, see the next test).
    assert got.shape == (7, 5)
    assert got.dtype == dtype
    tol = 1e-4 if dtype == torch.float32 else 1e-6
    torch.testing.assert_close(got.double(), reference, rtol=tol, atol=tol)
    assert float(reference.min()) > 0.1  # the points are not all on top of each other


@pytest.mark.parametrize("c", [0.1, 1.0])
def test_pairwise_dist_matches_the_closed_form_in_float64(c: float) -> None:
    # d(x, y) = arcosh(1 + 2c‖x − y‖² / ((1 − c‖x‖²)(1 − c‖y‖²))) / sqrt(c)
    x = _ball_points(6, 8, c, seed=4, scale=0.5)
    y = _ball_points(4, 8, c, seed=5, scale=0.5)
    sq = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    nx = 1 - c * (x * x).sum(-1)
    ny = 1 - c * (y * y).sum(-1)
    exact = torch.acosh(1 + 2 * c * sq / (nx[:, None] * ny[None, :])) / math.sqrt(c)

    torch.testing.assert_close(pairwise_dist(x, y, c), exact, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_pairwise_dist_is_symmetric_with_zero_diagonal(dtype: torch.dtype) -> None:
    # Points as the model makes them (clipped, so at most ~0.62 of the radius).
    gen = torch.Generator().manual_seed(3)
    x = to_ball(torch.randn(9, 32, generator=gen, dtype=torch.float64), make_ball()).to(dtype)

    d = pairwise_dist(x, x, DEFAULT_CURVATURE)

    torch.testing.assert_close(d, d.T)
    assert torch.all(d.diagonal().abs() < 1e-5)
    off = ~torch.eye(9, dtype=torch.bool)
    assert bool((d[off] > 0.1).all())


def test_pairwise_cos_is_the_angle_at_the_origin() -> None:
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]])

    cos = pairwise_cos(x, x)

    expected = torch.tensor([[1.0, 0.0, -1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 1.0]])
    torch.testing.assert_close(cos, expected)


def test_clip_features_caps_long_rows_only() -> None:
    # Prepare: one long row, one short row, one zero row.
    v = torch.tensor([[30.0, 40.0, 0.0], [0.3, 0.4, 0.0], [0.0, 0.0, 0.0]])

    # Execute
    out = clip_features(v, clip_r=2.0)

    # Assert: the long row is scaled to norm 2 along its own direction; the others are untouched.
    torch.testing.assert_close(out[0], torch.tensor([1.2, 1.6, 0.0]))
    torch.testing.assert_close(out[1:], v[1:])
    big = torch.randn(50, 8) * 100
    assert torch.allclose(clip_features(big, DEFAULT_CLIP_R).norm(dim=1), torch.tensor(2.3))


@pytest.mark.parametrize("c", [DEFAULT_CURVATURE, 1.0])
def test_to_ball_stays_inside_for_huge_inputs(c: float) -> None:
    ball = make_ball(c)
    huge = torch.randn(64, 128, generator=torch.Generator().manual_seed(0)) * 1e6

    points = to_ball(huge, ball)

    radius = 1.0 / math.sqrt(c)
    norms = points.norm(dim=1)
    assert bool(torch.isfinite(points).all())
    assert bool((norms < radius).all())
    # Clipping bounds the norm at tanh(sqrt(c)·clip_r)/sqrt(c): well inside, not on the rim.
    bound = math.tanh(math.sqrt(c) * DEFAULT_CLIP_R) / math.sqrt(c)
    assert float(norms.max()) <= bound * (1 + 1e-5)
    torch.testing.assert_close(norms, torch.full_like(norms, bound))


@pytest.mark.parametrize(
    "case",
    ["huge", "identical", "zero"],
)
def test_gradients_are_finite_through_to_ball_and_pairwise_dist(case: str) -> None:
    # Prepare: the inputs that produce NaN gradients with a naive artanh/norm (geoopt #227, #202).
    gen = torch.Generator().manual_seed(1)
    if case == "huge":
        v = torch.randn(16, 32, generator=gen) * 1e6
    elif case == "identical":
        v = torch.randn(1, 32, generator=gen).repeat(16, 1)
    else:
        v = torch.zeros(16, 32)
    v.requires_grad_()
    ball = make_ball(DEFAULT_CURVATURE)

    # Execute: a contrastive-style objective over all pairs, diagonal included.
    z = to_ball(v, ball)
    d = pairwise_dist(z, z, DEFAULT_CURVATURE)
    loss = d.sum() + torch.logsumexp(-d, dim=1).sum()
    loss.backward()

    # Assert
    assert bool(torch.isfinite(d).all())
    assert v.grad is not None
    assert bool(torch.isfinite(v.grad).all())


def test_tangent_mean_of_spread_points_is_nearer_the_origin() -> None:
    # Prepare: children in opposite and orthogonal directions, all at the same radius.
    ball = make_ball(DEFAULT_CURVATURE)
    directions = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 0.2, 0.0], [0.0, 1.0, 0.0]])
    children = ball.expmap0(1.5 * directions / directions.norm(dim=1, keepdim=True))

    # Execute
    parent = tangent_mean(children, ball)

    # Assert: the parent sits inside the children's radius (the hierarchy in the ball).
    origin = torch.zeros(1, 3)
    child_r = pairwise_dist(children, origin, DEFAULT_CURVATURE)[:, 0]
    parent_r = pairwise_dist(parent[None], origin, DEFAULT_CURVATURE)[0, 0]
    assert float(parent_r) < 0.5 * float(child_r.min())
    assert float(parent.norm()) < float(children.norm(dim=1).min())


def test_tangent_mean_of_one_point_is_that_point() -> None:
    ball = make_ball(DEFAULT_CURVATURE)
    point = ball.expmap0(torch.tensor([[0.3, -1.2, 0.7]]))

    torch.testing.assert_close(tangent_mean(point.repeat(4, 1), ball), point[0])
