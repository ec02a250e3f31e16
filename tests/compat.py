"""Wire-compatibility checks every resq test can use (unit and end-to-end alike).

Two independent judges of what resq puts on the wire:

* the **Open Responses contract**, kept in the repository as test data
  (``tests/data/openresponses/openapi.json``, its source and licence in ``SOURCE.md`` beside
  it), checked with ``jsonschema`` (Draft 2020-12, ``$ref``s resolved inside the document);
* the **official ``openai`` SDK models**, which parse strictly (``model_validate``) and must
  give back exactly what was sent (nothing dropped, nothing renamed).

Helpers, all raising ``AssertionError`` with the JSON path of the first problem:

``openresponses_schema(name)``  a validator for ``#/components/schemas/<name>``
``assert_valid_response(raw)``  ``raw`` matches ``ResponseResource``
``assert_valid_event(raw)``     ``raw`` matches the ``*StreamingEvent`` schema for its ``type``
``assert_sdk_response(raw)``    ``openai.types.responses.Response`` parses and round-trips it
``assert_sdk_event(raw)``       the SDK's event class for ``raw["type"]`` parses and round-trips it
``assert_all_spec_fields(raw)`` every field of ``SPEC_RESPONSE_FIELDS`` is present
``assert_wire_response(raw)`` / ``assert_wire_event(raw)``  all of the above in one call

Where the published contract contradicts the SDK (which is what clients actually run), the
SDK wins; each such place is listed in ``CONTRACT_ERRATA`` or ``SCHEMA_EXEMPT_EVENT_TYPES``
with its reason, so the deviation is visible rather than silently tolerated.
"""

from __future__ import annotations

import functools
import json
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from jsonschema.exceptions import best_match
from openai._models import construct_type
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import BaseModel, ValidationError
from referencing import Registry
from referencing.jsonschema import DRAFT202012

OPENAPI_RELATIVE_PATH = Path("openresponses") / "openapi.json"
DOCUMENT_URI = "urn:resq:openresponses:openapi.json"

# Every field the spec digest (§2.1) says a Response must carry.
SPEC_RESPONSE_FIELDS: tuple[str, ...] = (
    "id",
    "object",
    "created_at",
    "status",
    "completed_at",
    "error",
    "incomplete_details",
    "instructions",
    "model",
    "output",
    "parallel_tool_calls",
    "tool_choice",
    "tools",
    "temperature",
    "top_p",
    "metadata",
    "background",
    "conversation",
    "max_output_tokens",
    "max_tool_calls",
    "previous_response_id",
    "prompt",
    "prompt_cache_key",
    "prompt_cache_retention",
    "safety_identifier",
    "user",
    "reasoning",
    "service_tier",
    "text",
    "top_logprobs",
    "truncation",
    "usage",
    "store",
)

# Places where the published contract cannot be right for an SDK client. Each entry is
# (JSON pointer inside the document, replacement subschema, reason). Applied in memory only.
CONTRACT_ERRATA: tuple[tuple[str, dict[str, Any], str], ...] = (
    (
        "/components/schemas/JsonSchemaResponseFormat/properties/schema",
        {"type": "object"},
        "the contract types the echoed JSON Schema as `null`; the SDK's "
        "ResponseFormatTextJSONSchemaConfig requires `schema` to be an object, and OpenAI "
        "echoes the schema the client sent",
    ),
)

# Event types whose contract schema contradicts the SDK; they are checked by the SDK only.
SCHEMA_EXEMPT_EVENT_TYPES: dict[str, str] = {
    "error": "the contract nests the payload under `error`, but the SDK raises APIError on "
    "any event with a top-level `error` key; resq sends the SDK's flat ResponseErrorEvent "
    "shape (spec digest §4.4)",
}


# ---- the Open Responses document ------------------------------------------------------


def openapi_path() -> Path:
    """The Open Responses document, kept in the repository (a clone needs nothing beside it)."""
    return Path(__file__).resolve().parent / "data" / OPENAPI_RELATIVE_PATH


