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
4. A chain is accepted when it covers most of the occurrences its span implies, keeps to its
   schedule (a day of the month, or whole weeks), and either has a fixed amount that few
   other transactions of the group share, or, for monthly and longer periods, owns its
   merchant (few other transactions of comparable amounts: bills that vary with the season,
   salary with raises, card repayments). Weekly shopping with varying amounts is therefore
   never a series. The rules are in :func:`_evaluate`.
5. Accepted chains leave the group and the search repeats, so one merchant can carry several
   series (two standing orders to the same bank, a subscription beside purchases); two
   fixed-amount pieces of one schedule that moved are joined again.

The thresholds were tuned on synthetic demo users (seeds 0 and 1) and the real Berka ledgers,
and checked on a held-out seed; :mod:`scale_ray.analytics.recurring_eval` measures them.

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
    "PERIOD_NAMES",
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
#: The period names, shortest first.
PERIOD_NAMES: tuple[str, ...] = tuple(p.name for p in PERIODS)

#: Weight of a chain step that skips one occurrence (a step of one period weighs 1).
_MISS_WEIGHT = 0.4
#: Penalty per unit of |log(amount ratio)| on a chain step, and its cap: two on-time steps
#: (each worth at least 1 - cap) outscore one step over a miss, so a chain never skips a
#: payment that is on time just because its amount moved (card repayments, bills).
_AMOUNT_PENALTY, _AMOUNT_PENALTY_CAP = 2.0, 0.5
#: A group with more than this many transactions per period is searched by exact amount.
_DENSE_PER_PERIOD = 1.5
#: At most this many series per group (merchant, account, sign).
_MAX_SERIES_PER_GROUP = 4
#: Share of payments with the most common amount from which a series counts as fixed-price
#: (and at least three of them).
_FIXED_SHARE = 0.6
#: Fixed series: other transactions of exactly that amount, per member, allowed in the span
#: (and over the whole history for a chain shorter than ``_LONG_CHAIN`` or at a busy
#: merchant: a handful of £20 cash withdrawals a month apart is a coincidence when £20 is
#: withdrawn all the time).
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


def _best_chain(days: np.ndarray, log_amt: list[float], period: _Period) -> list[int]:
    """Positions (into ``days``, sorted ascending) of the highest-scoring chain for ``period``.

    Score: 1 for the first member, then per step 1 (or ``_MISS_WEIGHT`` for a step over one
    missed occurrence) minus a penalty that grows with the amount change. Ties go to the
    earlier predecessor, so the result is deterministic.
    """
    n = len(days)
    ranges = []
    if n > 24:
        for k, (lo, hi) in enumerate(period.windows):
            starts = np.searchsorted(days, days - hi, side="left").tolist()
            stops = np.searchsorted(days, days - lo, side="right").tolist()
            ranges.append((1.0 if k == 0 else _MISS_WEIGHT, starts, stops))
    else:  # small: plain bisection is cheaper than numpy's call overhead
        day_list = days.tolist()
        for k, (lo, hi) in enumerate(period.windows):
            starts = [bisect_left(day_list, d - hi) for d in day_list]
            stops = [bisect_right(day_list, d - lo) for d in day_list]
            ranges.append((1.0 if k == 0 else _MISS_WEIGHT, starts, stops))
    score = [1.0] * n
    prev = [-1] * n
    cap = _AMOUNT_PENALTY_CAP
    for j in range(n):
        best, arg = 1.0, -1
        laj = log_amt[j]
        for step, starts, stops in ranges:
            for i in range(starts[j], stops[j]):
                pen = _AMOUNT_PENALTY * abs(laj - log_amt[i])
                value = score[i] + step - (pen if pen < cap else cap)
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
    """What decided that a chain is a recurring series, and feeds its confidence."""

    period: str
    members: int
    coverage: float  # members / occurrences the span implies
    regular: float  # share of members on schedule (calendar anchor or whole periods)
    lateness: float  # median days off schedule
    exact: float  # share of members with the most common amount
    spread: float  # about the 80th percentile of |amount / median - 1|
    noise_span: float  # other comparable-amount transactions in the span, per member
    noise_all: float  # the same over the group's whole history
    exact_span: float  # other transactions of the most common amount in the span, per member
    exact_all: float  # the same over the group's whole history


@dataclass
class _Candidate:
    period: _Period
    rows: np.ndarray  # positions into the group arrays, booked order
    confidence: float


