"""The SCALE HTTP API: versioned routes under ``/v1``, JSON in and out, bearer-token auth.

Every handler derives the user from the token and passes it into the ledger query; no route
takes a user id from the request, so no request can reach another user's data.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.schemas import SchemaGenerator

from scale_ray import __version__
from scale_ray.api_input import (
    decode_json,
    parse_account,
    parse_datetime,
    parse_transactions_body,
)
from scale_ray.auth import AuthError, Principal
from scale_ray.errors import ApiError, bad_request, not_found, unauthorized, unprocessable
from scale_ray.gateway.middleware import RequestContextMiddleware
from scale_ray.gateway.services import Services
from scale_ray.imports import ImportOptions, ImportStatus, new_job_id, store_raw
from scale_ray.ledger.reader import Cursor, InvalidCursor, TxnFilter, UnknownVersion, txn_to_json
from scale_ray.ledger.rows import accounts_table, implied_accounts, transactions_table
from scale_ray.money import MoneyError, normalize_currency, to_minor

log = logging.getLogger("scale.gateway")

Handler = Callable[[Request], Awaitable[Response]]
IMPORT_FORMATS = ("auto", "csv", "ofx", "rebit-xml", "rebit-json")


def _json(data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status)


def _principal(request: Request) -> Principal:
    services: Services = request.app.state.services
    try:
        return services.verifier.verify(request.headers.get("authorization"))
    except AuthError as exc:
        raise unauthorized(str(exc)) from exc


def _int_param(
    request: Request, name: str, *, minimum: int | None = None, maximum: int | None = None
) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError as exc:
        raise bad_request(f"query parameter {name} must be an integer, got {raw!r}") from exc
    if minimum is not None and value < minimum:
        raise bad_request(f"query parameter {name} must be >= {minimum}")
    if maximum is not None and value > maximum:
        raise bad_request(f"query parameter {name} must be <= {maximum}")
    return value


def _time_param(request: Request, name: str) -> datetime | None:
    raw = request.query_params.get(name)
    if not raw:
        return None
    try:
        return parse_datetime(raw, name).astimezone(UTC)
    except ValueError as exc:
        raise bad_request(str(exc)) from exc


def _amount_param(request: Request, name: str, currency: str | None) -> int | None:
    minor = _int_param(request, f"{name}_minor")
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return minor
    if minor is not None:
        raise bad_request(f"give {name} or {name}_minor, not both")
    try:
        # Without a currency filter, read the bound with two decimals ("XXX": ISO's no-currency).
        return to_minor(Decimal(raw) if raw.strip() else raw, currency or "XXX")
    except (MoneyError, ArithmeticError, ValueError) as exc:
        raise bad_request(f"query parameter {name}: {exc}") from exc


def _known_params(request: Request, allowed: set[str]) -> None:
    unknown = sorted(set(request.query_params) - allowed)
    if unknown:
        raise bad_request(
            f"unknown query parameter(s): {', '.join(unknown)}",
            {"allowed": sorted(allowed)},
        )


# -- handlers -------------------------------------------------------------------------------


async def healthz(request: Request) -> Response:
    """
    summary: Liveness and ledger versions
    tags: [system]
    security: []
    responses:
      200: {description: The gateway is up; latest table versions.}
    """
    services: Services = request.app.state.services
    versions = await run_in_threadpool(services.reader.latest_versions)
    return _json({"status": "ok", "version": __version__, "tables": versions})


async def openapi(request: Request) -> Response:
    """
    summary: This API's OpenAPI 3 description
    tags: [system]
    security: []
    responses:
      200: {description: OpenAPI document.}
    """
    return _json(request.app.state.openapi)


async def post_transactions(request: Request) -> Response:
    """
    summary: Post a batch of up to 10,000 transactions (idempotent by txn_id)
    description: >
      Answers after the batch is durably committed to the ledger. Re-posting transactions with
      the same txn_id never duplicates them; they are reported as duplicates. Amounts are
      decimal strings (or JSON numbers read exactly) or integer minor units.
    tags: [transactions]
    requestBody:
      required: true
      content:
        application/json:
          schema: {$ref: '#/components/schemas/TransactionBatch'}
    responses:
      201: {description: Committed; counts of written and duplicate rows and the ledger version.}
      401: {description: Missing, forged or expired token.}
      413: {description: Batch or body too large.}
      422: {description: Invalid transactions; none were written.}
    """
    principal = _principal(request)
    services: Services = request.app.state.services
    body = decode_json(await request.body())
    rows = parse_transactions_body(body, services.settings.max_batch)
    settings = services.settings

    known = services.known_accounts
    new_accounts = [
        a
        for a in implied_accounts(rows, "default")
        if (principal.user_id, a.account_id) not in known
    ]

    def build() -> tuple[Any, Any]:
        txns = transactions_table(
            principal.user_id, rows, num_buckets=settings.num_buckets, source="api"
        )
        accounts = None
        if new_accounts:  # known accounts are not re-sent: less to serialize per post
            accounts = accounts_table(
                principal.user_id,
                new_accounts,
                num_buckets=settings.num_buckets,
                source="api",
                default_currency=rows[0].currency,
            )
        return txns, accounts

    txns, accounts = await run_in_threadpool(build)
    ack = await services.writer.write_async(txns, accounts)
    for account in new_accounts:  # committed: this replica need not send it again
        known.add((principal.user_id, account.account_id))
    return _json(
        {
            "written": ack.written,
            "duplicates": ack.duplicates,
            "duplicate_txn_ids": ack.duplicate_txn_ids,
            "txn_ids": txns.column("txn_id").to_pylist(),
            "ledger_version": ack.version,
        },
        201,
    )


_TXN_PARAMS = {
    "from", "to", "account_id", "min_amount", "max_amount", "min_amount_minor",
    "max_amount_minor", "currency", "q", "limit", "cursor", "version",
}  # fmt: skip


async def list_transactions(request: Request) -> Response:
    """
    summary: List the user's transactions, newest first, with cursor pagination
    tags: [transactions]
    parameters:
      - {name: from, in: query, schema: {type: string}, description: "Inclusive start (ISO date or date-time)."}
      - {name: to, in: query, schema: {type: string}, description: "Exclusive end (ISO date or date-time)."}
      - {name: account_id, in: query, schema: {type: string}}
      - {name: min_amount, in: query, schema: {type: string}, description: "Signed decimal (debits are negative)."}
      - {name: max_amount, in: query, schema: {type: string}}
      - {name: min_amount_minor, in: query, schema: {type: integer}}
      - {name: max_amount_minor, in: query, schema: {type: integer}}
      - {name: currency, in: query, schema: {type: string}}
      - {name: q, in: query, schema: {type: string}, description: "Text in narration or merchant (case-insensitive)."}
      - {name: limit, in: query, schema: {type: integer, minimum: 1, maximum: 1000}}
      - {name: cursor, in: query, schema: {type: string}, description: "next_cursor of the previous page."}
      - {name: version, in: query, schema: {type: integer}, description: "Read at this ledger version (time travel)."}
    responses:
      200: {description: "A page: data, next_cursor (null on the last page) and snapshot_version."}
      400: {description: Bad query parameter.}
      401: {description: Missing, forged or expired token.}
    """
    principal = _principal(request)
    services: Services = request.app.state.services
    settings = services.settings
    _known_params(request, _TXN_PARAMS)
    currency = request.query_params.get("currency") or None
    if currency:
        try:
            currency = normalize_currency(currency)
        except MoneyError as exc:
            raise bad_request(str(exc)) from exc
    filters = TxnFilter(
        date_from=_time_param(request, "from"),
        date_to=_time_param(request, "to"),
        account_id=request.query_params.get("account_id") or None,
        min_amount_minor=_amount_param(request, "min_amount", currency),
        max_amount_minor=_amount_param(request, "max_amount", currency),
        currency=currency,
        text=(request.query_params.get("q") or None),
    )
    if filters.text is not None and len(filters.text) > 200:
        raise bad_request("query parameter q is longer than 200 characters")
    limit = (
        _int_param(request, "limit", minimum=1, maximum=settings.page_size_max)
        or settings.page_size_default
    )
    version = _int_param(request, "version", minimum=0)
    cursor = None
    raw_cursor = request.query_params.get("cursor")
    if raw_cursor:
        try:
            cursor = Cursor.decode(raw_cursor)
        except InvalidCursor as exc:
            raise bad_request(str(exc), code="invalid_cursor") from exc
        if version is not None and version != cursor.version:
            raise bad_request(
                "version and cursor disagree; a cursor keeps its own snapshot version"
            )
    try:
        rows, next_cursor, snapshot = await run_in_threadpool(
            services.reader.list_transactions,
            principal.user_id,
            filters=filters,
            cursor=cursor,
            limit=limit,
            version=version,
        )
    except UnknownVersion as exc:
        raise bad_request(str(exc), code="unknown_version") from exc
    data = [txn_to_json(r) for r in rows]
    await _add_categories(services, principal.user_id, data, snapshot)
    return _json(
        {
            "data": data,
            "next_cursor": next_cursor.encode() if next_cursor else None,
            "snapshot_version": snapshot,
        }
    )


async def _add_categories(
    services: Services, user_id: str, data: list[dict[str, Any]], version: int | None
) -> None:
    """Each row's category as the dashboard resolves it (correction, rule, model, source)."""
    if services.analytics is None or not data:
        return
    found = await services.analytics.call(
        "txn_categories", user_id, [row["txn_id"] for row in data], version
    )
    for row in data:
        row["category"], row["category_source"] = found.get(row["txn_id"], [None, None])


