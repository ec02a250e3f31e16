"""Tools a request brings (spec digest §3.4), as pydantic models: checked once at create,
stored with the response's parameters (``shared.schema.job``), and read typed by the worker.

- ``function`` tools: the flat Responses form; the nested Chat Completions form
  (``{"type": "function", "function": {...}}``) is accepted and flattened.
- ``mcp`` tools: ``server_label`` and ``server_url`` (checked by the outbound-address
  policy), ``allowed_tools``, ``require_approval`` (default ``"always"``, as OpenAI's),
  ``headers`` and ``authorization``. The last two are credentials: they are never echoed,
  and travel to the worker sealed (``shared.secrets``).

The error messages, params and codes are OpenAI's, and each tool's fields are checked in the
order its fields are declared, so the first problem is the one reported. A tool dumps in the
key order the client sent (OpenAI echoes tools that way), so the stored and echoed JSON is
exactly what the client's tool was, defaults filled.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from shared.errors import InvalidRequest
from shared.schema.validation import custom_error, json_type_name, to_invalid_request

SUPPORTED_TYPES = ("function", "mcp")
CREDENTIALS = ("headers", "authorization")
APPROVAL_MODES = ("always", "never")

CheckUrl = Callable[..., None]  # (url, *, param) → raises InvalidRequest


def _param(info: ValidationInfo) -> str:
    """Where the tool being checked sits in the request (``tools[2]``)."""
    return str((info.context or {}).get("param", "tools"))


def _require_str(value: Any, param: str) -> str:
    if value is None:
        raise custom_error(
            "missing_required_parameter", f"Missing required parameter: '{param}'.", param
        )
    if not isinstance(value, str) or not value:
        raise custom_error(
            "invalid_type",
            f"Invalid type for '{param}': expected a non-empty string, but got "
            f"{json_type_name(value)} instead.",
            param,
        )
    return value


def _str_list(value: Any, param: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise custom_error(
            "invalid_type", f"Invalid type for '{param}': expected an array of strings.", param
        )
    return value


class _Echoed(BaseModel):
    """A JSON object kept in the key order it arrived in: ``_keys`` are the keys it dumps,
    in order (unknown keys included: OpenAI echoes them)."""

    model_config = ConfigDict(extra="allow")
    _keys: tuple[str, ...] = PrivateAttr(default=())

    @classmethod
    def _echo_keys(cls, data: dict[str, Any]) -> tuple[str, ...]:
        return tuple(data)

    @classmethod
    def _normalise(cls, data: Any) -> Any:
        return data

    @model_validator(mode="wrap")
    @classmethod
    def _remember_order(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        data = cls._normalise(data)
        model = handler(data)
        if isinstance(data, dict):
            model._keys = cls._echo_keys(data)
        return model

    @model_serializer(mode="wrap")
    def _in_order(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        return {key: data[key] for key in self._keys if key in data}


class ToolNames(_Echoed):
    tool_names: list[str]


class McpToolFilter(_Echoed):
    """``allowed_tools`` as an object: these names, and/or only the read-only tools."""

    tool_names: list[str] | None = None
    read_only: Any = None  # truthy: only tools annotated readOnlyHint (not type-checked)


class McpApprovalFilter(_Echoed):
    """``require_approval`` per tool: names in ``never`` run at once, the rest ask."""

    always: ToolNames | None = None
    never: ToolNames | None = None


class FunctionTool(_Echoed):
    """A function the client runs. Declared in checking order; dumped in OpenAI's echo
    order (``type``, ``description``, ``parameters``, ``strict``, then the rest as sent)."""

    type: Literal["function"] = "function"
    name: str = Field(default=None, validate_default=True)
    parameters: dict[str, Any] | None = None
    description: Any = None  # echoed as sent
    strict: Any = True  # echoed as sent

    @classmethod
    def _echo_keys(cls, data: dict[str, Any]) -> tuple[str, ...]:
        lead = ("type", "description", "parameters", "strict")
        return (*lead, *(key for key in data if key not in lead))

    @classmethod
    def _normalise(cls, data: Any) -> Any:
        """The Chat Completions form: ``{"type": "function", "function": {...}}``."""
        if isinstance(data, dict) and isinstance(data.get("function"), dict):
            return {**{k: v for k, v in data.items() if k != "function"}, **data["function"]}
        return data

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, value: Any, info: ValidationInfo) -> Any:
        return _require_str(value, f"{_param(info)}.name")

    @field_validator("parameters", mode="before")
    @classmethod
    def _parameters(cls, value: Any, info: ValidationInfo) -> Any:
        if value is not None and not isinstance(value, dict):
            param = f"{_param(info)}.parameters"
            raise custom_error(
                "invalid_type", f"Invalid type for '{param}': expected an object.", param
            )
        return value


class McpTool(_Echoed):
    """An MCP server the worker calls. Its credentials are checked here but never dumped
    (``prepare_tools`` hands them out for sealing)."""

    type: Literal["mcp"] = "mcp"
    server_label: str = Field(default=None, validate_default=True)
    connector_id: None = None
    server_url: str = Field(default=None, validate_default=True)
    headers: dict[str, str] | None = Field(default=None, exclude=True)
    authorization: str | None = Field(default=None, exclude=True)
    allowed_tools: list[str] | McpToolFilter | None = None
    require_approval: Literal["always", "never"] | McpApprovalFilter = "always"

    @classmethod
    def _echo_keys(cls, data: dict[str, Any]) -> tuple[str, ...]:
        keys = tuple(key for key in data if key not in CREDENTIALS)
        return keys if "require_approval" in keys else (*keys, "require_approval")

    @field_validator("server_label", mode="before")
    @classmethod
    def _label(cls, value: Any, info: ValidationInfo) -> Any:
        return _require_str(value, f"{_param(info)}.server_label")

    @field_validator("connector_id", mode="before")
    @classmethod
    def _no_connector(cls, value: Any, info: ValidationInfo) -> Any:
        if value is not None:
            raise custom_error(
                "unsupported_parameter",
                "MCP connectors ('connector_id') are not supported by this resq server; give a "
                "'server_url'.",
                f"{_param(info)}.connector_id",
            )
        return value

    @field_validator("server_url", mode="before")
    @classmethod
    def _url(cls, value: Any, info: ValidationInfo) -> Any:
        param = f"{_param(info)}.server_url"
        url = _require_str(value, param)
        check_url: CheckUrl | None = (info.context or {}).get("check_url")
        # Only for a tool fine so far: the check resolves the host, and an earlier problem
        # is the one reported.
        if check_url is not None and {"server_label", "connector_id"} <= info.data.keys():
            check_url(url, param=param)  # InvalidRequest goes straight out, as the first error
        return url

    @field_validator("headers", mode="before")
    @classmethod
    def _headers(cls, value: Any, info: ValidationInfo) -> Any:
        if value is not None and (
            not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values())
        ):
            param = f"{_param(info)}.headers"
            raise custom_error(
                "invalid_type", f"Invalid type for '{param}': expected an object of strings.", param
            )
        return value

    @field_validator("authorization", mode="before")
    @classmethod
    def _authorization(cls, value: Any, info: ValidationInfo) -> Any:
        if value is not None and not isinstance(value, str):
            param = f"{_param(info)}.authorization"
            raise custom_error(
                "invalid_type", f"Invalid type for '{param}': expected a string.", param
            )
        return value

    @field_validator("allowed_tools", mode="before")
    @classmethod
    def _allowed(cls, value: Any, info: ValidationInfo) -> Any:
        param = f"{_param(info)}.allowed_tools"
        if isinstance(value, dict):
            if value.get("tool_names") is not None:
                _str_list(value["tool_names"], f"{param}.tool_names")
        elif value is not None:
            _str_list(value, param)
        return value

    @field_validator("require_approval", mode="before")
    @classmethod
    def _approval(cls, value: Any, info: ValidationInfo) -> Any:
        param = f"{_param(info)}.require_approval"
        if not isinstance(value, dict):
            if value not in APPROVAL_MODES:
                raise custom_error(
                    "invalid_value",
                    f"Invalid value: {value!r}. Supported values are: 'always' and 'never'.",
                    param,
                )
            return value
        for mode in APPROVAL_MODES:
            rule = value.get(mode)
            if rule is not None and (not isinstance(rule, dict) or rule.get("tool_names") is None):
                raise custom_error(
                    "invalid_value",
                    f"Invalid '{param}.{mode}': expected {{'tool_names': [...]}}.",
                    f"{param}.{mode}",
                )
            if rule is not None:
                _str_list(rule["tool_names"], f"{param}.{mode}.tool_names")
        return value

    def credentials(self) -> dict[str, Any]:
        """What is sealed for the worker: the ``headers`` and ``authorization`` sent."""
        found = {"headers": self.headers, "authorization": self.authorization}
        return {key: value for key, value in found.items() if value is not None}


Tool = Annotated[FunctionTool | McpTool, Field(discriminator="type")]


@dataclass(frozen=True)
class Tools:
    tools: list[FunctionTool | McpTool] = field(default_factory=list)
    echo: list[dict[str, Any]] = field(default_factory=list)  # as the Response echoes them
    credentials: dict[str, dict[str, Any]] = field(default_factory=dict)  # by server_label


def _invalid(message: str, param: str, code: str) -> InvalidRequest:
    return InvalidRequest(message, param=param, code=code)


def _parse(tool: Any, param: str, check_url: CheckUrl) -> FunctionTool | McpTool:
    if not isinstance(tool, dict):
        raise _invalid(
            f"Invalid type for '{param}': expected an object, but got "
            f"{json_type_name(tool)} instead.",
            param,
            "invalid_type",
        )
    kind = tool.get("type")
    model: type[FunctionTool | McpTool]
    if kind == "function":
        model = FunctionTool
    elif kind == "mcp":
        model = McpTool
    else:
        raise _invalid(
            f"Unsupported tool type: {kind!r}. This resq server supports 'function' and "
            "'mcp' tools.",
            f"{param}.type",
            "unsupported_parameter",
        )
    try:
        return model.model_validate(tool, context={"param": param, "check_url": check_url})
    except ValidationError as exc:
        raise to_invalid_request(exc) from None


def prepare_tools(raw: list[dict[str, Any]] | None, check_url: CheckUrl) -> Tools:
    """Check a request's tools; the typed tools, their echo, and the MCP credentials."""
    tools: list[FunctionTool | McpTool] = []
    credentials: dict[str, dict[str, Any]] = {}
    for i, raw_tool in enumerate(raw or []):
        param = f"tools[{i}]"
        tool = _parse(raw_tool, param, check_url)
        if isinstance(tool, McpTool):
            label = tool.server_label
            if any(isinstance(t, McpTool) and t.server_label == label for t in tools):
                raise _invalid(
                    f"Duplicate MCP server_label '{label}': each MCP tool needs its own label.",
                    f"{param}.server_label",
                    "invalid_value",
                )
            if tool.credentials():
                credentials[label] = tool.credentials()
        tools.append(tool)
    return Tools(tools=tools, echo=[t.model_dump() for t in tools], credentials=credentials)
