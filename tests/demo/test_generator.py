"""Synthetic demo tenants: determinism, exact money, balances, calendar patterns, labels."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from datetime import UTC, date, timedelta
from itertools import pairwise
from pathlib import Path

import holidays
import pytest

from scale_ray.demo.generator import (
    ANOMALY_KINDS,
    DemoTenant,
    PlantedAnomaly,
    RecurringSeries,
    generate_tenants,
    iter_tenants,
    read_labels,
    write_labels,
)
from scale_ray.demo.merchants import load_merchant_catalog, load_merchant_names, merchant_bucket

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
HAVE_DATA = (SHARED_DATA / "birmingham_pcard_2016_2017").is_dir()
END = date(2024, 12, 31)
ARGS = {"years": 2.0, "seed": 7, "end": END, "anomaly_rate": 0.02}
UK = holidays.country_holidays("GB", subdiv="ENG", years=range(2022, 2026))


@pytest.fixture(scope="module")
def names() -> list[str] | None:
    return load_merchant_names(SHARED_DATA) if HAVE_DATA else None


@pytest.fixture(scope="module")
def demo(
    names: list[str] | None,
) -> tuple[list[DemoTenant], list[PlantedAnomaly], list[RecurringSeries]]:
    return generate_tenants(4, merchant_names=names, **ARGS)


def _working(d: date) -> bool:
    return d.weekday() < 5 and d not in UK


def test_deterministic_and_streaming_matches(demo, names) -> None:
    again = generate_tenants(4, merchant_names=names, **ARGS)
    assert again == demo
    streamed = list(iter_tenants(4, merchant_names=names, **ARGS))
    assert [s[0] for s in streamed] == demo[0]
    assert [a for s in streamed for a in s[1]] == demo[1]
    assert [r for s in streamed for r in s[2]] == demo[2]
    # User k is the same whatever the number of users generated with it.
    first = generate_tenants(1, merchant_names=names, **ARGS)
    assert first[0][0] == demo[0][0]
    later = generate_tenants(2, merchant_names=names, first_user=3, **ARGS)
    assert later[0] == demo[0][2:]
    assert [t.user_id for t in later[0]] == ["demo-0003", "demo-0004"]
    other = generate_tenants(1, merchant_names=names, **{**ARGS, "seed": 8})
    assert other[0][0].transactions != demo[0][0].transactions


def test_money_is_exact_ints_and_ids_unique(demo) -> None:
    tenants, _, _ = demo
    for tenant in tenants:
        assert tenant.user_id.startswith("demo-")
        account_ids = {a.account_id for a in tenant.accounts}
        assert 1 <= len(account_ids) <= 3
        assert {a.account_type for a in tenant.accounts} <= {"current", "savings", "credit_card"}
        for account in tenant.accounts:
            assert type(account.opening_balance_minor) is int
            assert type(account.current_balance_minor) is int
            assert account.currency == "GBP"
        ids = [t.txn_id for t in tenant.transactions]
        assert all(ids) and len(set(ids)) == len(ids)
        previous = None
        for txn in tenant.transactions:
            assert type(txn.amount_minor) is int and txn.amount_minor != 0
            assert type(txn.balance_after_minor) is int
            assert txn.account_id in account_ids
            assert txn.currency == "GBP"
            assert txn.booked_at.tzinfo is not None
            assert txn.booked_at.utcoffset() == timedelta(0)
            assert previous is None or txn.booked_at > previous
            previous = txn.booked_at
            assert all(isinstance(v, str) for v in txn.extra.values())


def test_balances_add_up_per_account(demo) -> None:
    tenants, _, _ = demo
    for tenant in tenants:
        running = {a.account_id: a.opening_balance_minor for a in tenant.accounts}
        for txn in tenant.transactions:
            running[txn.account_id] += txn.amount_minor
            assert running[txn.account_id] == txn.balance_after_minor
        for account in tenant.accounts:
            assert running[account.account_id] == account.current_balance_minor


def test_volume_and_seasonality(demo) -> None:
    tenants, _, _ = demo
    per_user_year = [len(t.transactions) / ARGS["years"] for t in tenants]
    assert all(900 <= n <= 2700 for n in per_user_year), per_user_year
    card = [t for tenant in tenants for t in tenant.transactions if t.mode == "card"]
    by_month = Counter(t.value_date.month for t in card)
    others = [by_month[m] for m in range(1, 12)]
    assert by_month[12] > max(others)
    by_weekday = Counter(t.value_date.weekday() for t in card)
    assert by_weekday[4] + by_weekday[5] > by_weekday[0] + by_weekday[1]
    # Card spending happens in waking hours (UK time), never 01:00-04:59 UTC unless planted.
    hours = Counter(t.booked_at.hour for t in card)
    assert hours[12] > 10 * hours[3]


def test_payday_and_rent_patterns(demo) -> None:
    tenants, _, recurring = demo
    for tenant in tenants:
        salary = [t for t in tenant.transactions if t.category_hint == "salary"]
        housing = [t for t in tenant.transactions if t.category_hint in ("rent", "mortgage")]
        months_in_range = int(ARGS["years"] * 12)
        assert len(salary) >= months_in_range - 2 and len(housing) >= months_in_range - 2
        months = Counter((t.value_date.year, t.value_date.month) for t in salary)
        assert max(months.values()) == 1
        for txn in salary:
            assert txn.amount_minor > 0 and txn.mode == "bacs"
            assert _working(txn.value_date), txn
        for txn in housing:
            assert txn.amount_minor < 0
            first = txn.value_date.replace(day=1)
            expected = first
            while not _working(expected):
                expected += timedelta(days=1)
            assert txn.value_date == expected
        # Yearly raises: salary never falls within one employer's series.
        series = [r for r in recurring if r.user_id == tenant.user_id]
        by_id = {t.txn_id: t for t in tenant.transactions}
        for r in series:
            amounts = [by_id[i].amount_minor for i in r.txn_ids]
            if by_id[r.txn_ids[0]].category_hint == "salary":
                assert amounts == sorted(amounts)
    # Some payday in the data was moved off a weekend or bank holiday.
    shifted = [
        t
        for tenant in tenants
        for t in tenant.transactions
        if t.category_hint in ("rent", "mortgage") and t.value_date.day > 1
    ]
    assert shifted


def test_bills_are_winter_high(demo) -> None:
    tenants, _, recurring = demo
    ratios: dict[str, list[float]] = defaultdict(list)
    for r in recurring:
        tenant = next(t for t in tenants if t.user_id == r.user_id)
        by_id = {t.txn_id: t for t in tenant.transactions}
        txns = [by_id[i] for i in r.txn_ids]
        if txns[0].category_hint != "utilities":
            continue
        winter = [-t.amount_minor for t in txns if t.value_date.month in (12, 1, 2)]
        summer = [-t.amount_minor for t in txns if t.value_date.month in (6, 7, 8)]
        if winter and summer:
            ratios[r.user_id].append(statistics.mean(winter) / statistics.mean(summer))
    assert len(ratios) == len(tenants)
    for values in ratios.values():
        assert max(values) > 1.3  # energy: winter-high
        assert min(values) > 0.85  # water and broadband: flat apart from yearly rises


def test_recurring_series_point_at_regular_transactions(demo) -> None:
    tenants, _, recurring = demo
    by_user = {t.user_id: {x.txn_id: x for x in t.transactions} for t in tenants}
    periods = Counter(r.period for r in recurring)
    assert periods["monthly"] >= 4 * 8
    assert set(periods) <= {"weekly", "monthly", "yearly"}
    spans = {"weekly": (6, 8), "monthly": (20, 40), "yearly": (350, 380)}
    for r in recurring:
        txns = [by_user[r.user_id][i] for i in r.txn_ids]
        assert len(txns) >= 2
        assert len({t.account_id for t in txns}) == 1
        assert r.amount_minor in {t.amount_minor for t in txns}
        lo, hi = spans[r.period]
        gaps = [(b.value_date - a.value_date).days for a, b in pairwise(txns)]
        assert all(lo <= g <= hi for g in gaps), (r.merchant, r.period, gaps)
    categories = {by_user[r.user_id][r.txn_ids[0]].category_hint for r in recurring}
    assert {"salary", "utilities", "council_tax", "phone", "transfer"} <= categories
    assert categories & {"rent", "mortgage"}
    assert "subscriptions" in categories


def test_planted_anomalies(demo) -> None:
    tenants, anomalies, _ = demo
    by_user = {t.user_id: t for t in tenants}
    assert {a.kind for a in anomalies} == set(ANOMALY_KINDS)
    assert len({(a.user_id, a.txn_id) for a in anomalies}) == len(anomalies)
    total = sum(len(t.transactions) for t in tenants)
    assert 0.4 * ARGS["anomaly_rate"] <= len(anomalies) / total <= 2.5 * ARGS["anomaly_rate"]
    for a in anomalies:
        txns = by_user[a.user_id].transactions
        index = {t.txn_id: k for k, t in enumerate(txns)}
        assert a.txn_id in index
        k = index[a.txn_id]
        txn = txns[k]
        assert txn.mode == "card" and txn.amount_minor < 0 and txn.merchant
        earlier = txns[:k]
        if a.kind == "amount_spike":
            prior = [-t.amount_minor for t in earlier if t.merchant == txn.merchant]
            assert len(prior) >= 5
            assert -txn.amount_minor >= 4 * statistics.median(prior[-30:])
        elif a.kind == "new_merchant_odd_hour":
            assert 1 <= txn.booked_at.astimezone(UTC).hour <= 4
            assert all(t.merchant != txn.merchant for t in earlier)
        elif a.kind == "duplicate_charge":
            assert any(
                t.merchant == txn.merchant
                and t.amount_minor == txn.amount_minor
                and t.account_id == txn.account_id
                and timedelta(0) < txn.booked_at - t.booked_at <= timedelta(minutes=10)
                for t in earlier[-50:]
            )
        else:
            near = [
                t
                for t in txns
                if t.mode == "card"
                and t.account_id == txn.account_id
                and abs(t.booked_at - txn.booked_at) <= timedelta(hours=1)
            ]
            assert len(near) >= 5
    bursts = Counter(
        (a.user_id, a.detail.split(" within")[0].split("/")[1])
        for a in anomalies
        if a.kind == "velocity_burst"
    )
    assert bursts


def test_no_anomalies_when_rate_is_zero(names) -> None:
    _, anomalies, recurring = generate_tenants(
        1, merchant_names=names, **{**ARGS, "anomaly_rate": 0.0}
    )
    assert anomalies == [] and recurring


def test_travel_bursts_and_savings(demo) -> None:
    tenants, _, _ = demo
    travel = [t for tenant in tenants for t in tenant.transactions if "fx_currency" in t.extra]
    assert travel
    for txn in travel[:50]:
        assert "[FX]" in txn.narration and txn.extra["travel"] == "true"
        assert txn.extra["fx_currency"] in txn.narration
    savings = [
        t for tenant in tenants for t in tenant.transactions if t.account_id.endswith("-savings")
    ]
    if any(a.account_type == "savings" for tenant in tenants for a in tenant.accounts):
        assert any(t.category_hint == "interest" for t in savings)


@pytest.mark.skipif(not HAVE_DATA, reason="shared data absent")
def test_merchants_come_from_the_real_file(demo, names) -> None:
    tenants, _, _ = demo
    real = set(names or [])
    spend = [
        t
        for tenant in tenants
        for t in tenant.transactions
        if t.category_hint in ("groceries", "fuel", "eating_out", "shopping")
    ]
    assert spend and all(t.merchant in real for t in spend)
    # Each user prefers a few grocery stores (Zipf-like): the top one carries a big share.
    for tenant in tenants:
        shops = Counter(t.merchant for t in tenant.transactions if t.category_hint == "groceries")
        top = shops.most_common(1)[0][1]
        assert top >= 0.3 * sum(shops.values())
    # The default (None) reads the same real names.
    default, _, _ = generate_tenants(1, **ARGS)
    assert {t.merchant for t in default[0].transactions if t.category_hint == "groceries"} <= real


@pytest.mark.skipif(not HAVE_DATA, reason="shared data absent")
def test_merchant_catalog() -> None:
    catalog = load_merchant_catalog(SHARED_DATA)
    assert len(catalog) > 5_000
    assert catalog == load_merchant_catalog(SHARED_DATA)
    names = [r.name for r in catalog]
    assert len(set(names)) == len(names) and all(n and n == n.strip() for n in names)
    assert [r.count for r in catalog] == sorted((r.count for r in catalog), reverse=True)
    by_name = {r.name: r for r in catalog}
    assert by_name["shell kings 587"].category == "Vehicle Fuel"
    assert by_name["shell kings 587"].bucket == "fuel"
    assert all(r.category for r in catalog[:200])


def test_merchant_bucket_rules() -> None:
    assert merchant_bucket("tesco stores 5504") == "groceries"
    assert merchant_bucket("premier inn", "Hospitality") == "hotel"
    assert merchant_bucket("costa coffee") == "eating_out"
    assert merchant_bucket("waterstones.com", "Books") == "shopping"
    assert merchant_bucket("acme widgets", "Legal Fee Other") == "other"
    assert merchant_bucket("acme widgets") == "shopping"


def test_custom_names_and_currency() -> None:
    names = ["tesco stores 1", "asda superstore", "costa coffee", "argos ltd", "shell kings 1"]
    tenants, _, _ = generate_tenants(
        1, years=1.0, seed=3, end=END, merchant_names=names, currency="eur"
    )
    txns = tenants[0].transactions
    assert {t.currency for t in txns} == {"EUR"}
    groceries = {t.merchant for t in txns if t.category_hint == "groceries"}
    assert groceries <= {"tesco stores 1", "asda superstore"}
    assert txns[0].value_date >= END - timedelta(days=366)
    assert txns[-1].value_date <= END


def test_labels_round_trip(tmp_path: Path, demo) -> None:
    _, anomalies, recurring = demo
    for name in ("labels.jsonl", "labels.json"):
        path = tmp_path / "out" / name
        write_labels(path, anomalies, recurring)
        got_anomalies, got_recurring = read_labels(path)
        assert got_anomalies == anomalies
        assert got_recurring == recurring
    empty = tmp_path / "empty.jsonl"
    write_labels(empty, [], [])
    assert read_labels(empty) == ([], [])


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError):
        generate_tenants(1, years=0)
    with pytest.raises(ValueError):
        generate_tenants(1, anomaly_rate=1.5)
    with pytest.raises(ValueError):
        generate_tenants(1, currency="pounds")
    assert generate_tenants(0) == ([], [], [])


def test_per_user_series_grouping(demo) -> None:
    _, anomalies, recurring = demo
    per_user = defaultdict(int)
    for r in recurring:
        per_user[r.user_id] += 1
    assert len(per_user) == 4 and min(per_user.values()) >= 8
    assert all(a.user_id in per_user for a in anomalies)
