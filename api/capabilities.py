"""What a route's model accepts, checked at create: a request that asks for more is a 400
``unsupported_parameter`` now, never a job that fails later (``shared.routing.Accepts``).

Images and files are checked here too: a part resq cannot pass on (a ``file_id``: resq has no
Files API) or whose ``file_url`` the outbound-address policy refuses is a 400 naming the part.
"""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from shared.errors import InvalidRequest
from shared.media import has_media, parse_data_url
from shared.netpolicy import OutboundPolicy
from shared.routing import Route
from shared.schema.requests import CreateResponseRequest


def _unsupported(what: str, param: str, route: Route, model: str) -> InvalidRequest:
    return InvalidRequest(
        f"Unsupported parameter: {what} is not supported with the model '{model}' "
        f"(resq route '{route.match}', provider '{route.provider}').",
        param=param,
        code="unsupported_parameter",
    )


def check_accepts(
    route: Route, req: CreateResponseRequest, own_items: list[dict[str, Any]]
) -> None:
    accepts = route.accepts
    model = str(req.model)
    if req.temperature is not None and not accepts.temperature:
        raise _unsupported("'temperature'", "temperature", route, model)
    if req.top_p is not None and not accepts.top_p:
        raise _unsupported("'top_p'", "top_p", route, model)
    if req.tools and not accepts.tools:
        raise _unsupported("'tools'", "tools", route, model)
    if req.reasoning is not None and req.reasoning.effort is not None and not accepts.reasoning:
        raise _unsupported("'reasoning.effort'", "reasoning.effort", route, model)
    if not accepts.images and has_media(own_items, "image"):
        raise _unsupported("image input ('input_image')", "input", route, model)
    if not accepts.files and has_media(own_items, "file"):
        raise _unsupported("file input ('input_file')", "input", route, model)


def check_media(own_items: list[dict[str, Any]], outbound: OutboundPolicy) -> None:
    """Every image and file part can be passed on: an ``image_url`` that is http(s) or a base64
    ``data:`` URL, a file given as ``file_data`` or an allowed ``file_url``."""
    for i, item in enumerate(own_items):
        content = item.get("content")
        if not isinstance(content, list):
            continue
        for j, part in enumerate(content):
            if isinstance(part, dict):
                _check_part(part, f"input[{i}].content[{j}]", outbound)


def _check_part(part: dict[str, Any], where: str, outbound: OutboundPolicy) -> None:
    ptype = part.get("type")
    if ptype not in ("input_image", "input_file"):
        return
    if part.get("file_id") is not None:
        raise InvalidRequest(
            "Unsupported parameter: 'file_id' needs a Files API, which this resq server does "
            "not have; send the content inline ('image_url' as a data URL, 'file_data') or "
            "by URL ('image_url', 'file_url').",
            param=f"{where}.file_id",
            code="unsupported_parameter",
        )
    if ptype == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str) or not (
            url.startswith(("http://", "https://")) or parse_data_url(url) is not None
        ):
            raise InvalidRequest(
                "Invalid 'image_url': expected an http(s) URL or a base64 data URL "
                "('data:image/png;base64,...').",
                param=f"{where}.image_url",
                code="invalid_value",
            )
        return
    data, url = part.get("file_data"), part.get("file_url")
    if isinstance(data, str) and data:
        return
    if isinstance(url, str) and url:
        outbound.check_url(url, param=f"{where}.file_url")
        return
    raise InvalidRequest(
        "An 'input_file' part needs 'file_data' (base64, or a base64 data URL) or 'file_url'.",
        param=where,
        code="missing_required_parameter",
    )


def check_json_schema(req: CreateResponseRequest) -> None:
    """A ``json_schema`` format's schema is a valid JSON Schema (resq may validate answers
    with it, ``worker.structured``): a broken one is a 400 now, not a failed job."""
    fmt = req.text.format if req.text is not None else None
    if fmt is None or fmt.type != "json_schema" or fmt.schema_ is None:
        return
    check_schema(
        fmt.schema_,
        what=f"Invalid schema for response_format '{fmt.name}'",
        param="text.format.schema",
    )


def check_schema(schema: Any, *, what: str, param: str) -> None:
    """``schema`` is a valid JSON Schema (Draft 2020-12), else a 400 ``invalid_json_schema``
    whose message starts with ``what`` and says where."""
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.path)
        raise InvalidRequest(
            f"{what}: {exc.message}" + (f" (at '{where}')." if where else "."),
            param=param,
            code="invalid_json_schema",
        ) from None
