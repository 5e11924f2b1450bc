"""Stable keys: user buckets, writer shards, content-derived transaction ids, key hashes."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd


def user_bucket(user_id: str, num_buckets: int) -> int:
    """Stable bucket of a user (blake2b, not Python's salted ``hash``)."""
    digest = hashlib.blake2b(user_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % num_buckets


def shard_of_bucket(bucket: int, shards: int) -> int:
    """The LedgerWriter shard that owns ``bucket``: exactly one writer per bucket."""
    return bucket % shards


def key_hashes(
    user_ids: Sequence[str] | np.ndarray, txn_ids: Sequence[str] | np.ndarray
) -> np.ndarray:
    """64-bit hashes of ``(user_id, txn_id)`` pairs, vectorized (SipHash with a fixed key).

    The writer's duplicate index stores these. A false "duplicate" needs a 64-bit collision
    within one bucket: below 1e-12 per write at ten million keys per bucket.
    """
    users = np.asarray(user_ids, dtype=object)
    txns = np.asarray(txn_ids, dtype=object)
    joined = users + "\x1f" + txns
    return pd.util.hash_array(joined).astype(np.uint64, copy=False)


def derive_txn_ids(contents: Iterable[tuple[str, ...]]) -> list[str]:
    """Ids for rows whose source gives none: a hash of the row's content plus its occurrence.

    Two identical coffees on one day in one statement get different ids (occurrence 0 and 1),
    while importing the same statement again yields the same ids, so it deduplicates.
    """
    seen: Counter[tuple[str, ...]] = Counter()
    out: list[str] = []
    for content in contents:
        occurrence = seen[content]
        seen[content] += 1
        payload = "\x1f".join((*content, str(occurrence))).encode("utf-8")
        out.append("h-" + hashlib.sha256(payload).hexdigest()[:32])
    return out
