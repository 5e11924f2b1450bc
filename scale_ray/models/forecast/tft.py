"""A Temporal Fusion Transformer over users' daily cash-flow series: quantiles and their reasons.

The forecaster answers "how much will I spend / earn over the next month, and how sure is
that?" with P10/P50/P90 per day, and says *why* from the TFT's own interpretation (attention
over past days, variable-selection weights). It is pytorch-forecasting's
``TemporalFusionTransformer`` trained on the frame :mod:`scale_ray.models.forecast.series`
builds (one row per user and day, known calendar and schedule covariates, statics).

Choices that matter for daily personal money (sparse, zero-inflated, heavy-tailed, many
currencies, users who did not exist when the model was trained):

* **The quantile loss is taken on ``log1p`` money** (``loss_space="log"``, the default):
  targets enter as ``log1p(amount)`` and the quantiles come back through ``expm1``. Quantiles
  commute with monotone maps, so the pinball loss in log space has the same minimiser (the
  true conditional quantile), while every user and currency weighs about the same (a CZK
  salary and a GBP one differ by an additive constant, not a factor of 30) and a payday's
  spike is a step of ~10, not 20 000. The alternative ``loss_space="raw"`` (the library's
  ``log1p`` transformation with an ``exp`` inverse, pinball on currency units, per-user
  weights ``1 / mean daily flow`` so big spenders do not own the gradient) is kept for
  comparison; there the gradient through ``exp`` is proportional to the current prediction,
  so a near-zero forecast on payday moves slowly. On Berka at equal settings (400 steps,
  lr 3e-3) log space gave better P10 and 30-day-total losses and a slightly worse daily P50
  (0.91 against 0.89 of the zero forecast's); neither had learnt income yet.
* **Every weekday and month is in the encoders** (prefitted), so a model trained on a few
  months still encodes a forecast into a month it never saw.
* **Target normalizer: ``EncoderNormalizer`` per target**, fitted on each sample's own
  encoder window. A ``GroupNormalizer`` would fit one scale per *training* user: a user who
  signed up after the last retrain (or whose salary changed) would get the median user's
  scale. Fitting on the window needs no per-user state and reads no future; a window of
  zeros keeps forecasts at exactly zero. ``add_target_scales`` hands the window's
  centre/scale to the network as statics, so it still knows the user's level.
* **Money inputs that are not targets** (``net``, ``balance``, category spend,
  ``recurring_due``) go in as signed ``log1p`` and are then standard-scaled: raw balances in
  CZK and USD differ by orders of magnitude and a single heavy day would dominate a linear
  scaler.
* **Multiple targets** share one network (``MultiLoss`` of ``QuantileLoss``); quantiles are
  sorted and floored at zero when read out, so P10 <= P50 <= P90 always holds.
* **Shorter histories**: encoders may be as short as ``min_encoder_length`` (a third of the
  full length by default), so new users get forecasts early; the encoder length becomes a
  static input.

:class:`ForecastModel` holds the trained network plus the dataset parameters (fitted
encoders and scalers) and the config; ``save``/``load`` need no training data, and
``predict`` runs the network directly (no Lightning trainer), batched over users, which is
what a Serve replica wants.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from scale_ray.models.forecast.series import (
    CALENDAR_COLUMNS,
    SCHEDULE_COLUMNS,
    Schedule,
    future_days,
    income_brackets,
    with_covariates,
)
from scale_ray.models.registry import ModelRegistry

log = logging.getLogger(__name__)

MODEL_NAME = "forecaster"
MODEL_FILE = "forecaster.pt"
CONFIG_FILE = "config.json"
WEIGHT_COLUMN = "loss_weight"

#: Known covariates fed as categoricals (embedded) and as reals.
KNOWN_CATEGORICALS = ("day_of_week", "month")
KNOWN_REALS = tuple(
    c for c in (*CALENDAR_COLUMNS, *SCHEDULE_COLUMNS) if c not in KNOWN_CATEGORICALS
)
STATIC_CATEGORICALS = ("income_bracket", "account_type")
#: Columns that may be targets: non-negative daily flows.
_TARGET_OK = ("spend", "income")


@dataclass(frozen=True)
class TFTConfig:
    """Everything that shapes the dataset, the network and its training."""

    horizon: int = 30
    encoder_length: int = 90
    #: Shortest history (days) a forecast may use; None: a third of ``encoder_length``.
    min_encoder_length: int | None = None
    quantiles: tuple[float, ...] = (0.1, 0.5, 0.9)
    targets: tuple[str, ...] = ("spend", "income")
    #: Category names whose ``spend_<slug>`` columns are inputs; empty: every ``spend_*``
    #: column of the training frame.
    categories: tuple[str, ...] = ()
    hidden_size: int = 32
    attention_head_size: int = 4
    hidden_continuous_size: int = 16
    dropout: float = 0.1
    #: Berka, 800 steps: 1e-2 with clip 1.0 learnt paydays (income P50 loss 0.68 of the zero
    #: forecast); 3e-3 with clip 0.1 had learnt no income after 400 steps.
    learning_rate: float = 1e-2
    batch_size: int = 128
    max_epochs: int = 10
    #: Lightning's ``limit_train_batches``: a fraction of the batches or a count per epoch.
    limit_train_batches: float | int = 1.0
    gradient_clip: float = 1.0
    seed: int = 0
    #: "auto" picks CUDA only when this process sees a GPU, else CPU.
    accelerator: str = "auto"
    #: Where the pinball loss is taken: "log" (log1p money) or "raw" (currency units).
    loss_space: str = "log"

    def __post_init__(self) -> None:
        if self.horizon < 1 or self.encoder_length < 2:
            raise ValueError("horizon must be >= 1 and encoder_length >= 2")
        if not self.targets:
            raise ValueError("at least one target is needed")
        for target in self.targets:
            if target not in _TARGET_OK and not target.startswith("spend_"):
                raise ValueError(
                    f"target {target!r} is not a non-negative flow (spend, income, spend_*)"
                )
        if self.loss_space not in ("log", "raw"):
            raise ValueError(f"loss_space must be 'log' or 'raw': {self.loss_space!r}")
        qs = tuple(float(q) for q in self.quantiles)
        if not qs or any(not 0.0 < q < 1.0 for q in qs) or list(qs) != sorted(set(qs)):
            raise ValueError(f"quantiles must be increasing and in (0, 1): {self.quantiles}")
        object.__setattr__(self, "quantiles", qs)
        object.__setattr__(self, "targets", tuple(self.targets))
        object.__setattr__(self, "categories", tuple(self.categories))

    @property
    def min_encoder(self) -> int:
        if self.min_encoder_length is None:
            return max(2, self.encoder_length // 3)
        return max(1, min(self.min_encoder_length, self.encoder_length))

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("quantiles", "targets", "categories"):
            out[key] = list(out[key])
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TFTConfig:
        names = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        for key in ("quantiles", "targets", "categories"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)


# -- frames ------------------------------------------------------------------------------------


def with_future(
    frame: pd.DataFrame,
    horizon: int,
    schedules: Mapping[str, Schedule],
    *,
    country: str | None = None,
    account_types: Mapping[str, str] | None = None,
    brackets: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """``frame`` (a :func:`~.series.with_covariates` frame) plus ``horizon`` future days per
    user: money columns NaN (unknown), known covariates and statics filled.

    Statics default to each user's values in ``frame`` (else the income brackets of its
    history and account type ``current``), so the future rows never recompute them from
    unknown money.
    """
    if frame.empty:
        return frame.copy()
    frame = frame.sort_values(["user_id", "time_idx"]).reset_index(drop=True)
    last = frame.groupby("user_id", sort=False).tail(1)
    parts = []
    for row in last.itertuples(index=False):
        days = future_days(pd.Timestamp(row.date), horizon)
        parts.append(
            pd.DataFrame(
                {
                    "user_id": row.user_id,
                    "date": days.to_numpy(),
                    "time_idx": np.arange(row.time_idx + 1, row.time_idx + 1 + horizon),
                    "currency": row.currency,
                }
            )
        )
    future = pd.concat(parts, ignore_index=True)
    future["date"] = future["date"].astype(frame["date"].dtype)
    money = [c for c in frame.columns if c in ("spend", "income", "net", "balance")]
    money += [c for c in frame.columns if c.startswith("spend_")]
    for column in money:
        future[column] = np.nan
    per_user = last.set_index("user_id")
    if brackets is None:
        if "income_bracket" in frame:
            brackets = per_user["income_bracket"].astype(str).to_dict()
        else:
            brackets = income_brackets(frame)
    if account_types is None and "account_type" in frame:
        account_types = per_user["account_type"].astype(str).to_dict()
    future = with_covariates(
        future,
        dict(schedules),
        country=country,
        account_types=dict(account_types or {}),
        brackets=dict(brackets),
    )
    columns = list(frame.columns)
    missing = [c for c in columns if c not in future]
    if missing:
        raise ValueError(f"cannot fill future values of columns {missing}")
    out = pd.concat([frame, future[columns]], ignore_index=True)
    return out.sort_values(["user_id", "time_idx"], kind="mergesort").reset_index(drop=True)


def _signed_log1p(values: np.ndarray) -> np.ndarray:
    return np.sign(values) * np.log1p(np.abs(values))


def _category_columns(frame: pd.DataFrame, config: TFTConfig) -> list[str]:
    from scale_ray.models.forecast.series import slug

    if config.categories:
        wanted = [f"spend_{slug(c)}" for c in config.categories]
    else:
        wanted = sorted(c for c in frame.columns if c.startswith("spend_"))
    return [c for c in dict.fromkeys(wanted) if c not in config.targets]


def _unknown_reals(frame: pd.DataFrame, config: TFTConfig) -> list[str]:
    return [*config.targets, "net", "balance", *_category_columns(frame, config)]


def _prepare(
    frame: pd.DataFrame, config: TFTConfig, unknown: Sequence[str], *, predict: bool
) -> pd.DataFrame:
    """The model's view of ``frame``: typed categoricals, transformed money inputs, weights."""
    required = [
        "user_id",
        "time_idx",
        "date",
        "currency",
        *unknown,
        *KNOWN_CATEGORICALS,
        *KNOWN_REALS,
        *STATIC_CATEGORICALS,
    ]
    missing = [c for c in dict.fromkeys(required) if c not in frame.columns]
    if missing:
        raise ValueError(f"the frame lacks columns {missing} (see series.with_covariates)")
    data = frame[list(dict.fromkeys(required))].copy()
    data["user_id"] = data["user_id"].astype(str)
    data["time_idx"] = data["time_idx"].astype(np.int64)
    for column in (*KNOWN_CATEGORICALS, *STATIC_CATEGORICALS):
        data[column] = data[column].astype(str)
    for column in KNOWN_REALS:
        data[column] = data[column].astype(np.float64)
    money = list(unknown)
    values = data[money].to_numpy(dtype=np.float64)
    if np.isnan(values).any():
        if not predict:
            bad = [c for c in money if data[c].isna().any()]
            raise ValueError(f"training rows have unknown (NaN) money in {bad}")
        values = np.nan_to_num(values, nan=0.0)
    data[money] = values
    for target in config.targets:
        data[target] = data[target].clip(lower=0.0)
        if config.loss_space == "log":
            data[target] = np.log1p(data[target])
    for column in money:
        if column in config.targets:
            continue
        data[column] = _signed_log1p(data[column].to_numpy())
    data["recurring_due"] = np.log1p(data["recurring_due"].clip(lower=0.0))
    flow = data[list(config.targets)].sum(axis=1) / len(config.targets)
    scale = flow.groupby(data["user_id"]).transform("mean").to_numpy()
    positive = scale[scale > 0]
    floor = max(1.0, 0.05 * float(np.median(positive))) if positive.size else 1.0
    data[WEIGHT_COLUMN] = 1.0 / np.maximum(scale, floor)
    return data.sort_values(["user_id", "time_idx"], kind="mergesort").reset_index(drop=True)


