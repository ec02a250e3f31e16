"""``GET /openapi.json``: resq's HTTP surface as an OpenAPI 3.1 document (public, JSON).

Built once per app, on first request, from what the app really serves: every rule in
``app.url_map`` is looked up by its Flask endpoint name in ``OPERATIONS``
(``api.openapi_routes``), which names the operation's request body, query parameters and
answer; bodies and answers are the pydantic models of ``shared.schema`` (requests in
validation mode, answers from ``shared.schema.objects``), turned into ``components.schemas``
by pydantic itself. Every
error answer references the one envelope, ``ErrorBody``. resq's additions to OpenAI's
surface carry ``x-resq: true``.

A route without an entry in ``OPERATIONS`` still appears, marked ``x-undocumented``, and
tests/api/test_openapi.py fails on it; an entry for a route that does not exist is never
emitted, and the same test fails on it.
"""

from __future__ import annotations

import json
import re
from importlib.metadata import PackageNotFoundError, version
from typing import Any, get_args

from flask import Blueprint, Flask, Response, current_app
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema
from werkzeug.routing import PathConverter, Rule

from api.openapi_routes import (
    GENERIC_PATH_PARAM,
    OPERATIONS,
    PATH_PARAMS,
    REF,
    SSE,
    Media,
    Op,
    Query,
)
from shared.schema import objects as o
from shared.schema.events import StreamEvent

bp = Blueprint("openapi", __name__)

PATH = "/openapi.json"
OPENAPI_VERSION = "3.1.0"
UNDOCUMENTED = "x-undocumented"
CACHE_KEY = "resq.openapi"  # app.extensions key of the serialized document
_IMPLICIT_METHODS = {"HEAD", "OPTIONS"}  # answered by Flask for every GET rule / refused


@bp.get(PATH)
def document() -> Response:
    cached: bytes | None = current_app.extensions.get(CACHE_KEY)
    if cached is None:
        # Two first requests at once build it twice; both results are the same.
        cached = json.dumps(build(current_app), separators=(",", ":")).encode()
        current_app.extensions[CACHE_KEY] = cached
    return Response(cached, mimetype="application/json")


# ---- the document ----------------------------------------------------------------------------


def build(app: Flask) -> dict[str, Any]:
    """The OpenAPI document of ``app``: one operation per routed method."""
    routes = sorted(
        ((rule, method) for rule in app.url_map.iter_rules() for method in _methods(rule)),
        key=lambda route: (route[0].rule, route[1]),
    )
    refs, schemas = _schemas(
        [OPERATIONS[r.endpoint] for r, _ in routes if r.endpoint in OPERATIONS]
    )
    paths: dict[str, dict[str, Any]] = {}
    operation_ids: set[str] = set()
    for rule, method in routes:
        op = OPERATIONS.get(rule.endpoint)
        paths.setdefault(openapi_path(rule), {})[method.lower()] = {
            "operationId": _unique(rule.endpoint.replace(".", "_"), operation_ids),
            **(_undocumented(rule) if op is None else _operation(rule, op, refs)),
        }
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "resq",
            "version": _version(),
            "description": "A self-hosted OpenAI Responses API server. Operations and fields "
            "marked `x-resq: true` are resq's own additions to OpenAI's surface.",
        },
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": _error_responses(),
            "headers": {
                "RequestId": {
                    "description": "The request's id (req_…), on every answer.",
                    "schema": {"type": "string"},
                }
            },
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key (RESQ_API_KEYS); the admin API needs an admin "
                    "key (RESQ_ADMIN_KEYS). A server with no keys configured is open.",
                }
            },
        },
    }


def openapi_path(rule: Rule) -> str:
    """``/v1/models/<path:model>`` → ``/v1/models/{model}``."""
    return re.sub(r"<(?:[^<>:]+:)?([^<>]+)>", r"{\1}", rule.rule)


def _methods(rule: Rule) -> list[str]:
    return sorted((rule.methods or set()) - _IMPLICIT_METHODS)


def _unique(name: str, used: set[str]) -> str:
    candidate, n = name, 1
    while candidate in used:
        n += 1
        candidate = f"{name}_{n}"
    used.add(candidate)
    return candidate


def _version() -> str:
    try:
        return version("resq")
    except PackageNotFoundError:  # pragma: no cover - run from a source tree not installed
        return "0.0.0"


# ---- schemas -----------------------------------------------------------------------------------


Refs = dict[Any, dict[str, Any]]  # (model, mode) → {"$ref": …}


def _schemas(ops: list[Op]) -> tuple[Refs, dict[str, Any]]:
    """Every model the operations name, as ``components.schemas``, plus ``StreamEvent``."""
    events: tuple[type[BaseModel], ...] = get_args(StreamEvent)
    wanted: dict[tuple[type[BaseModel], JsonSchemaMode], None] = {
        (o.ErrorBody, "serialization"): None,
        (o.NotReady, "serialization"): None,
        **{(event, "serialization"): None for event in events},
    }
    for op in ops:
        if op.body is not None:
            wanted[(op.body, "validation")] = None
        if not isinstance(op.ok, Media):
            wanted[(op.ok, "serialization")] = None
    refs, top = models_json_schema(list(wanted), ref_template=REF)
    schemas: dict[str, Any] = top.get("$defs", {})
    for event in events:
        _stamped(schemas[_name(refs[(event, "serialization")])])
    schemas["StreamEvent"] = {
        "description": "One server-sent event (spec digest §4.2).",
        "anyOf": [refs[(event, "serialization")] for event in events],
    }
    roots = [_name(ref) for ref in refs.values()] + ["StreamEvent"]
    return refs, _referenced(schemas, roots)


