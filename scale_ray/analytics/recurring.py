"""Recurring payments (subscriptions, bills, salary, standing orders) found in one user's ledger.

How a series is found
---------------------
1. Transactions are grouped by ``(account_id, currency, merchant_key, sign)``.
2. In each group and for each period (weekly, fortnightly, monthly, quarterly, yearly) a
   dynamic programme finds the best *chain*: a subsequence whose consecutive gaps fall in the
   period's window (one missed occurrence allowed, at a cost), preferring steps between similar
   amounts. Strays (a one-off purchase at a subscription's merchant, a duplicate charge) simply
   stay out of the chain instead of breaking it.
3. A group with more than about one transaction per period (a supermarket, an ATM) can only hold
   a series that stands out by its amount, so there the chain is searched among transactions of
   one exact amount (a fixed-price charge at a busy merchant) instead of the whole group.
4. A chain is accepted when it covers most of the occurrences its span implies, its timing is
   tight (weekly and fortnightly), its amounts are fixed or, for monthly and longer periods, it
   owns its merchant (few other transactions of comparable amounts: bills that vary with the
   season, card repayments). Weekly shopping with varying amounts is therefore never a series.
5. Accepted chains leave the group and the search repeats, so one merchant can carry several
   series (two standing orders to the same bank, a subscription beside purchases).

Every threshold below was tuned on the synthetic demo users (seed 1) and checked on other seeds
and on the real Berka ledgers; :mod:`scale_ray.analytics.recurring_eval` measures them.

Money stays in integer minor units; floats are used only for ratios and scores.
"""

from __future__ import annotations

import calendar
import hashlib
import re
import unicodedata
from bisect import bisect_left, bisect_right
from collections import Counter
from dataclasses import dataclass, replace
from datetime import date, timedelta
from functools import lru_cache

import numpy as np
import pandas as pd

__all__ = [
    "PERIODS",
    "YEARLY_MIN_OCCURRENCES",
    "RecurringPayment",
    "detect_recurring",
    "merchant_key",
]

#: A yearly series is accepted from two occurrences (whatever ``min_occurrences`` says):
#: three would need more than two years of history before a yearly charge is recognised.
YEARLY_MIN_OCCURRENCES = 2

_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


@dataclass(frozen=True)
class RecurringPayment:
    """One detected recurring series (amounts signed like the ledger: credits positive)."""

    series_id: str
    merchant: str
    merchant_key: str
    account_id: str
    currency: str
    period: str
    direction: str
    amount_minor: int
    amount_min_minor: int
    amount_max_minor: int
    last_date: date
    next_date: date
    next_amount_minor: int
    occurrences: int
    txn_ids: tuple[str, ...]
    confidence: float
    active: bool


@dataclass(frozen=True)
class _Period:
    name: str
    days: float  # nominal length, for expected counts
    windows: tuple[tuple[int, int], ...]  # allowed gaps (days) for 1, 2, ... periods
    min_coverage: float  # members / occurrences the span implies
    max_jitter: float  # days off schedule that still count as on schedule
    grace_days: int  # how late the next one may be before the series counts as stopped
    months: int  # calendar step for next_date (0: add ``days``)


#: Periods in order of preference when two explain the same chain equally well.
PERIODS: tuple[_Period, ...] = (
    _Period("weekly", 7.0, ((5, 9), (12, 16)), 0.8, 1.0, 4, 0),
    _Period("fortnightly", 14.0, ((11, 17), (25, 31)), 0.8, 2.0, 7, 0),
    _Period("monthly", 30.4375, ((24, 37), (54, 68)), 0.75, 4.0, 15, 1),
    _Period("quarterly", 91.3125, ((80, 102), (172, 194)), 0.75, 7.0, 30, 3),
    _Period("yearly", 365.25, ((350, 381), (715, 746)), 0.75, 10.0, 45, 12),
)
_BY_NAME = {p.name: p for p in PERIODS}