def _calendar_anchor(days: np.ndarray) -> tuple[int, bool]:
    """The day of month a calendar series (epoch-day numbers) is anchored on, or ``(0, True)``
    for the month's end.

    The most common day of month wins (on a tie, the one nearest to all payments) unless more
    payments fall on their month's last day than on it (31 Jan, 28 Feb, 31 Mar: month end).
    """
    month = days.astype("datetime64[D]").astype("datetime64[M]")
    first = month.astype("datetime64[D]").astype(np.int64)
    length = (month + 1).astype("datetime64[D]").astype(np.int64) - first
    dom = days - first + 1
    counts = np.bincount(dom, minlength=32)
    top = int(counts.max())
    if int(np.count_nonzero(dom == length)) > top:
        return 0, True
    tied = np.flatnonzero(counts == top)
    if len(tied) > 1:  # the tied day nearest (around the month) to all payments' days
        gap = np.abs(dom[None, :] - tied[:, None])
        cost = np.minimum(gap, 31 - gap).sum(axis=1)
        return int(tied[int(np.argmin(cost))]), False
    return int(tied[0]), False


def _calendar_offsets(days: np.ndarray, dom: int, month_end: bool) -> np.ndarray:
    """Signed days from each date to the nearest anchor (previous, same or next month)."""
    base = days.astype("datetime64[D]").astype("datetime64[M]")
    best: np.ndarray | None = None
    for shift in (-1, 0, 1):
        month = base + shift
        first = month.astype("datetime64[D]").astype(np.int64)
        length = (month + 1).astype("datetime64[D]").astype(np.int64) - first
        anchor = first + (length - 1 if month_end else np.minimum(dom, length) - 1)
        off = days - anchor
        best = off if best is None else np.where(np.abs(off) < np.abs(best), off, best)
    assert best is not None
    return best


