"""Synthetic but realistic personal-finance tenants, with ground-truth labels.

Each user gets a current account and maybe a savings account and a credit card, and years of
transactions that look like a UK bank feed: salary on payday (moved to the previous working day
over weekends and bank holidays, with yearly raises), rent or mortgage on the 1st, seasonal
energy bills, council tax, subscriptions, a standing order to savings, card spending at real
merchant names (drawn Zipf-like from the Birmingham purchase-card list, each user with a
preferred subset), weekly and yearly seasonality, travel bursts in a foreign currency, and
monthly credit-card repayments. Running balances are exact per account.

Two kinds of ground truth come back with the data: :class:`PlantedAnomaly` (amount spikes, an
unseen merchant at an odd hour, duplicate charges, velocity bursts) and :class:`RecurringSeries`
(every scheduled payment series). :func:`write_labels` / :func:`read_labels` store them.

Money is exact: amounts are drawn in minor units and rounded to ``int64`` before anything is
stored; floats appear only as distribution parameters. Output depends only on the arguments
(and, when ``merchant_names`` is None, on whether the shared data is present): each user draws
from its own ``SeedSequence([seed, user_number])``, so :func:`iter_tenants` streams exactly what
:func:`generate_tenants` returns.
"""

from __future__ import annotations

import calendar as _calendar
import gc
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

import holidays
import numpy as np

from scale_ray.demo.merchants import (
    FALLBACK_MERCHANTS,
    MerchantRecord,
    load_merchant_catalog,
    merchant_bucket,
)
from scale_ray.ingest.records import AccountInfo, ParsedTxn
from scale_ray.money import exponent, from_minor, normalize_currency

#: ``end`` when none is given: fixed, so the same seed always gives the same data.
DEFAULT_END = date(2025, 12, 31)
ANOMALY_KINDS: tuple[str, ...] = (
    "amount_spike",
    "new_merchant_odd_hour",
    "duplicate_charge",
    "velocity_burst",
)
PERIODS: tuple[str, ...] = ("weekly", "monthly", "yearly")


@dataclass
class DemoTenant:
    """One demo user: accounts and every transaction (``txn_id`` and ``account_id`` always set).

    ``transactions`` are in booked order (strictly increasing ``booked_at`` for generated users).
    """

    user_id: str
    display_name: str
    accounts: list[AccountInfo]
    transactions: list[ParsedTxn] = field(default_factory=list)


@dataclass(frozen=True)
class PlantedAnomaly:
    """A transaction the generator made anomalous on purpose (one label per transaction)."""

    user_id: str
    txn_id: str
    kind: str
    detail: str


@dataclass(frozen=True)
class RecurringSeries:
    """Ground truth for a recurring-payment detector.

    ``amount_minor`` is signed like the transactions (credits positive) and is the median
    amount of the series (an amount that occurs in it): bills vary with the season, salary and
    rent rise yearly, subscriptions are fixed. ``txn_ids`` are in booked order and all on one
    account.
    """

    user_id: str
    merchant: str
    period: str
    amount_minor: int
    txn_ids: tuple[str, ...]


# --------------------------------------------------------------------------------------------
# Static tables
# --------------------------------------------------------------------------------------------

_FIRST_NAMES = (
    "Oliver", "Amelia", "George", "Isla", "Harry", "Ava", "Noah", "Mia", "Jack", "Ivy", "Leo",
    "Lily", "Arthur", "Freya", "Muhammad", "Grace", "Oscar", "Sophia", "Charlie", "Ella",
    "Jacob", "Evie", "Thomas", "Poppy", "Henry", "Chloe", "Alfie", "Ruby", "Theo", "Emily",
    "Priya", "Aisha", "Daniel", "Hannah", "Samuel", "Zara", "Joshua", "Maya", "Ethan", "Sara",
)  # fmt: skip
_SURNAMES = (
    "Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies", "Patel",
    "Robinson", "Wright", "Thompson", "Evans", "Walker", "White", "Roberts", "Green", "Hall",
    "Thomas", "Clarke", "Jackson", "Wood", "Harris", "Edwards", "Turner", "Khan", "Martin",
    "Cooper", "Hill", "Ward", "Hughes", "Moore", "Clark", "King", "Harrison", "Lewis", "Begum",
    "Baker", "Lee", "Allen",
)  # fmt: skip
_EMPLOYERS = (
    "MIDLANDS LOGISTICS LTD", "BRINDLEY ENGINEERING", "UNIVERSITY HOSPITALS BHAM",
    "WESTSIDE RETAIL GROUP", "CANALSIDE SOFTWARE LTD", "HARBORNE DENTAL CARE",
    "KINGS NORTON ACADEMY",
    "SOLIHULL BUILDERS PLC", "ASTON ANALYTICS LTD", "MOSELEY CATERING CO", "BULLRING HOLDINGS",
    "EDGBASTON LEGAL LLP", "SELLY OAK PHARMA", "DIGBETH MEDIA LTD", "ERDINGTON MOTORS",
)  # fmt: skip
_LANDLORDS = ("BRIDGE LETTINGS", "CITY HOMES LETTINGS", "MIDLAND PROPERTY MGMT", "J HUGHES RENT")
_LENDERS = ("NATIONWIDE BS MORTGAGE", "HALIFAX MORTGAGE", "SANTANDER MORTGAGE", "NATWEST MTG")
_BANKS = ("Barclays", "HSBC UK", "Lloyds Bank", "NatWest", "Santander UK", "Nationwide", "Monzo")
_CARD_ISSUERS = ("Barclaycard", "American Express", "MBNA", "Capital One", "Tesco Bank")
_ATM_NAMES = ("LINK ATM", "NOTEMACHINE", "CARDTRONICS ATM", "POST OFFICE ATM")

# Energy, water, phone/broadband, council: real names first (used when present), then fallbacks.
_ENERGY = (
    ("npower", "scottish power", "edf energy-dom", "british gas tradin", "sse", "first utility"),
    ("british gas", "octopus energy", "edf energy", "e.on next", "ovo energy"),
)
_WATER = (("severn trent water", "www.stwater.co.uk"), ("severn trent water",))
_BROADBAND = (
    ("bt bill payment 1", "virgin media pymts", "bt bill payment 2"),
    ("bt group plc", "virgin media", "sky digital"),
)
_MOBILE = (
    ("vodafone", "ee  t-mobile", "o2 uk payment", "giffgaff.com", "three-billpay(cc)"),
    ("vodafone", "ee", "o2", "giffgaff", "three"),
)
_COUNCIL = (
    ("coventry city council", "walsall council", "leic city council", "liverpool city council"),
    ("birmingham city council",),
)
# (real-name candidates, fallback, prices in minor units, period)
_SUBSCRIPTIONS: tuple[tuple[tuple[str, ...], str, tuple[int, ...], str], ...] = (
    (("netflix.com",), "netflix.com", (699, 1099, 1599), "monthly"),
    (("spotify p",), "spotify", (1099, 1199, 1799), "monthly"),
    ((), "disney plus", (799, 1099), "monthly"),
    (("itunes.com/bill",), "apple.com/bill", (99, 299, 899), "monthly"),
    (("emporium gym",), "puregym", (2299, 2799, 3499, 4499), "monthly"),
    (("amazon prime",), "amazon prime", (7900, 9500), "yearly"),
    (("tvlicensing.co.uk",), "tvlicensing.co.uk", (15950, 16950), "yearly"),
    (("zurich insurance p", "m  s car insurance"), "direct line insurance", (0,), "yearly"),
    (("dvla vehicle tax",), "dvla vehicle tax", (18000, 19000), "yearly"),
    ((), "milk  more", (850, 1120, 1390), "weekly"),
    ((), "riverford organic", (1995, 2395), "weekly"),
)


# Discretionary buckets: base rate share, median amount (minor units), log-sigma,
# weekday factors Mon..Sun, local-hour weights (0..23; zero before 06:00).
def _hours(*spans: tuple[int, int, float]) -> np.ndarray:
    weights = np.zeros(24)
    for lo, hi, w in spans:
        weights[lo:hi] += w
    return weights / weights.sum()