def _normalizer(config: TFTConfig) -> Any:
    from pytorch_forecasting.data import EncoderNormalizer

    transformation = "log1p" if config.loss_space == "raw" else None
    return EncoderNormalizer(method="standard", center=True, transformation=transformation)


def build_dataset(
    frame: pd.DataFrame,
    config: TFTConfig,
    *,
    reference: Any = None,
    predict: bool = False,
) -> Any:
    """The ``TimeSeriesDataSet`` of ``frame`` (group ``user_id``).

    ``reference`` (a dataset or its ``get_parameters()``) reuses fitted encoders and scalers,
    as validation and prediction must. ``predict=True`` makes one sample per user whose
    decoder is the last ``config.horizon`` rows (use :func:`with_future` for real forecasts;
    their unknown money may be NaN). Users with fewer than ``min_encoder_length + horizon``
    days are left out.
    """
    from pytorch_forecasting import TimeSeriesDataSet
    from pytorch_forecasting.data import MultiNormalizer, NaNLabelEncoder

    if reference is not None:
        params = reference.get_parameters() if hasattr(reference, "get_parameters") else reference
        data = _prepare(frame, config, params["time_varying_unknown_reals"], predict=predict)
        return TimeSeriesDataSet.from_parameters(
            params, data, predict=predict, stop_randomization=True
        )
    unknown = _unknown_reals(frame, config)
    data = _prepare(frame, config, unknown, predict=predict)
    normalizers = [_normalizer(config) for _ in config.targets]
    target: str | list[str] = (
        config.targets[0] if len(config.targets) == 1 else list(config.targets)
    )
    encoders = {name: NaNLabelEncoder(add_nan=True) for name in ("user_id", *STATIC_CATEGORICALS)}
    # Every weekday and month, so a forecast into a month unseen in training still encodes.
    for name, values in (("day_of_week", range(7)), ("month", range(1, 13))):
        encoders[name] = NaNLabelEncoder(add_nan=True).fit(pd.Series([str(v) for v in values]))
    return TimeSeriesDataSet(
        data,
        time_idx="time_idx",
        target=target,
        group_ids=["user_id"],
        weight=WEIGHT_COLUMN if config.loss_space == "raw" else None,
        max_encoder_length=config.encoder_length,
        min_encoder_length=config.min_encoder,
        max_prediction_length=config.horizon,
        min_prediction_length=config.horizon,
        static_categoricals=list(STATIC_CATEGORICALS),
        time_varying_known_categoricals=list(KNOWN_CATEGORICALS),
        time_varying_known_reals=list(KNOWN_REALS),
        time_varying_unknown_reals=unknown,
        target_normalizer=normalizers[0] if len(normalizers) == 1 else MultiNormalizer(normalizers),
        categorical_encoders=encoders,
        add_relative_time_idx=True,
        add_target_scales=True,
        add_encoder_length=True,
        predict_mode=predict,
    )


