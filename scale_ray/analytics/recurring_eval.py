"""Precision and recall of :func:`scale_ray.analytics.recurring.detect_recurring`.

Two ground truths:

* **Demo users** (:func:`evaluate_demo`): the generator's :class:`RecurringSeries` (salary,
  rent or mortgage, bills, subscriptions, savings standing orders, card repayments). Series
  level: a detected series matches a true one of the same user when their transaction sets
  have Jaccard >= 0.5 (one to one, best overlap first). Transaction level: a transaction is
  predicted recurring when it belongs to any detected series. Period accuracy is over matched
  pairs. ``series_precision_ignoring_interest`` leaves out monthly savings interest, which is
  periodic but not labelled by the generator. A forecast check cuts every ledger 75 days
  before its end, detects on the earlier part and compares ``next_date`` /
  ``next_amount_minor`` with the series' first later payment.
* **Berka** (:func:`evaluate_berka`): real Czech ledgers whose ``k_symbol`` marks standing
  monthly payments: ``household`` (SIPO) and ``insurrance payment`` (sic). The detector sees
  only what a bank feed shows: dates, signed amounts, the operation and the counterparty's bank
  and account (whose digits the merchant key drops, so it groups by operation and partner
  bank); ``k_symbol`` is removed from the narration and ``category_hint`` / ``extra`` are
  never passed. Loan repayments cannot be labelled: every account's transactions end on or
  before its loan's start date (the ECAC split keeps only the history before the loan),
  which the evaluation re-checks and reports. Transaction level, over debits: a transaction
  is predicted recurring when it belongs to a detected debit series. The labels are a subset
  of what recurs: precision is also reported counting the monthly ``payment for statement``
  fees, and those plus standing orders without a purpose code (three or more remittances of
  one amount to one partner account, a median 28-31 days apart, read from the partner
  account the detector does not see).

Run ``python -m scale_ray.analytics.recurring_eval [--users N] [--years Y]``.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from scale_ray.analytics.recurring import RecurringPayment, detect_recurring
from scale_ray.ingest.records import ParsedTxn

__all__ = [
    "BERKA_LABELS",
    "berka_frame",
    "evaluate_berka",
    "evaluate_demo",
    "main",
    "match_series",
    "txn_frame",
]

#: ``k_symbol`` values of Berka debits that are standing monthly payments.
BERKA_LABELS: tuple[str, ...] = ("household", "insurrance payment")
#: Days cut from the end of each demo ledger for the next-date / next-amount check.
FORECAST_HOLDOUT_DAYS = 75


def txn_frame(txns: Iterable[ParsedTxn]) -> pd.DataFrame:
    """The detector's input columns from parsed transactions (nothing else is passed)."""
    rows = list(txns)
    return pd.DataFrame(
        {
            "txn_id": [t.txn_id for t in rows],
            "account_id": [t.account_id for t in rows],
            "amount_minor": np.asarray([t.amount_minor for t in rows], dtype=np.int64),
            "currency": [t.currency for t in rows],
            "booked_at": pd.to_datetime([t.booked_at for t in rows], utc=True),
            "merchant": [t.merchant for t in rows],
            "narration": [t.narration for t in rows],
        }
    )


def _berka_narration(txn: ParsedTxn) -> str:
    """What a bank statement line shows without the payment-purpose code (the label)."""
    parts = [txn.mode or ""]
    bank = txn.extra.get("partner_bank", "")
    account = txn.extra.get("partner_account", "")
    if bank or account:
        parts.append(f"partner {bank} {account}".strip())
    return " / ".join(p for p in parts if p) or txn.extra.get("type", "")


def berka_frame(txns: Iterable[ParsedTxn]) -> pd.DataFrame:
    """Detector input for Berka rows with ``k_symbol`` stripped (``merchant`` is None there)."""
    rows = list(txns)
    frame = txn_frame(rows)
    frame["narration"] = [_berka_narration(t) for t in rows]
    frame["merchant"] = None
    return frame


