"""Tools a request brings (spec digest §3.4): checked, normalised, and split into what the
Response echoes and the credentials the run needs.

- ``function`` tools: the flat Responses form; the nested Chat Completions form
  (``{"type": "function", "function": {...}}``) is accepted and flattened.
- ``mcp`` tools: ``server_label`` and ``server_url`` (checked by the outbound-address
  policy), ``allowed_tools``, ``require_approval`` (default ``"always"``, as OpenAI's),
  ``headers`` and ``authorization``. The last two are credentials: they are never echoed,
  and travel to the worker sealed (``shared.secrets``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shared.errors import InvalidRequest
from shared.schema.validation import json_type_name

SUPPORTED_TYPES = ("function", "mcp")
CREDENTIALS = ("headers", "authorization")
APPROVAL_MODES = ("always", "never")

CheckUrl = Callable[..., None]  # (url, *, param) → raises InvalidRequest


@dataclass(frozen=True)
class Tools:
    echo: list[dict[str, Any]] = field(default_factory=list)
    credentials: dict[str, dict[str, Any]] = field(default_factory=dict)  # by server_label


def _invalid(message: str, param: str, code: str = "invalid_value") -> InvalidRequest:
    return InvalidRequest(message, param=param, code=code)


def _require_str(tool: dict[str, Any], key: str, param: str) -> str:
    value = tool.get(key)
    if value is None:
        raise _invalid(
            f"Missing required parameter: '{param}.{key}'.",
            f"{param}.{key}",
            "missing_required_parameter",
        )
    if not isinstance(value, str) or not value:
        raise _invalid(
            f"Invalid type for '{param}.{key}': expected a non-empty string, but got "
            f"{json_type_name(value)} instead.",
            f"{param}.{key}",
            "invalid_type",
        )
    return value


def _str_list(value: Any, param: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _invalid(
            f"Invalid type for '{param}': expected an array of strings.", param, "invalid_type"
        )
    return value


def _function(tool: dict[str, Any], param: str) -> dict[str, Any]:
    nested = tool.get("function")
    if isinstance(nested, dict):  # the Chat Completions form
        tool = {**{k: v for k, v in tool.items() if k != "function"}, **nested}
    _require_str(tool, "name", param)
    if tool.get("parameters") is not None and not isinstance(tool["parameters"], dict):
        raise _invalid(
            f"Invalid type for '{param}.parameters': expected an object.",
            f"{param}.parameters",
            "invalid_type",
        )
    return {"type": "function", "description": None, "parameters": None, "strict": True, **tool}


def _mcp(tool: dict[str, Any], param: str, check_url: CheckUrl) -> dict[str, Any]:
    _require_str(tool, "server_label", param)
    if tool.get("connector_id") is not None:
        raise _invalid(
            "MCP connectors ('connector_id') are not supported by this resq server; give a "
            "'server_url'.",
            f"{param}.connector_id",
            "unsupported_parameter",
        )
    url = _require_str(tool, "server_url", param)
    check_url(url, param=f"{param}.server_url")
    headers = tool.get("headers")
    if headers is not None and (
        not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values())
    ):
        raise _invalid(
            f"Invalid type for '{param}.headers': expected an object of strings.",
            f"{param}.headers",
            "invalid_type",
        )
    if tool.get("authorization") is not None and not isinstance(tool["authorization"], str):
        raise _invalid(
            f"Invalid type for '{param}.authorization': expected a string.",
            f"{param}.authorization",
            "invalid_type",
        )
    allowed = tool.get("allowed_tools")
    if isinstance(allowed, dict):
        if allowed.get("tool_names") is not None:
            _str_list(allowed["tool_names"], f"{param}.allowed_tools.tool_names")
    elif allowed is not None:
        _str_list(allowed, f"{param}.allowed_tools")
    approval = tool.get("require_approval", "always")
    if isinstance(approval, dict):
        for mode in APPROVAL_MODES:
            rule = approval.get(mode)
            if rule is not None and (not isinstance(rule, dict) or rule.get("tool_names") is None):
                raise _invalid(
                    f"Invalid '{param}.require_approval.{mode}': expected {{'tool_names': [...]}}.",
                    f"{param}.require_approval.{mode}",
                )
            if rule is not None:
                _str_list(rule["tool_names"], f"{param}.require_approval.{mode}.tool_names")
    elif approval not in APPROVAL_MODES:
        raise _invalid(
            f"Invalid value: {approval!r}. Supported values are: 'always' and 'never'.",
            f"{param}.require_approval",
        )
    echo = {k: v for k, v in tool.items() if k not in CREDENTIALS}
    echo["require_approval"] = approval
    return echo


def prepare_tools(raw: list[dict[str, Any]] | None, check_url: CheckUrl) -> Tools:
    echo: list[dict[str, Any]] = []
    credentials: dict[str, dict[str, Any]] = {}
    for i, tool in enumerate(raw or []):
        param = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise _invalid(
                f"Invalid type for '{param}': expected an object, but got "
                f"{json_type_name(tool)} instead.",
                param,
                "invalid_type",
            )
        kind = tool.get("type")
        if kind == "function":
            echo.append(_function(tool, param))
        elif kind == "mcp":
            item = _mcp(tool, param, check_url)
            label = item["server_label"]
            if any(t.get("server_label") == label for t in echo if t["type"] == "mcp"):
                raise _invalid(
                    f"Duplicate MCP server_label '{label}': each MCP tool needs its own label.",
                    f"{param}.server_label",
                )
            echo.append(item)
            secret = {k: tool[k] for k in CREDENTIALS if tool.get(k) is not None}
            if secret:
                credentials[label] = secret
        else:
            raise _invalid(
                f"Unsupported tool type: {kind!r}. This resq server supports 'function' and "
                "'mcp' tools.",
                f"{param}.type",
                "unsupported_parameter",
            )
    return Tools(echo=echo, credentials=credentials)
