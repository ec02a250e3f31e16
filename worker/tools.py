"""The tools of one run: function tools (run by the client) and MCP servers (run here).

``Toolbox.build`` takes the job's typed tools (``shared.schema.tools``) plus the unsealed
credentials.
MCP tools are shown to the model as function tools; ``targets`` maps the name the model
calls to the server and tool behind it (README, "Tools").
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from shared.errors import InvalidRequest
from shared.netpolicy import OutboundPolicy
from shared.schema.tools import FunctionTool, McpApprovalFilter, McpTool, McpToolFilter
from worker.mcp_results import McpError
from worker.stream_items import McpTarget

log = logging.getLogger(__name__)

CONNECTION_ERROR_CODE = 502  # an http_error for a server resq could not reach at all


@dataclass(frozen=True)
class McpServer:
    label: str
    url: str
    headers: dict[str, str]
    allowed: frozenset[str] | None
    read_only: bool
    approval: Literal["always", "never"] | McpApprovalFilter

    @classmethod
    def from_tool(cls, tool: McpTool, credentials: dict[str, Any]) -> McpServer:
        headers = dict(credentials.get("headers") or {})
        if credentials.get("authorization"):
            headers["Authorization"] = f"Bearer {credentials['authorization']}"
        allowed = tool.allowed_tools
        read_only = False
        if isinstance(allowed, McpToolFilter):
            read_only = bool(allowed.read_only)
            allowed = allowed.tool_names
        return cls(
            label=tool.server_label,
            url=tool.server_url,
            headers=headers,
            allowed=frozenset(allowed) if allowed is not None else None,
            read_only=read_only,
            approval=tool.require_approval,
        )

    def needs_approval(self, tool: str) -> bool:
        rule = self.approval
        if isinstance(rule, McpApprovalFilter):
            for names, needed in ((rule.never, False), (rule.always, True)):
                if names is not None and tool in names.tool_names:
                    return needed
            return True
        return rule != "never"

    def offers(self, tool: dict[str, Any]) -> bool:
        if self.allowed is not None and tool["name"] not in self.allowed:
            return False
        hints = tool.get("annotations") or {}
        return not self.read_only or bool(hints.get("readOnlyHint"))


@dataclass
class Toolbox:
    functions: list[dict[str, Any]]  # the client's function tools
    servers: dict[str, McpServer]
    timeout: float
    outbound: OutboundPolicy | None = None
    listed: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # label → tools
    targets: dict[str, McpTarget] = field(default_factory=dict)  # model's name → MCP tool

    @classmethod
    def build(
        cls,
        tools: Sequence[FunctionTool | McpTool],
        credentials: dict[str, dict[str, Any]],
        *,
        timeout: float,
        outbound: OutboundPolicy | None,
    ) -> Toolbox:
        servers = {
            t.server_label: McpServer.from_tool(t, credentials.get(t.server_label, {}))
            for t in tools
            if isinstance(t, McpTool)
        }
        functions = [t.model_dump() for t in tools if isinstance(t, FunctionTool)]
        return cls(functions=functions, servers=servers, timeout=timeout, outbound=outbound)

    def known_listing(self, label: str, items: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
        """The tools an earlier, successful listing of this server in the context found."""
        for item in reversed(items):
            if (
                item.get("type") == "mcp_list_tools"
                and item.get("server_label") == label
                and not item.get("error")
            ):
                return list(item.get("tools") or [])
        return None

    def list_tools(self, server: McpServer) -> tuple[list[dict[str, Any]], str | None]:
        """The server's tools this request allows, or an error message."""
        try:
            self._check(server)
            from worker import mcp_client  # the SDK loads on first use (worker.mcp_results)

            found = mcp_client.list_tools(server.url, headers=server.headers, timeout=self.timeout)
        except McpError as exc:
            log.warning("MCP server %s: listing tools failed: %s", server.label, exc.message)
            return [], exc.message
        tools = [
            {
                "name": t.name,
                "input_schema": t.input_schema,
                "description": t.description,
                "annotations": t.annotations,
            }
            for t in found
        ]
        return [t for t in tools if server.offers(t)], None

    def register(self, label: str, tools: list[dict[str, Any]]) -> None:
        """Show a server's tools to the model."""
        server = self.servers[label]
        self.listed[label] = tools
        taken = {f["name"] for f in self.functions} | set(self.targets)
        for tool in tools:
            name = tool["name"] if tool["name"] not in taken else f"{label}__{tool['name']}"
            self.targets[name] = McpTarget(label, tool["name"], server.needs_approval(tool["name"]))

    def model_tools(self) -> list[dict[str, Any]]:
        """Every tool as the function the model sees."""
        specs = list(self.functions)
        for name, target in self.targets.items():
            tool = next(t for t in self.listed[target.server_label] if t["name"] == target.tool)
            specs.append(
                {
                    "type": "function",
                    "name": name,
                    "description": tool.get("description"),
                    "parameters": tool.get("input_schema") or {"type": "object"},
                    "strict": False,
                }
            )
        return specs

    def for_model(self, choice: Any) -> tuple[list[dict[str, Any]], Any]:
        """The tools and the ``tool_choice`` to send the model, with MCP choices and
        ``allowed_tools`` resolved into plain function terms (``auto``, ``none``,
        ``required`` or ``{"type": "function", "name"}``)."""
        tools = self.model_tools()
        if not isinstance(choice, dict):
            return tools, choice
        kind = choice.get("type")
        if kind == "mcp":
            label, tool = choice.get("server_label"), choice.get("name")
            for name, target in self.targets.items():
                if target.server_label == label and (tool is None or target.tool == tool):
                    if tool is not None:
                        return tools, {"type": "function", "name": name}
                    allowed = {n for n, t in self.targets.items() if t.server_label == label}
                    return [t for t in tools if t["name"] in allowed], "required"
            return tools, "auto"  # nothing of that server is available
        if kind == "allowed_tools":
            names: set[str] = set()
            for entry in choice.get("tools") or []:
                if entry.get("type") == "function":
                    names.add(entry.get("name"))
                elif entry.get("type") == "mcp":
                    names |= {
                        n
                        for n, t in self.targets.items()
                        if t.server_label == entry.get("server_label")
                        and (entry.get("name") is None or t.tool == entry.get("name"))
                    }
            return [t for t in tools if t["name"] in names], choice.get("mode", "auto")
        return tools, choice

    def call(
        self, label: str, tool: str, arguments: str, cancelled: Callable[[], bool]
    ) -> tuple[str | None, dict[str, Any] | None]:
        """Run one MCP call: (output, None) or (None, the mcp_call error object). Raises
        ``McpCancelled`` when ``cancelled`` turns true meanwhile."""
        server = self.servers.get(label)
        if server is None:
            message = f"No MCP server labelled '{label}' in this request's tools."
            return None, {"type": "mcp_protocol_error", "code": -32602, "message": message}
        try:
            args = json.loads(arguments or "{}")
        except ValueError as exc:
            message = f"The arguments are not valid JSON: {exc}"
            return None, {"type": "mcp_protocol_error", "code": -32602, "message": message}
        if not isinstance(args, dict):
            message = "The arguments must be a JSON object."
            return None, {"type": "mcp_protocol_error", "code": -32602, "message": message}
        try:
            self._check(server)
            from worker import mcp_client  # the SDK loads on first use (worker.mcp_results)

            output = mcp_client.call_tool(
                server.url,
                tool,
                args,
                headers=server.headers,
                timeout=self.timeout,
                cancelled=cancelled,
            )
        except McpError as exc:
            log.warning("MCP server %s: %s failed: %s", label, tool, exc.message)
            return None, _error_object(exc)
        return output, None

    def _check(self, server: McpServer) -> None:
        """The address policy, again before every connection (DNS may have changed)."""
        if self.outbound is None:
            return
        try:
            self.outbound.check_url(server.url, param="server_url")
        except InvalidRequest as exc:
            raise McpError("connection", exc.message) from None


def _error_object(exc: McpError) -> dict[str, Any]:
    if exc.kind == "tool":
        text = exc.content if exc.content is not None else exc.message
        return {"type": "mcp_tool_execution_error", "content": [{"type": "text", "text": text}]}
    if exc.kind == "protocol":
        return {"type": "mcp_protocol_error", "code": exc.code or -32603, "message": exc.message}
    code = exc.code if exc.kind == "http" and exc.code else CONNECTION_ERROR_CODE
    return {"type": "http_error", "code": code, "message": exc.message}
