"""The writer's duplicate index: which (user_id, txn_id) keys a bucket already holds."""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc
import pyarrow.dataset as ds

from scale_ray.ledger.keys import key_hashes

_MERGE_AT = 200_000


class BucketKeyIndex:
    """Hashes of the keys in one ``user_bucket`` partition.

    A sorted numpy array holds the bulk (8 bytes a key, vectorized lookups); a small set holds
    what was added since the last merge, so adding a batch never re-sorts the bulk.
    """

    def __init__(self, hashes: np.ndarray | None = None) -> None:
        base = np.unique(hashes) if hashes is not None and len(hashes) else np.empty(0, np.uint64)
        self._base = base.astype(np.uint64, copy=False)
        self._recent: set[int] = set()

    def __len__(self) -> int:
        return len(self._base) + len(self._recent)

    def contains(self, hashes: np.ndarray) -> np.ndarray:
        """Boolean mask: which of ``hashes`` are already present."""
        if len(self._base):
            pos = np.searchsorted(self._base, hashes)
            pos[pos == len(self._base)] = 0
            found = self._base[pos] == hashes
        else:
            found = np.zeros(len(hashes), dtype=bool)
        if self._recent:
            recent = self._recent
            found |= np.fromiter((int(h) in recent for h in hashes), dtype=bool, count=len(hashes))
        return found

    def add(self, hashes: np.ndarray) -> None:
        self._recent.update(int(h) for h in hashes)
        if len(self._recent) >= _MERGE_AT:
            merged = np.concatenate([self._base, np.fromiter(self._recent, np.uint64)])
            self._base = np.unique(merged)
            self._recent.clear()


def load_bucket_index(dataset: ds.Dataset, bucket: int, key_column: str) -> BucketKeyIndex:
    """Read the keys of one bucket partition of a ledger table into an index."""
    table = dataset.to_table(
        columns=["user_id", key_column], filter=pc.field("user_bucket") == bucket
    )
    if table.num_rows == 0:
        return BucketKeyIndex()
    hashes = key_hashes(
        table.column("user_id").to_numpy(zero_copy_only=False),
        table.column(key_column).to_numpy(zero_copy_only=False),
    )
    return BucketKeyIndex(hashes)
