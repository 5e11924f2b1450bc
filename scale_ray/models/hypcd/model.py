"""The trainable part of HypCD: a projection head from MiniLM space onto the Poincaré ball.

MiniLM's embeddings all have length 1, so mapping them straight onto the ball would put every
merchant at the same distance from the origin and leave no room for the hierarchy (general near
the centre, specific near the rim). The head (an MLP, as in the paper's DINO head) learns both
direction and norm; its output is clipped and sent through ``expmap0``.

``geometry="euclidean"`` gives the baseline with the same head: the output is L2-normalized and
compared by cosine, as in Euclidean/spherical GCD.
"""

from __future__ import annotations

import torch
from torch import nn

from scale_ray.models.hypcd.hyperbolic import (
    DEFAULT_CLIP_R,
    DEFAULT_CURVATURE,
    make_ball,
    pairwise_dist,
    to_ball,
)

GEOMETRIES = ("hyperbolic", "euclidean")


class ProjectionHead(nn.Module):
    def __init__(
        self,
        in_dim: int = 384,
        hidden_dim: int = 768,
        out_dim: int = 128,
        dropout: float = 0.1,
        geometry: str = "hyperbolic",
        curvature: float = DEFAULT_CURVATURE,
        clip_r: float = DEFAULT_CLIP_R,
        n_classes: int = 0,
    ) -> None:
        super().__init__()
        if geometry not in GEOMETRIES:
            raise ValueError(f"geometry must be one of {GEOMETRIES}, not {geometry!r}")
        self.geometry = geometry
        self.curvature = curvature
        self.clip_r = clip_r
        self.input_dropout = nn.Dropout(dropout)
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, out_dim),
        )
        self.ball = make_ball(curvature)
        #: Category prototypes, stored as tangent vectors at the origin and mapped onto the ball
        #: like features (so they obey the same clipping and never reach the boundary).
        self.prototypes = nn.Parameter(torch.randn(n_classes, out_dim) * 0.01)

    def set_prototypes(self, tangent: torch.Tensor) -> None:
        """Replace the prototypes (e.g. with class means), keeping the parameter object."""
        with torch.no_grad():
            self.prototypes.data = tangent.detach().clone().float()

    def prototype_points(self) -> torch.Tensor:
        return self.project(self.prototypes)

    def project(self, v: torch.Tensor) -> torch.Tensor:
        if self.geometry == "euclidean":
            return nn.functional.normalize(v, dim=-1)
        return to_ball(v, self.ball, self.clip_r)

    def similarity(self, z: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Negative hyperbolic distance (cosine for the Euclidean baseline): higher is closer."""
        if self.geometry == "euclidean":
            return z @ points.T
        return -pairwise_dist(z, points, self.curvature)

    def tangent(self, x: torch.Tensor) -> torch.Tensor:
        """Head output before the ball (the tangent vector at the origin)."""
        return self.mlp(self.input_dropout(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.tangent(x))
