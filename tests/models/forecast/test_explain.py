"""Explanations on a hand-made forecast: every sentence names real inputs, bills and dates."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pytest

from scale_ray.models.forecast.balance import project_balance
from scale_ray.models.forecast.explain import (
    chance,
    combined_importance,
    day_text,
    explain,
    label,
    ordinal,
)
from scale_ray.models.forecast.series import Schedule
from scale_ray.models.forecast.tft import UserForecast

ORIGIN = date(2025, 6, 20)  # a Friday; the 28th is a Saturday
HORIZON = 30
DATES = [ORIGIN + timedelta(days=k) for k in range(1, HORIZON + 1)]
SCHEDULE = Schedule(as_of=ORIGIN, paydays=(1,), bills=((28, 900.0),))
ENCODER = {"spend": 0.5, "balance": 0.3, "days_to_payday": 0.2}
DECODER = {"days_to_payday": 0.4, "recurring_due": 0.34, "day_of_week": 0.16, "month": 0.1}
PEAKS = (date(2025, 6, 1), date(2025, 5, 1), date(2025, 4, 2))


def make_forecast(
    *, after_payday: float = 150.0, decoder: dict[str, float] | None = None
) -> UserForecast:
    median = np.full(HORIZON, 50.0)
    for i, d in enumerate(DATES):
        if 1 <= d.day <= 5:
            median[i] = after_payday
        if d.day == 28:
            median[i] += 900.0  # the bill
    spend = np.stack([0.5 * median, median, 2.0 * median], axis=1)
    income = np.zeros((HORIZON, 3))
    income[DATES.index(date(2025, 7, 1))] = 2000.0
    n_enc = 90
    enc_dates = [ORIGIN - timedelta(days=n_enc - 1 - k) for k in range(n_enc)]
    attention = np.full(n_enc, 0.5)
    for weight, peak in zip((5.0, 4.0, 3.0), PEAKS, strict=True):
        attention[enc_dates.index(peak)] = weight
    return UserForecast(
        user_id="u1",
        currency="GBP",
        origin=ORIGIN,
        dates=DATES,
        quantile_levels=(0.1, 0.5, 0.9),
        quantiles={"spend": spend, "income": income},
        attention=attention / attention.sum(),
        attention_dates=enc_dates,
        static_importance={"income_bracket": 0.7, "account_type": 0.3},
        encoder_importance=ENCODER,
        decoder_importance=DECODER if decoder is None else decoder,
    )


def test_low_balance_names_the_bill_the_weekend_and_the_day() -> None:
    forecast = make_forecast()
    # 1200 - 7 days x ~50 - (900 + 50) on the 28th: below zero around the 28th.
    projection = project_balance(1200.0, forecast)
    assert projection.first_low_date == date(2025, 6, 28)
    out = explain(forecast, projection, SCHEDULE, currency="GBP", country="GB")
    low = out.sentences[0]
    assert out.summary == low
    assert "likely around the 28th (Sat 28 Jun)" in low
    assert f"{chance(projection.p_below_threshold)} of going below zero" in low
    assert "a 900 GBP bill due on the 28th" in low and "a weekend" in low
    weights = out.weights["low_balance"]
    assert weights["date"] == "2025-06-28"
    assert weights["probability"] == projection.p_below_threshold
    assert weights["bills"] == {"2025-06-28": 900.0}
    assert weights["weekend_or_holiday"] == ["2025-06-28"]
    # Other spending until the 28th: 8 days x 50 at the median (the bill excluded).
    assert weights["other_spend_until_low"] == pytest.approx(400.0)
    assert "about 400 GBP of other spending before then" in low


def test_payday_peak_is_said_only_when_the_forecast_shows_it() -> None:
    forecast = make_forecast()
    out = explain(forecast, project_balance(50_000.0, forecast), SCHEDULE, currency="GBP")
    [payday] = [s for s in out.sentences if "payday" in s and "leans" not in s]
    assert payday.startswith("Spending is expected to peak after payday (the 1st)")
    assert "150 GBP a day" in payday
    assert out.weights["payday"]["spend_after_payday"] == pytest.approx(150.0)
    # Flat spending: no peak claimed; payday is still a top input, so that is said instead.
    flat = make_forecast(after_payday=50.0)
    out = explain(flat, project_balance(50_000.0, flat), SCHEDULE, currency="GBP")
    assert not any("peak" in s for s in out.sentences)
    assert any("Your payday (the 1st) is one of the main signals" in s for s in out.sentences)
    # A big bill two days after payday is not a spending peak.
    billed = make_forecast(after_payday=50.0)
    billed.quantiles["spend"][DATES.index(date(2025, 7, 2))] += 1500.0
    with_bill = Schedule(as_of=ORIGIN, paydays=(1,), bills=((2, 1500.0), (28, 900.0)))
    out = explain(billed, project_balance(50_000.0, billed), with_bill, currency="GBP")
    assert not any("peak" in s for s in out.sentences)
    assert out.weights["payday"]["spend_after_payday"] == pytest.approx(50.0)
    # Flat and payday not among the top inputs: nothing about payday at all.
    quiet = make_forecast(after_payday=50.0, decoder={"day_of_week": 0.6, "month": 0.4})
    encoder_only = dict(quiet.encoder_importance)
    encoder_only.pop("days_to_payday")
    quiet.encoder_importance = encoder_only
    out = explain(quiet, project_balance(50_000.0, quiet), SCHEDULE, currency="GBP")
    assert not any("payday" in s for s in out.sentences)


def test_inputs_sentence_names_the_largest_weights() -> None:
    forecast = make_forecast()
    out = explain(forecast, project_balance(50_000.0, forecast), SCHEDULE, currency="GBP")
    combined = combined_importance(forecast)
    assert list(combined)[:3] == ["days_to_payday", "spend", "recurring_due"]
    assert combined["days_to_payday"] == pytest.approx(0.3)
    assert sum(combined.values()) == pytest.approx(1.0)
    assert out.weights["inputs"] == dict(list(combined.items())[:3])
    [inputs] = [s for s in out.sentences if s.startswith("The forecast leans most on")]
    assert inputs == (
        "The forecast leans most on the days until payday (30%), your recent spending (25%) "
        "and the bills due (17%)."
    )


def test_attention_sentence_names_the_most_attended_days() -> None:
    forecast = make_forecast()
    out = explain(forecast, project_balance(50_000.0, forecast), SCHEDULE, currency="GBP")
    [sentence] = [s for s in out.sentences if s.startswith("It draws most")]
    assert sentence == (
        "It draws most on what happened around the 1st of past months (2 Apr, 1 May and 1 Jun)."
    )
    assert set(out.weights["attention"]) == {d.isoformat() for d in PEAKS}
    assert out.weights["attention"]["2025-06-01"] == pytest.approx(forecast.attention.max())


def test_no_risk_leads_with_the_outlook() -> None:
    forecast = make_forecast()
    projection = project_balance(50_000.0, forecast)
    out = explain(forecast, projection, SCHEDULE, currency="GBP")
    spend = projection.totals["spend"]
    assert out.summary.startswith("Over the next 30 days (21 Jun to 20 Jul) you will probably")
    assert f"spend about {spend[1]:,.0f} GBP" in out.summary
    assert "receive about 2,000 GBP" in out.summary
    assert out.sentences[1] == (
        "Your balance is unlikely to fall below zero in the next 30 days (a 0% chance)."
    )
    assert out.weights["low_balance"]["date"] is None


def test_words() -> None:
    assert [ordinal(d) for d in (1, 2, 3, 4, 11, 12, 13, 21, 22, 23, 31)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "23rd", "31st"
    ]  # fmt: skip
    assert day_text(date(2025, 6, 28)) == "the 28th (Sat 28 Jun)"
    assert label("spend_withdrawal_in_cash") == "your withdrawal in cash spending"
    assert label("spend_scale") == "your usual spending level"
    assert label("days_to_payday") == "the days until payday"
    assert [chance(p) for p in (0.08, 0.11, 0.18, 0.5, 0.8, 0.854, 1.0)] == [
        "an 8% chance", "an 11% chance", "an 18% chance", "a 50% chance", "an 80% chance",
        "an 85% chance", "a 100% chance",
    ]  # fmt: skip
