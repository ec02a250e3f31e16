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
# Every input item type the openai SDK can send (``ResponseInputItemParam``, openai 3.57):
# resq runs the ones it knows and keeps the others as given (output items replayed as input).
INPUT_ITEM_TYPES = frozenset(
    {
        "additional_tools", "apply_patch_call", "apply_patch_call_output",
        "code_interpreter_call", "compaction", "compaction_trigger", "computer_call",
        "computer_call_output", "configuration_update", "custom_tool_call",
        "custom_tool_call_output", "file_search_call", "function_call", "function_call_output",
        "image_generation_call", "item_reference", "local_shell_call",
        "local_shell_call_output", "mcp_approval_request", "mcp_approval_response", "mcp_call",
        "mcp_list_tools", "message", "program", "program_output", "reasoning", "shell_call",
        "shell_call_output", "tool_search_call", "tool_search_output", "web_search_call",
    }
)  # fmt: skip
# Fields of the items resq reads, with their JSON types: (required, optional) per type.
_STR, _ARRAY, _BOOL = (str,), (list,), (bool,)
_FIELDS: dict[str, tuple[dict[str, tuple[type, ...]], dict[str, tuple[type, ...]]]] = {
    "function_call": ({"call_id": _STR, "name": _STR, "arguments": _STR}, {"id": _STR}),
    "function_call_output": ({"call_id": _STR, "output": (str, list)}, {"id": _STR}),
    "reasoning": ({"summary": _ARRAY}, {"id": _STR, "encrypted_content": (str, type(None))}),
    "mcp_approval_response": ({"approval_request_id": _STR, "approve": _BOOL}, {"id": _STR}),
    "mcp_approval_request": ({"server_label": _STR, "name": _STR, "arguments": _STR}, {}),
    "mcp_call": ({"server_label": _STR, "name": _STR, "arguments": _STR}, {"id": _STR}),
    "mcp_list_tools": ({"server_label": _STR, "tools": _ARRAY}, {"id": _STR}),
    "compaction": ({"encrypted_content": _STR}, {"id": _STR}),
}
_EXPECTED = {str: "a string", list: "an array", bool: "a boolean", type(None): "null"}


# The longest item id the store keeps (its column width); a longer one is refused here.
ITEM_ID_MAX_LENGTH = 128


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
    if itype not in INPUT_ITEM_TYPES:
        raise _fail(
            f"Invalid value: '{itype}'. Supported values are the input item types of the "
            "Responses API ('message', 'function_call', 'function_call_output', 'reasoning', "
            "'item_reference', 'mcp_approval_response', …).",
            f"{param}.type",
        )
    required, optional = _FIELDS.get(itype, ({}, {}))
    for name, types in {**required, **optional}.items():
        if name not in raw:
            if name in required:
                raise _fail(
                    f"Missing required parameter: '{param}.{name}'.",
                    f"{param}.{name}",
                    "missing_required_parameter",
                )
            continue
        if type(raw[name]) not in types:
            expected = " or ".join(_EXPECTED[t] for t in types)
            raise _fail(
                f"Invalid type for '{param}.{name}': expected {expected}, but got "
                f"{json_type_name(raw[name])} instead.",
                f"{param}.{name}",
                "invalid_type",
            )
    if itype == "reasoning":
        _summary_parts(raw["summary"], f"{param}.summary")
    return dict(raw)


def _summary_parts(parts: list[Any], param: str) -> None:
    for i, part in enumerate(parts):
        where = f"{param}[{i}]"
        if not isinstance(part, dict):
            raise _fail(
                f"Invalid type for '{where}': expected an object, but got "
                f"{json_type_name(part)} instead.",
                where,
                "invalid_type",
            )
        if part.get("type") != "summary_text":
            raise _fail(
                f"Invalid value: {part.get('type')!r}. Supported values are: 'summary_text'.",
                f"{where}.type",
            )
        if not isinstance(part.get("text"), str):
            raise _fail(
                f"Invalid type for '{where}.text': expected a string, but got "
                f"{json_type_name(part.get('text'))} instead.",
                f"{where}.text",
                "invalid_type",
            )


def normalize_item(raw: Any, param: str) -> dict[str, Any]:
    """One input item in ResponseItem form, without an id if the client gave none."""
    if not isinstance(raw, dict):
        raise _fail(
            f"Invalid type for '{param}': expected an object, but got "
            f"{json_type_name(raw)} instead.",
            param,
            "invalid_type",
        )
    if raw.get("id") is not None and not isinstance(raw["id"], str):
        raise _fail(
            f"Invalid type for '{param}.id': expected a string, but got "
            f"{json_type_name(raw['id'])} instead.",
            f"{param}.id",
            "invalid_type",
        )
    if isinstance(raw.get("id"), str) and len(raw["id"]) > ITEM_ID_MAX_LENGTH:
        raise _fail(
            f"Invalid '{param}.id': string too long. Expected a string with maximum length "
            f"{ITEM_ID_MAX_LENGTH}, but got a string with length {len(raw['id'])} instead.",
            f"{param}.id",
            "string_above_max_length",
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
