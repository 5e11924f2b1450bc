"""Smoke run of ``benchmarks/analytics.py``'s pieces, in-process (no Ray, no Serve).

A tiny generated ledger (50 users x 100 transactions) goes to Delta the way the benchmark
writes it; the floor (per-user Parquet files read by DuckDB) and the engine must then return
the same results for every endpoint, and the latency figures must be produced.
"""

from __future__ import annotations

from collections import Counter
from datetime import date
from pathlib import Path

import pyarrow as pa
import pytest

from benchmarks.analytics import (
    FloorEngine,
    Generator,
    endpoint_calls,
    floor_service,
    in_process,
    measure_floor,
    merchant_pools,
    mismatches,
    run_pass,
    table_stats,
    user_rows,
    windows,
    write_floor_files,
)
from scale_ray.analytics.service import AnalyticsService
from scale_ray.ledger.delta import DeltaAppender, ensure_tables
from scale_ray.ledger.schema import ACCOUNTS, TRANSACTIONS
from scale_ray.settings import Settings
from scale_ray.taxonomy import HINT_PATHS

TODAY = date(2026, 6, 30)
USERS, PER_USER, APPENDS = 50, 100, 6


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, pa.Table, pa.Table]:
    root = tmp_path_factory.mktemp("bench")
    settings = Settings(data_root=str(root / "var"), num_buckets=8)
    pools, _ = merchant_pools(root / "no-shared-data")  # the synthetic merchant pool
    gen = Generator(TODAY, per_user=PER_USER, num_buckets=8, pools=pools, history_days=180, seed=1)
    txns, accounts = gen.batch(0, USERS)
    ensure_tables(settings)
    appender = DeltaAppender(settings, "transactions")
    start_us = gen.epoch_start * 86_400_000_000 - 3_600_000_000
    end_us = (gen.epoch_today + 1) * 86_400_000_000
    for window in windows(txns, start_us, end_us, APPENDS):
        appender.append(window)
    DeltaAppender(settings, "accounts").append(accounts)
    return settings, txns, accounts


def test_generator_rows_are_realistic(ledger: tuple[Settings, pa.Table, pa.Table]) -> None:
    _, txns, accounts = ledger
    assert txns.schema == TRANSACTIONS and accounts.schema == ACCOUNTS
    assert txns.num_rows == USERS * PER_USER
    assert set(Counter(txns.column("user_id").to_pylist()).values()) == {PER_USER}
    assert len(set(txns.column("txn_id").to_pylist())) == txns.num_rows
    assert accounts.num_rows == 3 * USERS
    hints = set(txns.column("category_hint").drop_null().to_pylist())
    assert hints <= set(HINT_PATHS) and {"salary", "groceries", "subscriptions"} <= hints
    assert set(txns.column("booked_offset_min").to_pylist()) == {0, 60}
    assert txns.column("amount_minor").type == pa.int64()


def test_windows_cover_every_row_once(ledger: tuple[Settings, pa.Table, pa.Table]) -> None:
    settings, txns, _ = ledger
    stats = table_stats(settings.table_uri("transactions"))
    assert stats["rows"] == txns.num_rows
    assert stats["version"] == APPENDS  # one commit per window after the table's creation


def test_floor_and_engine_agree(
    ledger: tuple[Settings, pa.Table, pa.Table], tmp_path: Path
) -> None:
    settings, txns, accounts = ledger
    users = [f"u{i:06d}" for i in (0, 7, 19, 33, 49)]
    files = write_floor_files(
        tmp_path / "floor", user_rows(txns, set(users)), user_rows(accounts, set(users))
    )
    assert sorted(files) == users
    calls = endpoint_calls(TODAY)
    floor = floor_service(settings, files, TODAY)
    assert isinstance(floor.engine, FloorEngine)
    figures, digests = measure_floor(floor, users, calls)
    assert set(figures) == set(calls)
    for fig in figures.values():
        assert fig["n"] == len(users) and 0 < fig["p50"] <= fig["p99"]
        assert fig["parts_ms_p50"]["view_from_parquet"] > 0

    service = AnalyticsService(settings, clock=lambda: TODAY)
    call = in_process(service)
    for name, (method, args) in calls.items():
        lat, results, _ = run_pass(call, users, method, args)
        assert len(lat) == len(users)
        assert mismatches(name, users, results, digests) == 0, name
    # The generated users have something for recurring to find (salary, bills, subscriptions).
    found = call("recurring", users[0], (None, False))["recurring"]
    assert {r["period"] for r in found} == {"monthly"} and len(found) >= 4
    overview = call("overview", users[0], calls["overview"][1])
    assert overview["top_categories"] and len(overview["accounts"]) == 3