def _name(ref: dict[str, Any]) -> str:
    return str(ref["$ref"]).rsplit("/", 1)[1]


def _stamped(schema: dict[str, Any]) -> None:
    """Events on the wire carry the ``sequence_number`` that ``shared.bus.Emitter`` stamps."""
    schema["properties"] = {
        "type": schema["properties"]["type"],
        "sequence_number": {"type": "integer", "minimum": 0},
        **schema["properties"],
    }
    schema["required"] = list(dict.fromkeys(["type", "sequence_number", *schema["required"]]))


def _referenced(schemas: dict[str, Any], roots: list[str]) -> dict[str, Any]:
    """The schemas reachable from ``roots``: pydantic also emits the models behind a type
    whose ``WithJsonSchema`` replaces them (the input item union), which nothing refers to."""
    keep: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name not in keep:
            keep.add(name)
            todo += re.findall(r'"#/components/schemas/([^"]+)"', json.dumps(schemas[name]))
    return {name: schema for name, schema in schemas.items() if name in keep}


# ---- operations --------------------------------------------------------------------------------


def _ref(name: str, kind: str = "schemas") -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


ERRORS = {
    "400": ("BadRequest", "The request is invalid (the error names the parameter)."),
    "401": ("Unauthorized", "No API key, or an unknown one."),
    "403": ("Forbidden", "The key may not use this endpoint (the admin API needs an admin key)."),
    "404": ("NotFound", "No such object for this tenant."),
    "409": ("Conflict", "The request conflicts with the object's state."),
    "413": ("TooLarge", "The body is larger than RESQ_MAX_BODY_BYTES."),
    "503": ("Unavailable", "Redis, the database or the broker is unreachable; retry shortly."),
    "default": ("Error", "Any other error; every error answer is this envelope."),
}


def _error_responses() -> dict[str, Any]:
    return {
        name: {
            "description": description,
            "headers": {"x-request-id": _ref("RequestId", "headers")},
            "content": {"application/json": {"schema": _ref("ErrorBody")}},
        }
        for name, description in ERRORS.values()
    }


def _operation(rule: Rule, op: Op, refs: Refs) -> dict[str, Any]:
    doc: dict[str, Any] = {"summary": op.summary, "tags": [rule.endpoint.split(".")[0]]}
    parameters = [*_path_parameters(rule), *(_query_parameter(q) for q in op.query)]
    if op.idempotency:
        parameters.append(
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "description": "A retried POST with the same key and body never starts a "
                "second job (README, 'Behaviour worth knowing').",
                "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                "x-resq": True,
            }
        )
    if parameters:
        doc["parameters"] = parameters
    if op.body is not None:
        doc["requestBody"] = {
            "required": op.body_required,
            "content": {"application/json": {"schema": refs[(op.body, "validation")]}},
        }
    doc["responses"] = {"200": _ok(op, refs), **_errors(rule, op)}
    if op.public:
        doc["security"] = []
    if op.resq:
        doc["x-resq"] = True
    return doc


def _ok(op: Op, refs: Refs) -> dict[str, Any]:
    if isinstance(op.ok, Media):
        content = {op.ok.content_type: {"schema": op.ok.schema}}
    else:
        content = {"application/json": {"schema": refs[(op.ok, "serialization")]}}
    if op.stream:
        content[SSE.content_type] = {"schema": SSE.schema}
    return {
        "description": "OK",
        "headers": {"x-request-id": _ref("RequestId", "headers")},
        "content": content,
    }


def _errors(rule: Rule, op: Op) -> dict[str, Any]:
    codes = ["400"]
    if not op.public:
        codes.append("401")
    if rule.endpoint.startswith("admin."):
        codes.append("403")
    if rule.arguments:
        codes.append("404")
    if op.conflict:
        codes.append("409")
    if op.body is not None:
        codes.append("413")
    if not op.public or rule.endpoint == "metrics_page":
        codes.append("503")
    answers: dict[str, Any] = {code: _ref(ERRORS[code][0], "responses") for code in codes}
    if rule.endpoint == "health.readyz":
        answers["503"] = {
            "description": "Not ready: the envelope names what is down, `checks` says why.",
            "headers": {"x-request-id": _ref("RequestId", "headers")},
            "content": {"application/json": {"schema": _ref("NotReady")}},
        }
    answers["default"] = _ref("Error", "responses")
    return answers


def _path_parameters(rule: Rule) -> list[dict[str, Any]]:
    found = re.findall(r"<(?:([^<>:]+):)?([^<>]+)>", rule.rule)
    parameters = []
    for _converter, name in found:
        schema, description = PATH_PARAMS.get(name, GENERIC_PATH_PARAM)
        if isinstance(rule._converters.get(name), PathConverter):
            description += " It may contain '/'."
        parameters.append(
            {
                "name": name,
                "in": "path",
                "required": True,
                "description": description,
                "schema": schema,
            }
        )
    return parameters


def _query_parameter(query: Query) -> dict[str, Any]:
    parameter: dict[str, Any] = {
        "name": query.name,
        "in": "query",
        "required": False,
        "description": query.description,
        "schema": query.schema,
    }
    if query.schema.get("type") == "array":
        parameter |= {"style": "form", "explode": True}
    return parameter


def _undocumented(rule: Rule) -> dict[str, Any]:
    return {
        "summary": f"Undocumented: {rule.endpoint}",
        UNDOCUMENTED: True,
        "responses": {"default": _ref("Error", "responses")},
    }