_BUCKET_SPECS: dict[str, tuple[float, int, float, tuple[float, ...], np.ndarray]] = {
    "groceries": (
        0.21, 900, 0.7, (0.9, 0.85, 0.9, 1.0, 1.15, 1.4, 0.85),
        _hours((8, 21, 1.0), (11, 13, 0.8), (16, 19, 1.2)),
    ),
    "eating_out": (
        0.27, 420, 0.6, (0.7, 0.75, 0.85, 0.95, 1.5, 1.6, 0.85),
        _hours((7, 10, 1.0), (12, 14, 2.0), (18, 22, 1.6), (10, 23, 0.2)),
    ),
    "shopping": (
        0.21, 1000, 0.85, (0.85, 0.85, 0.9, 0.95, 1.15, 1.45, 1.0),
        _hours((9, 20, 1.0), (12, 17, 0.5), (20, 24, 0.6)),
    ),
    "transport": (
        0.12, 330, 0.6, (1.2, 1.2, 1.2, 1.2, 1.1, 0.6, 0.5),
        _hours((7, 9, 2.0), (9, 16, 0.4), (16, 19, 1.6), (19, 24, 0.5)),
    ),
    "fuel": (
        0.06, 3000, 0.3, (1.0, 0.95, 1.0, 1.0, 1.1, 1.05, 0.9),
        _hours((7, 20, 1.0), (7, 9, 0.6), (16, 19, 0.6)),
    ),
    "entertainment": (
        0.05, 900, 0.6, (0.6, 0.6, 0.7, 0.8, 1.4, 1.7, 1.2),
        _hours((11, 23, 1.0), (18, 22, 1.0)),
    ),
    "cash": (0.03, 3000, 0.0, (1.0, 0.9, 0.9, 1.0, 1.3, 1.2, 0.7), _hours((9, 21, 1.0))),
}  # fmt: skip
_DISC_BUCKETS: tuple[str, ...] = tuple(_BUCKET_SPECS)
_CARD_BUCKETS = frozenset(b for b in _DISC_BUCKETS if b != "cash")
# How many merchants a user prefers per bucket (low, high); visits among them are Zipf(1.1).
_PREF_SIZE = {
    "groceries": (3, 7), "eating_out": (8, 22), "shopping": (12, 40), "transport": (3, 8),
    "fuel": (2, 5), "entertainment": (3, 8), "cash": (1, 1),
}  # fmt: skip
_MONTH_FACTOR = np.array([0.85, 0.9, 0.97, 1.0, 1.0, 1.0, 1.05, 1.05, 0.95, 1.0, 1.08, 1.0])

# Travel destinations: country, currency, GBP->currency rate x 1e4, cities, merchant names.
_DESTINATIONS = (
    ("ES", "EUR", 11600, ("MADRID", "BARCELONA", "VALENCIA", "MALAGA", "SEVILLA"),
     ("HOTEL MIRAMAR", "HOTEL PLAZA MAYOR", "NH HOTEL"),
     ("RESTAURANTE EL PATIO", "BAR CASA PACO", "TABERNA LA ESQUINA", "CAFETERIA SOL",
      "CERVECERIA CENTRAL"),
     ("MERCADONA", "EL CORTE INGLES", "FARMACIA CENTRAL", "CARREFOUR EXPRESS"), "TAXI "),
    ("FR", "EUR", 11600, ("PARIS", "LYON", "NICE", "BORDEAUX"),
     ("HOTEL DU PARC", "HOTEL IBIS CENTRE", "HOTEL LE MARAIS"),
     ("BRASSERIE DU MARCHE", "CAFE DE LA GARE", "LE PETIT BISTROT", "BOULANGERIE PAUL"),
     ("MONOPRIX", "CARREFOUR CITY", "PHARMACIE DU CENTRE", "FNAC"), "G7 TAXI "),
    ("IT", "EUR", 11600, ("ROMA", "FIRENZE", "MILANO", "NAPOLI"),
     ("HOTEL BELVEDERE", "HOTEL CENTRALE", "ALBERGO ROMA"),
     ("TRATTORIA DA MARIO", "PIZZERIA NAPOLI", "BAR CENTRALE", "GELATERIA DEL PONTE"),
     ("CONAD", "COOP", "FARMACIA SAN MARCO", "LA RINASCENTE"), "TAXI "),
    ("PT", "EUR", 11600, ("LISBOA", "PORTO", "FARO"),
     ("HOTEL AVENIDA", "POUSADA DO PORTO", "HOTEL MAR AZUL"),
     ("RESTAURANTE O PESCADOR", "PASTELARIA BELEM", "CAFE A BRASILEIRA", "TASCA DO CHICO"),
     ("PINGO DOCE", "CONTINENTE", "FARMACIA ESTACAO"), "TAXI "),
    ("GR", "EUR", 11600, ("ATHINA", "THESSALONIKI", "CHANIA"),
     ("HOTEL ACROPOLIS VIEW", "HOTEL OLYMPIA", "ELECTRA HOTEL"),
     ("TAVERNA TO KAFENEIO", "OUZERI MARIA", "SOUVLAKI BAR", "CAFE PLAKA"),
     ("AB VASSILOPOULOS", "SKLAVENITIS", "PHARMACY PLAKA"), "TAXI "),
)  # fmt: skip


_AIRLINE_WORDS = (
    "air", "jet", "flybe", "ryanair", "eurostar", "expedia", "klm", "lufthansa", "british a",
    "iberia", "vueling", "tap ", "sas",
)  # fmt: skip


# --------------------------------------------------------------------------------------------
# Calendar shared by every user of one call
# --------------------------------------------------------------------------------------------


class _Calendar:
    """Day-level facts for ``start..end``: weekday, month, UK bank holidays, BST, working days."""

    def __init__(self, start: date, end: date) -> None:
        days = np.arange(np.datetime64(start, "D"), np.datetime64(end, "D") + 1)
        self.start, self.end, self.n = start, end, len(days)
        self.epoch_s = days.astype("datetime64[s]").astype(np.int64)
        day_num = days.astype(np.int64)
        self.dow = ((day_num + 3) % 7).astype(np.int64)  # 1970-01-01 was a Thursday; Mon = 0
        months = days.astype("datetime64[M]")
        self.month = (months.astype(np.int64) % 12 + 1).astype(np.int64)
        self.year = (days.astype("datetime64[Y]").astype(np.int64) + 1970).astype(np.int64)
        self.dom = (days - months.astype("datetime64[D]")).astype(np.int64) + 1
        self.dates: list[date] = [start + timedelta(days=i) for i in range(self.n)]
        bank = holidays.country_holidays("GB", subdiv="ENG", years=range(start.year, end.year + 1))
        self.holiday = np.array([d in bank for d in self.dates], dtype=bool)
        self.working = (self.dow < 5) & ~self.holiday
        idx = np.arange(self.n)
        prev = np.maximum.accumulate(np.where(self.working, idx, -1))
        nxt = np.minimum.accumulate(np.where(self.working, idx, self.n)[::-1])[::-1]
        self.prev_wd = prev  # -1 where no working day at or before
        self.next_wd = nxt  # n where no working day at or after
        self.bst = self._bst()
        self.months: list[tuple[int, int]] = []
        y, m = start.year, start.month
        while (y, m) <= (end.year, end.month):
            self.months.append((y, m))
            y, m = (y + 1, 1) if m == 12 else (y, m + 1)

    def _bst(self) -> np.ndarray:
        """1 on days of British Summer Time (last Sunday of March to last Sunday of October)."""
        out = np.zeros(self.n, dtype=np.int64)
        for year in range(self.start.year, self.end.year + 1):
            march = date(year, 3, 31)
            october = date(year, 10, 31)
            begin = march - timedelta(days=(march.weekday() + 1) % 7)
            finish = october - timedelta(days=(october.weekday() + 1) % 7)
            lo = max((begin - self.start).days, 0)
            hi = min((finish - self.start).days, self.n)
            if hi > lo:
                out[lo:hi] = 1
        return out

    def index(self, year: int, month: int, day: int) -> int | None:
        """Index of the date (day clamped to the month's length), or None outside the range."""
        day = min(day, _calendar.monthrange(year, month)[1])
        i = (date(year, month, day) - self.start).days
        return i if 0 <= i < self.n else None

    def month_end(self, year: int, month: int) -> int | None:
        return self.index(year, month, 31)

    def ts(self, day: int, local_seconds: int) -> int:
        """UTC epoch seconds of a UK local time on day ``day``."""
        return int(self.epoch_s[day]) + local_seconds - int(self.bst[day]) * 3600