#: Weight of a chain step that skips one occurrence (a step of one period weighs 1).
_MISS_WEIGHT = 0.4
#: Penalty per unit of |log(amount ratio)| on a chain step, and its cap (below 1 - miss
#: weight / 2, so a chain never skips a payment that is on time just because its amount moved).
_AMOUNT_PENALTY, _AMOUNT_PENALTY_CAP = 2.0, 0.5
#: A group with more than this many transactions per period is searched by exact amount.
_DENSE_PER_PERIOD = 1.5
#: At most this many series per group (merchant, account, sign).
_MAX_SERIES_PER_GROUP = 4
#: Share of payments with the most common amount from which a series counts as fixed-price.
_FIXED_SHARE = 0.6
#: Fixed series: other transactions of exactly that amount, per member, allowed in the span
#: (and over the whole history for a chain shorter than ``_LONG_CHAIN``: a handful of £20 cash
#: withdrawals a month apart is a coincidence when £20 is withdrawn all the time).
_EXACT_NOISE = 0.25
_LONG_CHAIN = 6
#: Variable series (bills, salary, card repayments) must own their merchant: other
#: transactions of comparable amount (within 25 % of its range), per member, over all history.
_VARIABLE_NOISE = 0.2
#: Variable-amount and weekly-type series need this many payments (with three, a few visits
#: that happen to fall a month apart look like a bill).
_MIN_VARIABLE = 4
#: Median days off schedule allowed: weekly-type series / calendar series / yearly pairs.
_SHORT_LATENESS, _CALENDAR_LATENESS, _PAIR_LATENESS = 1.0, 2.0, 1.5
#: Two yearly occurrences must agree within this ratio.
_YEARLY_PAIR_RATIO = 1.02


# --------------------------------------------------------------------------------------------
# Merchant keys
# --------------------------------------------------------------------------------------------

_REFERENCE = re.compile(r"\S*\d\S*\d\S*")  # a token with two or more digits: a reference
_NOT_KEY = re.compile(r"[^\w& ]|[\d_]")
_SPACES = re.compile(r"\s+")


@lru_cache(maxsize=65_536)
def _key_of(text: str) -> str:
    lowered = unicodedata.normalize("NFC", text).lower().replace("'", "").replace("’", "")
    spaced = _SPACES.sub(" ", re.sub(r"[^\w&]+", " ", lowered))
    key = _SPACES.sub(" ", _NOT_KEY.sub(" ", _REFERENCE.sub(" ", spaced))).strip()
    return key or spaced.strip()


def merchant_key(merchant: str | None, narration: str) -> str:
    """The normalized text a recurring series is grouped by.

    The merchant when it is given (not blank), else the narration; lower case, apostrophes
    dropped, punctuation to spaces, tokens with two or more digits (store numbers, references,
    dates) dropped, remaining digits removed, spaces collapsed:
    ``"TESCO STORES 3251"`` and ``"Tesco Stores 4410"`` → ``"tesco stores"``. A text made of
    nothing but such tokens keeps its lower-cased form rather than becoming empty.
    """
    text = merchant if merchant is not None and merchant.strip() else narration
    return _key_of(text or "")


# --------------------------------------------------------------------------------------------
# Chains
# --------------------------------------------------------------------------------------------


