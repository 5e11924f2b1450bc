"""The methods the evaluation compares, behind one small interface.

* :class:`HypCDMethod` — our categorizer (``geometry="hyperbolic"``), or the same MiniLM + head
  trained with Euclidean/cosine geometry (``geometry="euclidean"``): identical architecture,
  views, memory and calibration, so the difference is the geometry alone.
* :class:`TfidfLogReg` — character n-gram TF-IDF and multinomial logistic regression, the strong
  classic baseline for merchant strings.

Every method works on normalized merchants (one model input per distinct merchant, weighted by
how often it occurs), answers a category and a confidence per merchant, calibrates an "unknown"
threshold the same way (the confidence quantile of training merchants scored as if unseen), and
gives features on which its unknown merchants are clustered for discovery.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from scale_ray.models.hypcd.categorizer import (
    HypCDCategorizer,
    InferenceConfig,
    build_training_set,
    fit_categorizer,
)
from scale_ray.models.hypcd.discover import tangent_features
from scale_ray.models.hypcd.normalize import normalize_merchant
from scale_ray.models.hypcd.train import TrainConfig


@dataclass
class Scored:
    """Per distinct merchant key: best class index, confidence, clustering features."""

    keys: list[str]
    best: np.ndarray
    confidence: np.ndarray
    features: np.ndarray


class HypCDMethod:
    key = staticmethod(normalize_merchant)

    def __init__(self, config: TrainConfig, unknown_rate: float = 0.05, n_views: int = 3) -> None:
        self.config = config
        self.name = "hypcd" if config.geometry == "hyperbolic" else "minilm_euclidean"
        self.unknown_rate = unknown_rate
        self.n_views = n_views
        self.model: HypCDCategorizer | None = None
        self.fit_seconds = 0.0

    @property
    def classes(self) -> list[str]:
        assert self.model is not None
        return self.model.classes

    @property
    def threshold(self) -> float:
        assert self.model is not None
        return self.model.inference.unknown_threshold

    def fit(self, texts: Sequence[str], paths: Sequence[str], unlabelled: Sequence[str]) -> None:
        self.model = fit_categorizer(
            texts,
            paths,
            self.config,
            unlabelled=unlabelled,
            n_views=self.n_views,
            inference=InferenceConfig(unknown_rate=self.unknown_rate),
        )
        points = self.model.memory_points.numpy()
        held_out = self.model.probabilities(points, exclude_self=True)
        self.calibration = held_out.max(1)

    def labelled_features(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Training merchants: features, majority category index, weight (1 each)."""
        assert self.model is not None
        points = self.model.memory_points.numpy()
        feats = tangent_features(points, self.config.geometry, self.config.curvature)
        labels = self.model.memory_dist.numpy().argmax(1)
        return feats, labels, np.ones(len(labels))

    def score(self, keys: list[str]) -> Scored:
        assert self.model is not None
        probs, points = self.model.key_probabilities(keys)
        best = probs.argmax(1)
        feats = tangent_features(points, self.config.geometry, self.config.curvature)
        return Scored(keys, best, probs[np.arange(len(keys)), best], feats)


class TfidfLogReg:
    def __init__(
        self,
        unknown_rate: float = 0.05,
        c: float = 10.0,
        seed: int = 0,
        key: Callable[[str], str] = normalize_merchant,
        name: str = "tfidf_logreg",
    ) -> None:
        self.name = name
        self.key = key
        self.unknown_rate = unknown_rate
        self.c = c
        self.seed = seed
        self.classes: list[str] = []
        self.threshold = 0.0

    def _design(self, texts: Sequence[str], paths: Sequence[str]):  # type: ignore[no-untyped-def]
        data = build_training_set(texts, paths, key=self.key)
        rows, cols = np.nonzero(data.counts)
        keys = [data.keys[r] for r in rows]
        return data, keys, cols, data.counts[rows, cols]

    def fit(self, texts: Sequence[str], paths: Sequence[str], unlabelled: Sequence[str]) -> None:
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import StratifiedKFold

        data, keys, y, w = self._design(texts, paths)
        self.classes = data.classes
        extra = [k for k in (self.key(t) for t in unlabelled) if k]
        self.vectorizer = TfidfVectorizer(
            analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=1
        ).fit(list(data.keys) + extra)
        x = self.vectorizer.transform(keys)
        self.model = LogisticRegression(C=self.c, max_iter=300).fit(x, y, sample_weight=w)
        n_comp = max(2, min(64, x.shape[1] - 1, len(data.keys) - 1))
        self.svd = TruncatedSVD(n_comp, random_state=self.seed).fit(
            self.vectorizer.transform(list(data.keys) + extra)
        )
        # Calibrate on merchants held out by key (3 folds), so seen merchants are not "known".
        conf: list[float] = []
        key_ids = np.unique(np.array(keys), return_inverse=True)[1]
        label_count = Counter(y.tolist())
        strat = np.array([yy if label_count[yy] >= 3 else -1 for yy in y])
        folds = StratifiedKFold(3, shuffle=True, random_state=self.seed)
        uniq = np.unique(key_ids)
        first = {k: i for i, k in reversed(list(enumerate(key_ids)))}
        key_label = np.array([strat[first[k]] for k in uniq])
        for _, hold in folds.split(uniq, key_label):
            held = np.isin(key_ids, uniq[hold])
            part = LogisticRegression(C=self.c, max_iter=200).fit(
                x[~held], y[~held], sample_weight=w[~held]
            )
            probs = part.predict_proba(x[held])
            conf.extend(probs.max(1).tolist())
        self.threshold = float(np.quantile(conf, self.unknown_rate)) if conf else 0.0
        self.calibration = np.array(conf)
        self._train_keys = list(data.keys)
        self._train_labels = data.counts.argmax(1)

    def labelled_features(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        feats = self.svd.transform(self.vectorizer.transform(self._train_keys))
        feats = feats / np.linalg.norm(feats, axis=1, keepdims=True).clip(1e-9)
        return feats, self._train_labels, np.ones(len(feats))

    def score(self, keys: list[str]) -> Scored:
        x = self.vectorizer.transform(keys)
        probs = self.model.predict_proba(x)
        best_local = probs.argmax(1)
        best = self.model.classes_[best_local]
        feats = self.svd.transform(x)
        feats = feats / np.linalg.norm(feats, axis=1, keepdims=True).clip(1e-9)
        return Scored(keys, best, probs[np.arange(len(keys)), best_local], feats)