# --------------------------------------------------------------------------------------------
# Merchant pools
# --------------------------------------------------------------------------------------------


def _usable(name: str) -> bool:
    low = name.lower()
    letters = sum(ch.isalpha() for ch in low)
    return letters >= 3 and not any(bad in low for bad in ("fee", "cash advance", "refund"))


@dataclass
class _Pools:
    """Merchant names per bucket in popularity order, with rank-based (Zipf) weights."""

    by_bucket: dict[str, list[str]]
    weights: dict[str, np.ndarray]
    all_names: frozenset[str]
    odd_pool: list[str]  # for new_merchant_odd_hour: names from every personal bucket

    @classmethod
    def build(cls, records: Sequence[tuple[str, str]]) -> _Pools:
        by_bucket: dict[str, list[str]] = {}
        seen: set[str] = set()
        for name, bucket in records:
            if name in seen or not _usable(name):
                continue
            seen.add(name)
            by_bucket.setdefault(bucket, []).append(name)
        for bucket, names in FALLBACK_MERCHANTS.items():
            if bucket != "other" and not by_bucket.get(bucket):
                by_bucket[bucket] = list(names)
                seen.update(names)
        weights = {
            b: 1.0 / np.power(np.arange(1, len(v) + 1, dtype=np.float64), 0.9)
            for b, v in by_bucket.items()
        }
        weights = {b: w / w.sum() for b, w in weights.items()}
        odd_pool = [
            n
            for b in ("shopping", "eating_out", "entertainment", "transport", "groceries")
            for n in by_bucket.get(b, [])
        ]
        return cls(by_bucket, weights, frozenset(seen), odd_pool)

    def pick(self, candidates: tuple[tuple[str, ...], tuple[str, ...]], u: float) -> str:
        """A real name from ``candidates[0]`` present in the pools, else a fallback."""
        real = [n for n in candidates[0] if n in self.all_names]
        options = real or list(candidates[1])
        return options[min(int(u * len(options)), len(options) - 1)]


def _default_pools() -> _Pools:
    """Pools from the real purchase-card names, or the built-in names without shared data."""
    from scale_ray.settings import get_settings

    return _pools_for(str(get_settings().shared_data_path()))


@lru_cache(maxsize=4)
def _pools_for(shared_data: str) -> _Pools:
    # Pools are read-only once built, so one per shared-data folder is reused across calls.
    try:
        catalog: list[MerchantRecord] = load_merchant_catalog(Path(shared_data))
    except FileNotFoundError:
        catalog = []
    if catalog:
        return _Pools.build([(r.name, r.bucket) for r in catalog])
    return _Pools.build([(n, b) for b, names in FALLBACK_MERCHANTS.items() for n in names])


# --------------------------------------------------------------------------------------------
# One user
# --------------------------------------------------------------------------------------------

_CUR, _SAV, _CC = 0, 1, 2


class _Rows:
    """Column lists for one user's transactions before sorting."""

    def __init__(self) -> None:
        self.ts: list[int] = []
        self.amount: list[int] = []
        self.account: list[int] = []
        self.day: list[int] = []
        self.merchant: list[str | None] = []
        self.narration: list[str] = []
        self.mode: list[str] = []
        self.category: list[str] = []
        self.series: list[int] = []
        self.extra: list[dict[str, str] | None] = []

    def __len__(self) -> int:
        return len(self.ts)

    def add(
        self,
        ts: int,
        amount: int,
        account: int,
        day: int,
        merchant: str | None,
        narration: str,
        mode: str,
        category: str,
        series: int = -1,
        extra: dict[str, str] | None = None,
    ) -> int:
        self.ts.append(int(ts))
        self.amount.append(int(amount))
        self.account.append(account)
        self.day.append(int(day))
        self.merchant.append(merchant)
        self.narration.append(narration)
        self.mode.append(mode)
        self.category.append(category)
        self.series.append(series)
        self.extra.append(extra)
        return len(self.ts) - 1


def _rescale(hundredths: np.ndarray, exp: int) -> np.ndarray:
    """Amounts drawn in hundredths of a unit, in the minor units of a currency with ``exp``.

    Magnitudes stay GBP-like whatever the currency (no exchange rate is applied); a non-zero
    amount never rounds to zero.
    """
    if exp == 2:
        return hundredths
    if exp > 2:
        return hundredths * 10 ** (exp - 2)
    scaled = np.abs(hundredths) // 10 ** (2 - exp)
    return np.sign(hundredths) * np.where(hundredths != 0, np.maximum(scaled, 1), 0)


def _card_narration(merchant: str, account: int) -> str:
    upper = merchant.upper()
    return upper if account == _CC else f"CARD PAYMENT TO {upper}"


