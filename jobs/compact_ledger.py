"""Compact the ledger: optimize (cluster by user_id, small row groups), checkpoint, vacuum.

Run on a cluster with::

    RAY_AUTH_MODE=token ray job submit --working-dir . -- python jobs/compact_ledger.py

Each partition (``user_bucket``) is compacted by its own Ray task, so the job spreads over
the cluster; the checkpoint and vacuum run once at the end. Safe to run while writers
append: optimize only rewrites files it read and delta-rs retries on conflicts.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from typing import Any

from scale_ray.ledger.compaction import compact_table
from scale_ray.settings import Settings

log = logging.getLogger("scale.jobs.compact")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tables",
        nargs="+",
        default=["transactions", "accounts", "user_state", "notifications", "flags", "imports"],
    )
    parser.add_argument("--retention-hours", type=int, default=168, help="vacuum retention")
    parser.add_argument("--local", action="store_true", help="run in this process, no Ray")
    args = parser.parse_args(argv)
    logging.basicConfig(level="INFO")
    settings = Settings.from_env()
    t0 = time.perf_counter()
    report: dict[str, Any] = {}
    for name in args.tables:
        report[name] = compact_table(
            settings, name, retention_hours=args.retention_hours, use_ray=not args.local
        )
    report["seconds"] = round(time.perf_counter() - t0, 2)
    print(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
