"""Write demo tenants (synthetic users and real Berka accounts) into the ledger."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa

from scale_ray.ledger.rows import accounts_table, transactions_table
from scale_ray.settings import Settings

log = logging.getLogger(__name__)

FLUSH_ROWS = 200_000


@dataclass
class LoadReport:
    users: int = 0
    transactions_written: int = 0
    duplicates: int = 0
    anomalies: int = 0
    recurring_series: int = 0


def write_tenants(
    settings: Settings, tenants: Iterable[Any], writer: Any, source: str
) -> LoadReport:
    """Write every tenant's accounts and transactions through ``writer`` in large commits."""
    report = LoadReport()
    txn_parts: list[pa.Table] = []
    acc_parts: list[pa.Table] = []
    pending = 0

    def flush() -> None:
        nonlocal pending
        if not txn_parts and not acc_parts:
            return
        ack = writer.write(
            pa.concat_tables(txn_parts)
            if txn_parts
            else transactions_table("x", [], num_buckets=1, source=source),
            pa.concat_tables(acc_parts) if acc_parts else None,
        )
        report.transactions_written += ack.written
        report.duplicates += ack.duplicates
        txn_parts.clear()
        acc_parts.clear()
        pending = 0

    for tenant in tenants:
        report.users += 1
        currency = tenant.accounts[0].currency if tenant.accounts else "GBP"
        acc_parts.append(
            accounts_table(
                tenant.user_id,
                tenant.accounts,
                num_buckets=settings.num_buckets,
                source=source,
                default_currency=currency or "GBP",
            )
        )
        table = transactions_table(
            tenant.user_id, tenant.transactions, num_buckets=settings.num_buckets, source=source
        )
        txn_parts.append(table)
        pending += table.num_rows
        if pending >= FLUSH_ROWS:
            flush()
    flush()
    return report


def load_demo(
    settings: Settings,
    writer: Any,
    *,
    users: int = 20,
    years: float = 3.0,
    seed: int = 7,
    end: date | None = None,
    berka_limit: int | None = None,
    labels_path: Path | None = None,
) -> LoadReport:
    """Synthetic users (labelled anomalies and recurring series) plus the real Berka tenants.

    The synthetic history ends today unless ``end`` is given, so "this month" has data.
    """
    from scale_ray.demo.berka import load_berka_tenants
    from scale_ray.demo.generator import iter_tenants, write_labels

    anomalies: list[Any] = []
    recurring: list[Any] = []

    def tenants() -> Iterator[Any]:
        for tenant, anoms, series in iter_tenants(
            users, years=years, seed=seed, end=end or date.today()
        ):
            anomalies.extend(anoms)
            recurring.extend(series)
            yield tenant

    report = write_tenants(settings, tenants(), writer, source="demo")
    report.anomalies = len(anomalies)
    report.recurring_series = len(recurring)
    labels = labels_path or Path(settings.path("demo", "labels.jsonl"))
    labels.parent.mkdir(parents=True, exist_ok=True)
    write_labels(labels, anomalies, recurring)
    shared = settings.shared_data_path()
    if berka_limit != 0 and (shared / "berka_ecac" / "trans_test.csv").exists():
        berka = load_berka_tenants(shared, limit=berka_limit)
        sub = write_tenants(settings, berka, writer, source="demo:berka")
        report.users += sub.users
        report.transactions_written += sub.transactions_written
        report.duplicates += sub.duplicates
    log.info("demo loaded: %s", report)
    return report
