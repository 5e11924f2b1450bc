"""Open the ledger in DuckDB for analysts: one call, one snapshot, views named like the tables."""

from __future__ import annotations

import duckdb

from scale_ray.ledger.delta import open_table
from scale_ray.settings import Settings

TABLES = ("transactions", "accounts")


def open_ledger(
    data_root: str | None = None, *, versions: dict[str, int] | None = None
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with a view per ledger table at one version.

    ``open_ledger()`` reads ``SCALE_DATA_ROOT`` (default ``./var``); pass ``versions`` to pin
    tables to earlier versions (time travel). DuckDB pushes filters into the Arrow datasets.
    """
    settings = Settings.from_env(data_root=data_root) if data_root else Settings.from_env()
    con = duckdb.connect()
    for name in TABLES:
        table = open_table(settings, name)
        if versions and name in versions:
            table.load_as_version(versions[name])
        con.register(name, table.to_pyarrow_dataset())
    return con
