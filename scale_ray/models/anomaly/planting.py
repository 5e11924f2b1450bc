"""Plant labelled anomalies into real ledgers (the four kinds the demo generator plants).

The definitions follow ``scale_ray.demo.generator._UserGen.plant``, applied to a real ledger
frame (see :mod:`.real_ledgers`; rows need a time of day, real or synthetic):

``amount_spike``
    An existing debit at a merchant where the user has at least :data:`MIN_SPIKE_HISTORY`
    earlier debits has its amount set to 5-20x that merchant's usual amount: the upper median
    of the user's last (at most 30) earlier debits there. One spike per user and merchant, so
    the earlier debits a spike is measured against are all unplanted.
``new_merchant_odd_hour``
    A new debit at a merchant the user never used (its merchant key appears nowhere in the
    user's ledger), booked 00:01-04:59 on a day within the user's active span, for an amount
    the user typically pays (one of the user's own debit amounts, drawn at random).
``duplicate_charge``
    A copy of an existing (unplanted) debit, same merchant, narration, category and amount,
    booked 30 s-10 min after it.
``velocity_burst``
    5-12 new debits within one hour (starting 09:00-20:59) at merchants from the user's own
    pool: each copies the merchant and amount of one of the user's debits (drawn without
    replacement where the user has enough).

The number of events per user is binomial with ``rate / 2.875`` per debit (2.875 labelled rows
per event on average: spike, odd hour and duplicate one each, a burst 8.5), kinds uniform, so
about ``rate`` of the debits end up labelled. Users with fewer than :data:`MIN_USER_DEBITS`
debits get none. Planted rows carry ``planted_kind`` (``""`` on ordinary rows) and
``planted_event`` (-1 on ordinary rows; shared by the rows of one burst).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from scale_ray.models.anomaly.real_ledgers import LEDGER_COLUMNS, merchant_key

ANOMALY_KINDS: tuple[str, ...] = (
    "amount_spike",
    "new_merchant_odd_hour",
    "duplicate_charge",
    "velocity_burst",
)
#: Mean labelled rows per event (1 + 1 + 1 + 8.5) / 4.
ROWS_PER_EVENT = 2.875
#: A spike needs this many earlier debits of the user at the merchant.
MIN_SPIKE_HISTORY = 5
#: The usual amount is the upper median of at most this many earlier debits.
SPIKE_HISTORY_WINDOW = 30
SPIKE_FACTOR = (5.0, 20.0)
DUPLICATE_GAP_S = (30, 600)
NIGHT_SECONDS = (60, 5 * 3600)
BURST_SIZE = (5, 12)
BURST_START_HOURS = (9, 21)
#: Burst rows fall within ``[30, 30 + BURST_SPREAD_S)`` seconds of the burst's start.
BURST_SPREAD_S = 3540
MIN_USER_DEBITS = 10
DEFAULT_PLANT_RATE = 0.0075


@dataclass(frozen=True)
class Plant:
    """One labelled row: the kind, what was done, the event it belongs to."""

    user_id: str
    txn_id: str
    kind: str
    event: int
    detail: str
    #: The debit a duplicate copies.
    source_txn_id: str | None = None


@dataclass(frozen=True)
class PlantedLedger:
    """A ledger frame with planted rows (``planted_kind``, ``planted_event``) and the labels."""

    frame: pd.DataFrame
    plants: list[Plant]

    def kinds_for(self, txn_ids: Sequence[str] | np.ndarray) -> np.ndarray:
        """The planted kind of each txn id (``""`` for an ordinary row)."""
        kinds = dict(zip(self.frame["txn_id"], self.frame["planted_kind"], strict=True))
        return np.array([kinds.get(t, "") for t in np.asarray(txn_ids).tolist()], dtype=object)


def plant_anomalies(
    frame: pd.DataFrame,
    *,
    new_merchants: pd.DataFrame | Sequence[str],
    rate: float = DEFAULT_PLANT_RATE,
    seed: int = 0,
) -> PlantedLedger:
    """Plant the four kinds into ``frame`` (ledger columns; every row with a time of day).

    ``new_merchants``: real merchant names to draw "never used" merchants from (a frame with
    ``name`` and ``category`` columns, or names). Returns the ledger with the planted rows,
    sorted by user and time, and one :class:`Plant` per labelled row.
    """
    if not 0.0 <= rate < 1.0:
        raise ValueError("rate must be within [0, 1)")
    if isinstance(new_merchants, pd.DataFrame):
        pool_names = new_merchants["name"].astype(str).tolist()
        pool_cats = new_merchants["category"].astype(object).tolist()
    else:
        pool_names = [str(n) for n in new_merchants]
        pool_cats = [None] * len(pool_names)
    pool_keys = [merchant_key(n) for n in pool_names]
    if not pool_names:
        raise ValueError("new_merchants is empty")

    base = frame.reset_index(drop=True)[list(LEDGER_COLUMNS)].copy()
    base["booked_at"] = pd.to_datetime(base["booked_at"], utc=True)
    base["planted_kind"] = ""
    base["planted_event"] = -1
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x9A47]))
    amounts = base["amount_minor"].to_numpy().copy()
    original = amounts.copy()
    kinds = base["planted_kind"].to_numpy().copy()
    events = base["planted_event"].to_numpy().copy()
    names = base["merchant"].where(base["merchant"].notna(), base["narration"]).astype(object)
    uniq = pd.unique(names.fillna("").astype(str))
    key_of = {u: merchant_key(u) for u in uniq}
    keys = names.fillna("").astype(str).map(key_of).to_numpy()
    booked = base["booked_at"].to_numpy()  # datetime64 (UTC)
    txn_ids = base["txn_id"].astype(str).to_numpy()
    user_ids = base["user_id"].astype(str).to_numpy()

    added: list[dict] = []
    plants: list[Plant] = []
    event = 0
    p_event = min(1.0, rate / ROWS_PER_EVENT)
    order = np.lexsort((txn_ids, booked, user_ids))
    sorted_users = user_ids[order]
    starts = np.r_[0, np.flatnonzero(sorted_users[1:] != sorted_users[:-1]) + 1]
    ends = np.r_[starts[1:], len(order)]
    for lo, hi in zip(starts.tolist(), ends.tolist(), strict=True):
        rows = order[lo:hi]
        deb = rows[amounts[rows] < 0]  # in time order
        if len(deb) < MIN_USER_DEBITS:
            continue
        n_events = int(rng.binomial(len(deb), p_event))
        if n_events == 0:
            continue
        user = str(user_ids[deb[0]])
        deb_keys = keys[deb]
        user_keys = set(deb_keys.tolist())
        # Rank of each debit among the user's earlier debits at its merchant.
        rank = pd.Series(deb_keys).groupby(deb_keys).cumcount().to_numpy()
        spike_candidates = np.flatnonzero(rank >= MIN_SPIKE_HISTORY)
        first_day = pd.Timestamp(booked[deb[0]]).normalize()
        n_days = max(1, (pd.Timestamp(booked[deb[-1]]).normalize() - first_day).days + 1)
        touched: set[int] = set()
        spiked_keys: set[str] = set()
        for kind_i in rng.integers(0, 4, size=n_events).tolist():
            kind = ANOMALY_KINDS[kind_i]
            if kind == "amount_spike":
                if not len(spike_candidates):
                    continue
                j = int(spike_candidates[int(rng.integers(0, len(spike_candidates)))])
                r = int(deb[j])
                if r in touched or deb_keys[j] in spiked_keys:
                    continue
                prior = deb[:j][deb_keys[:j] == deb_keys[j]][-SPIKE_HISTORY_WINDOW:]
                values = sorted(-int(original[q]) for q in prior)
                usual = values[len(values) // 2]
                permille = int(
                    rng.integers(int(SPIKE_FACTOR[0] * 1000), int(SPIKE_FACTOR[1] * 1000) + 1)
                )
                amounts[r] = -max(1, usual * permille // 1000)
                kinds[r], events[r] = kind, event
                touched.add(r)
                spiked_keys.add(str(deb_keys[j]))
                plants.append(
                    Plant(
                        user, str(txn_ids[r]), kind, event, f"{permille / 1000:.1f}x usual {usual}"
                    )
                )
            elif kind == "new_merchant_odd_hour":
                m = -1
                for _ in range(40):
                    cand = int(rng.integers(0, len(pool_names)))
                    if pool_keys[cand] not in user_keys:
                        m = cand
                        break
                if m < 0:
                    continue
                user_keys.add(pool_keys[m])
                day = first_day + pd.Timedelta(days=int(rng.integers(0, n_days)))
                second = int(rng.integers(*NIGHT_SECONDS))
                src = int(deb[int(rng.integers(0, len(deb)))])
                tid = f"{user}-plant-{event}"
                added.append(
                    _row(base, src, tid, day + pd.Timedelta(seconds=second), int(original[src]))
                    | {
                        "merchant": pool_names[m],
                        "narration": pool_names[m],
                        "category": pool_cats[m],
                        "planted_kind": kind,
                        "planted_event": event,
                    }
                )
                plants.append(Plant(user, tid, kind, event, f"first use of {pool_names[m]}"))
            elif kind == "duplicate_charge":
                src = int(deb[int(rng.integers(0, len(deb)))])
                if src in touched:
                    continue
                touched.add(src)
                gap = int(rng.integers(DUPLICATE_GAP_S[0], DUPLICATE_GAP_S[1] + 1))
                tid = f"{user}-plant-{event}"
                when = pd.Timestamp(booked[src]) + pd.Timedelta(seconds=gap)
                added.append(
                    _row(base, src, tid, when, int(original[src]))
                    | {"planted_kind": kind, "planted_event": event}
                )
                plants.append(
                    Plant(user, tid, kind, event, f"same charge after {gap}s", str(txn_ids[src]))
                )
            else:  # velocity_burst
                n = int(rng.integers(BURST_SIZE[0], BURST_SIZE[1] + 1))
                day = first_day + pd.Timedelta(days=int(rng.integers(0, n_days)))
                start = day + pd.Timedelta(hours=int(rng.integers(*BURST_START_HOURS)))
                offsets = np.sort(rng.choice(BURST_SPREAD_S, size=n, replace=False)) + 30
                picks = rng.choice(len(deb), size=n, replace=len(deb) < n)
                for k in range(n):
                    src = int(deb[int(picks[k])])
                    tid = f"{user}-plant-{event}-{k}"
                    added.append(
                        _row(
                            base,
                            src,
                            tid,
                            start + pd.Timedelta(seconds=int(offsets[k])),
                            int(original[src]),
                        )
                        | {"planted_kind": kind, "planted_event": event}
                    )
                    plants.append(Plant(user, tid, kind, event, f"burst txn {k + 1}/{n}"))
            event += 1

    base["amount_minor"] = amounts
    base["planted_kind"] = kinds
    base["planted_event"] = events
    if added:
        extra = pd.DataFrame(added, columns=base.columns)
        extra["booked_at"] = pd.to_datetime(extra["booked_at"], utc=True)
        extra["amount_minor"] = extra["amount_minor"].astype(np.int64)
        base = pd.concat([base.astype(object), extra.astype(object)], ignore_index=True)
        base = base.astype(
            {"amount_minor": np.int64, "booked_offset_min": np.int64, "planted_event": np.int64}
        )
        base["booked_at"] = pd.to_datetime(base["booked_at"], utc=True)
    base = base.sort_values(["user_id", "booked_at", "txn_id"], kind="mergesort")
    return PlantedLedger(base.reset_index(drop=True), plants)


def _row(base: pd.DataFrame, src: int, txn_id: str, when: pd.Timestamp, amount: int) -> dict:
    """A new ledger row copying ``base`` row ``src`` at ``when`` for ``amount``."""
    row = {c: base.at[src, c] for c in base.columns}
    row.update(txn_id=txn_id, booked_at=when, amount_minor=amount, booked_offset_min=0)
    return row


__all__ = [
    "ANOMALY_KINDS",
    "DEFAULT_PLANT_RATE",
    "Plant",
    "PlantedLedger",
    "plant_anomalies",
]