def match_series(
    detected: Sequence[Sequence[str]], truth: Sequence[Sequence[str]], threshold: float = 0.5
) -> list[tuple[int, int, float]]:
    """One-to-one matches ``(detected index, true index, jaccard)`` with Jaccard >= threshold,
    greedily by overlap (largest first)."""
    owner: dict[str, int] = {}
    for ti, ids in enumerate(truth):
        for tid in ids:
            owner[tid] = ti
    pairs: list[tuple[float, int, int]] = []
    for di, ids in enumerate(detected):
        common = Counter(owner[t] for t in ids if t in owner)
        for ti, inter in common.items():
            jac = inter / (len(set(ids)) + len(set(truth[ti])) - inter)
            if jac >= threshold:
                pairs.append((jac, di, ti))
    pairs.sort(key=lambda p: (-p[0], p[1], p[2]))
    used_d: set[int] = set()
    used_t: set[int] = set()
    out = []
    for jac, di, ti in pairs:
        if di in used_d or ti in used_t:
            continue
        used_d.add(di)
        used_t.add(ti)
        out.append((di, ti, jac))
    return out


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den else float("nan")


def _timed_detect(frame: pd.DataFrame, **kwargs: Any) -> tuple[list[RecurringPayment], float]:
    start = time.perf_counter()
    found = detect_recurring(frame, **kwargs)
    return found, time.perf_counter() - start


