"""``POST /v1/categorize``, and the categorizer's side of rules and corrections.

The gateway validates the descriptions and calls the ``Categorizer`` deployment with the user id
from the token, so the user's own labels (user memory) apply and no other user's do. When a user
creates a rule or corrects a transaction, the label is also sent to the categorizer
(:func:`remember_label`) so their next categorization follows it at once; that call comes after
the ledger write and never fails the request: the label is in the ledger, and every categorizer
replica reloads it from there (see ``deployments/categorizer.py``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from scale_ray.api_input import decode_json
from scale_ray.errors import ApiError, bad_request

log = logging.getLogger("scale.gateway.categorize")

MAX_DESCRIPTIONS = 1_000
MAX_DESCRIPTION_CHARS = 200
#: A categorize call waits at most this long for the deployment (Serve's own limit is 120 s).
CATEGORIZE_TIMEOUT_S = 60.0
#: Telling the categorizer about a label waits at most this long, then gives up with a warning.
LABEL_TIMEOUT_S = 5.0
_RESULT_FIELDS = ("category", "group", "confidence", "known", "source", "candidate", "merchant")


def _unavailable(message: str) -> ApiError:
    return ApiError(503, "categorizer_unavailable", message)


class CategorizerClient:
    """Calls the ``Categorizer`` deployment through a ``DeploymentHandle``."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    async def categorize(self, user_id: str, texts: list[str]) -> dict[str, Any]:
        """``{"model_version", "results"}``, one result per text, with ``user_id``'s labels."""
        return await self.handle.categorize_request.remote(texts, [user_id] * len(texts))

    async def remember(self, user_id: str, text: str, path: str) -> None:
        await self.handle.remember.remote(user_id, text, path)

    async def forget(self, user_id: str, text: str) -> None:
        await self.handle.forget.remote(user_id, text)


def parse_descriptions(body: Any) -> list[str]:
    """The ``descriptions`` of a categorize body; 400 naming the first problem."""
    if not isinstance(body, dict):
        raise bad_request('the body must be a JSON object: {"descriptions": ["..."]}')
    unknown = sorted(set(body) - {"descriptions"})
    if unknown:
        raise bad_request(f"unknown field(s): {', '.join(unknown)}", {"allowed": ["descriptions"]})
    if "descriptions" not in body:
        raise bad_request("missing field: descriptions", {"field": "descriptions"})
    items = body["descriptions"]
    if not isinstance(items, list):
        raise bad_request("descriptions must be a list of strings", {"field": "descriptions"})
    if not items:
        raise bad_request("descriptions is empty; send 1 to 1000", {"field": "descriptions"})
    if len(items) > MAX_DESCRIPTIONS:
        raise bad_request(
            f"descriptions has {len(items)} items; at most {MAX_DESCRIPTIONS} per request",
            {"field": "descriptions", "max_items": MAX_DESCRIPTIONS},
        )
    for i, item in enumerate(items):
        where = {"field": "descriptions", "index": i}
        if not isinstance(item, str):
            raise bad_request(f"descriptions[{i}] must be a string", where)
        if not item.strip():
            raise bad_request(f"descriptions[{i}] is empty", where)
        if len(item) > MAX_DESCRIPTION_CHARS:
            raise bad_request(
                f"descriptions[{i}] is {len(item)} characters; at most {MAX_DESCRIPTION_CHARS}",
                {**where, "max_chars": MAX_DESCRIPTION_CHARS},
            )
    return list(items)


async def categorize(request: Request) -> Response:
    """
    summary: Categorize transaction descriptions with the HypCD model (your own rules apply)
    description: >
      Up to 1000 descriptions (each at most 200 characters) per call. Each result carries the
      category path (``Uncategorized`` below the confidence threshold, with the best guess in
      ``candidate``), its group, the confidence in [0, 1] and its source: ``user`` when one of
      your rules or corrections names this merchant, else ``model``.
    tags: [categories]
    requestBody:
      required: true
      content:
        application/json:
          schema:
            type: object
            required: [descriptions]
            properties:
              descriptions:
                type: array
                minItems: 1
                maxItems: 1000
                items: {type: string, maxLength: 200, example: "TESCO STORES 3251"}
    responses:
      200: {description: "model_version and one result per description, in order."}
      400: {description: "Not a list of 1-1000 non-empty strings of at most 200 characters."}
      401: {description: Missing, forged or expired token.}
      503: {description: The categorizer is not available.}
    """
    from scale_ray.gateway.app import _principal

    principal = _principal(request)
    texts = parse_descriptions(decode_json(await request.body()))
    client: CategorizerClient | None = request.app.state.services.categorizer
    if client is None:
        raise _unavailable("the categorizer is not deployed")
    try:
        out = await asyncio.wait_for(
            client.categorize(principal.user_id, texts), CATEGORIZE_TIMEOUT_S
        )
    except Exception as exc:
        log.warning("categorize failed for %d descriptions", len(texts), exc_info=True)
        raise _unavailable("the categorizer did not answer; try again") from exc
    results = [
        {"description": text, **{k: result.get(k) for k in _RESULT_FIELDS}}
        for text, result in zip(texts, out["results"], strict=True)
    ]
    return JSONResponse({"model_version": out["model_version"], "results": results})


# -- rules and corrections --------------------------------------------------------------------


def _client(request: Request) -> CategorizerClient | None:
    return getattr(request.app.state.services, "categorizer", None)


async def _tell(request: Request, what: str, call: Any) -> None:
    """Await one label call on the categorizer; log (never raise) if it is unavailable."""
    try:
        await asyncio.wait_for(call, LABEL_TIMEOUT_S)
    except Exception:
        log.warning("could not %s a label on the categorizer", what, exc_info=True)


async def remember_label(request: Request, user_id: str, text: str | None, path: Any) -> None:
    """``user_id`` labelled ``text`` as ``path``: their next categorization says so."""
    client = _client(request)
    if client is None or not text or not isinstance(path, str) or not path:
        return
    await _tell(request, "remember", client.remember(user_id, text, path))


async def forget_label(request: Request, user_id: str, text: str | None) -> None:
    client = _client(request)
    if client is None or not text:
        return
    await _tell(request, "forget", client.forget(user_id, text))


async def transaction_text(request: Request, user_id: str, txn_id: str) -> str | None:
    """A transaction's merchant, else its narration (what a correction labels)."""
    if _client(request) is None:
        return None
    try:
        row = await run_in_threadpool(
            request.app.state.services.reader.get_transaction, user_id, txn_id
        )
    except Exception:
        log.warning("could not read transaction %s for the categorizer", txn_id, exc_info=True)
        return None
    if not row:
        return None
    merchant = row.get("merchant")
    return merchant if isinstance(merchant, str) and merchant.strip() else row.get("narration")


async def rule_pattern(request: Request, user_id: str, rule_id: str) -> str | None:
    """The pattern of one of the user's rules (read before deleting it, to forget it after)."""
    if _client(request) is None:
        return None
    try:
        rules = await request.app.state.services.analytics.call("list_rules", user_id)
    except Exception:
        log.warning("could not read rule %s for the categorizer", rule_id, exc_info=True)
        return None
    for rule in rules.get("data", []):
        if rule.get("id") == rule_id:
            return rule.get("pattern")
    return None


ROUTES = [
    Route("/v1/categorize", categorize, methods=["POST"]),
]