class _UserGen:
    """Generates one user. All randomness comes from ``rng``, drawn in a fixed order."""

    def __init__(
        self,
        number: int,
        cal: _Calendar,
        pools: _Pools,
        rng: np.random.Generator,
        currency: str,
        anomaly_rate: float,
    ) -> None:
        self.user_id = f"demo-{number:04d}"
        self.cal, self.pools, self.rng = cal, pools, rng
        self.currency, self.anomaly_rate = currency, anomaly_rate
        self.rows = _Rows()
        self.series_meta: list[tuple[str, str]] = []  # (merchant, period)
        self.anomalies: list[tuple[int, str, str, int]] = []  # (row, kind, detail, ref row)
        self.trips: list[tuple[int, int, int]] = []  # (first day, last day, budget)

    # -- helpers ---------------------------------------------------------------------------
    def _series(self, merchant: str, period: str) -> int:
        self.series_meta.append((merchant, period))
        return len(self.series_meta) - 1

    def _posting_seconds(self) -> int:
        """Bank postings (BACS, direct debits, standing orders): 06:00-08:59 local."""
        return int(self.rng.integers(6 * 3600, 9 * 3600))

    def _month_days(self, day_of_month: int, shift: str) -> list[tuple[int, int]]:
        """(month index, day index) of ``day_of_month`` in each month, moved to a working day."""
        out = []
        cal = self.cal
        for mi, (y, m) in enumerate(cal.months):
            i = cal.index(y, m, day_of_month)
            if i is None:
                continue
            j = int(cal.next_wd[i]) if shift == "next" else int(cal.prev_wd[i])
            if 0 <= j < cal.n:
                out.append((mi, j))
        return out

    # -- profile ---------------------------------------------------------------------------
    def profile(self) -> None:
        rng = self.rng
        self.name = f"{rng.choice(_FIRST_NAMES)} {rng.choice(_SURNAMES)}"
        self.net = int(np.clip(np.rint(rng.lognormal(np.log(270_000), 0.3)), 150_000, 900_000))
        self.has_sav = bool(rng.random() < 0.6)
        self.has_cc = bool(rng.random() < 0.5)
        self.has_car = bool(rng.random() < 0.7)
        self.bank = str(rng.choice(_BANKS))
        self.issuer = str(rng.choice(_CARD_ISSUERS))
        self.cc_share = float(rng.uniform(0.35, 0.8)) if self.has_cc else 0.0
        self.slack = float(np.clip(rng.normal(0.03, 0.025), -0.02, 0.1))
        self.activity = float(np.clip(rng.lognormal(np.log(3.6), 0.22), 2.3, 6.2))
        self.digits = [f"{int(d):04d}" for d in rng.integers(0, 10_000, size=3)]

    # -- recurring -------------------------------------------------------------------------
    def salary(self) -> None:
        rng, cal = self.rng, self.cal
        n_months = len(cal.months)
        change = int(rng.integers(12, n_months - 6)) if n_months > 24 and rng.random() < 0.3 else -1
        rules = ("last", 25, 28, 15, 20)
        segments = [(0, n_months)] if change < 0 else [(0, change), (change, n_months)]
        amount = self.net
        for k, (m0, m1) in enumerate(segments):
            employer = str(rng.choice(_EMPLOYERS))
            rule = rules[int(rng.choice(5, p=[0.5, 0.25, 0.1, 0.05, 0.1]))]
            if k:
                amount = amount * int(rng.integers(10_500, 11_600)) // 10_000
            series = self._series(employer, "monthly")
            for mi in range(m0, m1):
                y, m = cal.months[mi]
                if m == 4 and mi > m0:
                    amount = amount * int(rng.integers(10_150, 10_600)) // 10_000
                target = cal.month_end(y, m) if rule == "last" else cal.index(y, m, int(rule))
                if target is None:
                    continue
                day = int(cal.prev_wd[target])
                if day < 0:
                    continue
                self.rows.add(
                    cal.ts(day, self._posting_seconds()),
                    amount,
                    _CUR,
                    day,
                    employer,
                    f"{employer} SALARY",
                    "bacs",
                    "salary",
                    series,
                )
                self.paydays.append(day)

    def housing(self) -> None:
        rng, cal = self.rng, self.cal
        rent = rng.random() < 0.55
        share = rng.uniform(0.24, 0.36)
        if rent:
            payee = str(rng.choice(_LANDLORDS))
            amount = int(np.rint(self.net * share / 500.0)) * 500
            narration, mode, category = f"{payee} RENT", "standing_order", "rent"
        else:
            payee = str(rng.choice(_LENDERS))
            amount = int(np.rint(self.net * share))
            narration, mode, category = payee, "direct_debit", "mortgage"
        bump_month = int(rng.integers(1, 13))
        series = self._series(payee, "monthly")
        first = True
        for mi, day in self._month_days(1, "next"):
            if rent and not first and cal.months[mi][1] == bump_month:
                amount = int(np.rint(amount * rng.uniform(1.0, 1.05) / 500.0)) * 500
            first = False
            self.rows.add(
                cal.ts(day, self._posting_seconds()),
                -amount,
                _CUR,
                day,
                payee,
                narration,
                mode,
                category,
                series,
            )

    def bills(self) -> None:
        rng, cal, pools = self.rng, self.cal, self.pools
        specs: list[tuple[str, str, int, float, bool]] = [
            # merchant, category, base amount, seasonal amplitude, April rise
            (
                pools.pick(_ENERGY, rng.random()),
                "utilities",
                int(rng.integers(5_500, 16_000)),
                float(rng.uniform(0.25, 0.5)),
                True,
            ),
            (
                pools.pick(_WATER, rng.random()),
                "utilities",
                int(rng.integers(2_800, 5_600)),
                0.0,
                True,
            ),
            (
                pools.pick(_COUNCIL, rng.random()),
                "council_tax",
                int(rng.integers(11_000, 24_000)),
                0.0,
                True,
            ),
            (
                pools.pick(_BROADBAND, rng.random()),
                "utilities",
                int(rng.integers(2_500, 6_500)),
                0.0,
                False,
            ),
            (pools.pick(_MOBILE, rng.random()), "phone", int(rng.integers(800, 4_500)), 0.0, False),
        ]
        for merchant, category, base, amplitude, april in specs:
            dom = int(rng.integers(1, 29))
            rise = int(rng.integers(10_200, 10_600))
            series = self._series(merchant, "monthly")
            amount = base
            for mi, day in self._month_days(dom, "next"):
                month = cal.months[mi][1]
                if april and month == 4 and mi > 0:
                    amount = amount * rise // 10_000
                value = amount
                if amplitude:
                    # Winter-high: peak in January, trough in July.
                    factor = 1.0 + amplitude * np.cos(2 * np.pi * (month - 1) / 12.0)
                    value = int(np.rint(amount * factor))
                self.rows.add(
                    cal.ts(day, self._posting_seconds()),
                    -value,
                    _CUR,
                    day,
                    merchant,
                    merchant.upper(),
                    "direct_debit",
                    category,
                    series,
                )

    def subscriptions(self) -> None:
        rng, cal = self.rng, self.cal
        n_months = len(cal.months)
        probs = (0.55, 0.4, 0.2, 0.35, 0.3, 0.35, 0.6, 0.45, 0.65, 0.12, 0.08)
        for (real, fallback, prices, period), p in zip(_SUBSCRIPTIONS, probs, strict=True):
            u_take, u_name, u_price = rng.random(), rng.random(), rng.random()
            if u_take >= p or ("vehicle" in fallback and not self.has_car):
                continue
            merchant = self.pools.pick((real, (fallback,)), u_name)
            price = prices[min(int(u_price * len(prices)), len(prices) - 1)]
            if price == 0:  # insurance: priced per user
                price = int(rng.integers(18_000, 65_000))
            account = _CC if self.has_cc and rng.random() < 0.6 else _CUR
            start_m = int(rng.integers(0, max(1, n_months // 2))) if rng.random() < 0.4 else 0
            # A cancelled subscription ran at least six months (a short history: none ends).
            stop_m = (
                int(rng.integers(start_m + 6, n_months + 1))
                if rng.random() < 0.2 and start_m + 6 <= n_months
                else n_months
            )
            stop_m = max(stop_m, start_m + 1)
            lo = cal.index(*cal.months[start_m], 1) or 0
            hi_idx = cal.month_end(*cal.months[stop_m - 1])
            hi = cal.n - 1 if hi_idx is None else hi_idx
            if period == "weekly":
                weekday = int(rng.integers(0, 7))
                days = [d for d in range(lo, hi + 1) if cal.dow[d] == weekday]
            elif period == "monthly":
                dom = int(rng.integers(1, 29))
                days = [
                    i
                    for (y, m) in cal.months[start_m:stop_m]
                    if (i := cal.index(y, m, dom)) is not None
                ]
            else:
                anniversary = int(rng.integers(lo, min(lo + 365, cal.n)))
                a = cal.dates[anniversary]
                days = []
                for y in range(a.year, cal.end.year + 1):
                    i = cal.index(y, a.month, a.day)
                    if i is not None and i <= hi:
                        days.append(i)
            if not days:
                continue
            series = self._series(merchant, period)
            mode = "card" if account == _CC or period != "yearly" else "direct_debit"
            narration = _card_narration(merchant, account) if mode == "card" else merchant.upper()
            for day in days:
                seconds = int(rng.integers(6 * 3600, 12 * 3600))
                self.rows.add(
                    cal.ts(day, seconds),
                    -price,
                    account,
                    day,
                    merchant,
                    narration,
                    mode,
                    "subscriptions",
                    series,
                )

    # -- discretionary ---------------------------------------------------------------------
    def plan_trips(self) -> np.ndarray:
        rng, cal = self.rng, self.cal
        suppress = np.ones(cal.n)
        n_years = max(1, round(cal.n / 365.25))
        wanted = int(min(rng.poisson(1.3 * n_years), 3 * n_years))
        taken = np.zeros(cal.n, dtype=bool)
        for _ in range(wanted):
            length = int(rng.integers(4, 11))
            if cal.n < length + 30:
                break
            first = int(rng.integers(14, cal.n - length - 2))
            last = first + length - 1
            if taken[max(0, first - 7) : last + 8].any():
                continue
            taken[first : last + 1] = True
            suppress[first : last + 1] = 0.06
            budget = int(self.net * rng.uniform(0.25, 0.7))
            self.trips.append((first, last, budget))
        self.trips.sort()
        return suppress

    def discretionary(self, suppress: np.ndarray) -> dict[str, np.ndarray]:
        rng, cal, pools = self.rng, self.cal, self.pools
        shares = np.array([_BUCKET_SPECS[b][0] for b in _DISC_BUCKETS])
        if not self.has_car:
            fuel = _DISC_BUCKETS.index("fuel")
            shares[_DISC_BUCKETS.index("transport")] += shares[fuel]
            shares[fuel] = 0.0
        shares = rng.dirichlet(shares / shares.sum() * 60 + 1e-9)
        season = _MONTH_FACTOR[cal.month - 1].copy()
        december = cal.month == 12
        season[december] = 1.1 + 0.45 * np.minimum(cal.dom[december], 24) / 24.0
        season[december & (cal.dom == 25)] = 0.15
        season[december & (cal.dom == 26)] = 0.9
        years_in = (cal.year - cal.year[0]).astype(np.float64)
        inflation = np.power(1.03, years_in)
        dow = np.where(cal.holiday, 5, cal.dow)  # bank holidays behave like a Saturday

        cols: dict[str, list[np.ndarray]] = {k: [] for k in ("day", "secs", "amt", "bucket")}
        merchants: list[np.ndarray] = []
        for b_i, bucket in enumerate(_DISC_BUCKETS):
            _, median, sigma, weekday, hours = _BUCKET_SPECS[bucket]
            rate = self.activity * shares[b_i] * np.asarray(weekday)[dow] * season * suppress
            counts = rng.poisson(rate)
            days = np.repeat(np.arange(cal.n), counts)
            n = len(days)
            secs = rng.choice(24, size=n, p=hours) * 3600 + rng.integers(0, 3600, size=n)
            if bucket == "cash":
                amt = rng.integers(1, 7, size=n) * 1000
                names = np.full(n, None, dtype=object)
            else:
                pool = pools.by_bucket.get(bucket) or list(FALLBACK_MERCHANTS[bucket])
                weights = pools.weights.get(bucket)
                if weights is None or len(weights) != len(pool):
                    weights = np.full(len(pool), 1.0 / len(pool))
                lo, hi = _PREF_SIZE[bucket]
                k = min(len(pool), int(rng.integers(lo, hi + 1)))
                preferred = rng.choice(len(pool), size=k, replace=False, p=weights)
                zipf = 1.0 / np.power(np.arange(1, k + 1, dtype=np.float64), 1.1)
                pick = preferred[rng.choice(k, size=n, p=zipf / zipf.sum())]
                explore = rng.random(n) < 0.04
                pick[explore] = rng.choice(len(pool), size=int(explore.sum()), p=weights)
                level = np.exp(rng.normal(0.0, 0.4, size=len(pool)).astype(np.float64))
                names = np.asarray(pool, dtype=object)[pick]
                raw = median * level[pick] * np.exp(rng.normal(0.0, sigma, size=n))
                raw = raw * inflation[days]
                if bucket == "shopping":
                    raw = raw * np.where(december[days], 1.35, 1.0)
                amt = np.maximum(np.rint(raw), 50).astype(np.int64)
                if bucket == "fuel":  # "fill up to £40": many fuel amounts are whole pounds
                    whole = rng.random(n) < 0.45
                    amt[whole] = np.maximum(np.rint(amt[whole] / 500.0), 1).astype(np.int64) * 500
            cols["day"].append(days)
            cols["secs"].append(secs)
            cols["amt"].append(np.asarray(amt, dtype=np.int64))
            cols["bucket"].append(np.full(n, b_i, dtype=np.int64))
            merchants.append(names)
        out = {k: np.concatenate(v) for k, v in cols.items()}
        out["merchant"] = np.concatenate(merchants)
        n = len(out["day"])
        card = np.isin(out["bucket"], [_DISC_BUCKETS.index(b) for b in _CARD_BUCKETS])
        on_cc = card & (rng.random(n) < self.cc_share)
        out["account"] = np.where(on_cc, _CC, _CUR)
        return out

    def scale_to_budget(self, disc: dict[str, np.ndarray]) -> None:
        """Scale card spending so that, over the whole range, income minus outgoings ≈ slack.

        Without this, a user's balance would drift by thousands a year; cash is left in whole
        tens of pounds and fuel stays mostly whole pounds.
        """
        income = sum(a for a in self.rows.amount if a > 0)
        fixed = -sum(a for a in self.rows.amount if a < 0)
        travel = sum(t[2] for t in self.trips)
        target = (income - fixed - travel - self.savings_total) * (1.0 - self.slack)
        card = disc["bucket"] != _DISC_BUCKETS.index("cash")
        cash = int(disc["amt"][~card].sum())
        spent = float(disc["amt"][card].sum())
        if spent <= 0:
            return
        factor = float(np.clip((target - cash) / spent, 0.45, 2.5))
        amt = disc["amt"]
        amt[card] = np.maximum(np.rint(amt[card] * factor), 50).astype(np.int64)
        fuel = disc["bucket"] == _DISC_BUCKETS.index("fuel")
        whole = fuel & (amt % 500 == 0)
        amt[whole] = np.maximum(amt[whole] // 500, 1) * 500

    def emit_discretionary(self, disc: dict[str, np.ndarray]) -> None:
        """Append the card and cash rows in bulk; remember where the card rows are."""
        cal, rows = self.cal, self.rows
        days = disc["day"]
        ts = cal.epoch_s[days] + disc["secs"] - cal.bst[days] * 3600
        first = len(rows)
        n = len(days)
        atm = f"CASH WITHDRAWAL {self.rng.choice(_ATM_NAMES)}"
        cash = disc["bucket"] == _DISC_BUCKETS.index("cash")
        accounts = np.where(cash, _CUR, disc["account"])
        merchants = disc["merchant"].tolist()
        narr_cache: dict[tuple[str, int], str] = {}
        narrations = []
        for m, a, c in zip(merchants, accounts.tolist(), cash.tolist(), strict=True):
            if c:
                narrations.append(atm)
                continue
            key = (m, a)
            text = narr_cache.get(key)
            if text is None:
                text = narr_cache[key] = _card_narration(m, a)
            narrations.append(text)
        categories = np.asarray(_DISC_BUCKETS, dtype=object)[disc["bucket"]].tolist()
        rows.ts.extend(ts.tolist())
        rows.amount.extend((-disc["amt"]).tolist())
        rows.account.extend(accounts.tolist())
        rows.day.extend(days.tolist())
        rows.merchant.extend(merchants)
        rows.narration.extend(narrations)
        rows.mode.extend(np.where(cash, "atm", "card").tolist())
        rows.category.extend(categories)
        rows.series.extend([-1] * n)
        rows.extra.extend([None] * n)
        card = ~cash
        self.card_rows = first + np.flatnonzero(card)
        self.card_ts = ts[card]
        _, self.card_codes = np.unique(disc["merchant"][card].astype(str), return_inverse=True)

    def travel(self) -> None:
        rng, cal = self.rng, self.cal
        flights = self.pools.by_bucket.get("travel") or list(FALLBACK_MERCHANTS["travel"])
        flights = [f for f in flights if any(k in f for k in _AIRLINE_WORDS)][:25] or ["ryanair"]
        for first, last, budget in self.trips:
            dest = _DESTINATIONS[int(rng.integers(0, len(_DESTINATIONS)))]
            country, ccy, base_rate, cities, hotels, eats, shops, taxi = dest
            rate = int(base_rate * rng.uniform(0.96, 1.04))
            city = str(rng.choice(cities))
            account = _CC if self.has_cc and rng.random() < 0.7 else _CUR
            # Flight booked weeks before, in sterling.
            booked = first - int(rng.integers(20, 90))
            flight_cost = int(budget * rng.uniform(0.2, 0.35))
            if booked >= 0:
                name = str(rng.choice(flights))
                self.rows.add(
                    cal.ts(booked, int(rng.integers(19 * 3600, 23 * 3600))),
                    -flight_cost,
                    account,
                    booked,
                    name,
                    _card_narration(name, account),
                    "card",
                    "travel",
                )
            remaining = max(budget - flight_cost, 5_000)
            hotel = str(rng.choice(hotels))
            spend: list[tuple[int, int, str]] = []  # (day, local secs, merchant)
            for day in range(first, last + 1):
                for _ in range(int(rng.integers(2, 5))):
                    hour = int(rng.choice((9, 13, 14, 19, 20, 21)))
                    spend.append(
                        (day, hour * 3600 + int(rng.integers(0, 3600)), str(rng.choice(eats)))
                    )
                for _ in range(int(rng.integers(0, 3))):
                    spend.append(
                        (
                            day,
                            int(rng.integers(10, 19)) * 3600 + int(rng.integers(0, 3600)),
                            str(rng.choice(shops)),
                        )
                    )
                if rng.random() < 0.4:
                    spend.append(
                        (
                            day,
                            int(rng.integers(8, 23)) * 3600 + int(rng.integers(0, 3600)),
                            f"{taxi}{city}",
                        )
                    )
            hotel_gbp = int(remaining * rng.uniform(0.35, 0.55))
            weights = rng.lognormal(0.0, 0.6, size=len(spend))
            other_gbp = remaining - hotel_gbp
            parts = np.maximum(np.rint(other_gbp * weights / weights.sum()), 100).astype(np.int64)
            items = [*zip(spend, parts.tolist(), strict=True)]
            # The hotel is paid at checkout, late morning of the last day.
            items.append(((last, 10 * 3600 + int(rng.integers(0, 5400)), hotel), hotel_gbp))
            for (day, secs, merchant), gbp in items:
                foreign = (gbp * rate + 5_000) // 10_000  # foreign minor units
                gbp_exact = (foreign * 10_000 * 2 + rate) // (2 * rate)
                fx_text = f"{from_minor(foreign, ccy)} {ccy}"
                label = f"{merchant} {city} {country}"
                narration = f"{label} {fx_text} @ {rate / 10_000:.4f} [FX]"
                if account == _CUR:
                    narration = f"CARD PAYMENT TO {narration}"
                extra = {
                    "fx_currency": ccy,
                    "fx_amount": from_minor(foreign, ccy),
                    "fx_rate": f"{rate / 10_000:.4f}",
                    "country": country,
                    "travel": "true",
                }
                # Local time abroad is ahead of the UK (Greece by two hours, the rest by one);
                # the latest meal (21:59 local) stays far from the 01:00-04:59 UTC odd hours.
                ts = cal.ts(day, secs) - (7200 if country == "GR" else 3600)
                self.rows.add(
                    ts, -gbp_exact, account, day, label, narration, "card", "travel", extra=extra
                )
                if account == _CUR:
                    fee = (gbp_exact * 275 + 5_000) // 10_000
                    if fee:
                        self.rows.add(
                            ts + 1,
                            -fee,
                            _CUR,
                            day,
                            None,
                            "NON-STERLING TRANSACTION FEE",
                            "fee",
                            "fees",
                        )

    # -- savings and card repayments -------------------------------------------------------
    def plan_savings(self) -> None:
        rng = self.rng
        self.sav_amount = int(np.rint(self.net * rng.uniform(0.04, 0.14) / 1000.0)) * 1000
        self.sav_rate_bp = int(rng.integers(100, 450))
        self.sav_opening = int(np.rint(self.net * rng.uniform(0.0, 4.0)))
        self.savings_total = 0
        if self.has_sav:
            cal = self.cal
            days = sorted({int(cal.next_wd[min(p + 1, cal.n - 1)]) for p in self.paydays})
            self.sav_days = [d for d in days if d < cal.n]
            self.savings_total = self.sav_amount * len(self.sav_days)
        else:
            self.sav_days = []

    def savings(self) -> None:
        if not self.has_sav:
            return
        rng, cal = self.rng, self.cal
        events: list[tuple[int, int, int]] = []  # (day, kind, amount); 0 in, 1 out, 2 interest
        events += [(d, 0, self.sav_amount) for d in self.sav_days]
        for first, _, budget in self.trips:
            day = first - int(rng.integers(3, 8))
            if day >= 0:
                events.append((day, 1, int(np.rint(budget * 0.8 / 5000.0)) * 5000))
        for y, m in cal.months:
            i = cal.month_end(y, m)
            if i is not None and cal.dates[i].day == _calendar.monthrange(y, m)[1]:
                events.append((i, 2, 0))
        events.sort()
        sav = self._series("TRANSFER TO SAVINGS", "monthly")
        sav_in = self._series("TRANSFER FROM CURRENT", "monthly")
        balance = self.sav_opening
        to_sav = f"TO SAVINGS {self.digits[1]}"
        from_cur = f"FROM CURRENT {self.digits[0]}"
        for day, kind, amount in events:
            secs = self._posting_seconds()
            ts = cal.ts(day, secs)
            if kind == 0:
                self.rows.add(
                    ts,
                    -amount,
                    _CUR,
                    day,
                    "TRANSFER TO SAVINGS",
                    f"SO {to_sav}",
                    "standing_order",
                    "transfer",
                    sav,
                )
                self.rows.add(
                    ts,
                    amount,
                    _SAV,
                    day,
                    "TRANSFER FROM CURRENT",
                    f"SO {from_cur}",
                    "standing_order",
                    "transfer",
                    sav_in,
                )
                balance += amount
            elif kind == 1:
                amount = min(amount, max(balance - 10_000, 0) // 5000 * 5000)
                if amount <= 0:
                    continue
                self.rows.add(
                    ts,
                    -amount,
                    _SAV,
                    day,
                    None,
                    f"TRANSFER TO CURRENT {self.digits[0]}",
                    "transfer",
                    "transfer",
                )
                self.rows.add(
                    ts,
                    amount,
                    _CUR,
                    day,
                    None,
                    f"TRANSFER FROM SAVINGS {self.digits[1]}",
                    "transfer",
                    "transfer",
                )
                balance -= amount
            else:
                interest = max(balance, 0) * self.sav_rate_bp // 120_000
                if interest > 0:
                    self.rows.add(
                        cal.ts(day, 23 * 3600),
                        interest,
                        _SAV,
                        day,
                        None,
                        "INTEREST PAID",
                        "interest",
                        "interest",
                    )
                    balance += interest

    def card_repayments(self) -> None:
        if not self.has_cc:
            return
        rng, cal, rows = self.rng, self.cal, self.rows
        statement_dom = int(rng.integers(1, 29))
        closes: list[tuple[int, int]] = []  # (close ts, close day)
        for y, m in cal.months:
            i = cal.index(y, m, statement_dom)
            if i is not None:
                closes.append((cal.ts(i, 86_399), i))
        if not closes:
            return
        close_ts = np.array([c[0] for c in closes], dtype=np.int64)
        acct = np.asarray(rows.account)
        ts = np.asarray(rows.ts, dtype=np.int64)[acct == _CC]
        amt = np.asarray(rows.amount, dtype=np.int64)[acct == _CC]
        cycle = np.searchsorted(close_ts, ts, side="left")
        sums = np.zeros(len(closes) + 1, dtype=np.int64)
        np.add.at(sums, cycle, amt)
        name = f"{self.issuer.upper()} PAYMENT"
        out_s = self._series(name, "monthly")
        in_s = self._series("PAYMENT RECEIVED", "monthly")
        for k, (_, close_day) in enumerate(closes):
            due = close_day + 20
            if due >= cal.n:
                break
            day = int(cal.next_wd[due])
            pay = -int(sums[k])
            if day >= cal.n or pay <= 0:
                continue
            t = cal.ts(day, self._posting_seconds())
            rows.add(t, -pay, _CUR, day, name, name, "direct_debit", "credit_card_payment", out_s)
            rows.add(
                t,
                pay,
                _CC,
                day,
                "PAYMENT RECEIVED",
                "PAYMENT RECEIVED - THANK YOU",
                "direct_debit",
                "credit_card_payment",
                in_s,
            )

    # -- anomalies -------------------------------------------------------------------------
    def plant(self) -> None:
        rng, cal, rows = self.rng, self.cal, self.rows
        exp = exponent(self.currency)
        # Expected labelled transactions per event: spike 1, odd hour 1, duplicate 1, burst 8.5.
        n_events = int(rng.binomial(len(rows), min(1.0, self.anomaly_rate / 2.875)))
        card_rows = self.card_rows
        if n_events == 0 or len(card_rows) < 20:
            return
        used_merchants = {m for m in rows.merchant if m}
        # Merchants planted as "never used before": nothing else may use them, at any date.
        first_use_only: set[str] = set()
        touched: set[int] = set()
        # Rank of each card row among earlier card rows at the same merchant (amount spikes
        # need at least five earlier ones to know what "usual" is).
        by_merchant = np.lexsort((self.card_ts, self.card_codes))
        codes_sorted = self.card_codes[by_merchant]
        starts = np.r_[0, np.flatnonzero(np.diff(codes_sorted)) + 1]
        group_start = np.repeat(starts, np.diff(np.r_[starts, len(codes_sorted)]))
        rank_sorted = np.arange(len(codes_sorted)) - group_start
        spike_at = np.flatnonzero(rank_sorted >= 5)  # positions in by_merchant order
        kinds = rng.integers(0, 4, size=n_events)
        for kind_i in kinds.tolist():
            kind = ANOMALY_KINDS[kind_i]
            if kind == "amount_spike" and len(spike_at):
                pos = int(spike_at[int(rng.integers(0, len(spike_at)))])
                r = int(card_rows[by_merchant[pos]])
                if r in touched:
                    continue
                lo = pos - min(int(rank_sorted[pos]), 30)
                prior = sorted(-rows.amount[int(card_rows[q])] for q in by_merchant[lo:pos])
                usual = prior[len(prior) // 2]
                permille = int(rng.integers(5_000, 20_001))
                rows.amount[r] = -(usual * permille // 1000)
                touched.add(r)
                detail = (
                    f"{permille / 1000:.1f}x usual "
                    f"{from_minor(int(_rescale(np.array([usual]), exp)[0]), self.currency)} "
                    f"at {rows.merchant[r]}"
                )
                self.anomalies.append((r, kind, detail, -1))
            elif kind == "new_merchant_odd_hour":
                fresh = [m for m in self._sample_pool(40) if m not in used_merchants]
                if not fresh:
                    continue
                merchant = fresh[0]
                used_merchants.add(merchant)
                first_use_only.add(merchant)
                day = self._normal_day()
                utc_secs = int(rng.integers(3600, 4 * 3600 + 49 * 60))
                ts = int(cal.epoch_s[day]) + utc_secs
                amount = int(np.rint(rng.lognormal(np.log(9_000), 0.7)))
                account = self._card_account()
                r = rows.add(
                    ts,
                    -amount,
                    account,
                    day,
                    merchant,
                    _card_narration(merchant, account),
                    "card",
                    merchant_bucket(merchant),
                )
                hhmm = f"{utc_secs // 3600:02d}:{utc_secs % 3600 // 60:02d}"
                self.anomalies.append((r, kind, f"first txn at {merchant} at {hhmm} UTC", -1))
            elif kind == "duplicate_charge":
                src = int(card_rows[int(rng.integers(0, len(card_rows)))])
                if src in touched:
                    continue
                touched.add(src)
                gap = int(rng.integers(30, 600))
                r = rows.add(
                    rows.ts[src] + gap,
                    rows.amount[src],
                    rows.account[src],
                    rows.day[src],
                    rows.merchant[src],
                    rows.narration[src],
                    "card",
                    rows.category[src],
                )
                self.anomalies.append((r, kind, f"same charge again after {gap}s", src))
            elif kind == "velocity_burst":
                n = int(rng.integers(5, 13))
                day = self._normal_day()
                start = cal.ts(day, int(rng.integers(9, 21)) * 3600)
                offsets = np.sort(rng.choice(3_540, size=n, replace=False)) + 30
                account = self._card_account()
                names = [m for m in self._sample_pool(n + 8) if m not in first_use_only][:n]
                if not names:
                    continue
                used_merchants.update(names)
                amounts = np.maximum(np.rint(rng.lognormal(np.log(3_500), 0.9, size=n)), 100)
                for j in range(n):
                    merchant = names[j % len(names)]
                    r = rows.add(
                        start + int(offsets[j]),
                        -int(amounts[j]),
                        account,
                        day,
                        merchant,
                        _card_narration(merchant, account),
                        "card",
                        merchant_bucket(merchant),
                    )
                    detail = f"burst txn {j + 1}/{n} within {int(offsets[-1] - offsets[0])}s"
                    self.anomalies.append((r, kind, detail, -1))

    def _sample_pool(self, n: int) -> list[str]:
        pool = self.pools.odd_pool or list(FALLBACK_MERCHANTS["shopping"])
        idx = self.rng.choice(len(pool), size=min(n, len(pool)), replace=False)
        return [pool[i] for i in idx.tolist()]

    def _normal_day(self) -> int:
        """A day outside trips (anomalies happen at home), after the first month."""
        for _ in range(50):
            day = int(self.rng.integers(min(30, self.cal.n - 1), self.cal.n))
            if not any(a - 1 <= day <= b + 1 for a, b, _ in self.trips):
                return day
        return self.cal.n - 1

    def _card_account(self) -> int:
        return _CC if self.has_cc and self.rng.random() < self.cc_share else _CUR

    # -- assembly --------------------------------------------------------------------------
    def run(self) -> tuple[DemoTenant, list[PlantedAnomaly], list[RecurringSeries]]:
        self.paydays: list[int] = []
        self.profile()
        self.salary()
        self.housing()
        self.bills()
        self.subscriptions()
        suppress = self.plan_trips()
        self.plan_savings()
        disc = self.discretionary(suppress)
        self.scale_to_budget(disc)
        self.emit_discretionary(disc)
        self.travel()
        self.savings()
        self.plant()
        self.card_repayments()
        return self.assemble()

    def assemble(self) -> tuple[DemoTenant, list[PlantedAnomaly], list[RecurringSeries]]:
        rows, cal, currency = self.rows, self.cal, self.currency
        ts = np.asarray(rows.ts, dtype=np.int64)
        order = np.argsort(ts, kind="stable")
        n = len(order)
        ts_sorted = ts[order]
        # Strictly increasing instants, so "booked order" is unambiguous for every reader.
        steps = np.arange(n, dtype=np.int64)
        ts_sorted = np.maximum.accumulate(ts_sorted - steps) + steps
        amounts = np.asarray(rows.amount, dtype=np.int64)[order]
        exp = exponent(currency)
        amounts = _rescale(amounts, exp)
        accounts = np.asarray(rows.account, dtype=np.int64)[order]
        openings = {
            _CUR: int(np.rint(self.net * self.rng.uniform(0.2, 1.5))),
            _SAV: self.sav_opening,
            _CC: 0,
        }
        openings = {k: int(_rescale(np.array([v]), exp)[0]) for k, v in openings.items()}
        balances = np.empty(n, dtype=np.int64)
        closing: dict[int, int] = {}
        for acct, opening in openings.items():
            mask = accounts == acct
            if mask.any():
                running = opening + np.cumsum(amounts[mask])
                balances[mask] = running
                closing[acct] = int(running[-1])
        uid = self.user_id
        acct_ids = {_CUR: f"{uid}-current", _SAV: f"{uid}-savings", _CC: f"{uid}-card"}
        infos = [
            AccountInfo(
                acct_ids[_CUR],
                f"****{self.digits[0]}",
                self.bank,
                "current",
                currency,
                openings[_CUR],
                closing.get(_CUR, openings[_CUR]),
            ),
        ]
        if self.has_sav:
            infos.append(
                AccountInfo(
                    acct_ids[_SAV],
                    f"****{self.digits[1]}",
                    self.bank,
                    "savings",
                    currency,
                    openings[_SAV],
                    closing.get(_SAV, openings[_SAV]),
                )
            )
        if self.has_cc:
            infos.append(
                AccountInfo(
                    acct_ids[_CC],
                    f"**** **** **** {self.digits[2]}",
                    self.issuer,
                    "credit_card",
                    currency,
                    openings[_CC],
                    closing.get(_CC, openings[_CC]),
                )
            )
        txn_ids = [f"{uid}-{k + 1:06d}" for k in range(n)]
        position = np.empty(n, dtype=np.int64)
        position[order] = np.arange(n)
        order_l = order.tolist()

        def gather(column: Sequence[Any]) -> list[Any]:
            return [column[r] for r in order_l]

        dates = cal.dates
        value_dates = [dates[d] for d in gather(rows.day)]
        account_ids = [acct_ids[ac] for ac in accounts.tolist()]
        extras = [e if e is not None else {} for e in gather(rows.extra)]
        stamp = datetime.fromtimestamp
        txns = [
            ParsedTxn(k, stamp(t, UTC), a, currency, narr, acc, vd, m, mode, bal, tid, cat, ex)
            for k, t, a, narr, acc, vd, m, mode, bal, tid, cat, ex in zip(
                range(1, n + 1),
                ts_sorted.tolist(),
                amounts.tolist(),
                gather(rows.narration),
                account_ids,
                value_dates,
                gather(rows.merchant),
                gather(rows.mode),
                balances.tolist(),
                txn_ids,
                gather(rows.category),
                extras,
                strict=True,
            )
        ]
        anomalies = []
        for r, kind, detail, ref in self.anomalies:
            if ref >= 0:
                detail = f"{detail} (duplicates {txn_ids[int(position[ref])]})"
            anomalies.append(PlantedAnomaly(uid, txn_ids[int(position[r])], kind, detail))
        anomalies.sort(key=lambda a: a.txn_id)
        members: list[list[int]] = [[] for _ in self.series_meta]
        for k, r in enumerate(order_l):
            s = rows.series[r]
            if s >= 0:
                members[s].append(k)
        recurring = []
        for (merchant, period), ks in zip(self.series_meta, members, strict=True):
            if len(ks) < 2:
                continue
            values = sorted(int(amounts[k]) for k in ks)
            recurring.append(
                RecurringSeries(
                    uid, merchant, period, values[len(values) // 2], tuple(txn_ids[k] for k in ks)
                )
            )
        tenant = DemoTenant(uid, self.name, infos, txns)
        return tenant, anomalies, recurring


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def _build_user(
    gen: _UserGen,
) -> tuple[DemoTenant, list[PlantedAnomaly], list[RecurringSeries]]:
    """Run one user with the cyclic garbage collector paused.

    A user is thousands of new objects and no reference cycles; letting the collector rescan
    everything already generated on every allocation burst made 200 users take twice as long.
    The collector's previous state is restored before the user is handed out.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return gen.run()
    finally:
        if was_enabled:
            gc.enable()


def _context(
    years: float, end: date | None, merchant_names: list[str] | None
) -> tuple[_Calendar, _Pools]:
    if years <= 0:
        raise ValueError("years must be positive")
    last = end or DEFAULT_END
    first = last - timedelta(days=max(round(years * 365.25) - 1, 0))
    cal = _Calendar(first, last)
    if merchant_names is None:
        pools = _default_pools()
    else:
        names = [n.strip() for n in merchant_names if n and n.strip()]
        pools = _Pools.build([(n, merchant_bucket(n)) for n in names])
    return cal, pools


def iter_tenants(
    n_users: int,
    *,
    years: float = 5.0,
    seed: int = 0,
    end: date | None = None,
    anomaly_rate: float = 0.002,
    merchant_names: list[str] | None = None,
    currency: str = "GBP",
    first_user: int = 1,
) -> Iterator[tuple[DemoTenant, list[PlantedAnomaly], list[RecurringSeries]]]:
    """Yield users one at a time (``demo-0001`` first); same output as :func:`generate_tenants`.

    ``merchant_names`` replaces the real purchase-card names (classified by keywords only);
    None reads them from the shared data, or uses a built-in list when it is absent.
    ``anomaly_rate`` is the expected fraction of transactions that carry an anomaly label.
    ``first_user`` starts the numbering elsewhere: user ``k`` depends only on ``seed`` and
    ``k``, so workers can generate disjoint ranges (``first_user=101, n_users=100``) in
    parallel and get exactly the users a single call would.
    """
    if n_users < 0:
        raise ValueError("n_users must be >= 0")
    if first_user < 1:
        raise ValueError("first_user must be >= 1")
    if not 0.0 <= anomaly_rate <= 1.0:
        raise ValueError("anomaly_rate must be within [0, 1]")
    currency = normalize_currency(currency)
    cal, pools = _context(years, end, merchant_names)
    for number in range(first_user, first_user + n_users):
        rng = np.random.default_rng(np.random.SeedSequence([seed, number]))
        yield _build_user(_UserGen(number, cal, pools, rng, currency, anomaly_rate))


def generate_tenants(
    n_users: int,
    *,
    years: float = 5.0,
    seed: int = 0,
    end: date | None = None,
    anomaly_rate: float = 0.002,
    merchant_names: list[str] | None = None,
    currency: str = "GBP",
    first_user: int = 1,
) -> tuple[list[DemoTenant], list[PlantedAnomaly], list[RecurringSeries]]:
    """All users at once: tenants, every planted anomaly, every recurring series."""
    tenants: list[DemoTenant] = []
    anomalies: list[PlantedAnomaly] = []
    recurring: list[RecurringSeries] = []
    for tenant, anoms, series in iter_tenants(
        n_users,
        years=years,
        seed=seed,
        end=end,
        anomaly_rate=anomaly_rate,
        merchant_names=merchant_names,
        currency=currency,
        first_user=first_user,
    ):
        tenants.append(tenant)
        anomalies.extend(anoms)
        recurring.extend(series)
    return tenants, anomalies, recurring


# --------------------------------------------------------------------------------------------
# Labels on disk
# --------------------------------------------------------------------------------------------


def write_labels(
    path: str | os.PathLike[str],
    anomalies: Sequence[PlantedAnomaly],
    recurring: Sequence[RecurringSeries],
) -> None:
    """Write labels as JSON Lines (one ``{"type": "anomaly"|"recurring", ...}`` per line).

    A path ending in ``.json`` gets one JSON object ``{"anomalies": [...], "recurring": [...]}``
    instead. The file is written next to its final name and renamed, so readers never see half.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    anoms = [asdict(a) for a in anomalies]
    series = [{**asdict(s), "txn_ids": list(s.txn_ids)} for s in recurring]
    if target.suffix.lower() == ".json":
        text = json.dumps({"anomalies": anoms, "recurring": series}, ensure_ascii=False)
    else:
        lines = [json.dumps({"type": "anomaly", **a}, ensure_ascii=False) for a in anoms]
        lines += [json.dumps({"type": "recurring", **s}, ensure_ascii=False) for s in series]
        text = "\n".join(lines) + ("\n" if lines else "")
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(target)


def _anomaly(obj: dict[str, object]) -> PlantedAnomaly:
    return PlantedAnomaly(
        user_id=str(obj["user_id"]),
        txn_id=str(obj["txn_id"]),
        kind=str(obj["kind"]),
        detail=str(obj.get("detail", "")),
    )


def _recurring(obj: dict[str, object]) -> RecurringSeries:
    ids = obj.get("txn_ids") or []
    assert isinstance(ids, list)
    amount = obj["amount_minor"]
    assert isinstance(amount, int)
    return RecurringSeries(
        user_id=str(obj["user_id"]),
        merchant=str(obj["merchant"]),
        period=str(obj["period"]),
        amount_minor=amount,
        txn_ids=tuple(str(t) for t in ids),
    )


def read_labels(
    path: str | os.PathLike[str],
) -> tuple[list[PlantedAnomaly], list[RecurringSeries]]:
    """Read what :func:`write_labels` wrote (either layout, told apart by content)."""
    text = Path(path).read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("{") and '"anomalies"' in stripped.split("\n", 1)[0][:200_000]:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError:
            doc = None
        if isinstance(doc, dict) and "anomalies" in doc and "type" not in doc:
            return (
                [_anomaly(a) for a in doc.get("anomalies", [])],
                [_recurring(s) for s in doc.get("recurring", [])],
            )
    anomalies: list[PlantedAnomaly] = []
    recurring: list[RecurringSeries] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        obj = json.loads(line)
        if obj.get("type") == "anomaly":
            anomalies.append(_anomaly(obj))
        elif obj.get("type") == "recurring":
            recurring.append(_recurring(obj))
    return anomalies, recurring