@functools.cache
def _document() -> dict[str, Any]:
    path = openapi_path()
    if not path.is_file():
        pytest.fail(f"Open Responses contract not found at {path}.", pytrace=False)
    document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    for pointer, replacement, _reason in CONTRACT_ERRATA:
        *parents, leaf = pointer.strip("/").split("/")
        node = document
        for key in parents:
            node = node[key]
        if leaf not in node:
            raise AssertionError(f"contract erratum {pointer} no longer applies; remove it")
        node[leaf] = replacement
    return document


@functools.cache
def _registry() -> Registry:
    resource = DRAFT202012.create_resource(_document())
    return Registry().with_resource(DOCUMENT_URI, resource)


@functools.cache
def openresponses_schema(name: str) -> jsonschema.Draft202012Validator:
    """A Draft 2020-12 validator for ``#/components/schemas/<name>`` of the contract."""
    if name not in _document()["components"]["schemas"]:
        raise KeyError(f"the Open Responses contract has no schema {name!r}")
    return jsonschema.Draft202012Validator(
        {"$ref": f"{DOCUMENT_URI}#/components/schemas/{name}"}, registry=_registry()
    )


@functools.cache
def event_schema_names() -> dict[str, str]:
    """Event ``type`` → name of its ``*StreamingEvent`` schema, from each ``type`` enum."""
    names: dict[str, str] = {}
    for name, schema in _document()["components"]["schemas"].items():
        if not name.endswith("StreamingEvent"):
            continue
        for event_type in schema.get("properties", {}).get("type", {}).get("enum", []):
            names[event_type] = name
    return names


def _validate(raw: Any, name: str, what: str) -> None:
    errors = list(openresponses_schema(name).iter_errors(raw))
    if not errors:
        return
    error = best_match(errors)
    detail = f"at {error.json_path}: {_short(error.message)}"
    if error.context:  # a oneOf/anyOf: say why the closest alternatives failed
        closest = [e for e in error.context if not _wrong_variant(e)] or error.context
        detail += " (" + "; ".join(f"{e.json_path}: {_short(e.message)}" for e in closest[:3])
        detail += ")"
    raise AssertionError(
        f"{what} does not match Open Responses {name} ({len(errors)} error(s)); {detail}"
    )


def _wrong_variant(error: jsonschema.ValidationError) -> bool:
    """The alternative was for another ``type`` (its ``type`` enum did not match)."""
    return error.validator in ("enum", "const") and list(error.path)[-1:] == ["type"]


def _short(message: str, limit: int = 200) -> str:
    return message if len(message) <= limit else message[: limit - 1] + "…"