async def get_transaction(request: Request) -> Response:
    """
    summary: One transaction of the user
    tags: [transactions]
    parameters:
      - {name: txn_id, in: path, required: true, schema: {type: string}}
    responses:
      200: {description: The transaction.}
      401: {description: Missing, forged or expired token.}
      404: {description: No such transaction for this user.}
    """
    principal = _principal(request)
    services: Services = request.app.state.services
    txn_id = request.path_params["txn_id"]
    row = await run_in_threadpool(services.reader.get_transaction, principal.user_id, txn_id)
    if row is None:
        raise not_found(f"transaction {txn_id!r} not found")
    data = [txn_to_json(row)]
    await _add_categories(services, principal.user_id, data, None)
    return _json(data[0])


async def list_accounts(request: Request) -> Response:
    """
    summary: The user's accounts with balances
    description: Balance = opening balance + every transaction, at one ledger version.
    tags: [accounts]
    parameters:
      - {name: version, in: query, schema: {type: integer}, description: "Balances as of this ledger version."}
    responses:
      200: {description: Accounts with balance, balance_minor and the reported (bank) balance.}
      401: {description: Missing, forged or expired token.}
    """
    principal = _principal(request)
    services: Services = request.app.state.services
    _known_params(request, {"version"})
    version = _int_param(request, "version", minimum=0)
    try:
        accounts, versions = await run_in_threadpool(
            services.reader.list_accounts, principal.user_id, version=version
        )
    except UnknownVersion as exc:
        raise bad_request(str(exc), code="unknown_version") from exc
    return _json({"data": accounts, "snapshot_version": versions})


