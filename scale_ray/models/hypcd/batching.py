"""Request batching for the ``Categorizer`` deployment, as plain functions.

Serve's ``@serve.batch`` hands a method a list of requests and wants one result per request back,
in order. Each categorize request carries several descriptions (with the user of each), so the
deployment flattens every request of a batch into one list, makes one ``model.predict`` call
(one MiniLM forward pass over the batch's unique uncached merchants), and cuts the flat results
back into per-request lists. Keeping that bookkeeping here, away from Serve, lets it be tested
directly: Serve's local testing mode cannot run ``@serve.batch`` in Ray 2.60.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from itertools import pairwise
from typing import TypeVar

T = TypeVar("T")

#: One categorize request: descriptions, and the user of each (``None``: no user memory).
Request = tuple[Sequence[str], Sequence[str | None]]


def flatten_requests(
    requests: Sequence[Request],
) -> tuple[list[str], list[str | None], list[int]]:
    """``(texts, user_ids, offsets)`` of a batch; request ``i`` owns
    ``texts[offsets[i]:offsets[i + 1]]`` (``offsets`` has ``len(requests) + 1`` entries).

    A request whose ``user_ids`` is shorter than its texts (e.g. empty) pads with ``None``; one
    that is longer is a caller bug and raises ``ValueError``.
    """
    texts: list[str] = []
    users: list[str | None] = []
    offsets = [0]
    for request_texts, request_users in requests:
        n = len(request_texts)
        if len(request_users) > n:
            raise ValueError(f"{len(request_users)} user ids for {n} texts")
        texts.extend(request_texts)
        users.extend(request_users)
        users.extend([None] * (n - len(request_users)))
        offsets.append(len(texts))
    return texts, users, offsets


def split_results(results: Sequence[T], offsets: Sequence[int]) -> list[list[T]]:
    """The flat ``results`` cut back into one list per request (inverse of the flattening)."""
    if not offsets or offsets[0] != 0 or offsets[-1] != len(results):
        raise ValueError(f"offsets do not cover {len(results)} results")
    return [list(results[a:b]) for a, b in pairwise(offsets)]


class BatchStats:
    """Sizes of the batches a replica has run: requests per batch and texts per batch."""

    def __init__(self) -> None:
        self.batches = 0
        self.requests = 0
        self.texts = 0
        self.max_requests = 0
        self.max_texts = 0
        #: How many batches held each number of requests (1, 2, 3, …).
        self.request_histogram: Counter[int] = Counter()

    def record(self, n_requests: int, n_texts: int) -> None:
        self.batches += 1
        self.requests += n_requests
        self.texts += n_texts
        self.max_requests = max(self.max_requests, n_requests)
        self.max_texts = max(self.max_texts, n_texts)
        self.request_histogram[n_requests] += 1

    def to_json(self) -> dict[str, object]:
        return {
            "batches": self.batches,
            "requests": self.requests,
            "texts": self.texts,
            "mean_requests_per_batch": round(self.requests / self.batches, 3)
            if self.batches
            else 0.0,
            "max_requests_per_batch": self.max_requests,
            "max_texts_per_batch": self.max_texts,
            "requests_per_batch": {str(k): v for k, v in sorted(self.request_histogram.items())},
        }
