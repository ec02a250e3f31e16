"""What the API accepts as a request before any route looks at it: a JSON body (labelled as
JSON, or not labelled), no larger than ``RESQ_MAX_BODY_BYTES`` (413 otherwise, from Flask's
``MAX_CONTENT_LENGTH``), nested at most ``MAX_JSON_DEPTH`` deep, with no ``NaN``/``Infinity``
and no NUL character in any string, path or query value (Postgres cannot store one in text;
the same request is refused on SQLite, so both stores behave alike).

Each refusal is a 400 ``invalid_request_error`` naming what is wrong, before anything is
stored or queued.
"""

from __future__ import annotations

import json
from typing import Any

from flask import request

from shared.errors import InvalidRequest

# Deep enough for any JSON Schema a tool or text.format carries (OpenAI allows 10 levels of
# schema nesting, about 30 of JSON); shallow enough that nothing downstream recurses into
# Python's recursion limit.
MAX_JSON_DEPTH = 128
NUL = "\x00"


def json_body() -> Any:
    """The request's JSON body; ``{}`` when it is empty (the SDK sends an empty body labelled
    JSON on cancel and delete)."""
    raw = request.get_data(cache=False)
    if not raw.strip():
        return {}
    _check_content_type()
    try:
        body = json.loads(raw, parse_constant=_refuse_constant)
    except RecursionError:
        raise _too_deep() from None
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest(
            "We could not parse the JSON body of your request. The body must be valid JSON.",
            code="invalid_json",
        ) from None
    # Cheap first: a body with fewer brackets than the limit cannot nest deeper than it.
    if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH and _depth(body) > MAX_JSON_DEPTH:
        raise _too_deep()
    if b"\\u0000" in raw:
        where = _nul_path(body)
        if where is not None:
            raise InvalidRequest(
                f"Invalid '{where or 'body'}': strings may not contain the NUL character "
                "(\\u0000).",
                param=where or None,
                code="invalid_value",
            )
    return body


def check_url() -> None:
    """No NUL character in the path or in a query parameter."""
    if NUL in request.path:
        raise InvalidRequest(
            "Invalid URL: the path may not contain the NUL character (%00).",
            code="invalid_value",
        )
    for name, value in request.args.items(multi=True):
        if NUL in name or NUL in value:
            raise InvalidRequest(
                f"Invalid '{name.replace(NUL, '')}': query parameters may not contain the NUL "
                "character (%00).",
                param=name.replace(NUL, ""),
                code="invalid_value",
            )


def _check_content_type() -> None:
    mimetype = request.mimetype
    if mimetype and mimetype != "application/json" and not mimetype.endswith("+json"):
        raise InvalidRequest(
            f"Unsupported content type: '{mimetype}'. This API method only accepts "
            "'application/json' requests, but you specified the header "
            f"'Content-Type: {request.content_type}'. Please try again with a supported "
            "content type.",
            code="unsupported_content_type",
        )


def _refuse_constant(name: str) -> Any:
    raise InvalidRequest(
        f"We could not parse the JSON body of your request: {name} is not a JSON number.",
        code="invalid_json",
    )


def _too_deep() -> InvalidRequest:
    return InvalidRequest(
        f"The JSON body of your request is nested too deeply (more than {MAX_JSON_DEPTH} levels).",
        code="invalid_json",
    )


def _depth(value: Any) -> int:
    deepest = 0
    todo = [(value, 1)]
    while todo:
        node, depth = todo.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, depth)
            if depth > MAX_JSON_DEPTH:
                return depth
            children = node.values() if isinstance(node, dict) else node
            todo += [(child, depth + 1) for child in children]
    return deepest


def _nul_path(value: Any) -> str | None:
    """Where the first string holding a NUL is (``input[0].content``), or None."""
    todo: list[tuple[Any, str]] = [(value, "")]
    while todo:
        node, path = todo.pop()
        if isinstance(node, str):
            if NUL in node:
                return path
        elif isinstance(node, dict):
            for key, child in node.items():
                here = f"{path}.{key}" if path else key
                if NUL in key:
                    return here.replace(NUL, "")
                todo.append((child, here))
        elif isinstance(node, list):
            todo += [(child, f"{path}[{i}]") for i, child in enumerate(node)]
    return None
