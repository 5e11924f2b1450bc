"""``GET /v1/forecast``: the user's cash flow over the coming days, from the ``Forecaster``.

The gateway authenticates, validates the query (allow-listed names; ``threshold`` parsed as
money is everywhere else) and calls the ``Forecaster`` deployment with the user id from the
token; the deployment reads that user's ledger only, so no request can see another user's
forecast. The deployment answers ``("ok", body)`` or ``("err", status, code, message,
details)`` (:mod:`scale_ray.models.forecast.service`), turned here into the response or the
JSON error: 422 ``insufficient_history`` for a user with too little history, 503
``forecaster_unavailable`` while no model is published.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from scale_ray.analytics.params import Params
from scale_ray.errors import ApiError, bad_request
from scale_ray.money import INT64_MAX, MoneyError, to_minor

log = logging.getLogger("scale.gateway.forecast")

#: Days ahead a request may ask for at most (the model's own horizon is checked by the
#: deployment, which knows it).
MAX_HORIZON = 366
#: A forecast call waits at most this long for the deployment (Serve's own limit is 120 s).
FORECAST_TIMEOUT_S = 90.0
#: ``threshold`` is checked for format here, before the user's currency is known: no ISO 4217
#: currency has more than four decimals, and the deployment then checks it against the
#: user's own currency with the same parser (``to_minor``).
_FORMAT_CHECK_CURRENCY = "CLF"


def _unavailable(message: str) -> ApiError:
    return ApiError(503, "forecaster_unavailable", message)


class ForecasterClient:
    """Calls the ``Forecaster`` deployment through a ``DeploymentHandle``."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    async def forecast(
        self, user_id: str, threshold: str | None, threshold_minor: int | None, horizon: int | None
    ) -> tuple[Any, ...]:
        return await self.handle.forecast_request.remote(
            user_id, threshold=threshold, threshold_minor=threshold_minor, horizon=horizon
        )


def parse_threshold(p: Params) -> tuple[str | None, int | None]:
    """``(threshold, threshold_minor)``: a decimal amount in the user's currency (its number of
    decimals is checked by the deployment), or minor units; at most one of them. Signed: an
    overdraft limit is a negative balance."""
    raw = p.str("threshold", 40)
    minor = p.int("threshold_minor", minimum=-INT64_MAX, maximum=INT64_MAX)
    if raw is not None and minor is not None:
        raise bad_request("give threshold or threshold_minor, not both")
    if minor is not None:
        return None, minor
    if raw is None:
        return None, None
    try:
        to_minor(raw, _FORMAT_CHECK_CURRENCY)
    except MoneyError as exc:
        raise bad_request(
            f"query parameter threshold must be a decimal amount such as 500.00, got {raw!r}",
            {"parameter": "threshold"},
        ) from exc
    return raw, None


def _body(result: Any) -> dict[str, Any]:
    if not isinstance(result, tuple) or not result:
        raise _unavailable("the forecaster gave an unexpected answer; try again")
    if result[0] == "ok":
        return result[1]
    _, status, code, message, details = result
    raise ApiError(status, code, message, details)


async def get_forecast(request: Request) -> Response:
    """
    summary: The user's cash-flow forecast for the coming days
    description: >
      Daily P10/P50/P90 of money out (spend) and in (income) from the forecasting model (a
      Temporal Fusion Transformer over the user's own daily history, calendar and learnt
      paydays and bills), the balance path they imply with the chance of going below zero
      and below ``threshold``, warnings, and a plain-language explanation of what drives the
      forecast. Amounts are decimal strings in the user's currency. Cached per ledger
      version: the forecast changes when the user's ledger does.
    tags: [forecast]
    parameters:
      - name: threshold
        in: query
        schema: {type: string, example: "500.00"}
        description: "A balance to warn below (decimal, the user's currency; default 0)."
      - name: threshold_minor
        in: query
        schema: {type: integer}
        description: "The same in minor units."
      - name: horizon
        in: query
        schema: {type: integer, minimum: 1}
        description: "Days ahead (default and maximum: the model's horizon)."
    responses:
      200:
        description: >
          user_id, currency, as_of, horizon, model_version, ledger_version, generated_at,
          days, totals, balance, warnings, explanation.
      400: {description: "Unknown query parameter, bad threshold or horizon."}
      401: {description: Missing, forged or expired token.}
      422: {description: "insufficient_history: too few days of transactions to forecast."}
      503:
        description: >
          forecaster_unavailable: no model published yet, or the deployment did not answer.
    """
    from scale_ray.gateway.app import _principal

    user_id = _principal(request).user_id
    p = Params(dict(request.query_params), {"threshold", "threshold_minor", "horizon"}, {})
    horizon = p.int("horizon", minimum=1, maximum=MAX_HORIZON)
    threshold, threshold_minor = parse_threshold(p)
    client: ForecasterClient | None = getattr(request.app.state.services, "forecaster", None)
    if client is None:
        raise _unavailable("the forecaster is not deployed")
    try:
        result = await asyncio.wait_for(
            client.forecast(user_id, threshold, threshold_minor, horizon), FORECAST_TIMEOUT_S
        )
    except Exception as exc:
        log.warning("forecast failed", exc_info=True)
        raise _unavailable("the forecaster did not answer; try again") from exc
    return JSONResponse(_body(result))


ROUTES = [
    Route("/v1/forecast", get_forecast, methods=["GET"]),
]

__all__ = ["ROUTES", "ForecasterClient", "parse_threshold"]
