"""Open the ledger in DuckDB for analysts: one call, one snapshot, views named like the tables.

``from scale_ray.ledger.duck import open_ledger; con = open_ledger()`` gives an in-memory
connection with

* one view per ledger table (``transactions``, ``accounts``, ``imports``, ``user_state``,
  ``notifications``, ``flags``) over an Arrow dataset of the Delta table at one version;
* ``user_state_current``: the current ``user_state`` rows (latest ``seq`` per
  (user_id, kind, key), tombstones dropped), and per kind ``rules``, ``corrections``,
  ``budgets``;
* ``categorized_transactions``: every transaction with ``category``, ``category_source``,
  ``merchant_key``, ``merchant_name`` and ``local_at``, resolved by the same SQL as the
  dashboard (:func:`scale_ray.analytics.categorize.categorized_sql`).

All of them are views, not copies: DuckDB pushes filters and projections down to the Parquet
files, so ``WHERE user_id = ...`` on a large ledger reads little.
"""

from __future__ import annotations

from collections.abc import Mapping

import duckdb
from deltalake.exceptions import TableNotFoundError

from scale_ray.analytics.categorize import categorized_sql, hints_table, rule_rank_sql
from scale_ray.ledger.delta import open_table
from scale_ray.ledger.schema import TABLE_SCHEMAS
from scale_ray.settings import Settings

#: Every ledger table; each becomes a view of the same name.
TABLES = tuple(TABLE_SCHEMAS)

#: Views of the current ``user_state`` rows of one kind: view name → (kind, columns).
STATE_VIEWS: dict[str, tuple[str, str]] = {
    "rules": ("rule", "key AS rule_id, pattern, match, category"),
    "corrections": ("correction", "key AS txn_id, category"),
    "budgets": ("budget", "key AS budget_id, category, period, limit_minor, currency"),
}

#: The derived views, in creation order (each may use the ones before it).
DERIVED_VIEWS = (
    "user_state_current",
    *STATE_VIEWS,
    "ranked_rules",
    "category_hints",
    "categorized_transactions",
)

#: No network: a query that needs an extension which is not built in fails instead of
#: downloading it. Timestamps are read in UTC (``local_at`` adds the source's offset to UTC;
#: in another session time zone the cast to TIMESTAMP would shift it twice).
CONNECTION_CONFIG = {"autoinstall_known_extensions": False, "TimeZone": "UTC"}

_CURRENT_STATE_SQL = """
CREATE VIEW user_state_current AS
SELECT * EXCLUDE (rn) FROM (
    SELECT *, row_number() OVER (PARTITION BY user_id, kind, key ORDER BY seq DESC) AS rn
    FROM user_state
) WHERE rn = 1 AND NOT deleted
"""


def open_ledger(
    data_root: str | None = None, *, versions: Mapping[str, int] | None = None
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with a view per ledger table at one version.

    ``open_ledger()`` reads ``SCALE_DATA_ROOT`` (default ``./var``); pass ``versions`` to pin
    tables to earlier versions (time travel), e.g. ``{"transactions": 3, "user_state": 1}``.
    A table that does not exist yet reads as empty (nothing is created on disk). DuckDB pushes
    filters into the Arrow datasets.
    """
    versions = dict(versions or {})
    unknown = sorted(set(versions) - set(TABLES))
    if unknown:
        raise ValueError(f"unknown ledger tables {unknown}; tables are {list(TABLES)}")
    settings = Settings.from_env(data_root=data_root) if data_root else Settings.from_env()
    con = duckdb.connect(config=CONNECTION_CONFIG)
    for name in TABLES:
        try:
            table = open_table(settings, name, create=False)
        except TableNotFoundError:
            if name in versions:
                raise
            con.register(name, TABLE_SCHEMAS[name].empty_table())
            continue
        if name in versions:
            table.load_as_version(versions[name])
        con.register(name, table.to_pyarrow_dataset())
    _create_derived_views(con)
    return con


def _create_derived_views(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(_CURRENT_STATE_SQL)
    for view, (kind, columns) in STATE_VIEWS.items():
        con.execute(
            f"CREATE VIEW {view} AS SELECT user_id, user_bucket, {columns}, seq, created_at, "
            f"updated_at FROM user_state_current WHERE kind = '{kind}'"
        )
    # The engine ranks equally specific rules by the last write (``seq``); rule_rank_sql says
    # "newer" with ``created_at``, which an update keeps and one batch shares. Give it ``seq``
    # so both agree (harmless once rule_rank_sql orders by ``seq`` itself).
    con.execute(
        "CREATE VIEW ranked_rules AS "
        + rule_rank_sql("(SELECT * REPLACE (seq AS created_at) FROM rules)")
    )
    con.register("category_hints", hints_table())
    con.execute(
        "CREATE VIEW categorized_transactions AS "
        + categorized_sql(
            txns="transactions",
            corrections="corrections",
            rules="ranked_rules",
            hints="category_hints",
        )
    )
