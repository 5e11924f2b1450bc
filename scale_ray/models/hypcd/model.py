"""The trainable part of HypCD: a projection head from MiniLM space onto the Poincaré ball.

MiniLM's embeddings all have length 1, so mapping them straight onto the ball would put every
merchant at the same distance from the origin and leave no room for the hierarchy (general near
the centre, specific near the rim). The head (an MLP, as in the paper's DINO head) learns both
direction and norm; its output is clipped and sent through ``expmap0``.

``geometry="euclidean"`` gives the baseline with the same head: the output is L2-normalized and
compared by cosine, as in Euclidean/spherical GCD.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
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
#: Hashed character n-grams: the lexical channel beside MiniLM (see :class:`ProjectionHead`).
LEXICAL_BUCKETS = 1 << 17
_lexical_vectorizer = None


def lexical_features(texts: Sequence[str]) -> sp.csr_matrix:
    """Hashed, L2-normalized character 2–4-grams of (normalized) merchant strings.

    Bank descriptors are truncated and garbled ("beeches road servi", "tesco stores 5504");
    sub-word pieces such as "tesc" or "servi" survive where a sentence encoder's tokens do not.
    """
    global _lexical_vectorizer
    if _lexical_vectorizer is None:
        from sklearn.feature_extraction.text import HashingVectorizer

        _lexical_vectorizer = HashingVectorizer(
            analyzer="char_wb",
            ngram_range=(2, 4),
            n_features=LEXICAL_BUCKETS,
            alternate_sign=False,
            norm="l2",
            dtype=np.float32,
        )
    return _lexical_vectorizer.transform(list(texts)).tocsr()


def sparse_rows(matrix: sp.csr_matrix) -> torch.Tensor:
    coo = matrix.tocoo()
    indices = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
    values = torch.from_numpy(coo.data.astype(np.float32))
    return torch.sparse_coo_tensor(indices, values, size=coo.shape)


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
        lexical_dim: int = 64,
        residual: bool = False,
    ) -> None:
        super().__init__()
        if geometry not in GEOMETRIES:
            raise ValueError(f"geometry must be one of {GEOMETRIES}, not {geometry!r}")
        self.geometry = geometry
        self.curvature = curvature
        self.clip_r = clip_r
        self.input_dropout = nn.Dropout(dropout)
        self.lexical_dim = lexical_dim
        #: A scaled skip connection from MiniLM space (needs ``out_dim == in_dim``): the ball
        #: starts from the encoder's neighbourhoods and the MLP learns corrections, so merchants
        #: never seen in training keep the neighbours MiniLM gives them.
        self.residual = residual
        if residual and out_dim != in_dim:
            raise ValueError("a residual head needs out_dim == in_dim")
        self.skip_scale = nn.Parameter(torch.tensor(1.0))
        #: A sparse linear map of hashed n-grams (fastText-style); 0 turns the channel off.
        self.lexical = nn.Parameter(torch.randn(LEXICAL_BUCKETS, lexical_dim) * 0.05)
        self.mlp = nn.Sequential(
            nn.Linear(in_dim + lexical_dim, hidden_dim),
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

    def tangent(self, x: torch.Tensor, lex: torch.Tensor | None = None) -> torch.Tensor:
        """Head output before the ball (the tangent vector at the origin).

        ``x`` is (n, 384) MiniLM features; ``lex`` an (n, LEXICAL_BUCKETS) sparse tensor of
        :func:`lexical_features` (required when ``lexical_dim > 0``).
        """
        parts = [self.input_dropout(x)]
        if self.lexical_dim:
            if lex is None:
                raise ValueError("this head has a lexical channel: pass lexical features")
            parts.append(torch.sparse.mm(lex, self.lexical))
        out = self.mlp(torch.cat(parts, dim=1))
        if self.residual:
            out = out + self.skip_scale * x
        return out

    def forward(self, x: torch.Tensor, lex: torch.Tensor | None = None) -> torch.Tensor:
        return self.project(self.tangent(x, lex))