def _timing(seconds: list[float], sizes: list[int]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000.0
    return {
        "users": len(ms),
        "txns_per_user_mean": float(np.mean(sizes)) if sizes else 0.0,
        "ms_per_user_mean": float(ms.mean()) if len(ms) else 0.0,
        "ms_per_user_p50": float(np.median(ms)) if len(ms) else 0.0,
        "ms_per_user_p95": float(np.quantile(ms, 0.95)) if len(ms) else 0.0,
        "ms_per_user_max": float(ms.max()) if len(ms) else 0.0,
        "us_per_txn": float(ms.sum() * 1000.0 / max(1, sum(sizes))),
    }


def evaluate_demo(
    n_users: int = 30,
    *,
    years: float = 2.0,
    seed: int = 0,
    min_occurrences: int = 3,
    forecast: bool = True,
) -> dict[str, Any]:
    """Series and transaction precision / recall on generated users (see the module doc)."""
    from scale_ray.demo import iter_tenants

    n_true = n_det = n_match = period_ok = n_interest = 0
    tp_txn = fp_txn = fn_txn = 0
    by_period: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # matched, total (truth)
    by_kind: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    fp_kinds: Counter[str] = Counter()
    confusions: Counter[str] = Counter()
    seconds: list[float] = []
    sizes: list[int] = []
    fc = {"series": 0, "date_exact": 0, "date_within_3d": 0, "amount_exact": 0, "amount_10pct": 0}
    for tenant, _, series in iter_tenants(n_users, years=years, seed=seed):
        frame = txn_frame(tenant.transactions)
        kind_of = {t.txn_id: (t.category_hint or "none") for t in tenant.transactions}
        found, secs = _timed_detect(frame, min_occurrences=min_occurrences)
        seconds.append(secs)
        sizes.append(len(frame))
        truth_ids = [s.txn_ids for s in series]
        matches = match_series([f.txn_ids for f in found], truth_ids)
        n_true += len(series)
        n_det += len(found)
        n_match += len(matches)
        matched_t = {ti for _, ti, _ in matches}
        matched_d = {di for di, _, _ in matches}
        for ti, s in enumerate(series):
            kind = kind_of.get(s.txn_ids[0], "none")
            by_period[s.period][1] += 1
            by_kind[kind][1] += 1
            if ti in matched_t:
                by_period[s.period][0] += 1
                by_kind[kind][0] += 1
        for di, ti, _ in matches:
            if found[di].period == series[ti].period:
                period_ok += 1
            else:
                confusions[f"{series[ti].period}->{found[di].period}"] += 1
        for di, f in enumerate(found):
            if di not in matched_d:
                kind = kind_of.get(f.txn_ids[0], "none")
                fp_kinds[f"{f.direction}:{kind}"] += 1
                n_interest += kind == "interest"
        true_txns = {t for ids in truth_ids for t in ids}
        pred_txns = {t for f in found for t in f.txn_ids}
        tp_txn += len(true_txns & pred_txns)
        fp_txn += len(pred_txns - true_txns)
        fn_txn += len(true_txns - pred_txns)
        if forecast:
            _forecast_check(tenant.transactions, series, min_occurrences, fc)
    metrics: dict[str, Any] = {
        "users": n_users,
        "years": years,
        "seed": seed,
        "true_series": n_true,
        "detected_series": n_det,
        "matched_series": n_match,
        "series_precision": _ratio(n_match, n_det),
        "series_recall": _ratio(n_match, n_true),
        # Savings interest is paid monthly but the generator does not label it a series.
        "series_precision_ignoring_interest": _ratio(n_match, n_det - n_interest),
        "txn_precision": _ratio(tp_txn, tp_txn + fp_txn),
        "txn_recall": _ratio(tp_txn, tp_txn + fn_txn),
        "period_accuracy": _ratio(period_ok, n_match),
        "period_confusions": dict(confusions),
        "recall_by_period": {k: _ratio(*v) for k, v in sorted(by_period.items())},
        "series_by_period": {k: v[1] for k, v in sorted(by_period.items())},
        "recall_by_kind": {k: _ratio(*v) for k, v in sorted(by_kind.items())},
        "unmatched_detections_by_kind": dict(fp_kinds.most_common()),
        "timing": _timing(seconds, sizes),
    }
    if forecast:
        n = fc["series"]
        metrics["forecast"] = {
            "holdout_days": FORECAST_HOLDOUT_DAYS,
            "series": n,
            "next_date_exact": _ratio(fc["date_exact"], n),
            "next_date_within_3d": _ratio(fc["date_within_3d"], n),
            "next_amount_exact": _ratio(fc["amount_exact"], n),
            "next_amount_within_10pct": _ratio(fc["amount_10pct"], n),
        }
    return metrics


def _forecast_check(
    txns: Sequence[ParsedTxn], series: Sequence[Any], min_occurrences: int, fc: dict[str, int]
) -> None:
    """Detect on the ledger minus its last :data:`FORECAST_HOLDOUT_DAYS` days and compare each
    matched series' next date and amount with its first payment after the cut."""
    end = max(t.booked_at for t in txns)
    cut = end - timedelta(days=FORECAST_HOLDOUT_DAYS)
    early = [t for t in txns if t.booked_at <= cut]
    if not early:
        return
    by_id = {t.txn_id: t for t in txns}
    found = detect_recurring(txn_frame(early), min_occurrences=min_occurrences)
    truth_early = [tuple(i for i in s.txn_ids if by_id[i].booked_at <= cut) for s in series]
    for di, ti, _ in match_series([f.txn_ids for f in found], truth_early):
        later = [by_id[i] for i in series[ti].txn_ids if by_id[i].booked_at > cut]
        if not later or not found[di].active:
            continue
        actual = later[0]
        fc["series"] += 1
        delta = abs((found[di].next_date - actual.booked_at.date()).days)
        fc["date_exact"] += delta == 0
        fc["date_within_3d"] += delta <= 3
        expected = found[di].next_amount_minor
        fc["amount_exact"] += expected == actual.amount_minor
        fc["amount_10pct"] += abs(expected - actual.amount_minor) <= 0.1 * abs(actual.amount_minor)


def _berka_loan_evidence(
    shared_data: Path, txns_by_account: dict[str, list[ParsedTxn]]
) -> dict[str, Any]:
    """Whether any loan repayment can be in ``trans_test.csv`` (see the module doc)."""
    loans: dict[str, tuple[date, int]] = {}
    for name in ("loan_test.csv", "loan_train.csv"):
        path = shared_data / "berka_ecac" / name
        if not path.exists():
            continue
        with path.open(newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh, delimiter=";"):
                raw = row["date"].strip()
                start = date(1900 + int(raw[:2]), int(raw[2:4]), int(raw[4:6]))
                loans[f"berka-{row['account_id'].strip()}"] = (start, int(row["payments"]) * 100)
    with_loan = [a for a in txns_by_account if a in loans]
    after = sum(
        1 for a in with_loan for t in txns_by_account[a] if t.booked_at.date() > loans[a][0]
    )
    equal = sum(1 for a in with_loan for t in txns_by_account[a] if t.amount_minor == -loans[a][1])
    return {
        "accounts": len(txns_by_account),
        "accounts_with_loan": len(with_loan),
        "txns_after_loan_start": after,
        "debits_equal_to_monthly_instalment": equal,
        "loan_label": "none: no transaction follows a loan start, so no repayment is present",
    }


def _standing_remittances(txns: Sequence[ParsedTxn]) -> set[str]:
    """Ids of debits without a purpose code that form a standing order: three or more
    remittances to one partner account, all of one amount, a median 28-31 days apart."""
    groups: dict[str, list[ParsedTxn]] = defaultdict(list)
    for t in txns:
        partner = t.extra.get("partner_account", "")
        if t.amount_minor < 0 and partner and not t.extra.get("k_symbol", "").strip():
            groups[partner].append(t)
    out: set[str] = set()
    for rows in groups.values():
        if len(rows) < 3 or len({t.amount_minor for t in rows}) != 1:
            continue
        days = sorted(t.booked_at.date().toordinal() for t in rows)
        if 28 <= float(np.median(np.diff(days))) <= 31:
            out.update(str(t.txn_id) for t in rows)
    return out


def evaluate_berka(
    shared_data: Path, *, limit: int | None = None, min_occurrences: int = 3
) -> dict[str, Any]:
    """Transaction precision / recall on Berka debits against :data:`BERKA_LABELS`."""
    from scale_ray.demo import load_berka_tenants

    tenants = load_berka_tenants(Path(shared_data), limit=limit)
    tp = fp = fn = 0
    label_total: Counter[str] = Counter()
    label_hit: Counter[str] = Counter()
    reach_total = reach_hit = 0
    fp_breakdown: Counter[str] = Counter()
    seconds: list[float] = []
    sizes: list[int] = []
    by_account: dict[str, list[ParsedTxn]] = {}
    standing: set[str] = set()
    for tenant in tenants:
        txns = tenant.transactions
        by_account[tenant.user_id] = list(txns)
        found, secs = _timed_detect(berka_frame(txns), min_occurrences=min_occurrences)
        seconds.append(secs)
        sizes.append(len(txns))
        predicted = {t for f in found if f.direction == "debit" for t in f.txn_ids}
        standing |= _standing_remittances(txns) & predicted
        # Label series (same purpose, same counterparty) reachable with min_occurrences.
        series_size = Counter(
            (t.extra.get("k_symbol", "").strip(), t.extra.get("partner_account", ""))
            for t in txns
            if t.amount_minor < 0
        )
        for t in txns:
            if t.amount_minor >= 0:
                continue
            label = t.extra.get("k_symbol", "").strip()
            is_label = label in BERKA_LABELS
            hit = t.txn_id in predicted
            if is_label:
                label_total[label] += 1
                label_hit[label] += hit
                if series_size[(label, t.extra.get("partner_account", ""))] >= min_occurrences:
                    reach_total += 1
                    reach_hit += hit
                tp += hit
                fn += not hit
            elif hit:
                fp += 1
                fp_breakdown[f"{t.mode or '-'} / {label or '(no k_symbol)'}"] += 1
    statement = fp_breakdown.get("withdrawal in cash / payment for statement", 0)
    return {
        "accounts": len(tenants),
        "labels": list(BERKA_LABELS),
        "labelled_debits": sum(label_total.values()),
        "predicted_debits": tp + fp,
        "txn_precision": _ratio(tp, tp + fp),
        "txn_recall": _ratio(tp, tp + fn),
        "recall_by_label": {k: _ratio(label_hit[k], v) for k, v in sorted(label_total.items())},
        "label_counts": dict(label_total),
        "recall_reachable": _ratio(reach_hit, reach_total),
        "reachable_labelled_debits": reach_total,
        "precision_with_statement_fees": _ratio(tp + statement, tp + fp),
        # Unlabelled remittances to one partner account, one amount, about a month apart
        # (read from the partner account, which the detector does not see): standing orders.
        "unlabelled_standing_orders_predicted": len(standing),
        "precision_with_fees_and_standing_orders": _ratio(tp + statement + len(standing), tp + fp),
        "unlabelled_predictions": dict(fp_breakdown.most_common()),
        "loan_evidence": _berka_loan_evidence(Path(shared_data), by_account),
        "timing": _timing(seconds, sizes),
    }


def _print(title: str, metrics: dict[str, Any]) -> None:
    print(f"== {title}")
    print(json.dumps(metrics, indent=2, default=str))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=30, help="demo users (default 30)")
    parser.add_argument("--years", type=float, default=2.0, help="years per demo user")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-occurrences", type=int, default=3)
    parser.add_argument("--shared-data", default="", help="path of ../shared/data")
    parser.add_argument("--no-berka", action="store_true", help="skip the Berka evaluation")
    parser.add_argument("--no-forecast", action="store_true", help="skip the next-date check")
    args = parser.parse_args(argv)
    demo = evaluate_demo(
        args.users,
        years=args.years,
        seed=args.seed,
        min_occurrences=args.min_occurrences,
        forecast=not args.no_forecast,
    )
    _print(f"demo: {args.users} users x {args.years:g} years (seed {args.seed})", demo)
    if not args.no_berka:
        from scale_ray.settings import Settings

        shared = (
            Path(args.shared_data) if args.shared_data else Settings.from_env().shared_data_path()
        )
        if (shared / "berka_ecac" / "trans_test.csv").exists():
            _print("berka", evaluate_berka(shared, min_occurrences=args.min_occurrences))
        else:
            print(f"== berka: skipped, {shared / 'berka_ecac'} is missing")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