def _best_chain(days: list[int], log_amt: list[float], period: _Period) -> list[int]:
    """Positions (into ``days``, sorted ascending) of the highest-scoring chain for ``period``.

    Score: 1 for the first member, then per step 1 (or ``_MISS_WEIGHT`` for a step over one
    missed occurrence) minus a penalty that grows with the amount change. Ties go to the
    earlier predecessor, so the result is deterministic.
    """
    n = len(days)
    score = [1.0] * n
    prev = [-1] * n
    windows = period.windows
    for j in range(n):
        dj = days[j]
        best, arg = 1.0, -1
        laj = log_amt[j]
        for k, (lo, hi) in enumerate(windows):
            start = bisect_left(days, dj - hi, 0, j)
            stop = bisect_right(days, dj - lo, 0, j)
            step = 1.0 if k == 0 else _MISS_WEIGHT
            for i in range(start, stop):
                pen = _AMOUNT_PENALTY * abs(laj - log_amt[i])
                value = (
                    score[i] + step - (pen if pen < _AMOUNT_PENALTY_CAP else _AMOUNT_PENALTY_CAP)
                )
                if value > best:
                    best, arg = value, i
        score[j], prev[j] = best, arg
    end = max(range(n), key=score.__getitem__)
    chain = [end]
    while prev[chain[-1]] >= 0:
        chain.append(prev[chain[-1]])
    chain.reverse()
    return chain


@dataclass
class _Features:
    """What decides whether a chain is a recurring series."""

    period: str
    members: int
    coverage: float  # members / occurrences the span implies
    regular: float  # share of members on schedule (calendar anchor or whole periods)
    lateness: float  # median days off schedule
    exact: float  # share of members with the most common amount
    spread: float  # 80th percentile of |amount / median - 1|
    noise_span: float  # other comparable-amount transactions in the span, per member
    noise_all: float  # the same over the group's whole history
    exact_span: float  # other transactions of the most common amount in the span, per member
    exact_all: float  # the same over the group's whole history
    dense: bool  # found among one exact amount of a busy merchant
    pair_ratio: float  # max / min amount (used for two-member yearly series)


@dataclass
class _Candidate:
    period: _Period
    rows: np.ndarray  # positions into the group arrays, booked order
    confidence: float