def _median(sorted_values: list[float]) -> float:
    n = len(sorted_values)
    return (sorted_values[(n - 1) // 2] + sorted_values[n // 2]) / 2


def _evaluate(
    period: _Period,
    chain: np.ndarray,
    days: np.ndarray,
    amounts: np.ndarray,
    free: np.ndarray,
    dense: bool,
    min_occurrences: int,
) -> _Features | None:
    """The features of an accepted chain (positions into the group), or None when a rule
    rejects it. Cheap rules run first; the thresholds are measured by :mod:`recurring_eval`.

    * weekly / fortnightly: fixed amount, at least :data:`_MIN_VARIABLE` payments, on time
      within a day;
    * calendar periods: median lateness at most two days from the anchor day (a long fixed
      series may instead keep regular gaps); a fixed amount (three or more equal payments)
      with few other transactions of exactly that amount, or a variable amount (at least
      :data:`_MIN_VARIABLE` payments) with few comparable transactions at the merchant at all;
    * a yearly pair: the same amount (within 2 %) on the same date (within 3 days) at a
      merchant with no other transaction of that amount;
    * at a busy merchant (``dense``): at least :data:`_MIN_VARIABLE` payments, never yearly.
    """
    m = len(chain)
    d = days[chain]
    first, last = int(d[0]), int(d[-1])
    coverage = min(1.0, m / (round((last - first) / period.days) + 1))
    if coverage < period.min_coverage:
        return None
    a_list = amounts[chain].tolist()
    counts = Counter(a_list)
    mode_amount, top = max(counts.items(), key=lambda kv: (kv[1], -kv[0]))
    exact = top / m
    fixed = top >= 3 and exact >= _FIXED_SHARE
    short = period.months == 0
    pair = period.name == "yearly" and m == 2
    a_sorted = sorted(a_list)
    if dense and (period.name == "yearly" or m < _MIN_VARIABLE):
        return None  # at a busy merchant a few equal amounts a period apart are a coincidence
    if pair:
        if a_sorted[1] > a_sorted[0] * _YEARLY_PAIR_RATIO:
            return None
    elif (short and not fixed) or (
        (short or not fixed) and m < max(min_occurrences, _MIN_VARIABLE)
    ):
        return None
    if period.months:
        dom, month_end = _calendar_anchor(d)
        off = np.abs(_calendar_offsets(d, dom, month_end))
    else:
        gaps = np.diff(d)
        off = np.abs(gaps - np.maximum(np.rint(gaps / period.days), 1) * period.days)
    off_sorted = sorted(off.tolist())
    lateness = _median(off_sorted)
    regular = sum(o <= period.max_jitter for o in off_sorted) / len(off_sorted)
    if pair:
        if lateness > _PAIR_LATENESS:
            return None
    elif short:
        if lateness > _SHORT_LATENESS or regular < 0.8:
            return None
    elif lateness > _CALENDAR_LATENESS or regular < (0.75 if fixed else 0.8):
        # A long fixed-amount series may follow another event rather than a day of the month
        # (a standing order the day after payday): then its gaps must be regular instead.
        if not fixed or m < _LONG_CHAIN:
            return None
        gaps = np.diff(d)
        steps = np.maximum(np.rint(gaps / period.days), 1)
        on_time = np.abs(gaps - steps * period.days) <= period.max_jitter
        if int(np.count_nonzero(on_time)) < 0.8 * len(gaps):
            return None
    # Look-alikes: other unclaimed transactions of the group with a comparable / the same amount.
    others = free.copy()
    others[chain] = False
    comparable = others & (amounts >= a_sorted[0] / 1.25) & (amounts <= a_sorted[-1] * 1.25)
    same = others & (amounts == mode_amount)
    half = period.days / 2
    in_span = (days >= first - half) & (days <= last + half)
    noise_all = int(np.count_nonzero(comparable)) / m
    exact_all = int(np.count_nonzero(same)) / m
    exact_span = int(np.count_nonzero(same & in_span)) / m
    if pair:
        if exact_all > 0 or noise_all > 0.5:
            return None
    elif fixed:
        if exact_span > _EXACT_NOISE or ((dense or m < _LONG_CHAIN) and exact_all > _EXACT_NOISE):
            return None
    elif noise_all > _VARIABLE_NOISE:
        return None
    median = _median(a_sorted)
    devs = sorted(abs(x / median - 1.0) for x in a_list)
    return _Features(
        period=period.name,
        members=m,
        coverage=coverage,
        regular=regular,
        lateness=lateness,
        exact=exact,
        spread=devs[min(m - 1, int(0.8 * m))],
        noise_span=int(np.count_nonzero(comparable & in_span)) / m,
        noise_all=noise_all,
        exact_span=exact_span,
        exact_all=exact_all,
    )


def _confidence(f: _Features) -> float:
    """A 0..1 score: more payments, fuller coverage, tighter timing and amounts, fewer
    look-alike transactions at the merchant all raise it."""
    count_term = 1.0 - np.exp(-(f.members - 1) / (1.5 if f.period == "yearly" else 4.0))
    amount_term = max(f.exact, 1.0 - min(1.0, f.spread))
    timing_term = f.regular * (1.0 - min(1.0, f.lateness / 4.0))
    score = 0.3 * count_term + 0.25 * f.coverage + 0.25 * amount_term + 0.2 * timing_term
    noise = min(1.0, max(f.exact_span, f.noise_span if f.exact < _FIXED_SHARE else 0.0))
    return float(np.clip(score * (1.0 - 0.5 * noise), 0.0, 1.0))


def _search_group(days: np.ndarray, amounts: np.ndarray, min_occurrences: int) -> list[_Candidate]:
    """Every accepted series of one group (``days`` ascending, ``amounts`` absolute)."""
    n = len(days)
    if n == YEARLY_MIN_OCCURRENCES:
        # Only a yearly pair is possible: test the obvious before anything else.
        lo, hi = PERIODS[-1].windows[0]
        small, big = sorted(amounts.tolist())
        if not lo <= days[1] - days[0] <= hi or big > small * _YEARLY_PAIR_RATIO:
            return []
    free = np.ones(n, dtype=bool)
    found: list[_Candidate] = []
    log_amt = np.log(np.maximum(amounts, 1).astype(np.float64))
    for _ in range(_MAX_SERIES_PER_GROUP):
        idx = np.flatnonzero(free)
        if len(idx) < YEARLY_MIN_OCCURRENCES:
            break
        span = int(days[idx[-1]] - days[idx[0]])
        best: _Candidate | None = None
        exact_groups: list[np.ndarray] | None = None
        for period in PERIODS:
            need = YEARLY_MIN_OCCURRENCES if period.name == "yearly" else min_occurrences
            if len(idx) < need or span < (need - 1) * period.windows[0][0]:
                continue
            dense = len(idx) > _DENSE_PER_PERIOD * (span / period.days + 1)
            if dense or period.months == 0:
                # Busy merchant: only a charge of one exact amount can stand out. Weekly-type
                # series must have a fixed amount anyway, so they are searched the same way.
                if exact_groups is None:
                    _, inverse, counts = np.unique(
                        amounts[idx], return_inverse=True, return_counts=True
                    )
                    exact_groups = [
                        idx[inverse == k] for k in np.flatnonzero(counts >= _MIN_VARIABLE).tolist()
                    ]
                # Busy merchants hold no yearly series and none shorter than four payments
                # (see _evaluate); weekly-type series need four payments anywhere.
                if dense and period.name == "yearly":
                    continue
                least = max(need, _MIN_VARIABLE)
                subsets = []
                for g in exact_groups:
                    if len(g) < least:
                        continue
                    g_span = int(days[g[-1]] - days[g[0]])
                    # Too short, or itself too busy for a series to stand out in it.
                    if g_span >= (least - 1) * period.windows[0][0] and len(
                        g
                    ) <= _DENSE_PER_PERIOD * (g_span / period.days + 1):
                        subsets.append(g)
            else:
                subsets = [idx]
            for sub in subsets:
                if (
                    best is not None
                    and len(best.rows)
                    >= int(days[sub[-1]] - days[sub[0]]) // period.windows[0][0] + 1
                ):
                    continue  # cannot beat the series already found
                pos = _best_chain(days[sub], log_amt[sub].tolist(), period)
                if len(pos) < need:
                    continue
                chain = sub[pos]
                f = _evaluate(period, chain, days, amounts, free, dense, min_occurrences)
                if f is None:
                    continue
                cand = _Candidate(period, chain, _confidence(f))
                if best is None or (len(chain), cand.confidence) > (
                    len(best.rows),
                    best.confidence,
                ):
                    best = cand
        if best is None:
            break
        found.append(best)
        free[best.rows] = False
    return _merge_split(found, days, amounts) if len(found) > 1 else found


def _merge_split(
    found: list[_Candidate], days: np.ndarray, amounts: np.ndarray
) -> list[_Candidate]:
    """Join fixed-amount series of one period that follow each other within two periods: one
    series whose schedule moved (a standing order the day after a payday that changed)."""
    found = sorted(found, key=lambda c: int(days[c.rows[0]]))
    out = [found[0]]
    for cand in found[1:]:
        prev = out[-1]
        gap = int(days[cand.rows[0]] - days[prev.rows[-1]])
        if (
            cand.period is prev.period
            and 0 < gap <= prev.period.windows[-1][1]
            and _mode(amounts[prev.rows]) == _mode(amounts[cand.rows])
        ):
            rows = np.concatenate([prev.rows, cand.rows])
            out[-1] = _Candidate(prev.period, rows, max(prev.confidence, cand.confidence))
        else:
            out.append(cand)
    return out


def _mode(values: np.ndarray) -> int:
    uniq, counts = np.unique(values, return_counts=True)
    return int(uniq[int(np.argmax(counts))])


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
    by a weekend is not repeated. A series never booked on a weekend (four payments or more)
    is moved off one, in the direction its past payments moved (back to Friday, or on to
    Monday; month-end series move back when the past does not tell)."""
    last = date.fromordinal(int(days[-1]) + _EPOCH_ORDINAL)
    if period.months == 0:
        nxt = last + timedelta(days=round(period.days))
        back = False
    else:
        dom, month_end = _calendar_anchor(days)
        off = _calendar_offsets(days, dom, month_end)
        anchor = last - timedelta(days=int(off[-1]))
        nxt = _month_anchor(anchor.year, anchor.month + period.months, dom, month_end)
        early, late = int(np.count_nonzero(off < 0)), int(np.count_nonzero(off > 0))
        # With no evidence either way a month-end payment moves back (into its own month).
        back = early > late or (early == late and month_end)
    weekdays = (days + 3) % 7  # 1970-01-01 was a Thursday (3)
    if len(days) >= 4 and not np.any(weekdays >= 5) and nxt.weekday() >= 5:
        nxt += timedelta(days=4 - nxt.weekday()) if back else timedelta(days=7 - nxt.weekday())
    return nxt


def _next_amount(signed: list[int], days: np.ndarray, next_day: int, period: _Period) -> int:
    """Expected signed amount of the next payment.

    The last amount when the last two agree (a fixed price, also after a price change). For a
    variable monthly-or-shorter series with a year of history, the payment a year before the
    next one, scaled by how the latest payment compares with its own a year earlier (a bill
    that follows the seasons, with this year's tariff). Otherwise the median of the last three.
    """
    if len(signed) < 2 or signed[-1] == signed[-2]:
        return signed[-1]
    if period.days <= 31:
        near = _nearest_member(days, next_day - 365, tolerance=10)
        base = _nearest_member(days, int(days[-1]) - 365, tolerance=10)
        if near is not None and base is not None and signed[base] != 0:
            ratio = signed[-1] / signed[base]
            if 0.5 <= ratio <= 2.0:
                return round(signed[near] * ratio)
    recent = sorted(signed[-3:])
    return recent[len(recent) // 2]


def _nearest_member(days: np.ndarray, day: int, tolerance: int) -> int | None:
    k = int(np.argmin(np.abs(days - day)))
    return k if abs(int(days[k]) - day) <= tolerance else None


def _ordinal_day(day: date) -> int:
    return day.toordinal() - _EPOCH_ORDINAL


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


def _utc_ns(column: pd.Series) -> np.ndarray:
    """Timestamps as UTC ``datetime64[ns]`` (naive values are taken as UTC)."""
    if isinstance(column.dtype, pd.DatetimeTZDtype):
        column = column.dt.tz_convert("UTC").dt.tz_localize(None)
    elif not pd.api.types.is_datetime64_dtype(column.dtype):
        column = pd.to_datetime(column, utc=True).dt.tz_localize(None)
    return column.to_numpy(dtype="datetime64[ns]")


def _codes(column: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Integer codes and their texts; a missing value is the empty text (the last code)."""
    codes, uniques = pd.factorize(column)
    names = [v if isinstance(v, str) else str(v) for v in list(uniques)] + [""]
    return np.where(codes < 0, len(names) - 1, codes), names


def _prepare(txns: pd.DataFrame) -> _Prepared | None:
    missing = [c for c in _COLUMNS if c not in txns.columns]
    if missing:
        raise ValueError(f"txns lacks columns: {', '.join(missing)}")
    amounts_all = txns["amount_minor"].to_numpy(dtype=np.int64)
    keep = amounts_all != 0
    if not keep.any():
        return None
    frame = txns if keep.all() else txns.loc[keep]
    amounts = amounts_all[keep]
    booked = _utc_ns(frame["booked_at"])
    days = booked.astype("datetime64[D]").astype(np.int64)
    # Names and keys are computed once per distinct merchant / narration text.
    m_codes, m_names = _codes(frame["merchant"])
    n_codes, n_names = _codes(frame["narration"])
    m_names = [m if m.strip() else "" for m in m_names]
    m_valid = np.asarray([bool(m) for m in m_names], dtype=bool)[m_codes]
    raw_names = m_names + n_names
    raw_codes = np.where(m_valid, m_codes, len(m_names) + n_codes)
    key_of_raw, key_uniques = pd.factorize(
        np.asarray([_key_of(name) for name in raw_names], dtype=object)
    )
    key_codes = key_of_raw[raw_codes]
    acc_codes, acc_uniques = _codes(frame["account_id"])
    cur_codes, cur_uniques = _codes(frame["currency"])
    group = (acc_codes.astype(np.int64) * len(cur_uniques) + cur_codes) * len(key_uniques)
    group = (group + key_codes) * 2 + (amounts > 0)
    order = np.lexsort((booked.astype(np.int64), group))
    bounds = np.flatnonzero(np.diff(group[order])) + 1
    return _Prepared(
        amounts=amounts,
        days=days,
        txn_ids=frame["txn_id"].to_numpy(dtype=object),
        raw_names=raw_names,
        raw_codes=raw_codes,
        keys=[str(k) for k in key_uniques],
        key_codes=key_codes,
        accounts=acc_uniques,
        account_codes=acc_codes,
        currencies=cur_uniques,
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
        next_amount_minor=int(_next_amount(signed, member_days, _ordinal_day(nxt), cand.period)),
        occurrences=len(members),
        txn_ids=tuple(str(t) for t in prep.txn_ids[members].tolist()),
        confidence=round(cand.confidence, 4),
        active=(as_of - nxt).days <= cand.period.grace_days,
    )


def _with_ids(results: list[RecurringPayment]) -> list[RecurringPayment]:
    """Fill ``series_id``: blake2b of (account, merchant key, sign, period). Series that share
    those are told apart by their typical amount (then their first transaction), except the
    one with the most occurrences, which keeps the plain id."""
    ranked = sorted(results, key=lambda r: (-r.occurrences, r.txn_ids[0]))
    seen: set[tuple[str, str, str, str]] = set()
    used: set[str] = set()
    out = []
    for r in ranked:
        base = (r.account_id, r.merchant_key, r.direction, r.period)
        sign = 1 if r.direction == "credit" else -1
        extra = "" if base not in seen else f"amount={r.amount_minor}"
        seen.add(base)
        series_id = _series_id(r.account_id, r.merchant_key, sign, r.period, extra)
        if series_id in used:
            series_id = _series_id(
                r.account_id, r.merchant_key, sign, r.period, f"{extra};first={r.txn_ids[0]}"
            )
        used.add(series_id)
        out.append(replace(r, series_id=series_id))
    out.sort(key=lambda r: (-r.confidence, r.account_id, r.merchant_key, r.txn_ids[0]))
    return out
