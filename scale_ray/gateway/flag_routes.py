"""HTTP routes of flagged transactions: list, look at one, say whether it was legitimate or fraud.

Flags are raised by the anomaly monitor (:mod:`scale_ray.models.anomaly.monitor`) into the
``flags`` Delta table; the gateway reads and resolves them in process through a
:class:`~scale_ray.models.anomaly.flags.FlagStore` (one per replica, made on first use), always
for the user of the token: another user's flag id is simply "not found".
"""

from __future__ import annotations

import threading
from typing import Any

import pyarrow.compute as pc
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from scale_ray.analytics.params import Params
from scale_ray.api_input import decode_json
from scale_ray.errors import bad_request, not_found, unprocessable
from scale_ray.ledger.keys import user_bucket
from scale_ray.ledger.reader import TXN_COLUMNS, LedgerReader, txn_to_json
from scale_ray.models.anomaly.flags import (
    RESOLUTIONS,
    STATUSES,
    FlagNotFound,
    FlagStore,
    InvalidFlagCursor,
    flag_json,
)

#: Page size of ``GET /v1/flags``: default and maximum.
PAGE_DEFAULT = 50
PAGE_MAX = 200
_TXN_FIELDS = [c.strip() for c in TXN_COLUMNS.split(",")]


def _user(request: Request) -> str:
    from scale_ray.gateway.app import _principal

    return _principal(request).user_id


_STORE_LOCK = threading.Lock()


def _store(request: Request) -> FlagStore:
    """The replica's flag store, made on first use (call it off the event loop: it may open
    the table)."""
    state = request.app.state
    store = getattr(state, "flag_store", None)
    if store is None:
        with _STORE_LOCK:
            store = getattr(state, "flag_store", None)
            if store is None:
                store = FlagStore(state.services.settings)
                state.flag_store = store
    return store


def _reader(request: Request) -> LedgerReader:
    return request.app.state.services.reader


def _transactions(reader: LedgerReader, user_id: str, txn_ids: list[str]) -> dict[str, Any]:
    """The user's transactions with these ids, as the API shows them, at the latest version."""
    if not txn_ids:
        return {}
    cache = reader.transactions
    bucket = user_bucket(user_id, reader.settings.num_buckets)
    table = cache.dataset(cache.latest_version(), bucket).to_table(
        columns=_TXN_FIELDS,
        filter=(pc.field("user_id") == user_id) & pc.field("txn_id").isin(sorted(set(txn_ids))),
    )
    return {row["txn_id"]: txn_to_json(row) for row in table.to_pylist()}


