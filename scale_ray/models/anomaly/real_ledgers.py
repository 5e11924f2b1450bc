"""Real ledgers for the anomaly evaluation: Berka bank accounts and Birmingham purchase cards.

Both sources are date-only. A ledger row's time of day is therefore *synthetic*: drawn
reproducibly (seeded) from a realistic day profile, :data:`DAY_HOUR_WEIGHTS` for 07:00-23:00
(morning ramp, lunch and early-evening peaks) with :data:`NIGHT_SHARE` (3 %) spread evenly over
23:00-07:00. Within a user's day the drawn times are sorted and handed out in the source's
order, so the order the Berka loader recovered from the running balance survives. Without this
every real row would sit at midnight ("time unknown") and a planted night-time row would give
itself away by merely having a time; with it, about 2 % of ordinary debits fall in the
00:00-04:59 window that :mod:`.planting` uses for "new merchant at an odd hour". Times are
written as UTC with ``booked_offset_min`` 0 (local time = UTC).

Frames have the ledger columns :func:`~.features.build_features` reads (``user_id``,
``txn_id``, ``amount_minor`` with debits negative, ``currency``, ``booked_at``,
``booked_offset_min``, ``merchant``, ``narration``, ``category``) and are sorted by user and
time.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from scale_ray.models.hypcd.normalize import normalize_merchant

#: Relative weights of the hours 07..22 (a debit in hour h is booked in [h:00, h+1:00)).
DAY_HOUR_WEIGHTS: tuple[float, ...] = (
    0.5, 0.8, 1.0, 1.1, 1.2, 1.4, 1.3, 1.1, 1.0, 1.1, 1.3, 1.3, 1.1, 0.9, 0.7, 0.5,
)  # fmt: skip
#: Share of ordinary debits booked at night (23:00-07:00, uniform over those eight hours).
NIGHT_SHARE = 0.03
#: The first minute after midnight means "no time of day" to the features; draws start after it.
MIN_SECOND_OF_DAY = 60

LEDGER_COLUMNS = (
    "user_id",
    "txn_id",
    "amount_minor",
    "currency",
    "booked_at",
    "booked_offset_min",
    "merchant",
    "narration",
    "category",
)

TIME_OF_DAY_NOTE = "synthetic for date-only sources"


def merchant_key(name: object) -> str:
    """The merchant key the features group by (same definition as ``features._merchant_keys``)."""
    text = "" if name is None or (isinstance(name, float) and np.isnan(name)) else str(name)
    return normalize_merchant(text) or text.strip().lower() or "(none)"


def hour_distribution() -> np.ndarray:
    """Probability of each hour 0..23 of the synthetic time of day."""
    p = np.zeros(24)
    day = np.asarray(DAY_HOUR_WEIGHTS, dtype=np.float64)
    p[7:23] = (1.0 - NIGHT_SHARE) * day / day.sum()
    night = [23, 0, 1, 2, 3, 4, 5, 6]
    p[night] = NIGHT_SHARE / len(night)
    return p


def draw_seconds_of_day(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` seconds after midnight from :func:`hour_distribution` (uniform within the hour)."""
    hours = rng.choice(24, size=n, p=hour_distribution())
    seconds = hours * 3600 + rng.integers(0, 3600, size=n)
    # Hour 0 starts after the "unknown time" minute, still uniform within what is left.
    early = seconds < MIN_SECOND_OF_DAY
    seconds[early] = rng.integers(MIN_SECOND_OF_DAY, 3600, size=int(early.sum()))
    return seconds.astype(np.int64)


def assign_times_of_day(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    """A copy of ``frame`` (date-only ``booked_at``) with a synthetic time on every row.

    Rows keep their order within each user's day: the drawn times of a user-day are sorted and
    given out in the frame's row order.
    """
    out = frame.reset_index(drop=True).copy()
    if out.empty:
        return out
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x71DE]))
    seconds = draw_seconds_of_day(rng, len(out))
    day = pd.to_datetime(out["booked_at"], utc=True).dt.normalize()
    key = pd.DataFrame({"user": out["user_id"].to_numpy(), "day": day, "s": seconds})
    key["pos"] = np.arange(len(out))
    # Sort the seconds within each user-day and hand them out in row order.
    sorted_s = key.sort_values(["user", "day", "s"], kind="mergesort")["s"].to_numpy()
    slots = key.sort_values(["user", "day", "pos"], kind="mergesort")["pos"].to_numpy()
    assigned = np.empty(len(out), dtype=np.int64)
    assigned[slots] = sorted_s
    out["booked_at"] = day + pd.to_timedelta(assigned, unit="s")
    out["booked_offset_min"] = 0
    return out


def limit_users(frame: pd.DataFrame, max_users: int | None) -> pd.DataFrame:
    """The rows of the first ``max_users`` users by the number in their id (all: None)."""
    if max_users is None:
        return frame
    users = sorted(frame["user_id"].unique(), key=_user_sort_key)[: max(0, max_users)]
    return frame[frame["user_id"].isin(set(users))].reset_index(drop=True)


