"""The request parameters that are more than a scalar or a fixed object: ``input``,
``conversation`` and ``tool_choice``, each a union of JSON types (spec digest §1.1).

Each type carries its checks (``BeforeValidator``), which word the errors as OpenAI does
before pydantic sees the union, and the JSON types a client may send for the OpenAPI document
(``WithJsonSchema``: the unions themselves are too loose to generate from).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired

from pydantic import (
    BeforeValidator,
    Discriminator,
    Tag,
    ValidatorFunctionWrapHandler,
    WithJsonSchema,
    WrapValidator,
)
from typing_extensions import TypedDict  # pydantic needs it on Python < 3.12

from shared.schema.items import INPUT_ITEM_SCHEMA, InputItem
from shared.schema.validation import custom_error, json_type_name

INPUT_MAX_CHARS = 10_485_760
TOOL_CHOICE_MODES = ("none", "auto", "required")
TOOL_CHOICE_TYPES = ("function", "allowed_tools", "mcp")


def _union_type_check(value: Any, param: str, allowed: tuple[type, ...], expected: str) -> Any:
    if value is not None and not isinstance(value, allowed):
        raise custom_error(
            "invalid_type",
            f"Invalid type for '{param}': expected {expected}, but got "
            f"{json_type_name(value)} instead.",
            param,
        )
    return value


def check_input(value: Any) -> Any:
    value = _union_type_check(value, "input", (str, list), "a string or an array")
    if isinstance(value, str) and len(value) > INPUT_MAX_CHARS:
        raise custom_error(
            "string_above_max_length",
            f"Invalid 'input': string too long. Expected a string with maximum length "
            f"{INPUT_MAX_CHARS}, but got a string with length {len(value)} instead.",
            "input",
        )
    return value


def _field(value: dict[str, Any], name: str, param: str, *, required: bool = True) -> None:
    """``value[name]`` is a string (or absent, when not required)."""
    if name not in value or value[name] is None:
        if required:
            raise custom_error(
                "missing_required_parameter",
                f"Missing required parameter: '{param}.{name}'.",
                f"{param}.{name}",
            )
        return
    _union_type_check(value[name], f"{param}.{name}", (str,), "a string")


def check_tool_choice(value: dict[str, Any], param: str = "tool_choice") -> None:
    """An object ``tool_choice``: a named function, ``allowed_tools`` or an MCP server's
    tool (the tool types resq runs; hosted tools are refused with the tools themselves)."""
    kind = value.get("type")
    if kind not in TOOL_CHOICE_TYPES:
        raise custom_error(
            "invalid_value",
            f"Invalid value: {kind!r}. Supported values are: 'function', 'allowed_tools' and "
            "'mcp'.",
            f"{param}.type",
        )
    if kind == "function":
        _field(value, "name", param)
    elif kind == "mcp":
        _field(value, "server_label", param)
        _field(value, "name", param, required=False)
    else:
        if value.get("mode") not in ("auto", "required"):
            raise custom_error(
                "invalid_value",
                f"Invalid value: {value.get('mode')!r}. Supported values are: 'auto' and "
                "'required'.",
                f"{param}.mode",
            )
        tools = value.get("tools")
        if tools is None:
            raise custom_error(
                "missing_required_parameter",
                f"Missing required parameter: '{param}.tools'.",
                f"{param}.tools",
            )
        _union_type_check(tools, f"{param}.tools", (list,), "an array")
        for i, tool in enumerate(tools):
            _union_type_check(tool, f"{param}.tools[{i}]", (dict,), "an object")
            _field(tool, "type", f"{param}.tools[{i}]")


def _check_conversation(value: Any) -> Any:
    value = _union_type_check(value, "conversation", (str, dict), "a string or an object")
    if isinstance(value, dict) and not isinstance(value.get("id"), str):
        raise custom_error(
            "missing_required_parameter",
            "Missing required parameter: 'conversation.id'.",
            "conversation.id",
        )
    return value


def _tool_choice(value: Any) -> Any:
    value = _union_type_check(value, "tool_choice", (str, dict), "a string or an object")
    if isinstance(value, str) and value not in TOOL_CHOICE_MODES:
        raise custom_error(
            "invalid_value",
            f"Invalid value: '{value}'. Supported values are: 'none', 'auto' and 'required'.",
            "tool_choice",
        )
    if isinstance(value, dict):
        check_tool_choice(value)
    return value


def _as_sent(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """Check ``value`` against its type, then keep the client's own object: the Response
    echoes it key for key."""
    handler(value)
    return value


# ---- the types ------------------------------------------------------------------------------


def _str_or_list(value: Any) -> str:
    return "str" if isinstance(value, str) else "list"


Input = Annotated[
    Annotated[
        Annotated[str, Tag("str")] | Annotated[list[InputItem], Tag("list")],
        Discriminator(_str_or_list),
    ]
    | None,
    BeforeValidator(check_input),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string"},
                {"type": "array", "items": INPUT_ITEM_SCHEMA},
                {"type": "null"},
            ]
        }
    ),
]


class ConversationParam(TypedDict):
    """``{"id": "conv_…"}`` (``openai.types.responses.ResponseConversationParam``)."""

    id: str


Conversation = Annotated[
    str | ConversationParam | None,
    BeforeValidator(_check_conversation),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string"},
                {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]},
                {"type": "null"},
            ]
        }
    ),
]


class ToolChoiceFunction(TypedDict):
    type: Literal["function"]
    name: str


class ToolChoiceAllowedTools(TypedDict):
    type: Literal["allowed_tools"]
    mode: Literal["auto", "required"]
    tools: list[dict[str, Any]]


class ToolChoiceMcp(TypedDict):
    type: Literal["mcp"]
    server_label: str
    name: NotRequired[str | None]


# ``openai.types.responses.response_create_params.ToolChoice``, less the hosted tools resq
# does not run.
ToolChoice = Annotated[
    Literal["none", "auto", "required"]
    | ToolChoiceFunction
    | ToolChoiceAllowedTools
    | ToolChoiceMcp
    | None,
    WrapValidator(_as_sent),
    BeforeValidator(_tool_choice),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "enum": ["none", "auto", "required"]},
                {"type": "object"},
                {"type": "null"},
            ]
        }
    ),
]