async def post_account(request: Request) -> Response:
    """
    summary: Register (link) an account; idempotent by account_id
    description: A full account or card number is masked to its last four digits before storage.
    tags: [accounts]
    requestBody:
      required: true
      content:
        application/json:
          schema: {$ref: '#/components/schemas/Account'}
    responses:
      201: {description: Created, or already present (created false).}
      401: {description: Missing, forged or expired token.}
      422: {description: Invalid account.}
    """
    principal = _principal(request)
    services: Services = request.app.state.services
    account = parse_account(decode_json(await request.body()))
    settings = services.settings
    table = accounts_table(
        principal.user_id,
        [account],
        num_buckets=settings.num_buckets,
        source="api",
        default_currency=account.currency or "GBP",
    )
    empty = transactions_table(
        principal.user_id, [], num_buckets=settings.num_buckets, source="api"
    )
    ack = await services.writer.write_async(empty, table)
    return _json({"account_id": account.account_id, "created": ack.accounts_created > 0}, 201)


async def post_import(request: Request) -> Response:
    """
    summary: Upload a bank statement (CSV, OFX, ReBIT DEPOSIT XML/JSON) for asynchronous import
    tags: [imports]
    requestBody:
      required: true
      content:
        multipart/form-data:
          schema:
            type: object
            required: [file]
            properties:
              file: {type: string, format: binary}
              format: {type: string, enum: [auto, csv, ofx, rebit-xml, rebit-json]}
              account_id: {type: string}
              currency: {type: string, description: "Default currency when the file has none."}
              date_order: {type: string, enum: [dmy, mdy, ymd]}
              mapping: {type: string, description: "JSON column mapping for generic CSVs."}
    responses:
      202: {description: "Accepted; poll GET /v1/imports/{job_id}."}
      400: {description: Not a multipart upload, or a bad option.}
      401: {description: Missing, forged or expired token.}
      413: {description: File larger than the upload limit.}
    """
    principal = _principal(request)
    services: Services = request.app.state.services
    settings = services.settings
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise bad_request(
            "send the statement as multipart/form-data with a 'file' field", code="not_multipart"
        )
    try:
        form = await request.form(max_files=1, max_fields=16, max_part_size=64 * 1024)
    except ApiError:
        raise
    except Exception as exc:
        raise bad_request(
            f"could not read the multipart body: {exc}", code="bad_multipart"
        ) from exc
    try:
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise bad_request("the 'file' field with the statement is missing", code="missing_file")
        data = await upload.read()
        if not data:
            raise unprocessable("the uploaded file is empty")
        if len(data) > settings.max_upload_bytes:
            raise ApiError(
                413, "payload_too_large", f"file exceeds {settings.max_upload_bytes} bytes"
            )
        options = _import_options(form)
        filename = (upload.filename or "upload")[:255]
    finally:
        await form.close()
    job_id = new_job_id()
    raw_uri = await run_in_threadpool(store_raw, settings, job_id, data)
    status = ImportStatus(
        job_id=job_id, user_id=principal.user_id, status="queued", filename=filename
    )
    await run_in_threadpool(services.journal.record, status, raw_uri=raw_uri, options=options)
    services.launch_import(settings, status, raw_uri, options)
    return _json(
        {"job_id": job_id, "status": "queued", "status_url": f"/v1/imports/{job_id}"},
        202,
    )


