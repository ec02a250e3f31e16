"""Query parameters and list pages, as every OpenAI endpoint reads and answers them."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify, request

from shared.errors import InvalidRequest

MAX_LIST_LIMIT = 100
DEFAULT_LIST_LIMIT = 20


def query_bool(name: str) -> bool:
    raw = request.args.get(name)
    if raw is None:
        return False
    if raw.lower() in {"true", "1"}:
        return True
    if raw.lower() in {"false", "0"}:
        return False
    raise InvalidRequest(
        f"Invalid value for '{name}': expected a boolean, got '{raw}'.",
        param=name,
        code="invalid_value",
    )


# No query integer is wider than a database's BIGINT: a larger one is refused here, not by
# the store.
INT64_MAX = 2**63 - 1


def query_int(name: str, default: int | None, low: int, high: int = INT64_MAX) -> int | None:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidRequest(
            f"Invalid type for '{name}': expected an integer, but got '{raw}'.",
            param=name,
            code="invalid_type",
        ) from None
    if value < low or value > high:
        bound = f"between {low} and {high}" if high < INT64_MAX else f">= {low}"
        raise InvalidRequest(
            f"Invalid '{name}': expected a value {bound}, but got {value}.",
            param=name,
            code="invalid_value",
        )
    return value


def list_params() -> tuple[int, str]:
    """``limit`` (1–100, default 20) and ``order`` (``asc``/``desc``, default ``desc``)."""
    limit = query_int("limit", DEFAULT_LIST_LIMIT, 1, MAX_LIST_LIMIT)
    assert limit is not None
    order = request.args.get("order", "desc")
    if order not in {"asc", "desc"}:
        raise InvalidRequest(
            f"Invalid value: '{order}'. Supported values are: 'asc' and 'desc'.",
            param="order",
            code="invalid_value",
        )
    return limit, order


def list_page(data: list[dict[str, Any]], has_more: bool) -> Response:
    """A cursor page, as every OpenAI list endpoint answers."""
    return jsonify(
        {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": has_more,
        }
    )
