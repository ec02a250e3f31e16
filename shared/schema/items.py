"""Input and output items: normalising what clients send, building what resq returns.

Clients send items in many shapes (spec digest §3.2): plain strings, messages without a
``type``, bare ``{"id": …}`` item references, and any output item replayed verbatim. They
are normalised here into the ResponseItem form of §3.3: every item has a ``type`` and an
``id``, messages have a ``status`` and a list of content parts.
"""

from __future__ import annotations

from typing import Any

from shared import ids
from shared.errors import InvalidRequest
from shared.schema.validation import json_type_name

MESSAGE_ROLES = ("user", "assistant", "system", "developer")
INPUT_PART_TYPES = {"input_text", "input_image", "input_file", "input_audio"}
ASSISTANT_PART_TYPES = {"output_text", "refusal"}

# Prefixes of the ids resq assigns to input items that arrive without one.
_ID_PREFIX = {
    "message": ids.MESSAGE,
    "function_call": ids.FUNCTION_CALL,
    "function_call_output": "fco",
    "reasoning": ids.REASONING,
    "item_reference": "ref",
    "compaction": ids.COMPACTION,
}
# Fields each typed input item must carry (beyond ``type``).
_REQUIRED = {
    "function_call": ("call_id", "name", "arguments"),
    "function_call_output": ("call_id", "output"),
    "reasoning": ("summary",),
    "mcp_approval_response": ("approval_request_id", "approve"),
    "compaction": ("encrypted_content",),
}


def _fail(message: str, param: str, code: str = "invalid_value") -> InvalidRequest:
    return InvalidRequest(message, param=param, code=code)


def _text_part(role: str, text: str) -> dict[str, Any]:
    if role == "assistant":
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return {"type": "input_text", "text": text}


def _message(raw: dict[str, Any], param: str) -> dict[str, Any]:
    role = raw.get("role")
    if role is None:
        raise _fail(
            f"Missing required parameter: '{param}.role'.",
            f"{param}.role",
            "missing_required_parameter",
        )
    if role not in MESSAGE_ROLES:
        raise _fail(
            f"Invalid value: '{role}'. Supported values are: 'user', 'assistant', 'system' "
            "and 'developer'.",
            f"{param}.role",
        )
    content = raw.get("content")
    if isinstance(content, str):
        parts = [_text_part(role, content)]
    elif isinstance(content, list):
        parts = [
            _content_part(part, role, f"{param}.content[{i}]") for i, part in enumerate(content)
        ]
    elif content is None:
        raise _fail(
            f"Missing required parameter: '{param}.content'.",
            f"{param}.content",
            "missing_required_parameter",
        )
    else:
        raise _fail(
            f"Invalid type for '{param}.content': expected a string or an array, but got "
            f"{json_type_name(content)} instead.",
            f"{param}.content",
            "invalid_type",
        )
    item = dict(raw)
    item.update(type="message", role=role, content=parts)
    item.setdefault("status", "completed")
    return item


def _content_part(part: Any, role: str, param: str) -> dict[str, Any]:
    if not isinstance(part, dict):
        raise _fail(
            f"Invalid type for '{param}': expected an object, but got "
            f"{json_type_name(part)} instead.",
            param,
            "invalid_type",
        )
    allowed = ASSISTANT_PART_TYPES if role == "assistant" else INPUT_PART_TYPES
    ptype = part.get("type")
    if ptype not in allowed:
        supported = " and ".join(f"'{t}'" for t in sorted(allowed))
        raise _fail(
            f"Invalid value: '{ptype}'. Supported values are: {supported}.", f"{param}.type"
        )
    if ptype in {"input_text", "output_text"} and not isinstance(part.get("text"), str):
        raise _fail(
            f"Missing required parameter: '{param}.text'.",
            f"{param}.text",
            "missing_required_parameter",
        )
    if ptype == "output_text":
        part = {"annotations": [], **part}
    return part


def _typed_item(raw: dict[str, Any], itype: str, param: str) -> dict[str, Any]:
    for name in _REQUIRED.get(itype, ()):
        if name not in raw:
            raise _fail(
                f"Missing required parameter: '{param}.{name}'.",
                f"{param}.{name}",
                "missing_required_parameter",
            )
    return dict(raw)


def normalize_item(raw: Any, param: str) -> dict[str, Any]:
    """One input item in ResponseItem form, without an id if the client gave none."""
    if not isinstance(raw, dict):
        raise _fail(
            f"Invalid type for '{param}': expected an object, but got "
            f"{json_type_name(raw)} instead.",
            param,
            "invalid_type",
        )
    itype = raw.get("type")
    if itype is None:
        if "role" in raw or "content" in raw:
            itype = "message"
        elif "id" in raw:
            itype = "item_reference"
        else:
            raise _fail(
                f"Missing required parameter: '{param}.type'.",
                f"{param}.type",
                "missing_required_parameter",
            )
    if not isinstance(itype, str):
        raise _fail(
            f"Invalid type for '{param}.type': expected a string, but got "
            f"{json_type_name(itype)} instead.",
            f"{param}.type",
            "invalid_type",
        )
    if itype == "message":
        return _message(raw, param)
    if itype == "item_reference":
        if not isinstance(raw.get("id"), str):
            raise _fail(
                f"Missing required parameter: '{param}.id'.",
                f"{param}.id",
                "missing_required_parameter",
            )
        return {"type": "item_reference", "id": raw["id"]}
    return _typed_item(raw, itype, param)


def normalize_input(value: str | list[Any] | None) -> list[dict[str, Any]]:
    """The request's ``input`` as a list of typed items (references not yet resolved)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [_message({"role": "user", "content": value}, "input")]
    return [normalize_item(raw, f"input[{i}]") for i, raw in enumerate(value)]


def ensure_id(item: dict[str, Any]) -> dict[str, Any]:
    """Give an item an id if it has none (every listed item needs one, §3.3)."""
    if not item.get("id"):
        item = {**item, "id": ids.new_id(_ID_PREFIX.get(item["type"], "item"))}
    return item


# ---- output items ----------------------------------------------------------------------


def output_message(item_id: str, status: str = "in_progress") -> dict[str, Any]:
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": []}


def output_text_part(text: str = "") -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def refusal_part(text: str = "") -> dict[str, Any]:
    return {"type": "refusal", "refusal": text}


def function_call_item(
    item_id: str, call_id: str, name: str, arguments: str = "", status: str = "in_progress"
) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


def reasoning_item(item_id: str, status: str = "in_progress") -> dict[str, Any]:
    return {"id": item_id, "type": "reasoning", "summary": [], "status": status}