def _import_options(form: Any) -> ImportOptions:
    fmt = str(form.get("format") or "auto")
    if fmt not in IMPORT_FORMATS:
        raise bad_request(f"format must be one of {', '.join(IMPORT_FORMATS)}, got {fmt!r}")
    currency = form.get("currency") or None
    if currency:
        try:
            currency = normalize_currency(str(currency))
        except MoneyError as exc:
            raise bad_request(str(exc)) from exc
    date_order = form.get("date_order") or None
    if date_order not in (None, "dmy", "mdy", "ymd"):
        raise bad_request("date_order must be dmy, mdy or ymd")
    mapping = None
    if form.get("mapping"):
        try:
            mapping = json.loads(str(form.get("mapping")))
        except ValueError as exc:
            raise bad_request(f"mapping is not valid JSON: {exc}") from exc
        if not isinstance(mapping, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()
        ):
            raise bad_request('mapping must be a JSON object of strings, e.g. {"date": "Posted"}')
        from scale_ray.ingest.parse import ColumnMapping

        try:
            ColumnMapping.from_dict(mapping)
        except ValueError as exc:
            raise bad_request(f"mapping: {exc}") from exc
    account_id = form.get("account_id") or None
    return ImportOptions(
        format=fmt,
        account_id=str(account_id) if account_id else None,
        currency=currency,
        date_order=date_order,
        mapping=mapping,
    )


async def get_import(request: Request) -> Response:
    """
    summary: Progress of an import job (rows parsed, written, duplicate, rejected with reasons)
    tags: [imports]
    parameters:
      - {name: job_id, in: path, required: true, schema: {type: string}}
    responses:
      200: {description: "Job status: queued, running, completed or failed."}
      401: {description: Missing, forged or expired token.}
      404: {description: No such job for this user.}
    """
    principal = _principal(request)
    services: Services = request.app.state.services
    job_id = request.path_params["job_id"]
    status = await run_in_threadpool(services.journal.get, principal.user_id, job_id)
    if status is None:
        raise not_found(f"import {job_id!r} not found")
    return _json(status.to_json())


# -- errors ---------------------------------------------------------------------------------