def _finish(frame: pd.DataFrame, max_users: int | None) -> pd.DataFrame:
    frame = limit_users(frame, max_users)
    frame = frame.sort_values(["user_id", "booked_at", "order"], kind="mergesort")
    return frame.drop(columns="order").reset_index(drop=True)[list(LEDGER_COLUMNS)]


def _user_sort_key(user: str) -> tuple[int, int | str]:
    digits = "".join(ch for ch in user if ch.isdigit())
    return (0, int(digits)) if digits else (1, user)


def berka_ledgers(folder: str | Path, *, max_users: int | None = None) -> pd.DataFrame:
    """One ledger per Berka account (``folder/trans_test.csv``; CZK; date-only).

    ``folder`` is the ``berka_ecac`` folder of the shared data; ``max_users`` keeps the first
    accounts by numeric id. Rows come through the project's own parser and the demo loader's
    balance-chain ordering (:mod:`scale_ray.demo.berka`). The merchant is left empty, so the
    features fall back to the narration (operation, purpose and partner bank), as they do for a
    bank statement without a merchant field; the category is the payment purpose
    (``k_symbol``) where the bank gives one.
    """
    from scale_ray.demo.berka import tenants_from_parse_result
    from scale_ray.ingest.parse import parse_bytes

    data = (Path(folder) / "trans_test.csv").read_bytes()
    result = parse_bytes(data, filename="trans_test.csv", default_currency="CZK")
    tenants = tenants_from_parse_result(result, limit=max_users)
    records = []
    for tenant in tenants:
        for order, r in enumerate(tenant.transactions):
            records.append(
                (
                    tenant.user_id,
                    str(r.txn_id),
                    int(r.amount_minor),
                    r.currency or "CZK",
                    r.booked_at,
                    0,
                    r.merchant,
                    r.narration,
                    r.category_hint,
                    order,
                )
            )
    frame = pd.DataFrame.from_records(records, columns=[*LEDGER_COLUMNS, "order"])
    frame["amount_minor"] = frame["amount_minor"].astype(np.int64)
    frame["booked_at"] = pd.to_datetime(frame["booked_at"], utc=True).dt.normalize()
    return _finish(frame, None)


def birmingham_ledgers(
    folder: str | Path | Sequence[str | Path], *, max_users: int | None = None
) -> pd.DataFrame:
    """One ledger per Birmingham purchase card (the masked card number is the user; GBP).

    Purchases become debits (negative), refunds credits. Merchant and narration are the
    ``MERCHANT NAME``; the category is the expense category (``TRANS CAC DESC 1``).
    """
    from scale_ray.models.hypcd.data import read_birmingham

    paths = [folder] if isinstance(folder, (str, Path)) else list(folder)
    rows = read_birmingham(paths)
    users = rows.users or [""] * len(rows)
    keep = [
        i
        for i in range(len(rows))
        if rows.dates[i] is not None and rows.amounts_minor[i] and users[i]
    ]
    frame = pd.DataFrame(
        {
            "user_id": ["card-" + users[i].lstrip("*") for i in keep],
            "txn_id": [f"bham-{i}" for i in keep],
            "amount_minor": np.array([-int(rows.amounts_minor[i]) for i in keep], np.int64),
            "currency": "GBP",
            "booked_at": pd.to_datetime([rows.dates[i] for i in keep]).tz_localize("UTC"),
            "booked_offset_min": 0,
            "merchant": [rows.texts[i] for i in keep],
            "narration": [rows.texts[i] for i in keep],
            "category": [rows.names.get(rows.labels[i], rows.labels[i]) for i in keep],
            "order": np.arange(len(keep)),
        }
    )
    return _finish(frame, max_users)


def merchant_pool(frame: pd.DataFrame) -> pd.DataFrame:
    """The distinct merchants of ``frame``'s debits: ``name`` and usual ``category``."""
    debits = frame[frame["amount_minor"] < 0]
    names = debits["merchant"].where(debits["merchant"].notna(), debits["narration"])
    pool = pd.DataFrame({"name": names.astype(str), "category": debits["category"]})
    pool = pool[pool["name"].str.strip() != ""]
    modal = pool.groupby("name", sort=True)["category"].agg(
        lambda s: s.mode().iloc[0] if s.notna().any() else None
    )
    return pd.DataFrame({"name": modal.index.to_numpy(), "category": modal.to_numpy()})


__all__ = [
    "DAY_HOUR_WEIGHTS",
    "LEDGER_COLUMNS",
    "NIGHT_SHARE",
    "TIME_OF_DAY_NOTE",
    "assign_times_of_day",
    "berka_ledgers",
    "birmingham_ledgers",
    "draw_seconds_of_day",
    "hour_distribution",
    "limit_users",
    "merchant_key",
    "merchant_pool",
]
