"""The HypCD categorizer: merchant strings in, category paths with confidence out.

Pipeline for one description: :func:`normalize_merchant` → MiniLM embedding (cached by the
normalized merchant, since merchants repeat) → projection head → clip → ``expmap0`` on the
Poincaré ball. A category is chosen from two sources, both measured by hyperbolic distance:

* **prototypes**, one per category, learned with the head (the group's prototype is the tangent
  mean of its categories', so groups sit nearer the origin than their categories);
* **memory** of the training merchants: a merchant seen in training is its own nearest neighbour,
  so it gets the categories it actually carried (merchants often carry several), while a new
  merchant borrows from its neighbours on the ball.

The blend's top probability is the confidence. Below the calibrated threshold the answer is
"unknown" (``Uncategorized``), and unknown merchants are what :mod:`discover` clusters into new
categories. **User memory** sits on top: a user's own labels for a merchant (their corrections and
rules) win at once, before any retraining; they are also training rows for the next version.
"""

from __future__ import annotations

import json
import logging
import random
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scale_ray.models.hypcd.backbone import (
    BACKBONE_NAME,
    MiniLMEncoder,
    last_layer_tuner,
    prefix_states,
)
from scale_ray.models.hypcd.cache import EmbeddingCache, embed_with_cache
from scale_ray.models.hypcd.hyperbolic import pairwise_dist
from scale_ray.models.hypcd.model import ProjectionHead
from scale_ray.models.hypcd.normalize import descriptor_noise, normalize_merchant
from scale_ray.models.hypcd.train import TrainConfig, build_head, embed, train_head
from scale_ray.taxonomy import UNCATEGORIZED

log = logging.getLogger(__name__)

#: 2: the head lost its experimental lexical channel and skip connection (their parameters).
FORMAT_VERSION = 2
_HEAD_FILE = "head.pt"
_META_FILE = "categorizer.json"
_MEMORY_FILE = "memory.npz"
_TUNER_FILE = "last_layer.pt"


@dataclass(frozen=True)
class CategoryPrediction:
    """One description's category. ``path`` is ``Uncategorized`` when ``known`` is false."""

    merchant: str
    path: str
    group: str
    confidence: float
    known: bool
    source: str = "model"
    #: The most likely category even when below the threshold (for review queues).
    candidate: str = ""
    novel_cluster: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "merchant": self.merchant,
            "category": self.path,
            "group": self.group,
            "confidence": round(self.confidence, 4),
            "known": self.known,
            "source": self.source,
            "candidate": self.candidate,
            "novel_cluster": self.novel_cluster,
        }


@dataclass(frozen=True)
class InferenceConfig:
    #: Neighbours from the training memory, and the temperature of their distance weights.
    #: Chosen on a validation split (train Dec 2016–Jun 2017, validate Jul–Aug 2017 of the
    #: Birmingham cards): 0.684 leaf accuracy against 0.678 for k=10, τ=0.2, memory only.
    k: int = 20
    knn_temperature: float = 0.5
    #: Weight of the memory in the blend (the rest is the prototype classifier).
    memory_weight: float = 0.7
    #: Below this top probability the answer is unknown (calibrated at fit time).
    unknown_threshold: float = 0.0
    #: Fraction of held-out training merchants that calibration may call unknown.
    unknown_rate: float = 0.05
    #: A merchant seen in training keeps this share of its own label distribution.
    exact_weight: float = 0.8


def _group_of(path: str) -> str:
    return path.split("/", 1)[0]


class UserMemory:
    """Per-user labels by normalized merchant: a correction or rule applies at once.

    Bounded per user; the newest label for a merchant wins outright (a correction is an
    instruction, not a vote), older labels only break ties.
    """

    def __init__(self, max_merchants_per_user: int = 10_000) -> None:
        self._labels: dict[str, OrderedDict[str, str]] = {}
        self._max = max_merchants_per_user
        self._lock = threading.Lock()

    def remember(self, user_id: str, text: str, path: str) -> str:
        key = normalize_merchant(text)
        if not key:
            return key
        with self._lock:
            labels = self._labels.setdefault(user_id, OrderedDict())
            labels[key] = path
            labels.move_to_end(key)
            while len(labels) > self._max:
                labels.popitem(last=False)
        return key

    def forget(self, user_id: str, text: str) -> None:
        with self._lock:
            self._labels.get(user_id, OrderedDict()).pop(normalize_merchant(text), None)

    def lookup(self, user_id: str, key: str) -> str | None:
        with self._lock:
            return self._labels.get(user_id, {}).get(key)

    def examples(self) -> list[tuple[str, str]]:
        """(merchant, path) pairs of every user: training rows for the next version."""
        with self._lock:
            return [(k, p) for labels in self._labels.values() for k, p in labels.items()]


