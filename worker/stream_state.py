"""Provider deltas → Responses output items and stream events (pure; no I/O).

``StreamState.apply(delta)`` returns the events a delta causes (without sequence numbers;
the emitter stamps them) and keeps ``output``, the output items so far. Items are opened
and closed in the order the spec's helpers require (spec digest §4.3): an item's
``output_item.added`` precedes its part and delta events, which precede its
``output_item.done``; ``output_index`` is dense from 0.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shared import ids
from shared.schema import items as it
from worker.providers.base import (
    Delta,
    Finish,
    FinishReason,
    ReasoningDelta,
    RefusalDelta,
    TextDelta,
    ToolCallDelta,
    Usage,
)

Event = dict[str, Any]


@dataclass
class _Open:
    index: int
    kind: str  # "message", "reasoning" or "function_call"
    part: str | None = None  # open content part type of a message: "output_text" / "refusal"
    tool_index: int | None = None
    buffer: list[str] = field(default_factory=list)


class StreamState:
    def __init__(self, new_id: Callable[[str], str] = ids.new_id) -> None:
        self.new_id = new_id
        self.output: list[dict[str, Any]] = []
        self.usage: Usage | None = None
        self.finish_reason: FinishReason | None = None
        self.done_indexes: list[int] = []  # items finished by the latest ``apply``/``close``
        self._open: _Open | None = None

    # ---- public ----------------------------------------------------------------------

    def apply(self, delta: Delta) -> list[Event]:
        self.done_indexes = []
        if isinstance(delta, TextDelta):
            return self._message_delta("output_text", delta.text)
        if isinstance(delta, RefusalDelta):
            return self._message_delta("refusal", delta.text)
        if isinstance(delta, ReasoningDelta):
            return self._reasoning_delta(delta.text)
        if isinstance(delta, ToolCallDelta):
            return self._tool_delta(delta)
        if isinstance(delta, Usage):
            self.usage = delta
        elif isinstance(delta, Finish):
            self.finish_reason = delta.reason
        return []

    def close(self, status: str = "completed") -> list[Event]:
        """Finish the open item (if any) with ``status``; returns its closing events."""
        self.done_indexes = []
        return self._close(status)

    # ---- items -----------------------------------------------------------------------

    def _start(self, item: dict[str, Any], kind: str, **extra: Any) -> tuple[_Open, Event]:
        index = len(self.output)
        self.output.append(item)
        self._open = _Open(index=index, kind=kind, **extra)
        return self._open, {
            "type": "response.output_item.added",
            "output_index": index,
            "item": _copy(item),
        }

    def _close(self, status: str) -> list[Event]:
        current = self._open
        if current is None:
            return []
        events: list[Event] = []
        item = self.output[current.index]
        if current.kind == "message":
            events += self._close_part(current)
        elif current.kind == "reasoning":
            events += self._close_summary(current)
        elif current.kind == "function_call":
            item["arguments"] = "".join(current.buffer)
            events.append(
                {
                    "type": "response.function_call_arguments.done",
                    "item_id": item["id"],
                    "output_index": current.index,
                    "name": item["name"],
                    "arguments": item["arguments"],
                }
            )
        item["status"] = status
        events.append(
            {
                "type": "response.output_item.done",
                "output_index": current.index,
                "item": _copy(item),
            }
        )
        self.done_indexes.append(current.index)
        self._open = None
        return events

    # ---- message ---------------------------------------------------------------------

    def _message_delta(self, part_type: str, text: str) -> list[Event]:
        events: list[Event] = []
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
                {
                    "type": "response.content_part.added",
                    "item_id": item["id"],
                    "output_index": current.index,
                    "content_index": len(item["content"]) - 1,
                    "part": dict(part),
                }
            )
        current.buffer.append(text)
        where = {
            "item_id": item["id"],
            "output_index": current.index,
            "content_index": len(item["content"]) - 1,
        }
        if part_type == "output_text":
            events.append(
                {"type": "response.output_text.delta", **where, "delta": text, "logprobs": []}
            )
        else:
            events.append({"type": "response.refusal.delta", **where, "delta": text})
        return events

    def _close_part(self, current: _Open) -> list[Event]:
        if current.part is None:
            return []
        item = self.output[current.index]
        ci = len(item["content"]) - 1
        text = "".join(current.buffer)
        where = {"item_id": item["id"], "output_index": current.index, "content_index": ci}
        if current.part == "output_text":
            part = it.output_text_part(text)
            done: Event = {
                "type": "response.output_text.done",
                **where,
                "text": text,
                "logprobs": [],
            }
        else:
            part = it.refusal_part(text)
            done = {"type": "response.refusal.done", **where, "refusal": text}
        item["content"][ci] = part
        current.part, current.buffer = None, []
        return [done, {"type": "response.content_part.done", **where, "part": dict(part)}]

    # ---- reasoning -------------------------------------------------------------------

    def _reasoning_delta(self, text: str) -> list[Event]:
        events: list[Event] = []
        current = self._open
        if current is None or current.kind != "reasoning":
            events += self._close("completed")
            current, added = self._start(it.reasoning_item(self.new_id(ids.REASONING)), "reasoning")
            item = self.output[current.index]
            events.append(added)
            events.append(
                {
                    "type": "response.reasoning_summary_part.added",
                    "item_id": item["id"],
                    "output_index": current.index,
                    "summary_index": 0,
                    "part": {"type": "summary_text", "text": ""},
                }
            )
        item = self.output[current.index]
        current.buffer.append(text)
        events.append(
            {
                "type": "response.reasoning_summary_text.delta",
                "item_id": item["id"],
                "output_index": current.index,
                "summary_index": 0,
                "delta": text,
            }
        )
        return events

    def _close_summary(self, current: _Open) -> list[Event]:
        item = self.output[current.index]
        text = "".join(current.buffer)
        part = {"type": "summary_text", "text": text}
        item["summary"] = [part]
        where = {"item_id": item["id"], "output_index": current.index, "summary_index": 0}
        return [
            {"type": "response.reasoning_summary_text.done", **where, "text": text},
            {"type": "response.reasoning_summary_part.done", **where, "part": dict(part)},
        ]

    # ---- function calls --------------------------------------------------------------

    def _tool_delta(self, delta: ToolCallDelta) -> list[Event]:
        events: list[Event] = []
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
                {
                    "type": "response.function_call_arguments.delta",
                    "item_id": item["id"],
                    "output_index": current.index,
                    "delta": delta.arguments,
                }
            )
        return events


def _copy(item: dict[str, Any]) -> dict[str, Any]:
    """A snapshot of an item, safe from later mutation of its content list."""
    out = dict(item)
    for key in ("content", "summary"):
        if key in out:
            out[key] = [dict(p) for p in out[key]]
    return out
