"""The Categorizer's batch bookkeeping: flatten many requests, split the results back."""

from __future__ import annotations

import pytest

from scale_ray.models.hypcd.batching import BatchStats, flatten_requests, split_results


def test_flatten_and_split_round_trip() -> None:
    requests = [
        (["TESCO STORES 1", "NETFLIX.COM"], ["alice", "alice"]),
        ([], []),
        (["UBER *TRIP"], ["bob"]),
        (["SHELL 123", "BOOTS", "COSTA"], [None, "carol", None]),
    ]
    texts, users, offsets = flatten_requests(requests)
    assert texts == [
        "TESCO STORES 1", "NETFLIX.COM", "UBER *TRIP", "SHELL 123", "BOOTS", "COSTA",
    ]  # fmt: skip
    assert users == ["alice", "alice", "bob", None, "carol", None]
    assert offsets == [0, 2, 2, 3, 6]
    # One result per text, tagged with its user: each request gets exactly its own back.
    results = [f"{u}:{t}" for t, u in zip(texts, users, strict=True)]
    split = split_results(results, offsets)
    assert split == [
        ["alice:TESCO STORES 1", "alice:NETFLIX.COM"],
        [],
        ["bob:UBER *TRIP"],
        ["None:SHELL 123", "carol:BOOTS", "None:COSTA"],
    ]
    for (req_texts, _), got in zip(requests, split, strict=True):
        assert len(got) == len(req_texts)


def test_missing_user_ids_pad_with_none() -> None:
    texts, users, offsets = flatten_requests([(["a", "b"], []), (["c"], ["u"])])
    assert (texts, users, offsets) == (["a", "b", "c"], [None, None, "u"], [0, 2, 3])


def test_more_users_than_texts_is_a_bug() -> None:
    with pytest.raises(ValueError, match="2 user ids for 1 texts"):
        flatten_requests([(["a"], ["u", "v"])])


def test_empty_batch() -> None:
    assert flatten_requests([]) == ([], [], [0])
    assert split_results([], [0]) == []


def test_split_rejects_offsets_that_do_not_cover_the_results() -> None:
    with pytest.raises(ValueError):
        split_results([1, 2, 3], [0, 2])
    with pytest.raises(ValueError):
        split_results([1, 2], [1, 2])
    with pytest.raises(ValueError):
        split_results([1], [])


def test_duplicate_texts_across_requests_keep_their_own_user() -> None:
    """Two users asking about one merchant in one batch each get their own row."""
    texts, users, offsets = flatten_requests([(["TESCO"], ["alice"]), (["TESCO"], ["bob"])])
    assert texts == ["TESCO", "TESCO"] and users == ["alice", "bob"]
    assert split_results(list(zip(texts, users, strict=True)), offsets) == [
        [("TESCO", "alice")],
        [("TESCO", "bob")],
    ]


def test_batch_stats() -> None:
    stats = BatchStats()
    assert stats.to_json()["mean_requests_per_batch"] == 0.0
    stats.record(1, 3)
    stats.record(3, 10)
    stats.record(1, 1)
    out = stats.to_json()
    assert out["batches"] == 3 and out["requests"] == 5 and out["texts"] == 14
    assert out["max_requests_per_batch"] == 3 and out["max_texts_per_batch"] == 10
    assert out["requests_per_batch"] == {"1": 2, "3": 1}
    assert out["mean_requests_per_batch"] == pytest.approx(5 / 3, abs=1e-3)