def make_model(dataset: Any, config: TFTConfig) -> Any:
    """A fresh ``TemporalFusionTransformer`` for ``dataset`` with a quantile loss per target."""
    from pytorch_forecasting import TemporalFusionTransformer
    from pytorch_forecasting.metrics import MultiLoss, QuantileLoss
    from torch import nn

    losses = [QuantileLoss(quantiles=list(config.quantiles)) for _ in config.targets]
    loss = losses[0] if len(losses) == 1 else MultiLoss(losses)
    return TemporalFusionTransformer.from_dataset(
        dataset,
        hidden_size=config.hidden_size,
        attention_head_size=config.attention_head_size,
        hidden_continuous_size=min(config.hidden_continuous_size, config.hidden_size),
        dropout=config.dropout,
        learning_rate=config.learning_rate,
        loss=loss,
        logging_metrics=nn.ModuleList([]),
        log_interval=-1,
        reduce_on_plateau_patience=4,
        optimizer="adam",
    )


# -- forecasts ---------------------------------------------------------------------------------


@dataclass
class UserForecast:
    """One user's forecast from ``origin`` (the last observed day) and why."""

    user_id: str
    currency: str
    origin: date
    dates: list[date]
    quantile_levels: tuple[float, ...]
    #: target -> array (horizon, n_quantiles), non-negative, sorted along quantiles.
    quantiles: dict[str, np.ndarray]
    #: Attention over the encoder days (sums to 1), averaged over heads and horizon days.
    attention: np.ndarray
    attention_dates: list[date]
    static_importance: dict[str, float] = field(default_factory=dict)
    encoder_importance: dict[str, float] = field(default_factory=dict)
    decoder_importance: dict[str, float] = field(default_factory=dict)

    def quantile(self, target: str, level: float) -> np.ndarray:
        """The daily values of ``target`` at quantile ``level`` (one of ``quantile_levels``)."""
        for i, q in enumerate(self.quantile_levels):
            if math.isclose(q, level):
                return self.quantiles[target][:, i]
        raise KeyError(f"no quantile {level} (have {self.quantile_levels})")

    def median_index(self) -> int:
        """Index of the quantile level closest to 0.5."""
        return int(np.argmin([abs(q - 0.5) for q in self.quantile_levels]))

    def to_json(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "currency": self.currency,
            "origin": self.origin.isoformat(),
            "dates": [d.isoformat() for d in self.dates],
            "quantile_levels": list(self.quantile_levels),
            "quantiles": {t: np.round(v, 4).tolist() for t, v in self.quantiles.items()},
            "attention": {
                d.isoformat(): round(float(w), 6)
                for d, w in zip(self.attention_dates, self.attention, strict=True)
            },
            "static_importance": self.static_importance,
            "encoder_importance": self.encoder_importance,
            "decoder_importance": self.decoder_importance,
        }