class HypCDCategorizer:
    """A trained categorizer; thread-safe for concurrent :meth:`predict` calls."""

    def __init__(
        self,
        head: ProjectionHead,
        classes: list[str],
        memory_keys: list[str],
        memory_points: np.ndarray,
        memory_counts: np.ndarray,
        config: TrainConfig,
        inference: InferenceConfig,
        names: dict[str, str] | None = None,
        version: str = "unversioned",
        metrics: dict[str, Any] | None = None,
        encoder: MiniLMEncoder | None = None,
        cache: EmbeddingCache | None = None,
        tuner: torch.nn.Module | None = None,
    ) -> None:
        self.head = head.eval()
        #: MiniLM's fine-tuned last layer, when the model was trained with one.
        self.tuner = tuner.eval() if tuner is not None else None
        self.classes = classes
        self.groups = sorted({_group_of(c) for c in classes})
        self.class_groups = np.array([self.groups.index(_group_of(c)) for c in classes])
        self.names = dict(names or {})
        self.memory_keys = memory_keys
        self._memory_index = {k: i for i, k in enumerate(memory_keys)}
        self.memory_points = torch.from_numpy(np.ascontiguousarray(memory_points, np.float32))
        counts = np.asarray(memory_counts, np.float32)
        self.memory_dist = torch.from_numpy(counts / counts.sum(1, keepdims=True).clip(1e-9))
        self.config = config
        self.inference = inference
        self.version = version
        self.metrics = dict(metrics or {})
        self.encoder = encoder or MiniLMEncoder()
        self.cache = cache or EmbeddingCache()
        self.user_memory = UserMemory()
        self._predictions: OrderedDict[str, tuple[np.ndarray, int, float]] = OrderedDict()
        self._pred_capacity = 200_000
        #: Raw text → normalized key, least recently used first (same capacity).
        self._text_keys: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()
        with torch.no_grad():
            self._prototypes = head.prototype_points().detach()

    # ------------------------------------------------------------------ features
    def backbone(self, keys: Sequence[str]) -> np.ndarray:
        """MiniLM embeddings of normalized merchants, through the embedding cache."""
        if self.tuner is not None:
            tuner = self.tuner
            return embed_with_cache(
                list(keys), self.cache, lambda texts: tuner.encode(self.encoder, texts)
            )
        return embed_with_cache(list(keys), self.cache, self.encoder.encode)

    def ball_points(self, keys: Sequence[str]) -> np.ndarray:
        """Points on the ball (unit sphere for a Euclidean model) of normalized merchants."""
        return embed(self.head, self.backbone(keys))

    # ------------------------------------------------------------------ scoring
    @torch.no_grad()
    def probabilities(self, points: np.ndarray, exclude_self: bool = False) -> np.ndarray:
        """(n, C) category probabilities: the memory/prototype blend described above."""
        z = torch.from_numpy(np.ascontiguousarray(points, np.float32))
        tau = self.config.cls_temperature
        proto = torch.softmax(self.head.similarity(z, self._prototypes) / tau, dim=1)
        cfg = self.inference
        if cfg.memory_weight <= 0 or len(self.memory_keys) == 0:
            return proto.numpy()
        sim = self.head.similarity(z, self.memory_points)
        if exclude_self:
            sim = sim.masked_fill(sim >= sim.max(dim=1, keepdim=True).values, float("-inf"))
        k = min(cfg.k, sim.shape[1])
        top = sim.topk(k, dim=1)
        weights = torch.exp((top.values - top.values[:, :1]) / cfg.knn_temperature)
        weights = torch.nan_to_num(weights, nan=0.0)
        votes = (weights[:, :, None] * self.memory_dist[top.indices]).sum(1)
        votes = votes / votes.sum(1, keepdim=True).clamp_min(1e-9)
        return (cfg.memory_weight * votes + (1 - cfg.memory_weight) * proto).numpy()

    def key_probabilities(self, keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities, ball points) of normalized merchants.

        A merchant seen in training is its own nearest neighbour; its own label distribution
        then gets ``exact_weight`` so that near neighbours cannot outvote what it actually was.
        """
        points = self.ball_points(keys)
        probs = self.probabilities(points)
        w = self.inference.exact_weight
        if w > 0:
            rows = [
                (i, self._memory_index[k]) for i, k in enumerate(keys) if k in self._memory_index
            ]
            if rows:
                at, mem = np.array(rows).T
                probs[at] = w * self.memory_dist.numpy()[mem] + (1 - w) * probs[at]
        return probs, points

    def _score_keys(self, keys: list[str]) -> dict[str, tuple[np.ndarray, int, float]]:
        """Top-3 classes, best class and confidence per unique key (cached per model)."""
        out: dict[str, tuple[np.ndarray, int, float]] = {}
        missing: list[str] = []
        cached = self._predictions.get
        with self._lock:
            for key in keys:
                hit = cached(key)
                if hit is None:
                    missing.append(key)
                else:
                    out[key] = hit
        if missing:
            probs, _ = self.key_probabilities(missing)
            best = probs.argmax(1)
            conf = probs[np.arange(len(missing)), best].tolist()
            top3 = np.ascontiguousarray(np.argsort(-probs, axis=1)[:, :3])
            entries = {
                key: (top3[i], b, conf[i])
                for i, (key, b) in enumerate(zip(missing, best.tolist(), strict=True))
            }
            with self._lock:
                self._predictions.update(entries)
                while len(self._predictions) > self._pred_capacity:
                    self._predictions.popitem(last=False)
            out.update(entries)
        return out

    def predict(
        self, texts: Sequence[str], user_ids: Sequence[str | None] | None = None
    ) -> list[CategoryPrediction]:
        """Categories for raw descriptions; ``user_ids`` (one per text) enables user memory.

        Work is per distinct text, not per row: raw text → key goes through an LRU (normalizing
        is the warm path's main cost, and transactions repeat merchants), and rows of one key
        share one (immutable) prediction.
        """
        text_keys = self._text_keys
        unique: dict[str, str] = dict.fromkeys(texts, "")
        fresh: list[str] = []
        with self._lock:
            for text in unique:
                key = text_keys.get(text)
                if key is None:
                    fresh.append(text)
                else:
                    text_keys.move_to_end(text)
                    unique[text] = key
        if fresh:
            normalized = [normalize_merchant(t) for t in fresh]
            with self._lock:
                for text, key in zip(fresh, normalized, strict=True):
                    unique[text] = key
                    text_keys[text] = key
                while len(text_keys) > self._pred_capacity:
                    text_keys.popitem(last=False)
        distinct = set(unique.values())
        scored = self._score_keys(sorted(k for k in distinct if k))
        threshold = self.inference.unknown_threshold
        by_key: dict[str, CategoryPrediction] = {}
        for key in distinct:
            if not key:
                by_key[key] = CategoryPrediction(key, UNCATEGORIZED, UNCATEGORIZED, 0.0, False)
                continue
            _, best, conf = scored[key]
            path = self.classes[best]
            known = conf >= threshold
            by_key[key] = CategoryPrediction(
                merchant=key,
                path=path if known else UNCATEGORIZED,
                group=_group_of(path) if known else UNCATEGORIZED,
                confidence=conf,
                known=known,
                candidate=path,
            )
        if user_ids is None:
            return [by_key[unique[t]] for t in texts]
        out: list[CategoryPrediction] = []
        for i, text in enumerate(texts):
            key = unique[text]
            user = user_ids[i]
            own = self.user_memory.lookup(user, key) if user and key else None
            if own is not None:
                out.append(CategoryPrediction(key, own, _group_of(own), 1.0, True, "user", own))
            else:
                out.append(by_key[key])
        return out

    def remember(self, user_id: str, text: str, path: str) -> None:
        """A user's correction or rule: applies to their next prediction at once."""
        self.user_memory.remember(user_id, text, path)

    def cache_stats(self) -> dict[str, int]:
        stats = self.cache.stats()
        stats["predictions"] = len(self._predictions)
        return stats

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        torch.save(self.head.state_dict(), directory / _HEAD_FILE)
        if self.tuner is not None:
            torch.save(self.tuner.state_dict(), directory / _TUNER_FILE)
        np.savez_compressed(
            directory / _MEMORY_FILE,
            points=self.memory_points.numpy(),
            dist=self.memory_dist.numpy(),
            keys=np.array(self.memory_keys, dtype=object),
        )
        meta = {
            "format": FORMAT_VERSION,
            "backbone": BACKBONE_NAME,
            "version": self.version,
            "classes": self.classes,
            "names": self.names,
            "in_dim": int(self.head.mlp[0].in_features),
            "config": self.config.to_json(),
            "inference": self.inference.__dict__,
            "metrics": self.metrics,
        }
        (directory / _META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
        return directory

    @classmethod
    def load(
        cls, directory: str | Path, version: str | None = None, device: str | None = None
    ) -> HypCDCategorizer:
        directory = Path(directory)
        meta = json.loads((directory / _META_FILE).read_text())
        if meta.get("format") != FORMAT_VERSION:
            raise ValueError(f"unsupported categorizer format in {directory}: {meta.get('format')}")
        config = TrainConfig.from_json(meta["config"])
        head = build_head(int(meta["in_dim"]), config, len(meta["classes"]))
        head.load_state_dict(torch.load(directory / _HEAD_FILE, map_location="cpu"))
        memory = np.load(directory / _MEMORY_FILE, allow_pickle=True)
        encoder = MiniLMEncoder(device)
        tuner = None
        if (directory / _TUNER_FILE).exists():
            tuner = last_layer_tuner(encoder)
            tuner.load_state_dict(torch.load(directory / _TUNER_FILE, map_location="cpu"))
        return cls(
            head=head,
            classes=list(meta["classes"]),
            memory_keys=[str(k) for k in memory["keys"]],
            memory_points=memory["points"],
            memory_counts=memory["dist"],
            config=config,
            inference=InferenceConfig(**meta["inference"]),
            names=meta.get("names") or {},
            version=version or meta.get("version") or directory.name,
            metrics=meta.get("metrics") or {},
            encoder=encoder,
            tuner=tuner,
        )

    # ------------------------------------------------------------------ geometry report
    @torch.no_grad()
    def hierarchy_report(self) -> dict[str, float]:
        """How the hierarchy shows in the ball: group prototypes nearer the origin than their
        categories, and categories of one group nearer each other than to other groups'."""
        from scale_ray.models.hypcd.train import group_prototypes

        groups = torch.as_tensor(self.class_groups)
        gp = group_prototypes(self.head, groups, len(self.groups))
        origin = torch.zeros(1, gp.shape[1])
        c = self.config.curvature
        if self.head.geometry == "hyperbolic":
            leaf_r = pairwise_dist(self._prototypes, origin, c)[:, 0]
            group_r = pairwise_dist(gp, origin, c)[:, 0]
            d = pairwise_dist(self._prototypes, self._prototypes, c)
        else:
            leaf_r = self._prototypes.norm(dim=1)
            group_r = gp.norm(dim=1)
            d = 1 - self._prototypes @ self._prototypes.T
        same = groups[:, None] == groups[None, :]
        off = ~torch.eye(len(groups), dtype=torch.bool)
        within = d[same & off]
        between = d[~same]
        return {
            "leaf_prototype_radius": float(leaf_r.mean()),
            "group_prototype_radius": float(group_r.mean()),
            "within_group_distance": float(within.mean()) if len(within) else 0.0,
            "between_group_distance": float(between.mean()) if len(between) else 0.0,
        }


# ---------------------------------------------------------------------- training
@dataclass
class TrainingSet:
    """Merchant-level training data built from transaction rows."""

    keys: list[str]
    counts: np.ndarray  # (n_merchants, C); zero rows are unlabelled merchants
    classes: list[str]
    raw: list[str] = field(default_factory=list)  # one raw example per merchant, for noise views


def build_training_set(
    texts: Sequence[str],
    paths: Sequence[str],
    unlabelled: Iterable[str] = (),
    key: Callable[[str], str] = normalize_merchant,
) -> TrainingSet:
    classes = sorted(set(paths))
    index = {c: i for i, c in enumerate(classes)}
    per_key: dict[str, Counter[int]] = {}
    raw: dict[str, str] = {}
    for text, path in zip(texts, paths, strict=True):
        k = key(text)
        if not k:
            continue
        per_key.setdefault(k, Counter())[index[path]] += 1
        raw.setdefault(k, text)
    for text in unlabelled:
        k = key(text)
        if k and k not in per_key:
            per_key[k] = Counter()
            raw.setdefault(k, text)
    keys = list(per_key)
    counts = np.zeros((len(keys), len(classes)), np.float32)
    for i, key in enumerate(keys):
        for j, n in per_key[key].items():
            counts[i, j] = n
    return TrainingSet(keys, counts, classes, [raw[k] for k in keys])


def noise_views(
    keys: Sequence[str], raw: Sequence[str], n_views: int, seed: int
) -> list[list[str]]:
    """``n_views`` texts per merchant: the key, then normalized descriptor-noise variants.

    A variant that normalizes back to the key (most do: that is the normalizer's job) is kept
    un-normalized, so every extra view differs from the clean one.
    """
    rng = random.Random(seed)
    views = [list(keys)]
    for _ in range(n_views - 1):
        column = []
        for key, text in zip(keys, raw, strict=True):
            noisy = descriptor_noise(text or key, rng)
            norm = normalize_merchant(noisy)
            column.append(norm if norm and norm != key else noisy.lower())
        views.append(column)
    return views


def fit_categorizer(
    texts: Sequence[str],
    paths: Sequence[str],
    config: TrainConfig | None = None,
    *,
    unlabelled: Iterable[str] = (),
    names: dict[str, str] | None = None,
    n_views: int = 3,
    inference: InferenceConfig | None = None,
    encoder: MiniLMEncoder | None = None,
    cache: EmbeddingCache | None = None,
    version: str = "unversioned",
) -> HypCDCategorizer:
    """Train a categorizer on labelled descriptions (paths "group/category[/sub]").

    ``unlabelled`` descriptions (e.g. a ledger's uncategorized merchants) join the contrastive
    terms only, as in generalized category discovery.
    """
    config = config or TrainConfig()
    inference = inference or InferenceConfig()
    encoder = encoder or MiniLMEncoder()
    cache = cache or EmbeddingCache()
    data = build_training_set(texts, paths, unlabelled)
    if not data.classes or not data.keys:
        raise ValueError("no labelled descriptions to train on")
    view_texts = noise_views(data.keys, data.raw, n_views, config.seed)
    groups = sorted({_group_of(c) for c in data.classes})
    class_groups = np.array([groups.index(_group_of(c)) for c in data.classes])
    tuner = None
    if config.finetune_last_layer:
        tuner = last_layer_tuner(encoder)
        per_view = [prefix_states(encoder, column) for column in view_texts]
        states = torch.stack([s for s, _ in per_view], dim=1)
        masks = torch.stack([m for _, m in per_view], dim=1)
        dense = np.zeros((len(data.keys), n_views, 1), np.float32)  # unused: the tuner embeds
        head, history = train_head(
            dense, data.counts, class_groups, config, None, tuner, states, masks
        )
        del states, masks
        # The cache held frozen-MiniLM vectors; the model's own come from the tuned layer.
        cache = EmbeddingCache(cache.capacity)
        clean = tuner.encode(encoder, data.keys)
    else:
        dense = np.stack(
            [embed_with_cache(column, cache, encoder.encode) for column in view_texts], axis=1
        )
        head, history = train_head(dense, data.counts, class_groups, config)
        clean = dense[:, 0]
    labelled = data.counts.sum(1) > 0
    points = embed(head, clean)
    model = HypCDCategorizer(
        head=head,
        classes=data.classes,
        memory_keys=[k for k, keep in zip(data.keys, labelled, strict=True) if keep],
        memory_points=points[labelled],
        memory_counts=data.counts[labelled],
        config=config,
        inference=inference,
        names=names,
        version=version,
        metrics={"train_loss": history[-1]["loss"] if history else None},
        encoder=encoder,
        cache=cache,
        tuner=tuner,
    )
    model.inference = calibrate_unknown(model, points[labelled], inference.unknown_rate)
    return model


def calibrate_unknown(
    model: HypCDCategorizer, memory_points: np.ndarray, rate: float
) -> InferenceConfig:
    """Pick the confidence threshold so that ``rate`` of training merchants, each scored with
    itself left out of the memory (as if new), would be called unknown."""
    if rate <= 0 or len(memory_points) < 10:
        return model.inference
    probs = model.probabilities(memory_points, exclude_self=True)
    threshold = float(np.quantile(probs.max(1), rate))
    inference = model.inference
    return InferenceConfig(
        k=inference.k,
        knn_temperature=inference.knn_temperature,
        memory_weight=inference.memory_weight,
        unknown_threshold=threshold,
        unknown_rate=rate,
        exact_weight=inference.exact_weight,
    )
