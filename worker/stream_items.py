"""The pieces ``worker.stream_state`` builds output items and their events from (pure).

The item dicts the worker adds itself (MCP listings, calls, approval requests), where an
event inside an item points (``item_id``, ``output_index``, ``content_index``), snapshots of
items for events, and usage summed over a tool loop's model turns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shared.schema.events import OutputItemEvent, StreamEvent
from worker.providers import base

# The kinds of item a model's tool call opens.
TOOL_KINDS = ("function_call", "mcp_call", "mcp_approval_request")


@dataclass(frozen=True)
class McpTarget:
    """An MCP tool as the model sees it (a function), and where calls to it go."""

    server_label: str
    tool: str  # the tool's name on its server
    approval: bool  # calls need the user's approval first


@dataclass
class OpenItem:
    """The output item the model is streaming into."""

    index: int
    kind: str  # "message", "reasoning", "function_call", "mcp_call", "mcp_approval_request"
    part: str | None = None  # open content part of a message: "output_text" / "refusal"
    tool_index: int | None = None
    buffer: list[str] = field(default_factory=list)
    summary_key: int | None = None  # the upstream's number of a reasoning item's open part


def mcp_list_tools_item(item_id: str, server_label: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "mcp_list_tools",
        "server_label": server_label,
        "tools": [],
        "error": None,
    }


def mcp_call_item(item_id: str, server_label: str, name: str, arguments: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "mcp_call",
        "status": "in_progress",
        "server_label": server_label,
        "name": name,
        "arguments": arguments,
        "output": None,
        "error": None,
        "approval_request_id": None,
    }


def mcp_approval_request_item(item_id: str, server_label: str, name: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "mcp_approval_request",
        "server_label": server_label,
        "name": name,
        "arguments": "",
    }


def item_event(done: bool, index: int, item: dict[str, Any]) -> StreamEvent:
    """``response.output_item.added`` (or ``.done``) with a snapshot of ``item``."""
    kind = "response.output_item.done" if done else "response.output_item.added"
    return OutputItemEvent(type=kind, output_index=index, item=snapshot(item))


def part_location(item: dict[str, Any], current: OpenItem) -> dict[str, Any]:
    """Where an event about the open content part of a message points."""
    return {
        "item_id": item["id"],
        "output_index": current.index,
        "content_index": len(item["content"]) - 1,
    }


def snapshot(item: dict[str, Any]) -> dict[str, Any]:
    """A snapshot of an item, safe from later mutation of its content list."""
    out = dict(item)
    for key in ("content", "summary"):
        if key in out:
            out[key] = [dict(p) for p in out[key]]
    return out


def add_usage(a: base.Usage, b: base.Usage) -> base.Usage:
    """Usage over several model turns (a tool loop)."""
    return base.Usage(
        a.input_tokens + b.input_tokens,
        a.output_tokens + b.output_tokens,
        a.reasoning_tokens + b.reasoning_tokens,
        a.cached_tokens + b.cached_tokens,
        a.cache_write_tokens + b.cache_write_tokens,
    )
