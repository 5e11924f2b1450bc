"""The embedding cache: LRU order, hit/miss accounting, and encoding only the unique misses."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from scale_ray.models.hypcd.cache import EmbeddingCache, embed_with_cache


class CountingEncoder:
    """A real (deterministic) encoder: a key's vector is derived from its characters."""

    def __init__(self, dim: int = 4) -> None:
        self.dim = dim
        self.calls: list[list[str]] = []

    def __call__(self, keys: list[str]) -> np.ndarray:
        self.calls.append(list(keys))
        out = np.zeros((len(keys), self.dim), dtype=np.float64)
        for row, key in enumerate(keys):
            for col, ch in enumerate(key):
                out[row, col % self.dim] += ord(ch)
        return out


def test_lru_evicts_least_recently_used() -> None:
    cache = EmbeddingCache(capacity=2)
    cache.put_many(["a", "b"], np.eye(2))
    values, misses = cache.get_many(["a"])  # "a" becomes most recent
    assert misses == [] and values[0] is not None
    cache.put_many(["c"], np.ones((1, 2)))
    assert len(cache) == 2
    values, misses = cache.get_many(["a", "b", "c"])
    assert misses == [1]  # "b" was evicted
    assert values[1] is None
    np.testing.assert_array_equal(values[0], [1.0, 0.0])
    assert values[2].dtype == np.float32 and values[2].ndim == 1


def test_stats_and_clear() -> None:
    cache = EmbeddingCache(capacity=10)
    cache.put_many(["x"], np.zeros((1, 3)))
    cache.get_many(["x", "y", "x"])
    assert cache.stats() == {"hits": 2, "misses": 1, "size": 1, "capacity": 10}
    cache.clear()
    assert len(cache) == 0
    assert cache.stats() == {"hits": 0, "misses": 0, "size": 0, "capacity": 10}


def test_put_many_validates_and_copies() -> None:
    cache = EmbeddingCache()
    with pytest.raises(ValueError, match="expected a"):
        cache.put_many(["a", "b"], np.zeros((3, 2)))
    with pytest.raises(ValueError, match="capacity"):
        EmbeddingCache(capacity=0)
    batch = np.ones((1, 2), dtype=np.float32)
    cache.put_many(["a"], batch)
    batch[0, 0] = 5.0
    (value,), _ = cache.get_many(["a"])
    np.testing.assert_array_equal(value, [1.0, 1.0])


def test_embed_with_cache_encodes_unique_misses_once() -> None:
    cache = EmbeddingCache()
    encode = CountingEncoder()
    keys = ["tesco stores", "shell kings", "tesco stores", "aldi", "shell kings"]
    first = embed_with_cache(keys, cache, encode)
    assert encode.calls == [["tesco stores", "shell kings", "aldi"]]
    assert first.shape == (5, 4) and first.dtype == np.float32
    np.testing.assert_array_equal(first[0], first[2])
    np.testing.assert_array_equal(first[1], first[4])
    np.testing.assert_allclose(first, encode(keys))
    encode.calls.clear()

    second = embed_with_cache(["aldi", "costa", "costa", "tesco stores"], cache, encode)
    assert encode.calls == [["costa"]]  # only the new key
    np.testing.assert_array_equal(second[0], first[3])
    np.testing.assert_array_equal(second[3], first[0])
    assert cache.stats()["size"] == 4

    encode.calls.clear()
    embed_with_cache(["aldi", "costa"], cache, encode)
    assert encode.calls == []  # all hits: no encode call


def test_embed_with_cache_smaller_than_batch() -> None:
    """A batch larger than the cache is still returned whole and in order."""
    cache = EmbeddingCache(capacity=2)
    encode = CountingEncoder()
    keys = ["a", "bb", "ccc", "a"]
    out = embed_with_cache(keys, cache, encode)
    np.testing.assert_allclose(out, encode(keys))
    assert len(cache) == 2


def test_embed_with_cache_rejects_a_bad_encoder_and_handles_empty() -> None:
    cache = EmbeddingCache()
    with pytest.raises(ValueError, match="one row per key"):
        embed_with_cache(["a", "b"], cache, lambda keys: np.zeros((1, 3)))
    assert embed_with_cache([], cache, CountingEncoder()).shape == (0, 0)


def test_threads_share_the_cache() -> None:
    cache = EmbeddingCache(capacity=50)
    encode = CountingEncoder()
    keys = [f"merchant {i % 80}" for i in range(400)]
    expected = encode(keys)
    results: list[np.ndarray] = []
    lock = threading.Lock()

    def work(offset: int) -> None:
        out = embed_with_cache(keys[offset:] + keys[:offset], cache, encode)
        with lock:
            results.append(np.roll(out, offset, axis=0))

    threads = [threading.Thread(target=work, args=(k * 37,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8
    for out in results:
        np.testing.assert_allclose(out, expected)
    assert len(cache) == 50
