"""A response's output items rebuilt from its event log (pure; no I/O).

When a worker dies mid-run, the store holds only the output items it had finished (the worker
saves an item once its ``output_item.done`` is published); the event log holds everything it
streamed. ``replay`` folds the log's output events back into items, in ``output_index`` order:
an item whose ``output_item.done`` arrived is that event's item; an open one keeps what was
streamed of it (text or refusal so far, reasoning summary so far, call arguments so far) and
ends ``incomplete`` where its type has a status — what ``StreamState.close("incomplete")``
leaves of the open items of a cancelled run, so a reaper-failed response reads like a
cancelled one.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

JSON = dict[str, Any]


@dataclass
class _Item:
    data: JSON
    done: bool = False
    # Deltas not yet closed by their ``*.done`` event, by where they go: ("content", i) is
    # content part i, ("summary", i) reasoning summary part i, ("arguments", 0) a call's.
    streamed: dict[tuple[str, int], list[str]] = field(default_factory=dict)

    def place(self, key: str, index: int, part: JSON) -> None:
        parts: list[JSON] = self.data.setdefault(key, [])
        if index < len(parts):
            parts[index] = copy.deepcopy(part)
        else:
            parts.append(copy.deepcopy(part))

    def finished(self) -> JSON:
        """The item as the log leaves it: a done item as sent, an open one closed."""
        if self.done:
            return self.data
        for (where, index), chunks in self.streamed.items():
            text = "".join(chunks)
            if where == "arguments":
                self.data["arguments"] = text
            elif where == "summary":
                self.data["summary"][index]["text"] = text
            else:
                part = self.data["content"][index]
                part["refusal" if part.get("type") == "refusal" else "text"] = text
        if "status" in self.data:  # message, reasoning, function and MCP calls
            self.data["status"] = "incomplete"
        return self.data


class _Log:
    def __init__(self) -> None:
        self.items: dict[int, _Item] = {}

    def apply(self, event: Mapping[str, Any]) -> None:
        kind = event.get("type", "")
        if kind in (ITEM_ADDED, ITEM_DONE):
            item = copy.deepcopy(event["item"])
            self.items[event["output_index"]] = _Item(item, done=kind == ITEM_DONE)
            return
        handler = _IN_ITEM.get(kind)  # None: lifecycle, error, MCP progress (nothing kept)
        target = self.items.get(event.get("output_index", -1))
        if handler is not None and target is not None and not target.done:
            handler(target, event)

    def output(self) -> list[JSON]:
        return [self.items[index].finished() for index in sorted(self.items)]


def _part_added(item: _Item, event: Mapping[str, Any]) -> None:
    item.place("content", event["content_index"], event["part"])


def _part_done(item: _Item, event: Mapping[str, Any]) -> None:
    item.place("content", event["content_index"], event["part"])
    item.streamed.pop(("content", event["content_index"]), None)


def _content_delta(item: _Item, event: Mapping[str, Any]) -> None:
    item.streamed.setdefault(("content", event["content_index"]), []).append(event["delta"])


def _text_done(item: _Item, event: Mapping[str, Any]) -> None:
    item.streamed[("content", event["content_index"])] = [event["text"]]


def _refusal_done(item: _Item, event: Mapping[str, Any]) -> None:
    item.streamed[("content", event["content_index"])] = [event["refusal"]]


def _summary_added(item: _Item, event: Mapping[str, Any]) -> None:
    item.place("summary", event["summary_index"], event["part"])


def _summary_delta(item: _Item, event: Mapping[str, Any]) -> None:
    item.streamed.setdefault(("summary", event["summary_index"]), []).append(event["delta"])


def _summary_text_done(item: _Item, event: Mapping[str, Any]) -> None:
    item.streamed[("summary", event["summary_index"])] = [event["text"]]


def _summary_done(item: _Item, event: Mapping[str, Any]) -> None:
    item.place("summary", event["summary_index"], event["part"])
    item.streamed.pop(("summary", event["summary_index"]), None)


def _arguments_delta(item: _Item, event: Mapping[str, Any]) -> None:
    item.streamed.setdefault(("arguments", 0), []).append(event["delta"])


def _arguments_done(item: _Item, event: Mapping[str, Any]) -> None:
    item.streamed[("arguments", 0)] = [event["arguments"]]


ITEM_ADDED = "response.output_item.added"
ITEM_DONE = "response.output_item.done"
# What each event inside an item (after its ``output_item.added``) does to it.
_IN_ITEM: dict[str, Callable[[_Item, Mapping[str, Any]], None]] = {
    "response.content_part.added": _part_added,
    "response.content_part.done": _part_done,
    "response.output_text.delta": _content_delta,
    "response.output_text.done": _text_done,
    "response.refusal.delta": _content_delta,
    "response.refusal.done": _refusal_done,
    "response.reasoning_summary_part.added": _summary_added,
    "response.reasoning_summary_text.delta": _summary_delta,
    "response.reasoning_summary_text.done": _summary_text_done,
    "response.reasoning_summary_part.done": _summary_done,
    "response.function_call_arguments.delta": _arguments_delta,
    "response.function_call_arguments.done": _arguments_done,
    "response.mcp_call_arguments.delta": _arguments_delta,
    "response.mcp_call_arguments.done": _arguments_done,
}

# The event types ``replay`` reads; a caller can skip parsing the others (the lifecycle
# events carry whole Response snapshots).
OUTPUT_EVENT_TYPES = frozenset({ITEM_ADDED, ITEM_DONE, *_IN_ITEM})


def replay(events: Iterable[Mapping[str, Any]]) -> list[JSON]:
    """The output items a log's events (wire JSON, in sequence order) had streamed."""
    log = _Log()
    for event in events:
        log.apply(event)
    return log.output()


def merge_saved(streamed: list[JSON], saved: list[JSON]) -> list[JSON]:
    """``streamed`` with the store's copy in place of every item the store saved (matched by
    item id: the store's list carries no output index); a saved item the log no longer holds
    is kept, after them."""
    by_id = {item.get("id"): item for item in saved}
    merged = [by_id.pop(item.get("id"), item) for item in streamed]
    return merged + [item for item in saved if item.get("id") in by_id]
