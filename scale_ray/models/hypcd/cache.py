"""An in-process LRU cache of merchant embeddings, keyed by the normalized merchant string.

Transactions repeat merchants heavily (a few thousand distinct keys cover tens of thousands of
rows), and encoding text is the categorizer's dominant cost. :func:`embed_with_cache` therefore
deduplicates a batch, encodes only the keys the cache does not hold (in one ``encode`` call, so
the encoder still sees a batch), and assembles the result in input order. The cache is shared by
the threads of one replica, hence the lock; ``encode`` runs outside it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np


class EmbeddingCache:
    """Thread-safe least-recently-used map: merchant key → 1-D ``float32`` vector."""

    def __init__(self, capacity: int = 200_000) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._data: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)

    def get_many(self, keys: Sequence[str]) -> tuple[list[np.ndarray | None], list[int]]:
        """The cached vector of each key (``None`` when absent) and the indices of the misses."""
        values: list[np.ndarray | None] = []
        misses: list[int] = []
        with self._lock:
            for index, key in enumerate(keys):
                vector = self._data.get(key)
                if vector is None:
                    misses.append(index)
                else:
                    self._data.move_to_end(key)
                values.append(vector)
            self._hits += len(keys) - len(misses)
            self._misses += len(misses)
        return values, misses

    def put_many(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        """Store row ``i`` of the 2-D ``vectors`` under ``keys[i]``, evicting the oldest keys."""
        array = np.asarray(vectors, dtype=np.float32)
        if array.ndim != 2 or array.shape[0] != len(keys):
            raise ValueError(f"expected a ({len(keys)}, d) array, got shape {array.shape}")
        # Copy the rows so a cached vector neither pins the caller's batch nor aliases it.
        rows = [row.copy() for row in array]
        with self._lock:
            for key, row in zip(keys, rows, strict=True):
                self._data[key] = row
                self._data.move_to_end(key)
            while len(self._data) > self.capacity:
                self._data.popitem(last=False)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "hits": self._hits,
                "misses": self._misses,
                "size": len(self._data),
                "capacity": self.capacity,
            }

    def clear(self) -> None:
        """Drop every entry and reset the counters."""
        with self._lock:
            self._data.clear()
            self._hits = 0
            self._misses = 0


def embed_with_cache(
    keys: Sequence[str],
    cache: EmbeddingCache,
    encode: Callable[[list[str]], np.ndarray],
) -> np.ndarray:
    """The ``(len(keys), d)`` float32 embeddings of ``keys``, encoding only uncached unique keys.

    ``encode`` is called at most once, with the distinct missing keys in first-seen order, and
    must return one row per key.
    """
    unique = list(dict.fromkeys(keys))
    values, misses = cache.get_many(unique)
    found: dict[str, np.ndarray] = {
        key: vector for key, vector in zip(unique, values, strict=True) if vector is not None
    }
    if misses:
        missing = [unique[i] for i in misses]
        encoded = np.asarray(encode(missing), dtype=np.float32)
        if encoded.ndim != 2 or encoded.shape[0] != len(missing):
            raise ValueError(
                f"encode returned shape {encoded.shape} for {len(missing)} keys; "
                "expected one row per key"
            )
        cache.put_many(missing, encoded)
        found.update(zip(missing, encoded, strict=True))
    if not keys:
        return np.zeros((0, 0), dtype=np.float32)
    return np.stack([found[key] for key in keys]).astype(np.float32, copy=False)
