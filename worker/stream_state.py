"""Provider deltas → Responses output items and stream events (pure; no I/O).

``StreamState.apply(delta)`` returns the events a delta causes (unstamped models from
``shared.schema.events``; the emitter stamps sequence numbers) and keeps ``output``, the
output items so far. Items are opened and closed in the order the SDK helpers require (spec
digest §4.3): an item's ``output_item.added`` precedes its part and delta events, which
precede its ``output_item.done``; ``output_index`` is dense from 0.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shared import ids
from shared.schema import items as it
from shared.schema.events import (
    ContentPartEvent,
    FunctionCallArgumentsDelta,
    FunctionCallArgumentsDone,
    McpCallArgumentsDelta,
    McpCallArgumentsDone,
    McpEvent,
    OutputItemEvent,
    OutputTextDelta,
    OutputTextDone,
    ReasoningSummaryPartEvent,
    ReasoningSummaryTextDelta,
    ReasoningSummaryTextDone,
    RefusalDelta,
    RefusalDone,
    StreamEvent,
)
from worker.providers import base


@dataclass(frozen=True)
class McpTarget:
    """An MCP tool as the model sees it (a function), and where calls to it go."""

    server_label: str
    tool: str  # the tool's name on its server
    approval: bool  # calls need the user's approval first


@dataclass
class _Open:
    index: int
    kind: str  # "message", "reasoning", "function_call", "mcp_call", "mcp_approval_request"
    part: str | None = None  # open content part of a message: "output_text" / "refusal"
    tool_index: int | None = None
    buffer: list[str] = field(default_factory=list)


class StreamState:
    def __init__(
        self,
        new_id: Callable[[str], str] = ids.new_id,
        mcp: dict[str, McpTarget] | None = None,
    ) -> None:
        self.new_id = new_id
        self.mcp = mcp or {}  # function name the model calls → the MCP tool behind it
        self.output: list[dict[str, Any]] = []
        self.pending_calls: list[int] = []  # mcp_call items whose arguments are complete
        # Tool calls the model may still start (max_tool_calls); later ones are ignored.
        self.tool_budget: int | None = None
        self._ignored: set[int] = set()
        self.usage: base.Usage | None = None
        self.finish_reason: base.FinishReason | None = None
        self.done_indexes: list[int] = []  # items finished by the latest ``apply``/``close``
        self._open: _Open | None = None

    # ---- public ----------------------------------------------------------------------

    def apply(self, delta: base.Delta) -> list[StreamEvent]:
        self.done_indexes = []
        if isinstance(delta, base.TextDelta):
            return self._message_delta("output_text", delta.text)
        if isinstance(delta, base.RefusalDelta):
            return self._message_delta("refusal", delta.text)
        if isinstance(delta, base.ReasoningDelta):
            return self._reasoning_delta(delta.text)
        if isinstance(delta, base.ToolCallDelta):
            return self._tool_delta(delta)
        if isinstance(delta, base.Usage):
            self.usage = delta if self.usage is None else _add_usage(self.usage, delta)
        elif isinstance(delta, base.Finish):
            self.finish_reason = delta.reason
        return []

    def end_turn(self) -> list[StreamEvent]:
        """The model finished a turn: close its last item (calls stay pending)."""
        self.done_indexes = []
        self._ignored = set()
        return self._close("completed")

    def take_done(self) -> list[int]:
        done, self.done_indexes = self.done_indexes, []
        return done

    def close(self, status: str = "completed") -> list[StreamEvent]:
        """Finish the open item (if any) with ``status``; returns its closing events. MCP
        calls that never ran end too, ``incomplete``."""
        self.done_indexes = []
        events = self._close(status)
        for index in self.pending_calls:
            events += self._done(index, "incomplete")
        self.pending_calls = []
        return events

    # ---- MCP items the worker adds (not streamed by the model) ---------------------------

    def start_list_tools(self, server_label: str) -> tuple[int, list[StreamEvent]]:
        events = self._close("completed")
        item: dict[str, Any] = {
            "id": self.new_id(ids.MCP_LIST_TOOLS),
            "type": "mcp_list_tools",
            "server_label": server_label,
            "tools": [],
            "error": None,
        }
        index, added = self._add(item)
        return index, [*events, added, self._mcp_event("mcp_list_tools.in_progress", index)]

    def finish_list_tools(
        self, index: int, tools: list[dict[str, Any]], error: str | None
    ) -> list[StreamEvent]:
        item = self.output[index]
        item.update(tools=tools, error=error)
        outcome = "failed" if error else "completed"
        return [self._mcp_event(f"mcp_list_tools.{outcome}", index), *self._done(index, None)]

    def start_mcp_call(
        self, server_label: str, name: str, arguments: str, approval_request_id: str | None
    ) -> tuple[int, list[StreamEvent]]:
        """An approved call the worker makes before asking the model anything."""
        events = self._close("completed")
        item = _mcp_call_item(self.new_id(ids.MCP_CALL), server_label, name, arguments)
        item["approval_request_id"] = approval_request_id
        index, added = self._add(item)
        events += [added, self._mcp_event("mcp_call.in_progress", index)]
        events.append(
            McpCallArgumentsDone(item_id=item["id"], output_index=index, arguments=arguments)
        )
        self.pending_calls.append(index)
        return index, events

    def finish_mcp_call(
        self, index: int, *, output: str | None, error: dict[str, Any] | None
    ) -> list[StreamEvent]:
        item = self.output[index]
        item.update(output=output, error=error)
        self.pending_calls.remove(index)
        outcome = "failed" if error else "completed"
        return [
            self._mcp_event(f"mcp_call.{outcome}", index),
            *self._done(index, "failed" if error else "completed"),
        ]

    def _add(self, item: dict[str, Any]) -> tuple[int, StreamEvent]:
        index = len(self.output)
        self.output.append(item)
        return index, OutputItemEvent(
            type="response.output_item.added", output_index=index, item=_copy(item)
        )

    def _done(self, index: int, status: str | None) -> list[StreamEvent]:
        item = self.output[index]
        if status is not None:
            item["status"] = status
        self.done_indexes.append(index)
        return [
            OutputItemEvent(type="response.output_item.done", output_index=index, item=_copy(item))
        ]

    def _mcp_event(self, name: str, index: int) -> StreamEvent:
        return McpEvent(
            type=f"response.{name}",
            item_id=self.output[index]["id"],
            output_index=index,
        )

    # ---- items -----------------------------------------------------------------------

    def _start(self, item: dict[str, Any], kind: str, **extra: Any) -> tuple[_Open, StreamEvent]:
        index = len(self.output)
        self.output.append(item)
        self._open = _Open(index=index, kind=kind, **extra)
        added = OutputItemEvent(
            type="response.output_item.added", output_index=index, item=_copy(item)
        )
        return self._open, added

    def _close(self, status: str) -> list[StreamEvent]:
        current = self._open
        if current is None:
            return []
        events: list[StreamEvent] = []
        item = self.output[current.index]
        if current.kind == "message":
            events += self._close_part(current)
        elif current.kind == "reasoning":
            events += self._close_summary(current)
        elif current.kind == "function_call":
            item["arguments"] = "".join(current.buffer)
            events.append(
                FunctionCallArgumentsDone(
                    item_id=item["id"],
                    output_index=current.index,
                    name=item["name"],
                    arguments=item["arguments"],
                )
            )
        elif current.kind == "mcp_call":
            # Its arguments are complete; the call runs next, and its item ends after it.
            item["arguments"] = "".join(current.buffer)
            events.append(
                McpCallArgumentsDone(
                    item_id=item["id"], output_index=current.index, arguments=item["arguments"]
                )
            )
            self.pending_calls.append(current.index)
            self._open = None
            return events
        elif current.kind == "mcp_approval_request":
            item["arguments"] = "".join(current.buffer)
            self.done_indexes.append(current.index)
            self._open = None
            return [
                *events,
                OutputItemEvent(
                    type="response.output_item.done", output_index=current.index, item=_copy(item)
                ),
            ]
        item["status"] = status
        events.append(
            OutputItemEvent(
                type="response.output_item.done", output_index=current.index, item=_copy(item)
            )
        )
        self.done_indexes.append(current.index)
        self._open = None
        return events

    # ---- message ---------------------------------------------------------------------

    def _message_delta(self, part_type: str, text: str) -> list[StreamEvent]:
        events: list[StreamEvent] = []
        current = self._open
        if current is None or current.kind != "message":
            events += self._close("completed")
            current, added = self._start(it.output_message(self.new_id(ids.MESSAGE)), "message")
            events.append(added)
        item = self.output[current.index]
        if current.part != part_type:
            events += self._close_part(current)
            part = it.output_text_part() if part_type == "output_text" else it.refusal_part()
            item["content"].append(part)
            current.part = part_type
            events.append(
                ContentPartEvent(
                    type="response.content_part.added",
                    item_id=item["id"],
                    output_index=current.index,
                    content_index=len(item["content"]) - 1,
                    part=dict(part),
                )
            )
        current.buffer.append(text)
        where = _where(item, current)
        if part_type == "output_text":
            events.append(OutputTextDelta(**where, delta=text))
        else:
            events.append(RefusalDelta(**where, delta=text))
        return events

    def _close_part(self, current: _Open) -> list[StreamEvent]:
        if current.part is None:
            return []
        item = self.output[current.index]
        text = "".join(current.buffer)
        where = _where(item, current)
        done: StreamEvent
        if current.part == "output_text":
            part = it.output_text_part(text)
            done = OutputTextDone(**where, text=text)
        else:
            part = it.refusal_part(text)
            done = RefusalDone(**where, refusal=text)
        item["content"][where["content_index"]] = part
        current.part, current.buffer = None, []
        return [done, ContentPartEvent(type="response.content_part.done", **where, part=dict(part))]

    # ---- reasoning -------------------------------------------------------------------

    def _reasoning_delta(self, text: str) -> list[StreamEvent]:
        events: list[StreamEvent] = []
        current = self._open
        if current is None or current.kind != "reasoning":
            events += self._close("completed")
            item = it.reasoning_item(self.new_id(ids.REASONING))
            current, added = self._start(item, "reasoning")
            events.append(added)
            events.append(
                ReasoningSummaryPartEvent(
                    type="response.reasoning_summary_part.added",
                    item_id=item["id"],
                    output_index=current.index,
                    summary_index=0,
                    part={"type": "summary_text", "text": ""},
                )
            )
        item = self.output[current.index]
        current.buffer.append(text)
        events.append(
            ReasoningSummaryTextDelta(
                item_id=item["id"], output_index=current.index, summary_index=0, delta=text
            )
        )
        return events

    def _close_summary(self, current: _Open) -> list[StreamEvent]:
        item = self.output[current.index]
        text = "".join(current.buffer)
        part = {"type": "summary_text", "text": text}
        item["summary"] = [part]
        where = {"item_id": item["id"], "output_index": current.index, "summary_index": 0}
        return [
            ReasoningSummaryTextDone(**where, text=text),
            ReasoningSummaryPartEvent(
                type="response.reasoning_summary_part.done", **where, part=dict(part)
            ),
        ]

    # ---- function calls --------------------------------------------------------------

    def _tool_delta(self, delta: base.ToolCallDelta) -> list[StreamEvent]:
        events: list[StreamEvent] = []
        current = self._open
        if delta.index in self._ignored:
            return events
        if current is None or current.kind not in TOOL_KINDS or current.tool_index != delta.index:
            if self.tool_budget is not None:
                if self.tool_budget <= 0:
                    self._ignored.add(delta.index)
                    return events
                self.tool_budget -= 1
            events += self._close("completed")
            current, opened = self._start_tool(delta)
            events += opened
        item = self.output[current.index]
        if delta.arguments:
            current.buffer.append(delta.arguments)
            if current.kind == "function_call":
                events.append(
                    FunctionCallArgumentsDelta(
                        item_id=item["id"], output_index=current.index, delta=delta.arguments
                    )
                )
            elif current.kind == "mcp_call":
                events.append(
                    McpCallArgumentsDelta(
                        item_id=item["id"], output_index=current.index, delta=delta.arguments
                    )
                )
        return events

    def _start_tool(self, delta: base.ToolCallDelta) -> tuple[_Open, list[StreamEvent]]:
        target = self.mcp.get(delta.name or "")
        if target is None:
            item = it.function_call_item(
                self.new_id(ids.FUNCTION_CALL),
                delta.call_id or self.new_id(ids.CALL),
                delta.name or "",
            )
            current, added = self._start(item, "function_call", tool_index=delta.index)
            return current, [added]
        if target.approval:
            item = {
                "id": self.new_id(ids.MCP_APPROVAL_REQUEST),
                "type": "mcp_approval_request",
                "server_label": target.server_label,
                "name": target.tool,
                "arguments": "",
            }
            current, added = self._start(item, "mcp_approval_request", tool_index=delta.index)
            return current, [added]
        item = _mcp_call_item(self.new_id(ids.MCP_CALL), target.server_label, target.tool, "")
        current, added = self._start(item, "mcp_call", tool_index=delta.index)
        return current, [added, self._mcp_event("mcp_call.in_progress", current.index)]


TOOL_KINDS = ("function_call", "mcp_call", "mcp_approval_request")


def _add_usage(a: base.Usage, b: base.Usage) -> base.Usage:
    """Usage over several model turns (a tool loop)."""
    return base.Usage(
        a.input_tokens + b.input_tokens,
        a.output_tokens + b.output_tokens,
        a.reasoning_tokens + b.reasoning_tokens,
        a.cached_tokens + b.cached_tokens,
    )


def _mcp_call_item(item_id: str, server_label: str, name: str, arguments: str) -> dict[str, Any]:
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


def _where(item: dict[str, Any], current: _Open) -> dict[str, Any]:
    return {
        "item_id": item["id"],
        "output_index": current.index,
        "content_index": len(item["content"]) - 1,
    }


def _copy(item: dict[str, Any]) -> dict[str, Any]:
    """A snapshot of an item, safe from later mutation of its content list."""
    out = dict(item)
    for key in ("content", "summary"):
        if key in out:
            out[key] = [dict(p) for p in out[key]]
    return out
