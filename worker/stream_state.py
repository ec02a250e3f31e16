"""Provider deltas → Responses output items and stream events (pure; no I/O).

``StreamState.apply(delta)`` returns the events a delta causes (unstamped models from
``shared.schema.events``; the emitter stamps sequence numbers) and keeps ``output``, the
output items so far. Items are opened and closed in the order the SDK helpers require (spec
digest §4.3): an item's ``output_item.added`` precedes its part and delta events, which
precede its ``output_item.done``; ``output_index`` is dense from 0. An item is finished
exactly when its ``output_item.done`` is among the returned events (``worker.publisher``
saves it then).
"""

from __future__ import annotations

from collections.abc import Callable
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
from worker.stream_items import (
    TOOL_KINDS,
    McpTarget,
    OpenItem,
    add_usage,
    item_event,
    mcp_approval_request_item,
    mcp_call_item,
    mcp_list_tools_item,
    part_location,
)


def _no_mcp(_name: str) -> McpTarget | None:
    return None


class StreamState:
    def __init__(
        self,
        new_id: Callable[[str], str] = ids.new_id,
        *,
        mcp: Callable[[str], McpTarget | None] = _no_mcp,
        tool_budget: int | None = None,
        reveal_encrypted: bool = False,
    ) -> None:
        """``mcp``: the MCP tool behind a function name the model calls, if any (asked when
        the call starts: the run's toolbox learns the names as it lists servers).
        ``tool_budget``: the tool calls this response may still make (``max_tool_calls``);
        calls the model starts beyond it are ignored. ``reveal_encrypted``: the request
        ``include``s ``reasoning.encrypted_content``, so events show it; ``output`` always keeps
        it (the next turn sends it upstream again)."""
        self.new_id = new_id
        self.reveal_encrypted = reveal_encrypted
        self.mcp = mcp
        self.tool_budget = tool_budget
        self.output: list[dict[str, Any]] = []
        self.pending_calls: list[int] = []  # mcp_call items whose arguments are complete
        self._ignored: set[int] = set()
        self.usage: base.Usage | None = None
        self.finish_reason: base.FinishReason | None = None
        self._open: OpenItem | None = None

    # ---- public ----------------------------------------------------------------------

    @property
    def out_of_calls(self) -> bool:
        return self.tool_budget is not None and self.tool_budget <= 0

    def apply(self, delta: base.Delta) -> list[StreamEvent]:
        if isinstance(delta, base.TextDelta):
            return self._message_delta("output_text", delta.text)
        if isinstance(delta, base.RefusalDelta):
            return self._message_delta("refusal", delta.text)
        if isinstance(delta, base.ReasoningDelta):
            return self._reasoning_delta(delta.text, delta.part)
        if isinstance(delta, base.ReasoningDone):
            return self._reasoning_done(delta.encrypted_content)
        if isinstance(delta, base.ToolCallDelta):
            return self._tool_delta(delta)
        if isinstance(delta, base.Usage):
            self.usage = delta if self.usage is None else add_usage(self.usage, delta)
        elif isinstance(delta, base.Finish):
            self.finish_reason = delta.reason
        return []

    def end_turn(self) -> list[StreamEvent]:
        """The model finished a turn: close its last item (calls stay pending)."""
        self._ignored = set()
        return self._close("completed")

    def close(self, status: str = "completed") -> list[StreamEvent]:
        """Finish the open item (if any) with ``status``; returns its closing events. MCP
        calls that never ran end too, ``incomplete``."""
        events = self._close(status)
        for index in self.pending_calls:
            events += self._done(index, "incomplete")
        self.pending_calls = []
        return events

    # ---- MCP items the worker adds (not streamed by the model) ---------------------------

    def start_list_tools(self, server_label: str) -> tuple[int, list[StreamEvent]]:
        events = self._close("completed")
        item = mcp_list_tools_item(self.new_id(ids.MCP_LIST_TOOLS), server_label)
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
        """An approved call the worker makes before asking the model anything (it counts
        against the tool budget)."""
        if self.tool_budget is not None:
            self.tool_budget -= 1
        events = self._close("completed")
        item = mcp_call_item(self.new_id(ids.MCP_CALL), server_label, name, arguments)
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
        return index, item_event(False, index, item)

    def _done(self, index: int, status: str | None) -> list[StreamEvent]:
        item = self.output[index]
        if status is not None:
            item["status"] = status
        event = item_event(True, index, item)
        if item.get("encrypted_content") and not self.reveal_encrypted:
            assert isinstance(event, OutputItemEvent)
            del event.item["encrypted_content"]
        return [event]

    def _mcp_event(self, name: str, index: int) -> StreamEvent:
        return McpEvent(
            type=f"response.{name}",
            item_id=self.output[index]["id"],
            output_index=index,
        )

    # ---- items -----------------------------------------------------------------------

    def _start(self, item: dict[str, Any], kind: str, **extra: Any) -> tuple[OpenItem, StreamEvent]:
        index, added = self._add(item)
        self._open = OpenItem(index=index, kind=kind, **extra)
        return self._open, added

    def _close(self, status: str) -> list[StreamEvent]:
        current = self._open
        if current is None:
            return []
        self._open = None
        item = self.output[current.index]
        if current.kind == "message":
            events = self._close_part(current)
        elif current.kind == "reasoning":
            events = self._close_summary(current)
        else:  # a tool call: its arguments are complete
            item["arguments"] = "".join(current.buffer)
            events = []
        if current.kind == "function_call":
            events.append(
                FunctionCallArgumentsDone(
                    item_id=item["id"],
                    output_index=current.index,
                    name=item["name"],
                    arguments=item["arguments"],
                )
            )
        elif current.kind == "mcp_call":
            # The call runs next, and its item ends after it.
            self.pending_calls.append(current.index)
            return [
                McpCallArgumentsDone(
                    item_id=item["id"], output_index=current.index, arguments=item["arguments"]
                )
            ]
        elif current.kind == "mcp_approval_request":
            return self._done(current.index, None)
        return [*events, *self._done(current.index, status)]

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
        where = part_location(item, current)
        if part_type == "output_text":
            events.append(OutputTextDelta(**where, delta=text))
        else:
            events.append(RefusalDelta(**where, delta=text))
        return events

    def _close_part(self, current: OpenItem) -> list[StreamEvent]:
        if current.part is None:
            return []
        item = self.output[current.index]
        text = "".join(current.buffer)
        where = part_location(item, current)
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

    def _reasoning_delta(self, text: str, key: int) -> list[StreamEvent]:
        """Summary text; ``key`` is the upstream's number for its part: a new one closes the
        open part and opens the next."""
        events: list[StreamEvent] = []
        current = self._open
        if current is None or current.kind != "reasoning":
            events += self._close("completed")
            item = it.reasoning_item(self.new_id(ids.REASONING))
            current, added = self._start(item, "reasoning")
            events.append(added)
        item = self.output[current.index]
        if current.summary_key is not None and current.summary_key != key:
            events += self._close_summary(current)
        where = {
            "item_id": item["id"],
            "output_index": current.index,
            "summary_index": len(item["summary"]),
        }
        if current.summary_key is None:
            current.summary_key = key
            part = {"type": "summary_text", "text": ""}
            events.append(
                ReasoningSummaryPartEvent(
                    type="response.reasoning_summary_part.added", **where, part=part
                )
            )
        current.buffer.append(text)
        events.append(ReasoningSummaryTextDelta(**where, delta=text))
        return events

    def _close_summary(self, current: OpenItem) -> list[StreamEvent]:
        """Close the open summary part of a reasoning item, if one is open."""
        if current.summary_key is None:
            return []
        item = self.output[current.index]
        text = "".join(current.buffer)
        part = {"type": "summary_text", "text": text}
        where = {
            "item_id": item["id"],
            "output_index": current.index,
            "summary_index": len(item["summary"]),
        }
        item["summary"].append(part)
        current.summary_key, current.buffer = None, []
        return [
            ReasoningSummaryTextDone(**where, text=text),
            ReasoningSummaryPartEvent(
                type="response.reasoning_summary_part.done", **where, part=dict(part)
            ),
        ]

    def _reasoning_done(self, encrypted_content: str | None) -> list[StreamEvent]:
        """The reasoning item is complete (one with no summary opens and closes here)."""
        events: list[StreamEvent] = []
        current = self._open
        if current is None or current.kind != "reasoning":
            events += self._close("completed")
            current, added = self._start(it.reasoning_item(self.new_id(ids.REASONING)), "reasoning")
            events.append(added)
        if encrypted_content is not None:
            self.output[current.index]["encrypted_content"] = encrypted_content
        return events + self._close("completed")

    # ---- function calls --------------------------------------------------------------

    def _tool_delta(self, delta: base.ToolCallDelta) -> list[StreamEvent]:
        events: list[StreamEvent] = []
        current = self._open
        if delta.index in self._ignored:
            return events
        if current is None or current.kind not in TOOL_KINDS or current.tool_index != delta.index:
            if self.out_of_calls:
                self._ignored.add(delta.index)
                return events
            if self.tool_budget is not None:
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

    def _start_tool(self, delta: base.ToolCallDelta) -> tuple[OpenItem, list[StreamEvent]]:
        target = self.mcp(delta.name or "")
        if target is None:
            item = it.function_call_item(
                self.new_id(ids.FUNCTION_CALL),
                delta.call_id or self.new_id(ids.CALL),
                delta.name or "",
            )
            current, added = self._start(item, "function_call", tool_index=delta.index)
            return current, [added]
        if target.approval:
            item = mcp_approval_request_item(
                self.new_id(ids.MCP_APPROVAL_REQUEST), target.server_label, target.tool
            )
            current, added = self._start(item, "mcp_approval_request", tool_index=delta.index)
            return current, [added]
        item = mcp_call_item(self.new_id(ids.MCP_CALL), target.server_label, target.tool, "")
        current, added = self._start(item, "mcp_call", tool_index=delta.index)
        return current, [added, self._mcp_event("mcp_call.in_progress", current.index)]
