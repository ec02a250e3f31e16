"""Input and output items: the items clients send, as pydantic models, and the items resq
builds.

Clients send items in many shapes (spec digest §3.2): plain strings, messages without a
``type``, bare ``{"id": …}`` item references, and any output item replayed verbatim.
``InputItem`` is their union, discriminated on ``type`` (inferred where the client left it
out, as OpenAI does); ``normalized()`` turns each into the ResponseItem form of §3.3: every
item has a ``type``, messages have a ``status`` and a list of content parts, and the keys a
client sent are kept as sent (``shared.schema.content.Sent``). ``ensure_id`` then gives it
an ``id``.

A model checks the keys resq reads, with OpenAI's errors (``shared.schema.validation``);
every other key passes through unchecked, for the upstream to judge.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, WithJsonSchema, field_validator, model_validator

from shared import ids
from shared.schema.content import AssistantPart, InputPart, Sent, SummaryText, text_part
from shared.schema.validation import missing_error, type_error, value_error

MESSAGE_ROLES = ("user", "assistant", "system", "developer")

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
# How the OpenAPI document describes an input item (the union is too loose to generate from).
INPUT_ITEM_SCHEMA = {
    "type": "object",
    "description": "An input item (spec digest §3.2): a message, a tool output, an item "
    "reference, or an output item sent back.",
}

# The longest item id the store keeps (its column width); a longer one is refused here.
ITEM_ID_MAX_LENGTH = 128
ItemId = Annotated[str, Field(max_length=ITEM_ID_MAX_LENGTH)]


class _Item(Sent):
    # Declared first: an item's id is checked before anything else in it, as OpenAI does.
    id: ItemId | None = None


# ---- messages ------------------------------------------------------------------------------


def _role(value: Any) -> Any:
    if value is None:
        raise missing_error()
    if value not in MESSAGE_ROLES:
        raise value_error(
            f"Invalid value: '{value}'. Supported values are: 'user', 'assistant', 'system' "
            "and 'developer'."
        )
    return value


def _content(value: Any) -> Any:
    if value is None:
        raise missing_error()
    if not isinstance(value, str | list):
        raise type_error("a string or an array")
    return value


def _str_or_list(value: Any) -> str:
    return "str" if isinstance(value, str) else "list"


def _message(sent: dict[str, Any], role: str, content: str | list[Any]) -> dict[str, Any]:
    """A message in ResponseItem form: content as parts, ``status`` filled in."""
    if isinstance(content, str):
        parts = [text_part(role, content)]
    else:
        parts = [part.normalized() for part in content]
    item = {**sent, "type": "message", "role": role, "content": parts}
    item.setdefault("status", "completed")
    return item


class Message(_Item):
    """A message from the client's side (user, system, developer), ``content`` a string or
    input parts; the easy form leaves ``type`` out. Invalid roles land here to be refused."""

    type: Literal["message"] | None = None
    role: Literal["user", "system", "developer"]
    content: Annotated[
        Annotated[str, Tag("str")] | Annotated[list[InputPart], Tag("list")],
        Discriminator(_str_or_list),
    ]

    _check_role = field_validator("role", mode="before")(_role)
    _check_content = field_validator("content", mode="before")(_content)

    def normalized(self) -> dict[str, Any]:
        return _message(self._sent, self.role, self.content)


class AssistantMessage(_Item):
    """An assistant message sent back as input: ``content`` a string or output parts."""

    type: Literal["message"] | None = None
    role: Literal["assistant"]
    content: Annotated[
        Annotated[str, Tag("str")] | Annotated[list[AssistantPart], Tag("list")],
        Discriminator(_str_or_list),
    ]

    _check_content = field_validator("content", mode="before")(_content)

    def normalized(self) -> dict[str, Any]:
        return _message(self._sent, self.role, self.content)


# ---- tool calls, their outputs, reasoning ----------------------------------------------------


class _ToolItem(_Item):
    """An item whose ``id``, when given, may not be ``null`` (checked after its other keys,
    as OpenAI does)."""

    @model_validator(mode="after")
    def _id_not_null(self) -> _ToolItem:
        if self.id is None and "id" in self.model_fields_set:
            raise type_error("a string", at="id")
        return self


class FunctionCall(_ToolItem):
    type: Literal["function_call"]
    call_id: str
    name: str
    arguments: str


def _str_or_array(value: Any) -> Any:
    if not isinstance(value, str | list):
        raise type_error("a string or an array")
    return value


class FunctionCallOutput(_ToolItem):
    type: Literal["function_call_output"]
    call_id: str
    output: str | list[Any]  # text, or content parts for the upstream to read

    _check_output = field_validator("output", mode="before")(_str_or_array)


def _str_or_null(value: Any) -> Any:
    if value is not None and not isinstance(value, str):
        raise type_error("a string or null")
    return value


class Reasoning(_ToolItem):
    type: Literal["reasoning"]
    summary: list[SummaryText]
    encrypted_content: str | None = None

    _check_encrypted_content = field_validator("encrypted_content", mode="before")(_str_or_null)


class McpListTools(_ToolItem):
    type: Literal["mcp_list_tools"]
    server_label: str
    tools: list[Any]


class McpCall(_ToolItem):
    type: Literal["mcp_call"]
    server_label: str
    name: str
    arguments: str


class McpApprovalRequest(_Item):
    type: Literal["mcp_approval_request"]
    server_label: str
    name: str
    arguments: str


class McpApprovalResponse(_ToolItem):
    type: Literal["mcp_approval_response"]
    approval_request_id: str
    approve: bool


class CompactionItem(_ToolItem):
    """What ``/v1/responses/compact`` answered, sent back (``api.service`` checks that this
    server sealed it)."""

    type: Literal["compaction"]
    encrypted_content: str


# ---- references and everything else ------------------------------------------------------


def _present(value: Any) -> Any:
    if value is None:
        raise missing_error()
    return value


class ItemReference(_Item):
    """A stored item by id, written ``{"type": "item_reference", "id": …}`` or just
    ``{"id": …}``; resolved by ``api.service.resolve_items``."""

    type: Literal["item_reference"] | None = None
    id: ItemId

    _check_id = field_validator("id", mode="before")(_present)

    def normalized(self) -> dict[str, Any]:
        return {"type": "item_reference", "id": self.id}


def _known_type(value: Any) -> Any:
    if value is None:
        raise missing_error()
    if not isinstance(value, str):
        raise type_error("a string")
    if value not in INPUT_ITEM_TYPES:
        raise value_error(
            f"Invalid value: '{value}'. Supported values are the input item types of the "
            "Responses API ('message', 'function_call', 'function_call_output', 'reasoning', "
            "'item_reference', 'mcp_approval_response', …)."
        )
    return value


class OtherItem(_Item):
    """An item of a tool resq does not run (``web_search_call``, ``computer_call`` …), sent
    back as input: kept as given. Items without a usable ``type`` land here to be refused."""

    type: str

    _check_type = field_validator("type", mode="before")(_known_type)


_MODELLED = (
    "function_call", "function_call_output", "reasoning", "mcp_list_tools", "mcp_call",
    "mcp_approval_request", "mcp_approval_response", "compaction", "item_reference",
)  # fmt: skip


def _item_type(item: Any) -> str:
    """The union member for an item: its ``type``, or what OpenAI infers when it has none."""
    if not isinstance(item, dict):
        return "<other>"  # refused: not an object
    kind = item.get("type")
    if kind is None and ("role" in item or "content" in item):
        kind = "message"
    elif kind is None and "id" in item:
        kind = "item_reference"
    if kind == "message":
        return "<assistant_message>" if item.get("role") == "assistant" else "<message>"
    return f"<{kind}>" if kind in _MODELLED else "<other>"


InputItem = Annotated[
    Annotated[Message, Tag("<message>")]
    | Annotated[AssistantMessage, Tag("<assistant_message>")]
    | Annotated[FunctionCall, Tag("<function_call>")]
    | Annotated[FunctionCallOutput, Tag("<function_call_output>")]
    | Annotated[Reasoning, Tag("<reasoning>")]
    | Annotated[McpListTools, Tag("<mcp_list_tools>")]
    | Annotated[McpCall, Tag("<mcp_call>")]
    | Annotated[McpApprovalRequest, Tag("<mcp_approval_request>")]
    | Annotated[McpApprovalResponse, Tag("<mcp_approval_response>")]
    | Annotated[CompactionItem, Tag("<compaction>")]
    | Annotated[ItemReference, Tag("<item_reference>")]
    | Annotated[OtherItem, Tag("<other>")],
    Discriminator(_item_type),
    WithJsonSchema(INPUT_ITEM_SCHEMA),
]


def normalize_input(value: str | list[InputItem] | None) -> list[dict[str, Any]]:
    """The request's ``input`` as a list of typed items (references not yet resolved)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [Message.model_validate({"role": "user", "content": value}).normalized()]
    return [item.normalized() for item in value]


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
