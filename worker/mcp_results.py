"""What an MCP operation gives back: tools, errors, a cancelled call. Kept apart from
``worker.mcp_client`` so code that handles MCP results does not load the ``mcp`` SDK (about
26 MiB per worker process) until a response actually uses an MCP server."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

ErrorKind = Literal["protocol", "http", "connection", "tool"]


@dataclass(frozen=True)
class McpTool:
    """A tool as the server lists it; ``annotations`` uses the wire (camelCase) keys."""

    name: str
    description: str | None
    input_schema: dict[str, Any]
    annotations: dict[str, Any] | None


class McpError(Exception):
    """A failed MCP operation.

    ``kind`` is ``"tool"`` (the tool ran and reported an error; ``content`` is its text),
    ``"http"`` (``code`` is the HTTP status), ``"connection"`` (unreachable, refused or timed
    out) or ``"protocol"`` (a JSON-RPC error, ``code`` is its code, or a malformed answer).
    """

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        code: int | None = None,
        content: str | None = None,
    ) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind
        self.code = code
        self.message = message
        self.content = content

    def __repr__(self) -> str:
        return f"McpError(kind={self.kind!r}, code={self.code!r}, message={self.message!r})"


class McpCancelled(Exception):
    """The ``cancelled`` callback asked to stop; the call was abandoned."""
