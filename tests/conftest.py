"""Shared fixtures: settings on a temporary data root, builders of transaction rows."""

from __future__ import annotations

import os

# Ray reads its auth mode when first imported: keep token auth on (DESIGN §3), as make does.
os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from scale_ray.ingest.records import ParsedTxn
from scale_ray.settings import Settings

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_root=str(tmp_path / "var"), num_buckets=8, writer_shards=2)


def make_txns(
    n: int, *, start: int = 0, prefix: str = "t", account: str = "acc-1"
) -> list[ParsedTxn]:
    base = datetime(2024, 1, 1, 9, 0, tzinfo=UTC)
    return [
        ParsedTxn(
            row_number=i + 1,
            booked_at=base + timedelta(hours=i),
            amount_minor=-(100 + i),
            currency="GBP",
            narration=f"TESCO STORES {i % 7}",
            account_id=account,
            txn_id=f"{prefix}{i}",
        )
        for i in range(start, start + n)
    ]


@pytest.fixture
def txns() -> Callable[..., list[ParsedTxn]]:
    return make_txns


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    """The one local Ray of the test session (4 logical CPUs, one logical GPU, no dashboard).

    Logical CPUs are scheduling tokens, not cores: the session's app holds about 2 of them in
    Serve replicas for the whole run, so with only 2 a later Ray Data or Ray Train test (whose
    internal tasks ask for a whole CPU) would wait forever. ``scale-ray up`` gives a local head
    at least 4 for the same reason.
    """
    import ray

    ray.init(address="local", num_cpus=4, num_gpus=1, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