def _importance(names: Sequence[str], weights: np.ndarray) -> dict[str, float]:
    total = float(np.sum(weights))
    scale = 1.0 / total if total > 0 else 0.0
    pairs = sorted(zip(names, weights, strict=True), key=lambda p: -float(p[1]))
    return {str(n): float(w) * scale for n, w in pairs}


class ForecastModel:
    """A trained TFT with what it needs to predict on new frames (no training data)."""

    def __init__(
        self,
        network: Any,
        dataset_parameters: dict[str, Any],
        config: TFTConfig,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.network = network.cpu().eval()
        self.dataset_parameters = dataset_parameters
        self.config = config
        self.metadata = dict(metadata or {})
        self.device = "cpu"

    def to(self, device: str) -> ForecastModel:
        """Run the network on ``device`` (``"cuda"`` on a GPU replica); returns self."""
        self.network = self.network.to(device).eval()
        self.device = str(device)
        return self

    @property
    def input_columns(self) -> list[str]:
        """The money columns the frame must carry (targets, net, balance, category spend)."""
        return list(self.dataset_parameters["time_varying_unknown_reals"])

    def predict(
        self, frame_with_future: pd.DataFrame, *, batch_size: int = 256
    ) -> list[UserForecast]:
        """Forecasts for every user of ``frame_with_future`` with enough history (see
        :func:`build_dataset`), in user order. The last ``horizon`` rows per user are the
        forecast days (:func:`with_future`); their money values are ignored."""
        cfg = self.config
        if frame_with_future.empty:
            return []
        # Users without enough days for one window are left out (the dataset would refuse).
        sizes = frame_with_future.groupby("user_id")["time_idx"].transform("size")
        frame_with_future = frame_with_future[sizes >= cfg.min_encoder + cfg.horizon]
        if frame_with_future.empty:
            return []
        with _quiet():
            return self._predict(frame_with_future, batch_size)

    def _predict(self, frame_with_future: pd.DataFrame, batch_size: int) -> list[UserForecast]:
        cfg = self.config
        dataset = build_dataset(
            frame_with_future, cfg, reference=self.dataset_parameters, predict=True
        )
        loader = dataset.to_dataloader(train=False, batch_size=batch_size, num_workers=0)
        meta = frame_with_future.drop_duplicates("user_id").set_index(
            frame_with_future.drop_duplicates("user_id")["user_id"].astype(str)
        )
        origin_day = np.datetime64("1970-01-01", "D")
        net = self.network
        out_list: list[UserForecast] = []
        with torch.no_grad():
            for x, _ in loader:
                if self.device != "cpu":
                    x = _to_device(x, self.device)
                out = net(x)
                interp = net.interpret_output(out, reduction="none")
                index = dataset.x_to_index(x)
                predictions = out["prediction"]
                if not isinstance(predictions, list | tuple):
                    predictions = [predictions]
                preds = [p.detach().cpu().numpy().astype(np.float64) for p in predictions]
                if cfg.loss_space == "log":
                    preds = [np.expm1(np.clip(p, None, 50.0)) for p in preds]
                attention = _mean_attention(out, x["encoder_lengths"])
                static = interp["static_variables"].cpu().numpy()
                enc = interp["encoder_variables"].cpu().numpy()
                dec = interp["decoder_variables"].cpu().numpy()
                lengths = x["encoder_lengths"].cpu().numpy()
                for i in range(len(index)):
                    user = str(index["user_id"].iloc[i])
                    first = int(index["time_idx"].iloc[i])
                    n_enc = int(lengths[i])
                    day0 = origin_day + first
                    dates = [(day0 + k).astype(date) for k in range(cfg.horizon)]
                    enc_dates = [(day0 - n_enc + k).astype(date) for k in range(n_enc)]
                    quantiles = {
                        t: np.sort(np.clip(preds[j][i], 0.0, None), axis=-1)
                        for j, t in enumerate(cfg.targets)
                    }
                    # Round sub-cent values (e.g. the exp() floor) to zero.
                    for values in quantiles.values():
                        values[values < 1e-2] = 0.0
                    out_list.append(
                        UserForecast(
                            user_id=user,
                            currency=str(meta.loc[user, "currency"]),
                            origin=(day0 - 1).astype(date),
                            dates=dates,
                            quantile_levels=cfg.quantiles,
                            quantiles=quantiles,
                            attention=attention[i, :n_enc],
                            attention_dates=enc_dates,
                            static_importance=_importance(net.static_variables, static[i]),
                            encoder_importance=_importance(net.encoder_variables, enc[i]),
                            decoder_importance=_importance(net.decoder_variables, dec[i]),
                        )
                    )
        out_list.sort(key=lambda f: f.user_id)
        return out_list

    # -- persistence -------------------------------------------------------------------------
    def save(self, folder: str | Path) -> None:
        """Write the network's hyper-parameters and weights, the dataset parameters and the
        config into ``folder`` (pickled with torch: load only files this system wrote)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        payload = {
            "hparams": dict(self.network.hparams),
            "loss": self.network.loss,
            "state_dict": {k: v.cpu() for k, v in self.network.state_dict().items()},
            "dataset_parameters": self.dataset_parameters,
            "metadata": self.metadata,
        }
        torch.save(payload, folder / MODEL_FILE)
        (folder / CONFIG_FILE).write_text(
            json.dumps(self.config.to_json(), indent=2, sort_keys=True), encoding="utf-8"
        )

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, config: TFTConfig, metadata: dict[str, Any] | None = None
    ) -> ForecastModel:
        """The model in a Lightning checkpoint of a TFT trained on a :func:`build_dataset`
        dataset (pytorch-forecasting keeps the dataset parameters in the checkpoint)."""
        from pytorch_forecasting import TemporalFusionTransformer

        network = TemporalFusionTransformer.load_from_checkpoint(
            str(path), map_location="cpu", weights_only=False
        )
        params = getattr(network, "dataset_parameters", None) or network.hparams.get(
            "dataset_parameters"
        )
        if not params:
            raise ValueError(f"checkpoint {path} holds no dataset parameters")
        return cls(network, params, config, metadata)

    @classmethod
    def load(cls, folder: str | Path) -> ForecastModel:
        """The model :meth:`save` wrote into ``folder``."""
        from pytorch_forecasting import TemporalFusionTransformer

        folder = Path(folder)
        config = TFTConfig.from_json(json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8")))
        payload = torch.load(folder / MODEL_FILE, map_location="cpu", weights_only=False)
        from torch import nn

        hparams = {
            **payload["hparams"],
            "loss": payload["loss"],
            "logging_metrics": nn.ModuleList([]),
        }
        network = TemporalFusionTransformer(**hparams)
        network.load_state_dict(payload["state_dict"])
        return cls(network, payload["dataset_parameters"], config, payload.get("metadata"))


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence two expected pytorch-forecasting warnings (once per sample, they would flood
    a replica's or a job's log): fitted scalers see arrays, not frames, and new users are
    "unknown classes"."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="X does not have valid feature names")
        warnings.filterwarnings("ignore", message="Found .* unknown classes")
        yield


def _to_device(value: Any, device: str) -> Any:
    """Tensors of a (nested) batch moved to ``device``."""
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, dict):
        return {k: _to_device(v, device) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_to_device(v, device) for v in value)
    return value


def _mean_attention(out: dict[str, Any], encoder_lengths: torch.Tensor) -> np.ndarray:
    """Attention of the decoder days on the encoder days, averaged over heads and decoder
    days, renormalised over each sample's real encoder days: (batch, max encoder length),
    left-aligned (position k is the k-th encoder day)."""
    attention = out["encoder_attention"]  # batch x decoder x heads x encoder
    mean = attention.float().mean(dim=(1, 2)).cpu().numpy()
    lengths = encoder_lengths.cpu().numpy()
    mask = np.arange(mean.shape[1])[None, :] < lengths[:, None]
    mean = np.where(mask, np.nan_to_num(mean, nan=0.0), 0.0)
    totals = mean.sum(axis=1, keepdims=True)
    return np.divide(mean, totals, out=np.zeros_like(mean), where=totals > 0)


# -- training ----------------------------------------------------------------------------------


def _accelerator(name: str) -> str:
    if name == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    return name


def fit_tft(
    train_frame: pd.DataFrame,
    config: TFTConfig,
    *,
    val_frame: pd.DataFrame | None = None,
    trainer_kwargs: dict[str, Any] | None = None,
    prepare_trainer: Callable[[Any], Any] | None = None,
    score: bool = True,
) -> ForecastModel:
    """Train a TFT on ``train_frame`` (every window with a full horizon) and return it.

    ``val_frame`` (history plus the validation horizon per user) is scored on its last
    ``horizon`` days each epoch and after training (``metadata["validation"]``, see
    :func:`quantile_losses`). ``trainer_kwargs`` override the Lightning ``Trainer``'s
    arguments (e.g. a Ray strategy and callbacks); ``prepare_trainer`` is applied to the
    trainer before fitting (Ray's ``prepare_trainer``); ``score=False`` skips the validation
    forecasts after training (a caller that scores another checkpoint). Seeds python, numpy
    and torch.
    """
    with _quiet():
        return _fit(train_frame, config, val_frame, trainer_kwargs, prepare_trainer, score)


def _fit(
    train_frame: pd.DataFrame,
    config: TFTConfig,
    val_frame: pd.DataFrame | None,
    trainer_kwargs: dict[str, Any] | None,
    prepare_trainer: Callable[[Any], Any] | None,
    score: bool,
) -> ForecastModel:
    import lightning.pytorch as pl

    started = time.perf_counter()
    pl.seed_everything(config.seed, workers=True, verbose=False)
    train = build_dataset(train_frame, config)
    loader = train.to_dataloader(train=True, batch_size=config.batch_size, num_workers=0)
    val_loader = None
    if val_frame is not None:
        val = build_dataset(val_frame, config, reference=train, predict=True)
        val_loader = val.to_dataloader(train=False, batch_size=config.batch_size, num_workers=0)
    network = make_model(train, config)
    accelerator = _accelerator(config.accelerator)
    kwargs: dict[str, Any] = {
        "max_epochs": config.max_epochs,
        "accelerator": accelerator,
        "devices": 1,
        "gradient_clip_val": config.gradient_clip,
        "limit_train_batches": config.limit_train_batches,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "deterministic": True if accelerator == "cpu" else "warn",
        "num_sanity_val_steps": 0,
    }
    kwargs.update(trainer_kwargs or {})
    trainer = pl.Trainer(**kwargs)
    if prepare_trainer is not None:
        trainer = prepare_trainer(trainer)
    trainer.fit(network, train_dataloaders=loader, val_dataloaders=val_loader)
    dates = pd.to_datetime(train_frame["date"])
    metadata: dict[str, Any] = {
        "train_users": int(train_frame["user_id"].nunique()),
        "train_rows": len(train_frame),
        "train_samples": len(train),
        "date_from": dates.min().date().isoformat(),
        "date_to": dates.max().date().isoformat(),
        "epochs": int(trainer.current_epoch),
        "train_seconds": round(time.perf_counter() - started, 2),
        "train_loss": _metric(trainer, "train_loss_epoch", "train_loss"),
        "val_loss": _metric(trainer, "val_loss"),
    }
    model = ForecastModel(network, train.get_parameters(), config, metadata)
    if val_frame is not None and score:
        model.metadata["validation"] = quantile_losses(model.predict(val_frame), val_frame)
    return model


def _metric(trainer: Any, *names: str) -> float | None:
    for name in names:
        value = trainer.callback_metrics.get(name)
        if value is not None:
            return float(value)
    return None


def quantile_losses(forecasts: Sequence[UserForecast], actual: pd.DataFrame) -> dict[str, Any]:
    """Pinball losses of ``forecasts`` against the actual values in ``actual`` (rows of
    ``user_id``, ``date`` and the targets), pooled over users and days.

    Per target: ``daily`` (mean pinball per quantile, currency units), ``relative`` (the
    pinball sum over the zero forecast's, so the zero forecast scores exactly 1.0 at every
    quantile and lower is better) and ``total_relative`` (the same for the sum over the
    horizon, the "how much this month" number). ``coverage`` is the share of days at or
    below each quantile (well calibrated: close to the level).
    """
    if not forecasts:
        return {}
    truth = actual.assign(
        user_id=actual["user_id"].astype(str),
        day=pd.to_datetime(actual["date"]).dt.date,
    ).set_index(["user_id", "day"])
    out: dict[str, Any] = {"users": len(forecasts)}
    levels = np.asarray(forecasts[0].quantile_levels)
    for target in forecasts[0].quantiles:
        preds, ys = [], []
        for f in forecasts:
            keys = list(zip([f.user_id] * len(f.dates), f.dates, strict=True))
            y = truth[target].reindex(keys).to_numpy(dtype=np.float64)
            ok = ~np.isnan(y)
            preds.append(f.quantiles[target][ok])
            ys.append(y[ok])
        pred = np.concatenate(preds) if preds else np.zeros((0, len(levels)))
        y = np.concatenate(ys) if ys else np.zeros(0)
        if y.size == 0:
            continue
        pin = _pinball(pred, y, levels)
        zero = _pinball(np.zeros_like(pred), y, levels)
        # Horizon totals: the sum of daily quantiles is a (conservative) quantile of the sum.
        tot_pred = np.stack([p.sum(axis=0) for p in preds])
        tot_y = np.array([v.sum() for v in ys])
        tot_pin = _pinball(tot_pred, tot_y, levels)
        tot_zero = _pinball(np.zeros_like(tot_pred), tot_y, levels)
        out[target] = {
            "days": int(y.size),
            "daily": {
                f"p{round(q * 100)}": float(v) for q, v in zip(levels, pin.mean(0), strict=True)
            },
            "relative": {
                f"p{round(q * 100)}": _ratio(pin[:, k].sum(), zero[:, k].sum())
                for k, q in enumerate(levels)
            },
            "total_relative": {
                f"p{round(q * 100)}": _ratio(tot_pin[:, k].sum(), tot_zero[:, k].sum())
                for k, q in enumerate(levels)
            },
            "coverage": {
                f"p{round(q * 100)}": float(np.mean(y <= pred[:, k])) for k, q in enumerate(levels)
            },
        }
    return out


def _pinball(pred: np.ndarray, y: np.ndarray, levels: np.ndarray) -> np.ndarray:
    err = y[:, None] - pred
    return np.maximum(levels[None, :] * err, (levels[None, :] - 1.0) * err)


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den > 0 else None


# -- registry ----------------------------------------------------------------------------------


def publish_forecaster(
    registry: ModelRegistry,
    model: ForecastModel,
    metadata: dict[str, Any] | None = None,
    *,
    promote: bool = False,
) -> str:
    """Publish ``model`` as a new version of ``forecaster``; returns the version."""
    meta = {
        "kind": "temporal_fusion_transformer",
        "config": model.config.to_json(),
        "inputs": model.input_columns,
        **model.metadata,
        **(metadata or {}),
    }

    def write(folder: Path) -> None:
        model.save(folder)

    version = registry.publish(MODEL_NAME, write, json.loads(json.dumps(meta, default=str)))
    if promote:
        registry.promote(MODEL_NAME, version)
    return version


def load_forecaster(
    registry: ModelRegistry, version: str | None = None
) -> tuple[str, ForecastModel]:
    """The model named by ``version`` (None or ``"live"``: the live one; ``"latest"``)."""
    resolved, folder = registry.resolve(MODEL_NAME, version)
    return resolved, ForecastModel.load(folder)


__all__ = [
    "MODEL_NAME",
    "ForecastModel",
    "TFTConfig",
    "UserForecast",
    "build_dataset",
    "fit_tft",
    "load_forecaster",
    "make_model",
    "publish_forecaster",
    "quantile_losses",
    "with_future",
]
