"""HTTP routes of the Overview and Analytics pages, rules, corrections, budgets, notifications.

Handlers authenticate, validate the query against allow-lists (:mod:`scale_ray.analytics.params`)
and call the Analytics deployment with the user id from the token.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from scale_ray.analytics import params as P
from scale_ray.api_input import decode_json
from scale_ray.errors import bad_request
from scale_ray.gateway.categorize_routes import (
    forget_label,
    remember_label,
    rule_pattern,
    transaction_text,
)
from scale_ray.gateway.notification_stream import stream_notifications


def _ctx(request: Request) -> tuple[str, Any]:
    from scale_ray.gateway.app import _principal

    principal = _principal(request)
    return principal.user_id, request.app.state.services.analytics


def _query(request: Request) -> dict[str, str]:
    return dict(request.query_params)


def _multi(request: Request) -> dict[str, list[str]]:
    return {k: request.query_params.getlist(k) for k in request.query_params}


def _today(request: Request) -> Any:
    return request.app.state.services.clock()


async def _call(request: Request, method: str, *args: Any) -> Any:
    user_id, analytics = _ctx(request)
    return await analytics.call(method, user_id, *args)


async def overview(request: Request) -> Response:
    """
    summary: The Overview page in one call
    description: >
      Balance per account and in total, this month's income, spend and savings rate against last
      month, top categories, upcoming recurring payments (next 30 days), open flags and unread
      notifications, all at one ledger snapshot.
    tags: [analytics]
    parameters:
      - {name: month, in: query, schema: {type: string, example: "2025-03"}, description: "Month to summarize (default: this month)."}
      - {name: currency, in: query, schema: {type: string}, description: "Default: the currency of most of the user's transactions."}
      - {name: version, in: query, schema: {type: integer}, description: "Ledger version (time travel)."}
    responses:
      200: {description: The overview.}
      400: {description: Bad query parameter.}
      401: {description: Missing, forged or expired token.}
    """
    q = P.parse_overview(_query(request), _today(request))
    return JSONResponse(await _call(request, "overview", q))


async def categories(request: Request) -> Response:
    """
    summary: Spend (or income) by category over a date range, one level of the hierarchy at a time
    tags: [analytics]
    parameters:
      - {name: from, in: query, schema: {type: string, format: date}, description: "Inclusive (default: first of this month)."}
      - {name: to, in: query, schema: {type: string, format: date}, description: "Exclusive (default: tomorrow)."}
      - {name: last, in: query, schema: {type: string, example: 6m}, description: "Instead of from: 30d, 8w, 6m, 5y."}
      - {name: parent, in: query, schema: {type: string, example: "Food & drink"}, description: "Drill down: the children of this category."}
      - {name: direction, in: query, schema: {type: string, enum: [spend, income]}}
      - {name: currency, in: query, schema: {type: string}}
      - {name: version, in: query, schema: {type: integer}}
    responses:
      200: {description: "Categories at the next level: amount, count, share, has_children."}
      400: {description: Bad query parameter or unknown category.}
      401: {description: Missing, forged or expired token.}
    """
    q = P.parse_categories(_query(request), _today(request))
    return JSONResponse(await _call(request, "categories", q))


async def heatmap(request: Request) -> Response:
    """
    summary: When money goes out — weekday × hour, and day of month
    tags: [analytics]
    parameters:
      - {name: from, in: query, schema: {type: string, format: date}, description: "Default: 365 days back."}
      - {name: to, in: query, schema: {type: string, format: date}}
      - {name: last, in: query, schema: {type: string}}
      - {name: category, in: query, schema: {type: string}}
      - {name: direction, in: query, schema: {type: string, enum: [spend, income, all]}}
      - {name: currency, in: query, schema: {type: string}}
      - {name: version, in: query, schema: {type: integer}}
    responses:
      200: {description: "7×24 amounts and counts (Monday first, local time), and 31 day-of-month cells."}
      400: {description: Bad query parameter.}
      401: {description: Missing, forged or expired token.}
    """
    q = P.parse_heatmap(_query(request), _today(request))
    return JSONResponse(await _call(request, "heatmap", q))


async def merchants(request: Request) -> Response:
    """
    summary: Merchant leaderboard by spend or by count
    tags: [analytics]
    parameters:
      - {name: by, in: query, schema: {type: string, enum: [spend, count]}}
      - {name: limit, in: query, schema: {type: integer, minimum: 1, maximum: 100}}
      - {name: from, in: query, schema: {type: string, format: date}}
      - {name: to, in: query, schema: {type: string, format: date}}
      - {name: last, in: query, schema: {type: string}}
      - {name: category, in: query, schema: {type: string}}
      - {name: direction, in: query, schema: {type: string, enum: [spend, income]}}
      - {name: currency, in: query, schema: {type: string}}
      - {name: version, in: query, schema: {type: integer}}
    responses:
      200: {description: "Ranked merchants (names normalized: store numbers ignored)."}
      400: {description: Bad query parameter.}
      401: {description: Missing, forged or expired token.}
    """
    q = P.parse_merchants(_query(request), _today(request))
    return JSONResponse(await _call(request, "merchants", q))


async def cashflow(request: Request) -> Response:
    """
    summary: Monthly income, expense, net and running balance
    tags: [analytics]
    parameters:
      - {name: from, in: query, schema: {type: string, format: date}, description: "Default: 11 months before this one."}
      - {name: to, in: query, schema: {type: string, format: date}}
      - {name: last, in: query, schema: {type: string}}
      - {name: currency, in: query, schema: {type: string}}
      - {name: version, in: query, schema: {type: integer}}
    responses:
      200: {description: "One row per month: income, expense, net, transfers, closing balance, savings rate."}
      400: {description: Bad query parameter.}
      401: {description: Missing, forged or expired token.}
    """
    q = P.parse_cashflow(_query(request), _today(request))
    return JSONResponse(await _call(request, "cashflow", q))


async def compare(request: Request) -> Response:
    """
    summary: Ask a question of the ledger — e.g. average spend on Food on Fridays over 5 years
    description: >
      A group/filter spec checked against allow-lists. Example:
      `?measure=average_per_period&per=day&category=Food%20%26%20drink&weekday=fri&last=5y`.
      Add `group_by=weekday` to compare every weekday.
    tags: [analytics]
    parameters:
      - {name: measure, in: query, schema: {type: string, enum: [total, count, average_per_txn, average_per_period]}}
      - {name: per, in: query, schema: {type: string, enum: [day, week, month, year]}, description: "With average_per_period."}
      - {name: group_by, in: query, schema: {type: string}, description: "Up to two of category, category_group, merchant, account, weekday, hour, day_of_month, month_of_year, year, month."}
      - {name: category, in: query, schema: {type: string}, description: "Category path (and below); repeatable."}
      - {name: merchant, in: query, schema: {type: string}}
      - {name: weekday, in: query, schema: {type: string, example: "fri"}, description: "mon…sun; comma-separated or repeated."}
      - {name: hour_from, in: query, schema: {type: integer}}
      - {name: hour_to, in: query, schema: {type: integer}}
      - {name: min_amount, in: query, schema: {type: string}}
      - {name: max_amount, in: query, schema: {type: string}}
      - {name: account_id, in: query, schema: {type: string}}
      - {name: direction, in: query, schema: {type: string, enum: [spend, income, all]}}
      - {name: from, in: query, schema: {type: string, format: date}}
      - {name: to, in: query, schema: {type: string, format: date}}
      - {name: last, in: query, schema: {type: string}}
      - {name: limit, in: query, schema: {type: integer}}
      - {name: currency, in: query, schema: {type: string}}
      - {name: version, in: query, schema: {type: integer}}
    responses:
      200: {description: "Rows: group values, value, transactions, periods (for averages per period)."}
      400: {description: A name or value outside the allow-list.}
      401: {description: Missing, forged or expired token.}
    """
    q = P.parse_compare(_query(request), _multi(request), _today(request))
    return JSONResponse(await _call(request, "compare", q))


async def recurring(request: Request) -> Response:
    """
    summary: Subscriptions, bills and other recurring payments with their next expected date
    tags: [analytics]
    parameters:
      - {name: include_inactive, in: query, schema: {type: boolean}, description: "Also series that stopped."}
      - {name: version, in: query, schema: {type: integer}}
    responses:
      200: {description: "Series: merchant, period, typical amount, next date and amount, confidence."}
      401: {description: Missing, forged or expired token.}
    """
    p = P.Params(_query(request), {"include_inactive", "version"}, {})
    version = p.int("version", minimum=0)
    include = p.choice("include_inactive", ("true", "false", "1", "0"), "false") in ("true", "1")
    return JSONResponse(await _call(request, "recurring", version, include))


async def category_tree(request: Request) -> Response:
    """
    summary: The category taxonomy (group → category → subcategory) and the user's own categories
    tags: [categories]
    responses:
      200: {description: Tree and custom paths.}
      401: {description: Missing, forged or expired token.}
    """
    P.Params(_query(request), set(), {})
    return JSONResponse(await _call(request, "category_tree"))


# -- rules and corrections --------------------------------------------------------------------


async def list_rules(request: Request) -> Response:
    """
    summary: The user's merchant → category rules
    tags: [rules]
    responses:
      200: {description: "Rules, each with the number of transactions it matches now."}
      401: {description: Missing, forged or expired token.}
    """
    return JSONResponse(await _call(request, "list_rules"))


async def create_rule(request: Request) -> Response:
    """
    summary: Create (or replace) a merchant → category rule
    description: >
      `pattern` is matched against the normalized merchant name (case, digits and punctuation
      ignored); `match` is contains (default) or exact. A rule applies to past and future
      transactions; a correction of one transaction beats any rule, and rules beat the model.
      Creating the same pattern and match again replaces the rule (idempotent).
    tags: [rules]
    requestBody:
      required: true
      content:
        application/json:
          schema:
            type: object
            required: [pattern, category]
            properties:
              pattern: {type: string, example: "tesco"}
              match: {type: string, enum: [contains, exact]}
              category: {type: string, example: "Food & drink/Groceries"}
    responses:
      201: {description: Created.}
      200: {description: Replaced an existing rule with the same pattern.}
      401: {description: Missing, forged or expired token.}
      422: {description: Invalid rule.}
    """
    body = decode_json(await request.body())
    status, rule = await _call(request, "create_rule", body)
    await remember_label(request, _ctx(request)[0], rule["pattern"], rule["category"])
    return JSONResponse(rule, status_code=status)


async def delete_rule(request: Request) -> Response:
    """
    summary: Delete a rule
    tags: [rules]
    parameters:
      - {name: rule_id, in: path, required: true, schema: {type: string}}
    responses:
      204: {description: Deleted.}
      401: {description: Missing, forged or expired token.}
      404: {description: No such rule.}
    """
    user_id = _ctx(request)[0]
    pattern = await rule_pattern(request, user_id, request.path_params["rule_id"])
    await _call(request, "delete_rule", request.path_params["rule_id"])
    await forget_label(request, user_id, pattern)
    return Response(status_code=204)


async def get_txn_category(request: Request) -> Response:
    """
    summary: A transaction's category and where it came from (correction, rule, model, source)
    tags: [rules]
    parameters:
      - {name: txn_id, in: path, required: true, schema: {type: string}}
    responses:
      200: {description: Category and source.}
      404: {description: No such transaction.}
    """
    return JSONResponse(await _call(request, "get_category", request.path_params["txn_id"]))


async def put_txn_category(request: Request) -> Response:
    """
    summary: Correct a transaction's category (the user's word beats rules and the model)
    tags: [rules]
    parameters:
      - {name: txn_id, in: path, required: true, schema: {type: string}}
    requestBody:
      required: true
      content:
        application/json:
          schema:
            type: object
            required: [category]
            properties:
              category: {type: string, example: "Leisure/Entertainment"}
    responses:
      200: {description: The transaction's category now.}
      401: {description: Missing, forged or expired token.}
      404: {description: No such transaction.}
      422: {description: Invalid category.}
    """
    body = decode_json(await request.body())
    txn_id = request.path_params["txn_id"]
    out = await _call(request, "put_correction", txn_id, body)
    user_id = _ctx(request)[0]
    text = await transaction_text(request, user_id, txn_id)
    await remember_label(request, user_id, text, out.get("category"))
    return JSONResponse(out)


async def delete_txn_category(request: Request) -> Response:
    """
    summary: Remove the user's correction (back to rule, model or source)
    tags: [rules]
    parameters:
      - {name: txn_id, in: path, required: true, schema: {type: string}}
    responses:
      200: {description: The transaction's category now.}
      404: {description: No such transaction.}
    """
    txn_id = request.path_params["txn_id"]
    out = await _call(request, "delete_correction", txn_id)
    user_id = _ctx(request)[0]
    await forget_label(request, user_id, await transaction_text(request, user_id, txn_id))
    return JSONResponse(out)


# -- budgets ----------------------------------------------------------------------------------


async def list_budgets(request: Request) -> Response:
    """
    summary: Budgets with this period's spend, remaining and thresholds reached
    tags: [budgets]
    responses:
      200: {description: Budgets.}
      401: {description: Missing, forged or expired token.}
    """
    return JSONResponse(await _call(request, "list_budgets"))


async def create_budget(request: Request) -> Response:
    """
    summary: Create (or replace) the budget of a category for a period
    description: >
      One budget per (category, period): creating it again replaces the limit. Reaching 80 % and
      100 % of the limit each creates one notification per budget period.
    tags: [budgets]
    requestBody:
      required: true
      content:
        application/json:
          schema:
            type: object
            required: [category]
            properties:
              category: {type: string, example: "Food & drink"}
              period: {type: string, enum: [weekly, monthly, yearly]}
              limit: {type: string, example: "400.00"}
              limit_minor: {type: integer}
              currency: {type: string}
    responses:
      201: {description: Created.}
      200: {description: Replaced.}
      401: {description: Missing, forged or expired token.}
      422: {description: Invalid budget.}
    """
    body = decode_json(await request.body())
    status, budget = await _call(request, "create_budget", body)
    return JSONResponse(budget, status_code=status)


async def get_budget(request: Request) -> Response:
    """
    summary: One budget with its current period
    tags: [budgets]
    parameters:
      - {name: budget_id, in: path, required: true, schema: {type: string}}
    responses:
      200: {description: The budget.}
      404: {description: No such budget.}
    """
    return JSONResponse(await _call(request, "get_budget", request.path_params["budget_id"]))


async def update_budget(request: Request) -> Response:
    """
    summary: Change a budget's limit or currency
    tags: [budgets]
    parameters:
      - {name: budget_id, in: path, required: true, schema: {type: string}}
    responses:
      200: {description: The budget.}
      404: {description: No such budget.}
      422: {description: Invalid change.}
    """
    body = decode_json(await request.body())
    return JSONResponse(
        await _call(request, "update_budget", request.path_params["budget_id"], body)
    )


async def delete_budget(request: Request) -> Response:
    """
    summary: Delete a budget
    tags: [budgets]
    parameters:
      - {name: budget_id, in: path, required: true, schema: {type: string}}
    responses:
      204: {description: Deleted.}
      404: {description: No such budget.}
    """
    await _call(request, "delete_budget", request.path_params["budget_id"])
    return Response(status_code=204)


# -- notifications ----------------------------------------------------------------------------


async def list_notifications(request: Request) -> Response:
    """
    summary: Notifications, newest first
    tags: [notifications]
    parameters:
      - {name: unread, in: query, schema: {type: boolean}}
      - {name: limit, in: query, schema: {type: integer, minimum: 1, maximum: 200}}
    responses:
      200: {description: "Notifications and the unread count."}
      401: {description: Missing, forged or expired token.}
    """
    p = P.Params(_query(request), {"unread", "limit"}, {})
    unread = p.choice("unread", ("true", "false", "1", "0"), "false") in ("true", "1")
    limit = p.int("limit", minimum=1, maximum=200) or 50
    return JSONResponse(await _call(request, "list_notifications", unread, limit))


async def mark_read(request: Request) -> Response:
    """
    summary: Mark notifications read
    tags: [notifications]
    requestBody:
      required: true
      content:
        application/json:
          schema:
            type: object
            properties:
              ids: {type: array, items: {type: string}}
              all: {type: boolean}
    responses:
      200: {description: How many were marked, and the unread count.}
      404: {description: Unknown notification ids.}
      422: {description: Neither ids nor all.}
    """
    body = decode_json(await request.body())
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object")
    return JSONResponse(await _call(request, "mark_read", body))


ROUTES = [
    Route("/v1/overview", overview, methods=["GET"]),
    Route("/v1/analytics/categories", categories, methods=["GET"]),
    Route("/v1/analytics/heatmap", heatmap, methods=["GET"]),
    Route("/v1/analytics/merchants", merchants, methods=["GET"]),
    Route("/v1/analytics/cashflow", cashflow, methods=["GET"]),
    Route("/v1/analytics/compare", compare, methods=["GET"]),
    Route("/v1/recurring", recurring, methods=["GET"]),
    Route("/v1/categories", category_tree, methods=["GET"]),
    Route("/v1/rules", list_rules, methods=["GET"]),
    Route("/v1/rules", create_rule, methods=["POST"]),
    Route("/v1/rules/{rule_id}", delete_rule, methods=["DELETE"]),
    Route("/v1/transactions/{txn_id}/category", get_txn_category, methods=["GET"]),
    Route("/v1/transactions/{txn_id}/category", put_txn_category, methods=["PUT"]),
    Route("/v1/transactions/{txn_id}/category", delete_txn_category, methods=["DELETE"]),
    Route("/v1/budgets", list_budgets, methods=["GET"]),
    Route("/v1/budgets", create_budget, methods=["POST"]),
    Route("/v1/budgets/{budget_id}", get_budget, methods=["GET"]),
    Route("/v1/budgets/{budget_id}", update_budget, methods=["PUT"]),
    Route("/v1/budgets/{budget_id}", delete_budget, methods=["DELETE"]),
    Route("/v1/notifications", list_notifications, methods=["GET"]),
    Route("/v1/notifications/read", mark_read, methods=["POST"]),
    Route("/v1/notifications/stream", stream_notifications, methods=["GET"]),
]