def _month_parts(days: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(first day of month, day of month, month length) of epoch-day numbers."""
    stamps = days.astype("datetime64[D]")
    month = stamps.astype("datetime64[M]")
    first = month.astype("datetime64[D]").astype(np.int64)
    length = (month + 1).astype("datetime64[D]").astype(np.int64) - first
    return first, days - first + 1, length


def calendar_anchor(days: np.ndarray) -> tuple[int, bool]:
    """The day of month a calendar series is anchored on, or (0, True) for the month's end.

    The most common day of month (the smallest on a tie) wins unless more payments fall on
    their month's last day than on it (31 Jan, 28 Feb, 31 Mar is a month-end series).
    """
    _, dom, length = _month_parts(days)
    counts = np.bincount(dom, minlength=32)
    top = int(counts.max())
    if int(np.count_nonzero(dom == length)) > top:
        return 0, True
    tied = np.flatnonzero(counts == top)
    if len(tied) > 1:  # the tied day nearest to all the others
        cost = [int(np.abs(_calendar_offsets(days, int(t), False)).sum()) for t in tied]
        return int(tied[int(np.argmin(cost))]), False
    return int(tied[0]), False


def _calendar_offsets(days: np.ndarray, dom: int, month_end: bool) -> np.ndarray:
    """Days from each date to the nearest anchor (previous, same or next month)."""
    best = None
    for shift in (-1, 0, 1):
        month = days.astype("datetime64[D]").astype("datetime64[M]") + shift
        first = month.astype("datetime64[D]").astype(np.int64)
        length = (month + 1).astype("datetime64[D]").astype(np.int64) - first
        anchor = first + (length - 1 if month_end else np.minimum(dom, length) - 1)
        off = days - anchor
        best = off if best is None else np.where(np.abs(off) < np.abs(best), off, best)
    assert best is not None
    return best


def _features(
    period: _Period,
    chain: np.ndarray,
    days: np.ndarray,
    amounts: np.ndarray,
    dense: bool,
) -> _Features | None:
    """Features of a chain (positions into the group), or None when it is plainly too short
    or too sparse to be a series."""
    m = len(chain)
    d = days[chain]
    span = float(d[-1] - d[0])
    expected = round(span / period.days) + 1
    coverage = min(1.0, m / expected)
    if coverage < period.min_coverage:
        return None
    if period.months:
        dom, month_end = calendar_anchor(d)
        off = _calendar_offsets(d, dom, month_end)
        off = np.abs(off)
    else:
        gaps = np.diff(d)
        steps = np.maximum(np.rint(gaps / period.days), 1)
        off = np.abs(gaps - steps * period.days)
    regular = float(np.count_nonzero(off <= period.max_jitter)) / len(off)
    lateness = float(np.median(off))
    a = amounts[chain].astype(np.float64)
    median = float(np.median(a))
    spread = float(np.quantile(np.abs(a / median - 1.0), 0.8))
    values, counts = np.unique(amounts[chain], return_counts=True)
    lo, hi = a.min() / 1.25, a.max() * 1.25
    comparable = (amounts >= lo) & (amounts <= hi)
    comparable[chain] = False
    same = amounts == values[int(np.argmax(counts))]
    same[chain] = False
    half = period.days / 2
    span_mask = (days >= d[0] - half) & (days <= d[-1] + half)
    return _Features(
        period=period.name,
        members=m,
        coverage=coverage,
        regular=regular,
        lateness=lateness,
        exact=float(counts.max()) / m,
        spread=spread,
        noise_span=float(np.count_nonzero(comparable & span_mask)) / m,
        noise_all=float(np.count_nonzero(comparable)) / m,
        exact_span=float(np.count_nonzero(same & span_mask)) / m,
        exact_all=float(np.count_nonzero(same)) / m,
        dense=dense,
        pair_ratio=float(a.max() / max(a.min(), 1.0)),
    )


def _accept(f: _Features, min_occurrences: int) -> bool:
    """The acceptance rules (thresholds measured by :mod:`recurring_eval`)."""
    fixed = f.exact >= _FIXED_SHARE
    if f.period == "yearly" and f.members == 2:
        return (
            f.pair_ratio <= _YEARLY_PAIR_RATIO
            and f.lateness <= _PAIR_LATENESS
            and f.exact_all == 0
            and f.noise_all <= 0.5
            and not f.dense
        )
    clean = f.exact_span <= _EXACT_NOISE and (
        f.members >= _LONG_CHAIN or f.exact_all <= _EXACT_NOISE
    )
    if f.period in ("weekly", "fortnightly"):
        return (
            fixed
            and clean
            and f.members >= max(min_occurrences, _MIN_VARIABLE)
            and f.regular >= 0.8
            and f.lateness <= _SHORT_LATENESS
        )
    if f.lateness > _CALENDAR_LATENESS:
        return False
    if fixed:
        return clean and f.regular >= 0.75
    return (
        f.members >= max(min_occurrences, _MIN_VARIABLE)
        and f.regular >= 0.8
        and f.noise_all <= _VARIABLE_NOISE
    )


def _confidence(f: _Features) -> float:
    """A 0..1 score: more payments, fuller coverage, tighter timing and amounts, fewer look-alike
    transactions at the merchant all raise it."""
    count_term = 1.0 - np.exp(-(f.members - 1) / (1.5 if f.period == "yearly" else 4.0))
    amount_term = max(f.exact, 1.0 - min(1.0, f.spread))
    timing_term = f.regular * (1.0 - min(1.0, f.lateness / 4.0))
    score = 0.3 * count_term + 0.25 * f.coverage + 0.25 * amount_term + 0.2 * timing_term
    noise = min(1.0, max(f.exact_span, f.noise_span if f.exact < _FIXED_SHARE else 0.0))
    return float(np.clip(score * (1.0 - 0.5 * noise), 0.0, 1.0))


def _assess(
    period: _Period,
    chain: np.ndarray,
    days: np.ndarray,
    amounts: np.ndarray,
    dense: bool,
    min_occurrences: int,
) -> _Candidate | None:
    """The chain as an accepted candidate, or None."""
    f = _features(period, chain, days, amounts, dense)
    if f is None or not _accept(f, min_occurrences):
        return None
    return _Candidate(period, chain, _confidence(f))


def _search_group(days: np.ndarray, amounts: np.ndarray, min_occurrences: int) -> list[_Candidate]:
    """Every accepted series of one group (``days`` ascending, ``amounts`` absolute)."""
    n = len(days)
    free = np.ones(n, dtype=bool)
    found: list[_Candidate] = []
    log_amt = np.log(np.maximum(amounts, 1).astype(np.float64))
    for _ in range(_MAX_SERIES_PER_GROUP):
        idx = np.flatnonzero(free)
        if len(idx) < YEARLY_MIN_OCCURRENCES:
            break
        best: _Candidate | None = None
        for period in PERIODS:
            need = YEARLY_MIN_OCCURRENCES if period.name == "yearly" else min_occurrences
            if len(idx) < need:
                continue
            span = int(days[idx[-1]] - days[idx[0]])
            if span < (need - 1) * period.windows[0][0]:
                continue
            subsets: list[np.ndarray]
            dense = len(idx) > _DENSE_PER_PERIOD * (span / period.days + 1)
            if dense:
                # Busy merchant: only a charge of one exact amount can stand out.
                values, counts = np.unique(amounts[idx], return_counts=True)
                subsets = [idx[amounts[idx] == v] for v in values[counts >= need].tolist()]
            else:
                subsets = [idx]
            for sub in subsets:
                pos = _best_chain(days[sub].tolist(), log_amt[sub].tolist(), period)
                if len(pos) < need:
                    continue
                cand = _assess(period, sub[pos], days, amounts, dense, min_occurrences)
                if cand is not None and (
                    best is None
                    or (len(cand.rows), cand.confidence) > (len(best.rows), best.confidence)
                ):
                    best = cand
        if best is None:
            break
        found.append(best)
        free[best.rows] = False
    return found


# --------------------------------------------------------------------------------------------
# Next date and amount
# --------------------------------------------------------------------------------------------


def _month_anchor(year: int, month: int, dom: int, month_end: bool) -> date:
    """The intended date of a monthly-type payment in ``year``/``month`` (1-based month)."""
    year, month = year + (month - 1) // 12, (month - 1) % 12 + 1
    last = calendar.monthrange(year, month)[1]
    return date(year, month, last if month_end else min(dom, last))


def _next_date(period: _Period, days: np.ndarray) -> date:
    """Next expected date after the series' epoch-day numbers ``days``.

    Weekly-type series add the period. Calendar series (monthly, quarterly, yearly) keep their
    anchor, a day of month or the month's end (31 Jan, 28 Feb are followed by 31 Mar), counted
    from the anchor the last payment belonged to, so a payment moved across a month boundary
    by a weekend is not repeated. A series never booked on a weekend is moved off one, in the
    direction its past payments moved (back to Friday, or on to Monday)."""
    last = date.fromordinal(int(days[-1]) + _EPOCH_ORDINAL)
    if period.months == 0:
        nxt = last + timedelta(days=round(period.days))
        back = False
    else:
        dom, month_end = calendar_anchor(days)
        off = _calendar_offsets(days, dom, month_end)
        anchor = last - timedelta(days=int(off[-1]))
        nxt = _month_anchor(anchor.year, anchor.month + period.months, dom, month_end)
        back = int(np.count_nonzero(off < 0)) > int(np.count_nonzero(off > 0))
    weekdays = (days + 3) % 7  # 1970-01-01 was a Thursday (3)
    if len(days) >= 4 and not np.any(weekdays >= 5) and nxt.weekday() >= 5:
        nxt += timedelta(days=4 - nxt.weekday()) if back else timedelta(days=7 - nxt.weekday())
    return nxt


def _next_amount(signed: list[int]) -> int:
    """The last amount when the last two agree (fixed price, after a price change), else the
    median of the last three (a variable bill's recent level)."""
    if len(signed) < 2 or signed[-1] == signed[-2]:
        return signed[-1]
    recent = sorted(signed[-3:])
    return recent[len(recent) // 2]


def _series_id(account_id: str, key: str, sign: int, period: str, extra: str = "") -> str:
    text = "\x1f".join((account_id, key, "+" if sign > 0 else "-", period, extra))
    return hashlib.blake2b(text.encode("utf-8"), digest_size=8).hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------

_COLUMNS = (
    "txn_id",
    "account_id",
    "amount_minor",
    "currency",
    "booked_at",
    "merchant",
    "narration",
)


@dataclass
class _Prepared:
    """One user's rows, grouped: ``order[starts[g]:stops[g]]`` are group ``g``'s rows in
    booked order; the other arrays are indexed by row."""

    amounts: np.ndarray
    days: np.ndarray
    txn_ids: np.ndarray
    raw_names: list[str]
    raw_codes: np.ndarray
    keys: list[str]
    key_codes: np.ndarray
    accounts: list[str]
    account_codes: np.ndarray
    currencies: list[str]
    currency_codes: np.ndarray
    order: np.ndarray
    starts: np.ndarray
    stops: np.ndarray


def _prepare(txns: pd.DataFrame) -> _Prepared | None:
    missing = [c for c in _COLUMNS if c not in txns.columns]
    if missing:
        raise ValueError(f"txns lacks columns: {', '.join(missing)}")
    amounts_all = txns["amount_minor"].to_numpy(dtype=np.int64)
    keep = amounts_all != 0
    if not keep.any():
        return None
    frame = txns.loc[keep] if not keep.all() else txns
    amounts = amounts_all[keep]
    booked = pd.to_datetime(frame["booked_at"], utc=True).to_numpy(dtype="datetime64[ns]")
    order_ns = booked.astype(np.int64)
    days = booked.astype("datetime64[D]").astype(np.int64)
    merchant = frame["merchant"].to_numpy(dtype=object)
    narration = frame["narration"].to_numpy(dtype=object)
    codes, uniques = pd.factorize(
        pd.Series(list(zip(merchant.tolist(), narration.tolist(), strict=True)), dtype=object)
    )
    raw_names: list[str] = []
    raw_keys: list[str] = []
    for m, n in uniques.tolist():
        name = m if isinstance(m, str) and m.strip() else (n if isinstance(n, str) else "")
        raw_names.append(name)
        raw_keys.append(_key_of(name))
    key_of_raw, key_uniques = pd.factorize(pd.Series(raw_keys, dtype=object))
    key_codes = key_of_raw[codes]
    acc_codes, acc_uniques = pd.factorize(frame["account_id"].astype(str))
    cur_codes, cur_uniques = pd.factorize(frame["currency"].astype(str))
    group = (acc_codes.astype(np.int64) * len(cur_uniques) + cur_codes) * len(key_uniques)
    group = (group + key_codes) * 2 + (amounts > 0)
    order = np.lexsort((order_ns, group))
    bounds = np.flatnonzero(np.diff(group[order])) + 1
    return _Prepared(
        amounts=amounts,
        days=days,
        txn_ids=frame["txn_id"].astype(str).to_numpy(),
        raw_names=raw_names,
        raw_codes=codes,
        keys=[str(k) for k in key_uniques],
        key_codes=key_codes,
        accounts=[str(a) for a in acc_uniques],
        account_codes=acc_codes,
        currencies=[str(c) for c in cur_uniques],
        currency_codes=cur_codes,
        order=order,
        starts=np.r_[0, bounds],
        stops=np.r_[bounds, len(order)],
    )


def detect_recurring(
    txns: pd.DataFrame, *, as_of: date | None = None, min_occurrences: int = 3
) -> list[RecurringPayment]:
    """Recurring series in one user's transactions, most confident first.

    ``txns`` has the columns ``txn_id``, ``account_id``, ``amount_minor`` (signed int, credits
    positive), ``currency``, ``booked_at`` (timezone-aware; dates are taken in UTC),
    ``merchant`` (nullable) and ``narration``. Zero amounts are ignored. ``min_occurrences``
    (at least 2) applies to every period but yearly, which needs
    :data:`YEARLY_MIN_OCCURRENCES`. ``as_of`` (default: the latest booked date) decides
    ``active``: a series whose next expected date is more than a grace period (4 days weekly
    ... 45 days yearly) before ``as_of`` has stopped.
    """
    if min_occurrences < 2:
        raise ValueError("min_occurrences must be at least 2")
    prep = _prepare(txns)
    if prep is None:
        return []
    amounts, days, order = prep.amounts, prep.days, prep.order
    days_sorted = days[order]
    abs_sorted = np.abs(amounts[order])
    as_of_day = as_of or date.fromordinal(int(days.max()) + _EPOCH_ORDINAL)
    results: list[RecurringPayment] = []
    big = (prep.stops - prep.starts) >= YEARLY_MIN_OCCURRENCES
    for s, e in zip(prep.starts[big].tolist(), prep.stops[big].tolist(), strict=True):
        rows = order[s:e]
        for cand in _search_group(days_sorted[s:e], abs_sorted[s:e], min_occurrences):
            results.append(_payment(prep, rows[cand.rows], cand, as_of_day))
    return _with_ids(results)


def _payment(
    prep: _Prepared, members: np.ndarray, cand: _Candidate, as_of: date
) -> RecurringPayment:
    signed = prep.amounts[members].tolist()
    member_days = prep.days[members]
    first = int(members[0])
    sign = 1 if signed[0] > 0 else -1
    values = sorted(signed)
    names = Counter(prep.raw_names[c] for c in prep.raw_codes[members].tolist())
    top = max(names.values())
    nxt = _next_date(cand.period, member_days)
    return RecurringPayment(
        series_id="",
        merchant=min(n for n, c in names.items() if c == top),
        merchant_key=prep.keys[prep.key_codes[first]],
        account_id=prep.accounts[prep.account_codes[first]],
        currency=prep.currencies[prep.currency_codes[first]],
        period=cand.period.name,
        direction="credit" if sign > 0 else "debit",
        amount_minor=int(values[len(values) // 2]),
        amount_min_minor=int(values[0]),
        amount_max_minor=int(values[-1]),
        last_date=date.fromordinal(int(member_days[-1]) + _EPOCH_ORDINAL),
        next_date=nxt,
        next_amount_minor=int(_next_amount(signed)),
        occurrences=len(members),
        txn_ids=tuple(prep.txn_ids[members].tolist()),
        confidence=round(cand.confidence, 4),
        active=(as_of - nxt).days <= cand.period.grace_days,
    )


def _with_ids(results: list[RecurringPayment]) -> list[RecurringPayment]:
    """Fill ``series_id``; series that share (account, key, sign, period) are told apart by
    their typical amount, except the one with the most occurrences, which keeps the plain id."""
    ranked = sorted(results, key=lambda r: (-r.occurrences, r.txn_ids[0]))
    seen: set[tuple[str, str, str, str]] = set()
    out = []
    for r in ranked:
        base = (r.account_id, r.merchant_key, r.direction, r.period)
        sign = 1 if r.direction == "credit" else -1
        extra = "" if base not in seen else f"amount={r.amount_minor}"
        seen.add(base)
        out.append(
            replace(
                r,
                series_id=_series_id(r.account_id, r.merchant_key, sign, r.period, extra),
            )
        )
    out.sort(key=lambda r: (-r.confidence, r.account_id, r.merchant_key, r.txn_ids[0]))
    return out
