"""Planted anomalies have the properties their labels claim; synthetic times look as documented.

Most tests run on a small built ledger (no shared data needed) planted at a high rate so every
kind occurs many times; one repeats the checks on real Birmingham cards when the data is there.
"""

from __future__ import annotations

from collections import Counter
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from scale_ray.models.anomaly.features import build_features
from scale_ray.models.anomaly.planting import (
    ANOMALY_KINDS,
    MIN_SPIKE_HISTORY,
    SPIKE_HISTORY_WINDOW,
    PlantedLedger,
    plant_anomalies,
)
from scale_ray.models.anomaly.real_ledgers import (
    LEDGER_COLUMNS,
    NIGHT_SHARE,
    assign_times_of_day,
    birmingham_ledgers,
    hour_distribution,
    merchant_key,
    merchant_pool,
)
from scale_ray.settings import get_settings

BIRMINGHAM = get_settings().shared_data_path() / "birmingham_pcard_2016_2017"
NEW_NAMES = [f"NIGHT SHOP {chr(65 + i)}{chr(65 + j)}" for i in range(6) for j in range(6)]
MERCHANTS = ["TESCO STORES", "SHELL FUEL", "COSTA COFFEE", "AMAZON UK", "BOOTS", "PRET", "NCP"]


def _ledger(users: int = 6, per_user: int = 220, seed: int = 1) -> pd.DataFrame:
    """Date-only ledgers: debits at a few merchants (typical amounts per merchant), some credits."""
    rng = np.random.default_rng(seed)
    records = []
    start = date(2020, 1, 1)
    for u in range(users):
        usual = {m: int(rng.integers(300, 9000)) for m in MERCHANTS}
        days = np.sort(rng.integers(0, 365, size=per_user))
        for k, day in enumerate(days.tolist()):
            when = pd.Timestamp(start + timedelta(days=day), tz="UTC")
            if k % 25 == 0:
                amount, merchant = 250_000, "SALARY"
            else:
                merchant = MERCHANTS[
                    int(rng.choice(len(MERCHANTS), p=[0.3, 0.15, 0.2, 0.1, 0.1, 0.1, 0.05]))
                ]
                amount = -int(usual[merchant] * rng.lognormal(0.0, 0.25))
            records.append(
                (f"user-{u}", f"u{u}-{k:04d}", amount, "GBP", when, 0, merchant, merchant, None)
            )
    return pd.DataFrame.from_records(records, columns=list(LEDGER_COLUMNS))


@pytest.fixture(scope="module")
def timed() -> pd.DataFrame:
    return assign_times_of_day(_ledger(), seed=3)


@pytest.fixture(scope="module")
def planted(timed: pd.DataFrame) -> PlantedLedger:
    return plant_anomalies(timed, new_merchants=NEW_NAMES, rate=0.15, seed=5)


def _key(frame: pd.DataFrame) -> pd.Series:
    names = frame["merchant"].where(frame["merchant"].notna(), frame["narration"])
    return names.map(merchant_key)


