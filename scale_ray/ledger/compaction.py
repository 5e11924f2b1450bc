"""Ledger maintenance: few, large, well-clustered files (DESIGN §2)."""

from __future__ import annotations

import logging
from typing import Any

from deltalake import DeltaTable, WriterProperties

from scale_ray.ledger.delta import open_table
from scale_ray.ledger.schema import PARTITIONS
from scale_ray.settings import Settings

log = logging.getLogger(__name__)

#: Clustering columns per table; tables not listed are only bin-packed.
#:
#: Every dashboard read is one user's rows of one bucket. Measured on 10 M rows / 20 k users
#: (benchmarks/README.md, "Analytics"): z-order by (user_id, booked_at) interleaves the bits
#: of both columns, so one user's rows still spread over the whole bucket file and a cold read
#: scans all of it (50-90 ms); ordering by user_id alone, with small row groups, lets Parquet
#: row-group statistics skip all but one or two groups.
ZORDER: dict[str, list[str]] = {
    "transactions": ["user_id"],
    "accounts": ["user_id"],
    "user_state": ["user_id"],
    "notifications": ["user_id"],
    "flags": ["user_id"],
}

#: Rows per Parquet row group after optimize: small enough for per-user pruning, large enough
#: for analysts' full scans (DuckDB reads row groups in parallel).
ROW_GROUP_ROWS = 16_384


def optimize_partition(settings: Settings, name: str, bucket: int | None) -> dict[str, Any]:
    """z-order (or compact) one partition; returns delta-rs' metrics."""
    table = DeltaTable(settings.table_uri(name))
    filters = [("user_bucket", "=", str(bucket))] if bucket is not None else None
    columns = ZORDER.get(name)
    props = WriterProperties(max_row_group_size=ROW_GROUP_ROWS, compression="ZSTD")
    if columns:
        metrics = table.optimize.z_order(
            columns, partition_filters=filters, writer_properties=props
        )
    else:
        metrics = table.optimize.compact(partition_filters=filters, writer_properties=props)
    return {
        "bucket": bucket,
        "files_added": metrics.get("numFilesAdded", 0),
        "files_removed": metrics.get("numFilesRemoved", 0),
    }


def _partitions(table: DeltaTable, name: str) -> list[int | None]:
    if not PARTITIONS[name]:
        return [None]
    values = {int(p["user_bucket"]) for p in table.partitions()}
    return sorted(values)


def compact_table(
    settings: Settings, name: str, *, retention_hours: int = 168, use_ray: bool = True
) -> dict[str, Any]:
    """Optimize every partition (as Ray tasks when ``use_ray``), checkpoint, then vacuum."""
    table = open_table(settings, name)
    before = len(table.file_uris())
    partitions = _partitions(table, name)
    if use_ray:
        import ray

        task = ray.remote(num_cpus=0.5, max_retries=3)(optimize_partition)
        results = ray.get([task.remote(settings, name, b) for b in partitions])
    else:
        results = [optimize_partition(settings, name, b) for b in partitions]
    table = DeltaTable(settings.table_uri(name))
    table.create_checkpoint()
    removed = table.vacuum(
        retention_hours=retention_hours,
        dry_run=False,
        enforce_retention_duration=retention_hours >= 168,
    )
    table.cleanup_metadata()
    return {
        "version": table.version(),
        "files_before": before,
        "files_after": len(table.file_uris()),
        "partitions": len(partitions),
        "files_rewritten": sum(r["files_removed"] for r in results),
        "files_vacuumed": len(removed),
    }