def _request_id(request: Request) -> str | None:
    return request.scope.get("state", {}).get("request_id")


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse(exc.body(_request_id(request)), status_code=exc.status, headers=headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    message = {
        404: f"no route for {request.url.path}",
        405: f"{request.method} is not allowed on {request.url.path}",
    }
    err = ApiError(
        exc.status_code,
        codes.get(exc.status_code, "http_error"),
        message.get(exc.status_code, str(exc.detail)),
    )
    return JSONResponse(err.body(_request_id(request)), status_code=exc.status_code)


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error [request_id=%s]", _request_id(request))
    err = ApiError(500, "internal", "internal error; quote the request id when reporting it")
    return JSONResponse(err.body(_request_id(request)), status_code=500)


# -- app ------------------------------------------------------------------------------------

ROUTES = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"], include_in_schema=True),
    Route("/v1/transactions", post_transactions, methods=["POST"]),
    Route("/v1/transactions", list_transactions, methods=["GET"]),
    Route("/v1/transactions/{txn_id}", get_transaction, methods=["GET"]),
    Route("/v1/accounts", list_accounts, methods=["GET"]),
    Route("/v1/accounts", post_account, methods=["POST"]),
    Route("/v1/imports", post_import, methods=["POST"]),
    Route("/v1/imports/{job_id}", get_import, methods=["GET"]),
]

COMPONENTS = {
    "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
    "schemas": {
        "Transaction": {
            "type": "object",
            "required": ["currency", "booked_at", "narration"],
            "properties": {
                "txn_id": {
                    "type": "string",
                    "description": "Idempotency key; derived from content when absent.",
                },
                "account_id": {"type": "string"},
                "amount": {
                    "type": "string",
                    "example": "-12.50",
                    "description": "Signed: debits negative.",
                },
                "amount_minor": {"type": "integer", "format": "int64"},
                "currency": {"type": "string", "example": "GBP"},
                "booked_at": {"type": "string", "format": "date-time"},
                "value_date": {"type": "string", "format": "date"},
                "narration": {"type": "string"},
                "merchant": {"type": "string"},
                "mode": {"type": "string"},
                "balance_after": {"type": "string"},
                "balance_after_minor": {"type": "integer", "format": "int64"},
                "category_hint": {"type": "string"},
            },
            "additionalProperties": False,
        },
        "TransactionBatch": {
            "type": "object",
            "required": ["transactions"],
            "properties": {
                "transactions": {
                    "type": "array",
                    "maxItems": 10000,
                    "items": {"$ref": "#/components/schemas/Transaction"},
                }
            },
        },
        "Account": {
            "type": "object",
            "required": ["account_id", "currency"],
            "properties": {
                "account_id": {"type": "string"},
                "currency": {"type": "string"},
                "account_type": {"type": "string"},
                "institution": {"type": "string"},
                "number": {"type": "string", "description": "Masked before storage."},
                "masked_number": {"type": "string"},
                "opening_balance": {"type": "string"},
                "opening_balance_minor": {"type": "integer", "format": "int64"},
            },
            "additionalProperties": False,
        },
        "Error": {
            "type": "object",
            "properties": {
                "error": {
                    "type": "object",
                    "properties": {
                        "code": {"type": "string"},
                        "message": {"type": "string"},
                        "details": {},
                        "request_id": {"type": "string"},
                    },
                }
            },
        },
    },
}


def build_openapi(app: Starlette) -> dict[str, Any]:
    generator = SchemaGenerator(
        {
            "openapi": "3.0.3",
            "info": {"title": "SCALE API", "version": __version__},
            "components": COMPONENTS,
            "security": [{"bearer": []}],
        }
    )
    return generator.get_schema(routes=app.routes)


def create_app(services: Services) -> Any:
    """The ASGI app: Starlette routes wrapped in request-id and body-limit middleware."""
    settings = services.settings
    from scale_ray.gateway.analytics_routes import ROUTES as ANALYTICS_ROUTES
    from scale_ray.gateway.categorize_routes import ROUTES as CATEGORIZE_ROUTES
    from scale_ray.gateway.flag_routes import ROUTES as FLAG_ROUTES
    from scale_ray.gateway.forecast_routes import ROUTES as FORECAST_ROUTES

    app = Starlette(
        routes=ROUTES + ANALYTICS_ROUTES + CATEGORIZE_ROUTES + FLAG_ROUTES + FORECAST_ROUTES,
        middleware=[
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.cors_origins),
                allow_methods=["GET", "POST", "PUT", "DELETE", "OPTIONS"],
                allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
                expose_headers=["X-Request-ID"],
                max_age=600,
            )
        ],
        exception_handlers={
            ApiError: _api_error,
            HTTPException: _http_error,
            Exception: _unexpected,
        },
    )
    app.state.services = services
    app.state.openapi = build_openapi(app)
    return RequestContextMiddleware(app, max_body_bytes=settings.max_upload_bytes + 64 * 1024)
