"""Ledger features on small hand-made ledgers whose values are worked out by hand."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from scale_ray.models.anomaly.features import (
    FEATURE_NAMES,
    MAX_GAP_DAYS,
    build_features,
    segment_of,
)


def ledger(rows: list[tuple], user: str = "u1", currency: str = "GBP") -> pd.DataFrame:
    """Rows of (txn_id, when, amount_minor, merchant[, category])."""
    out = []
    for row in rows:
        txn_id, when, amount, merchant, *rest = row
        out.append(
            {
                "user_id": user,
                "txn_id": txn_id,
                "amount_minor": amount,
                "currency": currency,
                "booked_at": when,
                "booked_offset_min": 0,
                "merchant": merchant,
                "narration": f"CARD {merchant}",
                "category": rest[0] if rest else None,
            }
        )
    return pd.DataFrame(out)


T0 = datetime(2024, 3, 1, 10, 0, tzinfo=UTC)


def col(features, name: str) -> np.ndarray:
    return features.X[:, FEATURE_NAMES.index(name)]


def test_only_debits_are_featured_and_rows_line_up() -> None:
    frame = ledger(
        [
            ("a", T0, -1000, "TESCO"),
            ("salary", T0 + timedelta(hours=1), 250000, "ACME LTD"),
            ("b", T0 + timedelta(days=1), -2000, "TESCO"),
        ]
    )
    features = build_features(frame)
    assert list(features.rows["txn_id"]) == ["a", "b"]
    assert features.X.shape == (2, len(FEATURE_NAMES))
    assert np.isfinite(features.X).all()


def test_merchant_robust_z_uses_only_earlier_rows() -> None:
    # Four charges of £10, £10, £12, £8 at one merchant, then £100: its z is against the
    # first four only: median log(10), IQR of logs, scale floored at 0.10.
    amounts = [-1000, -1000, -1200, -800, -10000]
    rows = [(f"t{i}", T0 + timedelta(days=7 * i), a, "CAFE NERO") for i, a in enumerate(amounts)]
    features = build_features(ledger(rows))
    z = col(features, "merchant_z")
    # Fewer than 3 earlier rows: no evidence, z = 0.
    assert z[0] == z[1] == z[2] == 0.0
    logs = np.log([10.0, 10.0, 12.0, 8.0])
    q1, q3 = np.quantile(logs, [0.25, 0.75])
    scale = max((q3 - q1) / 1.349, 0.10)
    expected = (math.log(100.0) - np.median(logs)) / scale
    assert z[4] == pytest.approx(expected)
    # The row's context quotes the usual amount at the merchant in minor units.
    assert features.rows["merchant_usual_minor"].iloc[4] == 1000


def test_new_merchant_recency_and_counts() -> None:
    rows = [
        ("a", T0, -500, "TESCO"),
        ("b", T0 + timedelta(days=3), -500, "TESCO"),
        ("c", T0 + timedelta(days=4), -900, "BOOTS"),
    ]
    features = build_features(ledger(rows))
    assert list(col(features, "new_merchant")) == [1.0, 0.0, 1.0]
    assert col(features, "log_days_since_merchant")[0] == pytest.approx(math.log1p(MAX_GAP_DAYS))
    assert col(features, "log_days_since_merchant")[1] == pytest.approx(math.log1p(3.0))
    assert list(features.rows["merchant_count"]) == [0, 1, 0]


def test_velocity_counts_the_last_24_hours_including_the_row() -> None:
    rows = [
        ("a", T0, -1000, "A"),
        ("b", T0 + timedelta(hours=2), -2000, "B"),
        ("c", T0 + timedelta(hours=23), -3000, "C"),
        ("d", T0 + timedelta(hours=25), -4000, "D"),
    ]
    features = build_features(ledger(rows))
    assert list(features.rows["velocity_count"]) == [1, 2, 3, 3]
    assert list(features.rows["velocity_sum_minor"]) == [1000, 3000, 6000, 9000]
    assert col(features, "velocity_count_24h")[2] == pytest.approx(math.log1p(3))
    assert list(features.rows["velocity_count_1h"]) == [1, 1, 1, 1]


def test_duplicate_charge_signal_decays_with_the_gap() -> None:
    rows = [
        ("a", T0, -4599, "NETFLIX"),
        ("b", T0 + timedelta(minutes=5), -4599, "NETFLIX"),
        ("c", T0 + timedelta(days=3), -4599, "NETFLIX"),
        ("d", T0 + timedelta(days=3, minutes=1), -1000, "NETFLIX"),
    ]
    features = build_features(ledger(rows))
    dup = col(features, "duplicate")
    assert dup[0] == 0.0
    assert dup[1] == pytest.approx(math.exp(-(5 / 60) / 6.0))
    assert dup[2] < 1e-4  # three days later: a repeat, not a duplicate
    assert dup[3] == 0.0  # other amount
    assert features.rows["duplicate_gap_s"].iloc[1] == 300.0


def test_hour_rarity_and_unknown_times() -> None:
    # Ten daytime charges, then one at 03:12: rare. A date-only row (midnight) is neutral.
    rows = [(f"d{i}", T0 + timedelta(days=i), -1000, "SHOP") for i in range(10)]
    rows.append(("night", datetime(2024, 3, 20, 3, 12, tzinfo=UTC), -1000, "SHOP"))
    rows.append(("dateonly", datetime(2024, 3, 21, 0, 0, 2, tzinfo=UTC), -1000, "SHOP"))
    features = build_features(ledger(rows))
    rarity = col(features, "hour_rarity")
    hour = col(features, "hour")
    assert rarity[10] == pytest.approx(-math.log(1 / (10 + 24)))
    assert rarity[9] == pytest.approx(-math.log(10 / (9 + 24)))
    assert hour[10] == pytest.approx(3.2)
    assert rarity[11] == 0.0 and hour[11] == 12.0
    assert not features.rows["time_known"].iloc[11]


def test_local_time_uses_the_source_offset() -> None:
    frame = ledger([("a", datetime(2024, 3, 1, 22, 30, tzinfo=UTC), -100, "X")])
    frame["booked_offset_min"] = 330  # India: 04:00 local
    features = build_features(frame)
    assert col(features, "hour")[0] == pytest.approx(4.0)


def test_recurring_day_of_month_distance() -> None:
    days = [datetime(2024, m, 1, 9, tzinfo=UTC) for m in range(1, 6)]
    rows = [(f"r{i}", d, -85000, "RENT LTD") for i, d in enumerate(days)]
    rows.append(("late", datetime(2024, 6, 9, 9, tzinfo=UTC), -85000, "RENT LTD"))
    features = build_features(ledger(rows))
    dist = col(features, "dom_distance")
    assert dist[-1] == pytest.approx(8.0)
    assert dist[:3].tolist() == [0.0, 0.0, 0.0]  # fewer than three earlier payments
    assert features.rows["usual_dom"].iloc[-1] == 1.0


def test_users_and_currencies_are_separate_histories() -> None:
    a = ledger([(f"a{i}", T0 + timedelta(days=i), -1000, "SHOP") for i in range(5)], user="u1")
    b = ledger([("b0", T0 + timedelta(days=9), -1000, "SHOP")], user="u2")
    c = ledger([("c0", T0 + timedelta(days=9), -1000, "SHOP")], user="u1", currency="EUR")
    features = build_features(pd.concat([a, b, c], ignore_index=True))
    rows = features.rows.set_index("txn_id")
    assert rows.loc["b0", "merchant_count"] == 0
    assert rows.loc["c0", "merchant_count"] == 0
    assert rows.loc["a4", "merchant_count"] == 4


def test_features_do_not_depend_on_later_rows() -> None:
    rows = [
        (f"t{i}", T0 + timedelta(hours=13 * i), -(500 + 37 * i), f"M{i % 4}") for i in range(40)
    ]
    full = build_features(ledger(rows))
    prefix = build_features(ledger(rows[:25]))
    np.testing.assert_allclose(full.X[:25], prefix.X)


def test_input_order_does_not_matter() -> None:
    rows = [(f"t{i}", T0 + timedelta(hours=7 * i), -(300 + 11 * i), f"M{i % 3}") for i in range(30)]
    frame = ledger(rows)
    shuffled = frame.sample(frac=1.0, random_state=3).reset_index(drop=True)
    np.testing.assert_allclose(build_features(frame).X, build_features(shuffled).X)


def test_segments_follow_history_depth() -> None:
    assert list(segment_of(np.array([0, 19, 20, 99, 100]))) == [
        "new",
        "new",
        "growing",
        "growing",
        "established",
    ]


def test_missing_columns_are_named() -> None:
    with pytest.raises(ValueError, match="amount_minor"):
        build_features(pd.DataFrame({"user_id": ["u"], "txn_id": ["t"]}))


def test_empty_and_credit_only_ledgers() -> None:
    frame = ledger([("s", T0, 1000, "ACME")])
    features = build_features(frame)
    assert len(features) == 0
    assert features.X.shape == (0, len(FEATURE_NAMES))
