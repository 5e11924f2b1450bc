"""Arrow schemas of the ledger tables. Money is int64 minor units plus an ISO currency code."""

from __future__ import annotations

import pyarrow as pa

UTC_US = pa.timestamp("us", tz="UTC")

TRANSACTIONS = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("user_bucket", pa.int32(), nullable=False),
        pa.field("txn_id", pa.string(), nullable=False),
        pa.field("account_id", pa.string(), nullable=False),
        pa.field("amount_minor", pa.int64(), nullable=False),
        pa.field("currency", pa.string(), nullable=False),
        pa.field("booked_at", UTC_US, nullable=False),
        # The source's UTC offset in minutes, so local time can be shown as the bank showed it.
        pa.field("booked_offset_min", pa.int16(), nullable=False),
        pa.field("value_date", pa.date32()),
        pa.field("narration", pa.string(), nullable=False),
        pa.field("merchant", pa.string()),
        pa.field("mode", pa.string()),
        pa.field("balance_after_minor", pa.int64()),
        pa.field("category_hint", pa.string()),
        pa.field("source", pa.string(), nullable=False),
        pa.field("import_id", pa.string()),
        pa.field("ingested_at", UTC_US, nullable=False),
    ]
)

ACCOUNTS = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("user_bucket", pa.int32(), nullable=False),
        pa.field("account_id", pa.string(), nullable=False),
        pa.field("masked_number", pa.string()),
        pa.field("institution", pa.string()),
        pa.field("account_type", pa.string()),
        pa.field("currency", pa.string(), nullable=False),
        pa.field("opening_balance_minor", pa.int64(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("created_at", UTC_US, nullable=False),
    ]
)

IMPORTS = pa.schema(
    [
        pa.field("job_id", pa.string(), nullable=False),
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("seq", pa.int32(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("filename", pa.string()),
        pa.field("format", pa.string()),
        pa.field("raw_uri", pa.string()),
        pa.field("rows_parsed", pa.int64(), nullable=False),
        pa.field("rows_written", pa.int64(), nullable=False),
        pa.field("rows_duplicate", pa.int64(), nullable=False),
        pa.field("rows_rejected", pa.int64(), nullable=False),
        # JSON list of {"row": n, "reason": "..."}; capped, the count above is exact.
        pa.field("rejections_json", pa.string()),
        pa.field("error", pa.string()),
        pa.field("options_json", pa.string()),
        pa.field("updated_at", UTC_US, nullable=False),
    ]
)

#: Small per-user state that users edit: merchant rules, category corrections, budgets, read
#: receipts of notifications. One table (``kind`` tells them apart) so a read checks one
#: version; rows are events, the latest ``seq`` per (user_id, kind, key) wins and ``deleted``
#: is a tombstone. ``duck.open_ledger`` exposes the current rows as views per kind.
USER_STATE = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("user_bucket", pa.int32(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("key", pa.string(), nullable=False),
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("deleted", pa.bool_(), nullable=False),
        pa.field("category", pa.string()),
        pa.field("pattern", pa.string()),
        pa.field("match", pa.string()),
        pa.field("period", pa.string()),
        pa.field("limit_minor", pa.int64()),
        pa.field("currency", pa.string()),
        pa.field("created_at", UTC_US, nullable=False),
        pa.field("updated_at", UTC_US, nullable=False),
    ]
)

#: Notifications to users (budget thresholds, later anomaly alerts); ``notification_id`` is
#: deterministic, so the single producer never writes one twice.
NOTIFICATIONS = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("user_bucket", pa.int32(), nullable=False),
        pa.field("notification_id", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("title", pa.string(), nullable=False),
        pa.field("message", pa.string(), nullable=False),
        pa.field("data_json", pa.string()),
        pa.field("created_at", UTC_US, nullable=False),
    ]
)

#: Flags raised on transactions (the anomaly engine writes them); rows are events, the latest
#: ``seq`` per (user_id, txn_id, kind) wins. ``status`` is ``open`` until the user says the
#: charge was ``legitimate`` or ``fraud`` (see ``scale_ray.models.anomaly.flags``).
FLAGS = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("user_bucket", pa.int32(), nullable=False),
        pa.field("txn_id", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("score", pa.float64()),
        pa.field("reason", pa.string()),
        pa.field("status", pa.string(), nullable=False),
        pa.field("model_version", pa.string()),
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("created_at", UTC_US, nullable=False),
    ]
)

#: Cash-flow forecasts, one row per (user, origin, model version, day ahead). ``as_of`` is the
#: forecast origin: the last day of the user's history the model saw; ``date`` is the day
#: forecast, ``horizon_day`` its distance from ``as_of`` (1 = the next day). Quantiles are
#: estimates in the currency's major units (floats, like the model's outputs); the ledger's
#: own money stays exact. ``ledger_version`` is the ``transactions`` version the history was
#: read at. ``jobs/forecast_all.py`` merges on (user_id, as_of, model_version, horizon_day),
#: so a rerun never duplicates. ``explanation_json`` (summary, sentences, weights) is the same
#: on every row of one forecast (Parquet stores it once per page).
FORECASTS = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("user_bucket", pa.int32(), nullable=False),
        pa.field("as_of", pa.date32(), nullable=False),
        pa.field("ledger_version", pa.int64(), nullable=False),
        pa.field("model_version", pa.string(), nullable=False),
        pa.field("horizon_day", pa.int16(), nullable=False),
        pa.field("date", pa.date32(), nullable=False),
        pa.field("currency", pa.string(), nullable=False),
        pa.field("spend_p10", pa.float64()),
        pa.field("spend_p50", pa.float64()),
        pa.field("spend_p90", pa.float64()),
        pa.field("income_p10", pa.float64()),
        pa.field("income_p50", pa.float64()),
        pa.field("income_p90", pa.float64()),
        pa.field("balance_p10", pa.float64()),
        pa.field("balance_p50", pa.float64()),
        pa.field("balance_p90", pa.float64()),
        #: P(balance < 0) on that day.
        pa.field("prob_below_zero", pa.float64()),
        pa.field("explanation_json", pa.string()),
        pa.field("created_at", UTC_US, nullable=False),
    ]
)

TABLE_SCHEMAS: dict[str, pa.Schema] = {
    "transactions": TRANSACTIONS,
    "accounts": ACCOUNTS,
    "imports": IMPORTS,
    "user_state": USER_STATE,
    "notifications": NOTIFICATIONS,
    "flags": FLAGS,
    "forecasts": FORECASTS,
}
PARTITIONS: dict[str, list[str]] = {
    "transactions": ["user_bucket"],
    "accounts": ["user_bucket"],
    "imports": [],
    "user_state": ["user_bucket"],
    "notifications": ["user_bucket"],
    "flags": ["user_bucket"],
    "forecasts": ["user_bucket"],
}