def check_planted(original: pd.DataFrame, planted: PlantedLedger) -> Counter:
    """Assert every property the labels claim; returns the labelled rows per kind."""
    frame = planted.frame.assign(key=lambda f: _key(f))
    assert frame["txn_id"].is_unique
    # Labels line up with rows: the frame's column, the Plant records and kinds_for agree.
    labelled = frame[frame["planted_kind"] != ""]
    assert sorted(labelled["txn_id"]) == sorted(p.txn_id for p in planted.plants)
    by_txn = {p.txn_id: p for p in planted.plants}
    for row in labelled.itertuples():
        assert by_txn[row.txn_id].kind == row.planted_kind
        assert by_txn[row.txn_id].user_id == row.user_id
        assert row.planted_event >= 0
    assert (planted.kinds_for(frame["txn_id"]) == frame["planted_kind"].to_numpy()).all()
    assert (frame.loc[frame["planted_kind"] == "", "planted_event"] == -1).all()
    # Every original row is still there, untouched unless it is a spike.
    orig = original.set_index("txn_id")
    kept = frame[frame["txn_id"].isin(orig.index)].set_index("txn_id")
    assert len(kept) == len(orig)
    same = kept["planted_kind"] != "amount_spike"
    assert (kept.loc[same, "amount_minor"] == orig.loc[kept.index[same], "amount_minor"]).all()
    assert (kept["booked_at"] == orig.loc[kept.index, "booked_at"]).all()
    # Planted rows other than spikes are new rows; spikes are existing debits.
    new_rows = labelled[labelled["planted_kind"] != "amount_spike"]
    assert not new_rows["txn_id"].isin(orig.index).any()
    spikes = labelled[labelled["planted_kind"] == "amount_spike"]
    assert spikes["txn_id"].isin(orig.index).all()

    normal = frame[frame["planted_kind"] == ""]
    normal_debits = normal[normal["amount_minor"] < 0]
    orig_debits = original[original["amount_minor"] < 0].assign(key=_key(original))
    for row in spikes.itertuples():
        earlier = normal_debits[
            (normal_debits["user_id"] == row.user_id)
            & (normal_debits["key"] == row.key)
            & (
                (normal_debits["booked_at"] < row.booked_at)
                | (
                    (normal_debits["booked_at"] == row.booked_at)
                    & (normal_debits["txn_id"] < row.txn_id)
                )
            )
        ].sort_values(["booked_at", "txn_id"])
        assert len(earlier) >= MIN_SPIKE_HISTORY
        values = sorted((-earlier["amount_minor"]).tolist()[-SPIKE_HISTORY_WINDOW:])
        usual = values[len(values) // 2]
        ratio = -row.amount_minor / usual
        assert 5.0 - 1.0 / usual <= ratio <= 20.0 + 1e-9, (row.txn_id, ratio)
    for row in frame[frame["planted_kind"] == "new_merchant_odd_hour"].itertuples():
        user_rows = frame[frame["user_id"] == row.user_id]
        others = user_rows[user_rows["txn_id"] != row.txn_id]
        assert row.key not in set(others["key"]), "the merchant was used elsewhere by the user"
        seconds = (row.booked_at - row.booked_at.normalize()).total_seconds()
        assert 60 <= seconds < 5 * 3600
        assert row.amount_minor < 0
        assert row.amount_minor in set(
            orig_debits.loc[orig_debits["user_id"] == row.user_id, "amount_minor"]
        )
    sources = frame.set_index("txn_id")
    for plant in (p for p in planted.plants if p.kind == "duplicate_charge"):
        dup, src = sources.loc[plant.txn_id], sources.loc[plant.source_txn_id]
        assert src["planted_kind"] == "" and src["amount_minor"] < 0
        assert (dup["merchant"], dup["narration"], dup["amount_minor"], dup["user_id"]) == (
            src["merchant"], src["narration"], src["amount_minor"], src["user_id"]
        )  # fmt: skip
        gap = (dup["booked_at"] - src["booked_at"]).total_seconds()
        assert 30 <= gap <= 600
    bursts = frame[frame["planted_kind"] == "velocity_burst"]
    for _, rows in bursts.groupby("planted_event"):
        assert 5 <= len(rows) <= 12
        assert rows["user_id"].nunique() == 1
        span = (rows["booked_at"].max() - rows["booked_at"].min()).total_seconds()
        assert span < 3600
        user = orig_debits[orig_debits["user_id"] == rows["user_id"].iloc[0]]
        pairs = set(zip(user["key"], user["amount_minor"], strict=True))
        assert all(p in pairs for p in zip(rows["key"], rows["amount_minor"], strict=True))
    return Counter(labelled["planted_kind"])


def test_every_kind_has_its_claimed_property(timed: pd.DataFrame, planted: PlantedLedger) -> None:
    counts = check_planted(timed, planted)
    assert set(counts) == set(ANOMALY_KINDS)
    assert all(counts[k] >= 3 for k in ANOMALY_KINDS), counts


def test_features_see_the_plants(planted: PlantedLedger) -> None:
    features = build_features(planted.frame)
    kinds = planted.kinds_for(features.rows["txn_id"].to_numpy())
    X = {n: features.X[:, i] for i, n in enumerate(features.names)}
    new = kinds == "new_merchant_odd_hour"
    assert (X["new_merchant"][new] == 1.0).all()
    assert (X["hour"][new] < 5.0).all() and features.rows["time_known"][new].all()
    assert (X["duplicate"][kinds == "duplicate_charge"] > np.exp(-600 / 3600 / 6.0) - 1e-9).all()
    spikes = kinds == "amount_spike"
    assert (X["merchant_z"][spikes] > 5.0).all()
    burst = kinds == "velocity_burst"
    assert np.median(X["velocity_count_24h"][burst]) > np.median(
        X["velocity_count_24h"][kinds == ""]
    )


def test_rate_and_reproducibility(timed: pd.DataFrame) -> None:
    a = plant_anomalies(timed, new_merchants=NEW_NAMES, rate=0.02, seed=11)
    b = plant_anomalies(timed, new_merchants=NEW_NAMES, rate=0.02, seed=11)
    c = plant_anomalies(timed, new_merchants=NEW_NAMES, rate=0.02, seed=12)
    pd.testing.assert_frame_equal(a.frame, b.frame)
    assert [p.txn_id for p in a.plants] != [p.txn_id for p in c.plants]
    none = plant_anomalies(timed, new_merchants=NEW_NAMES, rate=0.0, seed=11)
    assert not none.plants and len(none.frame) == len(timed)
    assert (
        none.frame["amount_minor"].to_numpy()
        == timed.sort_values(["user_id", "booked_at", "txn_id"])["amount_minor"].to_numpy()
    ).all()
    # Over many seeds the labelled share of debits is close to the rate asked for.
    debits = int((timed["amount_minor"] < 0).sum())
    shares = [
        len(plant_anomalies(timed, new_merchants=NEW_NAMES, rate=0.05, seed=s).plants) / debits
        for s in range(12)
    ]
    assert 0.035 <= float(np.mean(shares)) <= 0.065, shares


def test_bad_arguments(timed: pd.DataFrame) -> None:
    with pytest.raises(ValueError):
        plant_anomalies(timed, new_merchants=NEW_NAMES, rate=1.5)
    with pytest.raises(ValueError):
        plant_anomalies(timed, new_merchants=[], rate=0.01)


def test_synthetic_times_of_day(timed: pd.DataFrame) -> None:
    original = _ledger()
    assert len(timed) == len(original)
    assert (timed["booked_at"].dt.normalize() == original["booked_at"]).all()
    seconds = (timed["booked_at"] - timed["booked_at"].dt.normalize()).dt.total_seconds()
    assert (seconds >= 60).all()
    # Rows keep the source's order within each user-day.
    order = timed.groupby(["user_id", timed["booked_at"].dt.normalize()])["booked_at"]
    assert order.apply(lambda s: s.is_monotonic_increasing).all()
    p = hour_distribution()
    assert p.sum() == pytest.approx(1.0)
    night = p[[23, 0, 1, 2, 3, 4, 5, 6]].sum()
    assert night == pytest.approx(NIGHT_SHARE)
    big = assign_times_of_day(pd.concat([original] * 20, ignore_index=True), seed=0)
    hours = big["booked_at"].dt.hour
    assert abs(float(((hours >= 23) | (hours < 7)).mean()) - NIGHT_SHARE) < 0.006
    assert assign_times_of_day(original, seed=3).equals(timed)


def test_real_birmingham_cards() -> None:
    if not BIRMINGHAM.is_dir():
        pytest.skip(f"shared data not found at {BIRMINGHAM}")
    ledger = birmingham_ledgers(BIRMINGHAM, max_users=40)
    assert ledger["user_id"].nunique() == 40
    timed = assign_times_of_day(ledger, seed=0)
    planted = plant_anomalies(timed, new_merchants=merchant_pool(ledger), rate=0.05, seed=0)
    counts = check_planted(timed, planted)
    assert set(counts) == set(ANOMALY_KINDS), counts
