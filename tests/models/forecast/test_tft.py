"""The TFT forecaster on a tiny synthetic ledger: it trains in seconds, forecasts ordered,
non-negative quantiles for the right days, explains itself with its real inputs, and comes
back identical from disk and from the registry."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch

from scale_ray.models.forecast.series import Schedule, daily_series, user_schedule, with_covariates
from scale_ray.models.forecast.tft import (
    ForecastModel,
    TFTConfig,
    UserForecast,
    build_dataset,
    fit_tft,
    load_forecaster,
    publish_forecaster,
    quantile_losses,
    with_future,
)
from scale_ray.models.registry import ModelRegistry

HORIZON = 7
CONFIG = TFTConfig(
    horizon=HORIZON,
    encoder_length=28,
    hidden_size=8,
    attention_head_size=2,
    hidden_continuous_size=4,
    batch_size=32,
    max_epochs=1,
    limit_train_batches=3,
    accelerator="cpu",
    seed=7,
)


@pytest.fixture(scope="module")
def ledger() -> tuple[pd.DataFrame, dict[str, Schedule]]:
    """Four demo users, about 200 days each, with covariates (GB calendar)."""
    from scale_ray.demo.generator import generate_tenants
    from scale_ray.ledger.rows import transactions_table

    torch.set_num_threads(1)
    tenants, _, _ = generate_tenants(4, years=0.6, seed=3, end=date(2025, 6, 30))
    table = pa.concat_tables(
        [
            transactions_table(t.user_id, t.transactions, num_buckets=8, source="demo")
            for t in tenants
        ]
    )
    rows = table.to_pandas()
    schedules = {user: user_schedule(part) for user, part in rows.groupby("user_id")}
    frame = with_covariates(daily_series(table), schedules, country="GB")
    return frame, schedules


@pytest.fixture(scope="module")
def trained(ledger: tuple[pd.DataFrame, dict[str, Schedule]]) -> ForecastModel:
    frame, _ = ledger
    last = frame.groupby("user_id")["time_idx"].transform("max")
    train = frame[frame["time_idx"] <= last - HORIZON]
    return fit_tft(train, CONFIG, val_frame=frame)


def test_frame_is_about_two_hundred_days_per_user(ledger) -> None:
    frame, _ = ledger
    sizes = frame.groupby("user_id").size()
    assert len(sizes) == 4 and sizes.between(150, 260).all()


def test_with_future_appends_known_days(ledger) -> None:
    frame, schedules = ledger
    out = with_future(frame, HORIZON, schedules, country="GB")
    assert len(out) == len(frame) + 4 * HORIZON
    for user, part in out.groupby("user_id"):
        history = frame[frame["user_id"] == user]
        future = part.tail(HORIZON)
        assert list(part["time_idx"].diff().dropna().unique()) == [1]
        assert future["date"].iloc[0] == history["date"].max() + timedelta(days=1)
        assert future["spend"].isna().all() and future["income"].isna().all()
        assert (future["day_of_week"] == future["date"].dt.weekday).all()
        assert (future["day_of_month"] == future["date"].dt.day).all()
        assert future["income_bracket"].nunique() == 1
        assert future["income_bracket"].iloc[0] == history["income_bracket"].iloc[-1]
        assert future[["days_to_payday", "days_to_recurring", "recurring_due"]].notna().all().all()


def test_training_reports_losses_and_validation(trained: ForecastModel) -> None:
    meta = trained.metadata
    assert meta["train_users"] == 4 and meta["epochs"] == 1
    assert math.isfinite(meta["train_loss"]) and math.isfinite(meta["val_loss"])
    validation = meta["validation"]
    assert validation["users"] == 4
    for target in ("spend", "income"):
        assert validation[target]["days"] == 4 * HORIZON
        assert set(validation[target]["relative"]) == {"p10", "p50", "p90"}
        assert all(v >= 0 for v in validation[target]["daily"].values())


def test_predict_shapes_ordered_quantiles_and_dates(trained, ledger) -> None:
    frame, schedules = ledger
    forecasts = trained.predict(with_future(frame, HORIZON, schedules, country="GB"))
    assert [f.user_id for f in forecasts] == sorted(frame["user_id"].unique())
    for f in forecasts:
        last = frame.loc[frame["user_id"] == f.user_id, "date"].max().date()
        assert f.origin == last and f.currency == "GBP"
        assert f.dates == [last + timedelta(days=k) for k in range(1, HORIZON + 1)]
        for target in ("spend", "income"):
            q = f.quantiles[target]
            assert q.shape == (HORIZON, 3)
            assert (q >= 0).all() and (np.diff(q, axis=1) >= 0).all()
        np.testing.assert_array_equal(f.quantile("spend", 0.5), f.quantiles["spend"][:, 1])
        # Attention: one weight per encoder day, the days right before the origin.
        assert len(f.attention) == len(f.attention_dates) == CONFIG.encoder_length
        assert f.attention_dates[-1] == last
        assert f.attention_dates[0] == last - timedelta(days=CONFIG.encoder_length - 1)
        assert f.attention.sum() == pytest.approx(1.0, abs=1e-5)
        # Importances name the network's real inputs and sum to one.
        net = trained.network
        assert set(f.encoder_importance) == set(net.encoder_variables)
        assert set(f.decoder_importance) == set(net.decoder_variables)
        assert set(f.static_importance) == set(net.static_variables)
        assert "days_to_payday" in f.decoder_importance and "spend" in f.encoder_importance
        for weights in (f.encoder_importance, f.decoder_importance, f.static_importance):
            assert sum(weights.values()) == pytest.approx(1.0, abs=1e-5)
            assert list(weights.values()) == sorted(weights.values(), reverse=True)


def test_forecast_only_depends_on_history(trained, ledger) -> None:
    """Future money values are ignored: NaN or actual numbers give the same forecast."""
    frame, _ = ledger
    blank = frame.copy()
    last = blank.groupby("user_id")["time_idx"].transform("max")
    blank.loc[last - blank["time_idx"] < HORIZON, ["spend", "income", "net", "balance"]] = np.nan
    a = trained.predict(frame)
    b = trained.predict(blank)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.quantiles["spend"], y.quantiles["spend"])


def test_a_user_unseen_in_training_is_forecast(trained, ledger) -> None:
    frame, schedules = ledger
    one = frame[frame["user_id"] == "demo-0002"].assign(user_id="newcomer")
    schedules = {"newcomer": schedules["demo-0002"]}
    [forecast] = trained.predict(with_future(one, HORIZON, schedules, country="GB"))
    assert forecast.user_id == "newcomer"
    assert forecast.quantiles["spend"].shape == (HORIZON, 3)


def test_short_history_is_left_out(trained, ledger) -> None:
    frame, schedules = ledger
    short = frame.groupby("user_id").head(CONFIG.min_encoder - 1)
    assert trained.predict(with_future(short, HORIZON, schedules, country="GB")) == []


def test_save_load_round_trip_gives_identical_predictions(trained, ledger, tmp_path) -> None:
    frame, schedules = ledger
    future = with_future(frame, HORIZON, schedules, country="GB")
    trained.save(tmp_path / "m")
    loaded = ForecastModel.load(tmp_path / "m")
    assert loaded.config == trained.config
    assert loaded.input_columns == trained.input_columns
    for a, b in zip(trained.predict(future), loaded.predict(future), strict=True):
        for target in ("spend", "income"):
            np.testing.assert_array_equal(a.quantiles[target], b.quantiles[target])
        np.testing.assert_array_equal(a.attention, b.attention)
        assert a.decoder_importance == b.decoder_importance


def test_registry_publish_and_load(trained, ledger, tmp_path: Path) -> None:
    frame, schedules = ledger
    registry = ModelRegistry(tmp_path / "models")
    version = publish_forecaster(registry, trained, {"note": "test"}, promote=True)
    meta = registry.metadata("forecaster", version)
    assert meta["kind"] == "temporal_fusion_transformer"
    assert meta["config"]["horizon"] == HORIZON and meta["note"] == "test"
    assert meta["validation"]["spend"]["days"] == 4 * HORIZON
    resolved, loaded = load_forecaster(registry)
    assert resolved == version
    future = with_future(frame, HORIZON, schedules, country="GB")
    a, b = trained.predict(future)[0], loaded.predict(future)[0]
    np.testing.assert_array_equal(a.quantiles["income"], b.quantiles["income"])


def test_same_seed_same_model(ledger, trained) -> None:
    frame, schedules = ledger
    last = frame.groupby("user_id")["time_idx"].transform("max")
    again = fit_tft(frame[frame["time_idx"] <= last - HORIZON], CONFIG)
    future = with_future(frame, HORIZON, schedules, country="GB")
    for a, b in zip(trained.predict(future), again.predict(future), strict=True):
        np.testing.assert_allclose(a.quantiles["spend"], b.quantiles["spend"], rtol=1e-5)


def test_dataset_models_log_money_with_encoder_normalizers(ledger) -> None:
    from pytorch_forecasting.data import EncoderNormalizer, MultiNormalizer

    frame, _ = ledger
    dataset = build_dataset(frame, CONFIG)
    assert isinstance(dataset.target_normalizer, MultiNormalizer)
    for norm in dataset.target_normalizer.normalizers:
        assert isinstance(norm, EncoderNormalizer) and norm.transformation is None
    assert dataset.weight is None
    assert dataset.max_prediction_length == HORIZON
    assert set(dataset.time_varying_known_reals) >= {"days_to_payday", "recurring_due"}
    assert {"spend", "income", "net", "balance"} <= set(dataset.time_varying_unknown_reals)
    # Targets are modelled as log1p(amount).
    target = dataset.data["target"][0].numpy()
    spend = frame.sort_values(["user_id", "time_idx"])["spend"].to_numpy()
    np.testing.assert_allclose(target, np.log1p(spend), rtol=1e-5)
    raw = build_dataset(frame, replace(CONFIG, loss_space="raw"))
    assert raw.weight == "loss_weight"
    assert raw.target_normalizer.normalizers[0].transformation == "log1p"


def test_a_user_without_income_gets_exactly_zero_income(trained, ledger) -> None:
    frame, schedules = ledger
    one = frame[frame["user_id"] == "demo-0002"].assign(income=0.0)
    one["net"] = -one["spend"]
    [forecast] = trained.predict(with_future(one, HORIZON, schedules, country="GB"))
    assert (forecast.quantiles["income"] == 0.0).all()


def test_config_validation_and_json_round_trip() -> None:
    assert TFTConfig.from_json(CONFIG.to_json()) == CONFIG
    with pytest.raises(ValueError, match="non-negative"):
        TFTConfig(targets=("net",))
    with pytest.raises(ValueError, match="quantiles"):
        TFTConfig(quantiles=(0.9, 0.1))
    assert TFTConfig(encoder_length=90).min_encoder == 30


def _forecast(values: np.ndarray, start: date, user: str = "u") -> UserForecast:
    days = [start + timedelta(days=k) for k in range(len(values))]
    return UserForecast(
        user_id=user,
        currency="GBP",
        origin=start - timedelta(days=1),
        dates=days,
        quantile_levels=(0.1, 0.5, 0.9),
        quantiles={"spend": values},
        attention=np.ones(1),
        attention_dates=[start - timedelta(days=1)],
    )


def test_quantile_losses_by_hand() -> None:
    start = date(2025, 1, 1)
    actual = pd.DataFrame(
        {
            "user_id": "u",
            "date": pd.to_datetime([start, start + timedelta(days=1)]),
            "spend": [10.0, 0.0],
        }
    )
    zero = quantile_losses([_forecast(np.zeros((2, 3)), start)], actual)["spend"]
    assert zero["relative"] == {"p10": 1.0, "p50": 1.0, "p90": 1.0}
    guess = np.array([[0.0, 10.0, 20.0], [0.0, 0.0, 5.0]])
    out = quantile_losses([_forecast(guess, start)], actual)["spend"]
    # Under-forecasts cost q per unit, over-forecasts 1 - q. Day 1 (y=10): p10 0.1*10=1,
    # p50 0, p90 0.1*10=1; day 2 (y=0): p90 0.1*5=0.5. The zero forecast: q*10 per quantile.
    assert out["daily"]["p10"] == pytest.approx(0.5)
    assert out["daily"]["p50"] == pytest.approx(0.0)
    assert out["daily"]["p90"] == pytest.approx((1.0 + 0.5) / 2)
    assert out["relative"]["p10"] == pytest.approx(1.0)
    assert out["relative"]["p90"] == pytest.approx(1.5 / 9.0)
    assert out["coverage"]["p90"] == 1.0 and out["coverage"]["p10"] == 0.5
    # Totals: actual 10 against 0 / 10 / 25.
    assert out["total_relative"]["p50"] == pytest.approx(0.0)
    assert out["total_relative"]["p90"] == pytest.approx(0.1 * 15 / (0.9 * 10))
