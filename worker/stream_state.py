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


@dataclass
class _Open:
    index: int
    kind: str  # "message", "reasoning" or "function_call"
    part: str | None = None  # open content part of a message: "output_text" / "refusal"
    tool_index: int | None = None
    buffer: list[str] = field(default_factory=list)


class StreamState:
    def __init__(self, new_id: Callable[[str], str] = ids.new_id) -> None:
        self.new_id = new_id
        self.output: list[dict[str, Any]] = []
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
            self.usage = delta
        elif isinstance(delta, base.Finish):
            self.finish_reason = delta.reason
        return []

    def close(self, status: str = "completed") -> list[StreamEvent]:
        """Finish the open item (if any) with ``status``; returns its closing events."""
        self.done_indexes = []
        return self._close(status)

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
        if current is None or current.kind != "function_call" or current.tool_index != delta.index:
            events += self._close("completed")
            item = it.function_call_item(
                self.new_id(ids.FUNCTION_CALL),
                delta.call_id or self.new_id(ids.CALL),
                delta.name or "",
            )
            current, added = self._start(item, "function_call", tool_index=delta.index)
            events.append(added)
        item = self.output[current.index]
        if delta.arguments:
            current.buffer.append(delta.arguments)
            events.append(
                FunctionCallArgumentsDelta(
                    item_id=item["id"], output_index=current.index, delta=delta.arguments
                )
            )
        return events


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