def open_responses_view(raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` as the Open Responses contract can judge it. The one place the two disagree:
    a response run from a prompt echoes ``instructions`` as OpenAI does, a list of input items
    (the SDK's ``Response.instructions`` is ``str | list[ResponseInputItem]``), where the
    contract takes only a string; OpenAI's behaviour wins where both cannot hold, and the items
    are checked by the SDK parse instead."""
    if isinstance(raw.get("instructions"), list):
        return {**raw, "instructions": None}
    return raw


def assert_valid_response(raw: dict[str, Any]) -> None:
    """``raw`` is a valid Open Responses ``ResponseResource`` (``open_responses_view``)."""
    _validate(open_responses_view(raw), "ResponseResource", f"response {raw.get('id')!r}")


def assert_valid_event(raw: dict[str, Any]) -> str | None:
    """``raw`` matches the contract's schema for its ``type``; returns that schema's name.

    Types the contract does not define (or that are in ``SCHEMA_EXEMPT_EVENT_TYPES``)
    return ``None``: ``assert_sdk_event`` is their only judge.
    """
    event_type = raw.get("type")
    assert isinstance(event_type, str), f"event without a string `type`: {raw!r}"
    name = event_schema_names().get(event_type)
    if name is None or event_type in SCHEMA_EXEMPT_EVENT_TYPES:
        return None
    if isinstance(raw.get("response"), dict):
        raw = {**raw, "response": open_responses_view(raw["response"])}
    _validate(raw, name, f"event #{raw.get('sequence_number')} {event_type!r}")
    return name


# ---- the openai SDK --------------------------------------------------------------------


@functools.cache
def sdk_event_classes() -> dict[str, type[BaseModel]]:
    """Event ``type`` → the SDK class for it (members of ``ResponseStreamEvent``)."""
    union = typing.get_args(ResponseStreamEvent)[0]
    classes: dict[str, type[BaseModel]] = {}
    for cls in typing.get_args(union):
        for event_type in typing.get_args(cls.model_fields["type"].annotation):
            classes[event_type] = cls
    return classes


def _differences(sent: Any, kept: Any, path: str) -> Iterator[str]:
    if isinstance(sent, dict) and isinstance(kept, dict):
        for key in sent.keys() - kept.keys():
            yield f"{path}.{key}: dropped by the SDK (sent {sent[key]!r})"
        for key in kept.keys() - sent.keys():
            yield f"{path}.{key}: added by the SDK ({kept[key]!r})"
        for key in sent.keys() & kept.keys():
            yield from _differences(sent[key], kept[key], f"{path}.{key}")
    elif isinstance(sent, list) and isinstance(kept, list) and len(sent) == len(kept):
        for i, (a, b) in enumerate(zip(sent, kept, strict=True)):
            yield from _differences(a, b, f"{path}[{i}]")
    elif sent != kept or isinstance(sent, bool) != isinstance(kept, bool):
        yield f"{path}: sent {sent!r}, SDK kept {kept!r}"


def _assert_round_trip(raw: dict[str, Any], parsed: BaseModel, what: str) -> None:
    kept = parsed.model_dump(mode="json", exclude_unset=True, by_alias=True)
    problems = sorted(_differences(raw, kept, "$"))
    assert not problems, f"{what} does not survive the SDK: " + "; ".join(problems)
    extras = parsed.model_extra or {}
    for key in raw.keys() - type(parsed).model_fields.keys():
        assert key in extras, f"{what}: unmodelled key {key!r} lost by the SDK"
        assert extras[key] == raw[key], f"{what}: extra {key!r} changed by the SDK"


def assert_sdk_response(raw: dict[str, Any]) -> Response:
    """The SDK's ``Response`` parses ``raw`` strictly and keeps every key and value."""
    what = f"response {raw.get('id')!r}"
    try:
        parsed = Response.model_validate(raw)
    except ValidationError as exc:
        raise AssertionError(f"the SDK rejects {what}: {exc}") from None
    _assert_round_trip(raw, parsed, what)
    return parsed


def assert_sdk_event(raw: dict[str, Any]) -> BaseModel:
    """The SDK parses ``raw`` into the specific class for its ``type``, losing nothing."""
    event_type = raw.get("type")
    what = f"event #{raw.get('sequence_number')} {event_type!r}"
    cls = sdk_event_classes().get(event_type)  # type: ignore[arg-type]
    assert cls is not None, f"{what}: the SDK has no event class for this type"
    dispatched = construct_type(type_=ResponseStreamEvent, value=raw)
    assert type(dispatched) is cls, (
        f"{what}: the SDK's stream decoder builds {type(dispatched).__name__}, not {cls.__name__}"
    )
    try:
        parsed = cls.model_validate(raw)
    except ValidationError as exc:
        raise AssertionError(f"the SDK rejects {what}: {exc}") from None
    assert getattr(parsed, "type", None) == event_type, f"{what}: parsed type differs"
    _assert_round_trip(raw, parsed, what)
    return parsed


# ---- the spec digest -------------------------------------------------------------------


def assert_all_spec_fields(raw: dict[str, Any]) -> None:
    """Every field of the spec digest §2.1 is present (``null`` counts as present)."""
    missing = [name for name in SPEC_RESPONSE_FIELDS if name not in raw]
    assert not missing, f"response {raw.get('id')!r} lacks spec fields: {', '.join(missing)}"


def assert_wire_response(raw: dict[str, Any]) -> Response:
    """Contract, SDK and spec-field checks of one Response; returns the SDK's model."""
    assert_valid_response(raw)
    assert_all_spec_fields(raw)
    return assert_sdk_response(raw)


def assert_wire_event(raw: dict[str, Any]) -> BaseModel:
    """Contract and SDK checks of one stream event (and of the Response it carries)."""
    assert isinstance(raw.get("sequence_number"), int), f"event without sequence_number: {raw}"
    assert_valid_event(raw)
    if isinstance(raw.get("response"), dict):
        assert_all_spec_fields(raw["response"])
    return assert_sdk_event(raw)
