"""A tiny TFT fitted once per test process on generated tenants (about ten seconds on 1 CPU)."""

from __future__ import annotations

import functools
from datetime import date
from typing import Any

import pyarrow as pa

from scale_ray.demo.generator import generate_tenants
from scale_ray.ledger.rows import transactions_table


@functools.cache
def tiny_model() -> Any:
    """The ``fast`` bootstrap model (1 epoch, 4 batches, hidden size 8) on four tenants."""
    import torch

    from scale_ray.models.forecast.training import bootstrap_config, fit_on_rows, synthetic_rows

    torch.set_num_threads(1)  # the test machine's CPUs are shared
    model, _ = fit_on_rows(synthetic_rows(4, years=1.1, seed=5), bootstrap_config("fast"))
    return model


def tenant_rows(
    users: int, *, years: float, seed: int, num_buckets: int = 8, first_user: int = 1
) -> tuple[pa.Table, list[str]]:
    """Generated tenants' transactions in the ledger's schema, ending 2025-06-30 (the
    generator needs ``years`` >= 0.85; slice its rows for shorter histories)."""
    tenants, _, _ = generate_tenants(
        users, years=years, seed=seed, end=date(2025, 6, 30), first_user=first_user
    )
    table = pa.concat_tables(
        transactions_table(t.user_id, t.transactions, num_buckets=num_buckets, source="demo")
        for t in tenants
    )
    return table, [t.user_id for t in tenants]
