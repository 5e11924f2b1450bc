"""Training the HypCD head on cached backbone features of several text views.

One training example is one normalized merchant with its majority label (or ``-1`` when it is
unlabelled, as in generalized category discovery, where the unlabelled pool holds merchants of
both known and unknown categories). Its views are precomputed backbone embeddings of the clean
merchant and of descriptor-noise variants; dropout in the head adds a second kind of view. Each
step draws two different views per example and applies the hybrid loss.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from scale_ray.models.hypcd.backbone import EMBEDDING_DIM
from scale_ray.models.hypcd.hyperbolic import clip_features
from scale_ray.models.hypcd.loss import LossWeights, hybrid_loss, ramp
from scale_ray.models.hypcd.model import ProjectionHead

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    geometry: str = "hyperbolic"
    epochs: int = 60
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    hidden_dim: int = 768
    out_dim: int = 128
    dropout: float = 0.1
    curvature: float = 0.1
    clip_r: float = 2.3
    #: λ ramps from 0 at ``lambda_start`` to ``lambda_max`` at ``lambda_end`` (fractions of
    #: the epochs).
    lambda_start: float = 0.0
    lambda_end: float = 0.6
    lambda_max: float = 1.0
    loss: LossWeights = field(default_factory=LossWeights)
    #: Weight of the prototype classifier's cross-entropy (leaf, and group via group prototypes).
    cls_weight: float = 1.0
    cls_group_weight: float = 0.5
    cls_temperature: float = 0.1
    #: Fine-tune MiniLM's last transformer layer with the head (at ``lr · finetune_lr_scale``).
    finetune_last_layer: bool = False
    finetune_lr_scale: float = 0.1
    seed: int = 0
    threads: int = 0

    def to_json(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, object]) -> TrainConfig:
        values = dict(raw)
        loss = values.pop("loss", None)
        weights = LossWeights(**loss) if isinstance(loss, dict) else LossWeights()
        return cls(loss=weights, **values)  # type: ignore[arg-type]


def build_head(in_dim: int, config: TrainConfig, n_classes: int = 0) -> ProjectionHead:
    return ProjectionHead(
        n_classes=n_classes,
        in_dim=in_dim,
        hidden_dim=config.hidden_dim,
        out_dim=config.out_dim,
        dropout=config.dropout,
        geometry=config.geometry,
        curvature=config.curvature,
        clip_r=config.clip_r,
    )


def group_prototypes(
    head: ProjectionHead, class_groups: torch.Tensor, n_groups: int
) -> torch.Tensor:
    """A group's prototype: the tangent mean of its categories' prototypes, mapped to the ball."""
    leaf = head.prototypes
    if head.geometry == "hyperbolic":
        leaf = clip_features(leaf, head.clip_r)
    onehot = torch.nn.functional.one_hot(class_groups, n_groups).float()  # (C, G)
    mean = (onehot.T @ leaf) / onehot.sum(0).clamp_min(1.0)[:, None]
    return head.project(mean)


def _soft_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return -(target * torch.log_softmax(logits, dim=1)).sum(1).mean()


def train_head(
    views: np.ndarray,
    targets: np.ndarray,
    class_groups: np.ndarray,
    config: TrainConfig,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    tuner: torch.nn.Module | None = None,
    states: torch.Tensor | None = None,
    masks: torch.Tensor | None = None,
) -> tuple[ProjectionHead, list[dict[str, float]]]:
    """Fit a head and its category prototypes (and MiniLM's last layer, given ``tuner``).

    ``views`` is (n, V, d): V backbone embeddings per example. ``targets`` is (n, C): how
    often each example (a merchant) carried each category; an all-zero row is unlabelled.
    Different transactions of one merchant can carry different categories, so the classifier
    learns the merchant's label distribution (soft targets) while the contrastive terms use its
    majority label. ``class_groups`` (C,) gives each category's parent group.
    """
    if views.ndim != 3 or views.shape[0] != len(targets):
        raise ValueError("views must be (n, V, d) with one target row per example")
    if config.threads:
        torch.set_num_threads(config.threads)
    gen = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    n, n_views, dim = views.shape
    if tuner is not None:
        dim = EMBEDDING_DIM
    n_classes = targets.shape[1]
    cgroups = torch.as_tensor(class_groups, dtype=torch.long)
    n_groups = int(cgroups.max()) + 1 if n_classes else 0
    head = build_head(dim, config, n_classes)
    feats = torch.from_numpy(np.ascontiguousarray(views, dtype=np.float32))
    tgt = torch.as_tensor(targets, dtype=torch.float32)
    mass = tgt.sum(1)
    labelled = mass > 0
    q_all = tgt / mass.clamp_min(1.0)[:, None]
    y_all = torch.where(labelled, tgt.argmax(1), torch.full((n,), -1))
    g_all = torch.where(labelled, cgroups[y_all.clamp_min(0)], torch.full((n,), -1))
    onehot_groups = torch.nn.functional.one_hot(cgroups, max(n_groups, 1)).float()
    groups_ = [{"params": list(head.parameters())}]
    if tuner is not None:
        if states is None or masks is None:
            raise ValueError("fine-tuning needs the token states and masks of every view")
        tuner.train()
        groups_.append(
            {"params": list(tuner.parameters()), "lr": config.lr * config.finetune_lr_scale}
        )

    def features(idx: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if tuner is None:
            return feats[idx, v]
        return tuner(states[idx, v], masks[idx, v])

    opt = torch.optim.AdamW(groups_, lr=config.lr, weight_decay=config.weight_decay)
    batch = min(config.batch_size, n)
    steps_per_epoch = max(1, math.ceil(n / batch))
    total = steps_per_epoch * config.epochs
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total, eta_min=config.lr * 1e-2)
    history: list[dict[str, float]] = []
    hyperbolic = config.geometry == "hyperbolic"
    tau = config.cls_temperature
    head.train()
    for epoch in range(config.epochs):
        started = time.perf_counter()
        lam = (
            ramp(
                epoch,
                config.lambda_start * config.epochs,
                config.lambda_end * config.epochs,
                config.lambda_max,
            )
            if hyperbolic
            else 0.0
        )
        order = torch.randperm(n, generator=gen)
        totals = {"loss": 0.0, "angle": 0.0, "distance": 0.0, "cls": 0.0}
        for step in range(steps_per_epoch):
            idx = order[step * batch : (step + 1) * batch]
            if len(idx) < 2:
                continue
            v1 = torch.randint(0, n_views, (len(idx),), generator=gen)
            shift = torch.randint(1, max(2, n_views), (len(idx),), generator=gen)
            v2 = (v1 + shift) % n_views if n_views > 1 else v1
            z1 = head(features(idx, v1))
            z2 = head(features(idx, v2))
            loss, parts = hybrid_loss(
                z1, z2, y_all[idx], g_all[idx], lam, config.curvature, config.loss
            )
            lab = labelled[idx]
            cls = loss.new_zeros(())
            if n_classes and config.cls_weight > 0 and bool(lab.any()):
                z = torch.cat([z1[lab], z2[lab]])
                q = torch.cat([q_all[idx][lab]] * 2)
                cls = _soft_ce(head.similarity(z, head.prototype_points()) / tau, q)
                if config.cls_group_weight > 0:
                    gp = group_prototypes(head, cgroups, n_groups)
                    cls = cls + config.cls_group_weight * _soft_ce(
                        head.similarity(z, gp) / tau, q @ onehot_groups
                    )
                loss = loss + config.cls_weight * cls
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite HypCD loss at epoch {epoch}: {parts}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for g in groups_ for p in g["params"]], 5.0)
            opt.step()
            sched.step()
            totals["loss"] += float(loss.detach())
            totals["angle"] += parts["angle"]
            totals["distance"] += parts["distance"]
            totals["cls"] += float(cls.detach())
        record = {k: v / steps_per_epoch for k, v in totals.items()}
        record.update(epoch=epoch, lambda_=lam, seconds=time.perf_counter() - started)
        history.append(record)
        if on_epoch is not None:
            on_epoch(epoch, record)
    head.eval()
    if tuner is not None:
        tuner.eval()
    return head, history


@torch.no_grad()
def embed(
    head: ProjectionHead,
    features: np.ndarray,
    batch_size: int = 4096,
) -> np.ndarray:
    """Ball (or unit-sphere) points for (n, d) backbone features, in eval mode."""
    head.eval()
    out = []
    for start in range(0, len(features), batch_size):
        chunk = torch.from_numpy(np.ascontiguousarray(features[start : start + batch_size]))
        out.append(head(chunk.float()).numpy())
    if not out:
        return np.zeros((0, head.mlp[-1].out_features), dtype=np.float32)
    return np.concatenate(out).astype(np.float32)