def _with_transactions(
    reader: LedgerReader, user_id: str, flags: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    txns = _transactions(reader, user_id, [f["txn_id"] for f in flags])
    return [{**flag_json(f), "transaction": txns.get(f["txn_id"])} for f in flags]


async def list_flags(request: Request) -> Response:
    """
    summary: The user's flagged transactions, newest first, with cursor pagination
    description: >
      Flags the anomaly engine raised on unusual debits, each with its score, a plain-language
      reason and the transaction. Resolve one with POST /v1/flags/{flag_id}.
    tags: [flags]
    parameters:
      - name: status
        in: query
        schema: {type: string, enum: [open, legitimate, fraud, all]}
        description: "Default: open."
      - {name: limit, in: query, schema: {type: integer, minimum: 1, maximum: 200}}
      - name: cursor
        in: query
        schema: {type: string}
        description: "next_cursor of the previous page."
    responses:
      200: {description: "flags and next_cursor (null on the last page)."}
      400: {description: Bad query parameter or cursor.}
      401: {description: Missing, forged or expired token.}
    """
    user_id = _user(request)
    p = Params(dict(request.query_params), {"status", "limit", "cursor"}, {})
    status = p.choice("status", (*STATUSES, "all"), "open")
    limit = p.int("limit", minimum=1, maximum=PAGE_MAX) or PAGE_DEFAULT
    raw_cursor = request.query_params.get("cursor") or None
    if raw_cursor is not None and len(raw_cursor) > 512:
        raise bad_request("cursor is malformed; use next_cursor from a previous page")
    reader = _reader(request)

    def page() -> tuple[list[dict[str, Any]], str | None]:
        flags, next_cursor = _store(request).list(
            user_id, status=status, limit=limit, cursor=raw_cursor
        )
        return _with_transactions(reader, user_id, flags), next_cursor

    try:
        flags, next_cursor = await run_in_threadpool(page)
    except InvalidFlagCursor as exc:
        raise bad_request(str(exc), code="invalid_cursor") from exc
    return JSONResponse({"flags": flags, "next_cursor": next_cursor})


async def get_flag(request: Request) -> Response:
    """
    summary: One flag of the user, with its transaction
    tags: [flags]
    parameters:
      - {name: flag_id, in: path, required: true, schema: {type: string}}
    responses:
      200: {description: The flag.}
      401: {description: Missing, forged or expired token.}
      404: {description: No such flag for this user.}
    """
    user_id = _user(request)
    Params(dict(request.query_params), set(), {})
    flag_id = request.path_params["flag_id"]
    reader = _reader(request)

    def one() -> dict[str, Any] | None:
        flag = _store(request).get(user_id, flag_id)
        return None if flag is None else _with_transactions(reader, user_id, [flag])[0]

    found = await run_in_threadpool(one)
    if found is None:
        raise not_found(f"flag {flag_id!r} not found")
    return JSONResponse(found)


def parse_resolution(body: Any) -> str:
    """The ``resolution`` of a resolve body; 422 naming the problem."""
    if not isinstance(body, dict):
        raise unprocessable('the body must be a JSON object: {"resolution": "legitimate"}')
    unknown = sorted(set(body) - {"resolution"})
    if unknown:
        raise unprocessable(f"unknown field(s): {', '.join(unknown)}", {"allowed": ["resolution"]})
    if "resolution" not in body:
        raise unprocessable("missing field: resolution", {"allowed": list(RESOLUTIONS)})
    value = body["resolution"]
    if value not in RESOLUTIONS:
        raise unprocessable(
            f"resolution must be one of {', '.join(RESOLUTIONS)}, got {value!r}",
            {"field": "resolution", "allowed": list(RESOLUTIONS)},
        )
    return str(value)


async def resolve_flag(request: Request) -> Response:
    """
    summary: Say whether a flagged transaction was legitimate or fraud
    description: >
      Resolving again replaces the earlier verdict (the latest wins). The verdicts are the
      labels the anomaly model is evaluated and tuned on.
    tags: [flags]
    parameters:
      - {name: flag_id, in: path, required: true, schema: {type: string}}
    requestBody:
      required: true
      content:
        application/json:
          schema:
            type: object
            required: [resolution]
            properties:
              resolution: {type: string, enum: [legitimate, fraud]}
            additionalProperties: false
    responses:
      200: {description: The flag with its new status.}
      400: {description: The body is not JSON.}
      401: {description: Missing, forged or expired token.}
      404: {description: No such flag for this user.}
      422: {description: Unknown field, or a resolution other than legitimate or fraud.}
    """
    user_id = _user(request)
    Params(dict(request.query_params), set(), {})
    flag_id = request.path_params["flag_id"]
    resolution = parse_resolution(decode_json(await request.body()))
    reader = _reader(request)

    def resolve() -> dict[str, Any]:
        flag = _store(request).resolve(user_id, flag_id, resolution)
        return _with_transactions(reader, user_id, [flag])[0]

    try:
        return JSONResponse(await run_in_threadpool(resolve))
    except FlagNotFound as exc:
        raise not_found(f"flag {flag_id!r} not found") from exc


ROUTES = [
    Route("/v1/flags", list_flags, methods=["GET"]),
    Route("/v1/flags/{flag_id}", get_flag, methods=["GET"]),
    Route("/v1/flags/{flag_id}", resolve_flag, methods=["POST"]),
]

__all__ = ["ROUTES", "parse_resolution"]
