"""Reading raw SSE from resq and checking a stream against the final Response."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import httpx

from tests.compat import assert_wire_event

TERMINAL_TYPES = {"response.completed", "response.failed", "response.incomplete"}


def parse_sse(lines: list[str]) -> tuple[list[dict[str, Any]], int]:
    """Events and the number of keep-alive comments, checking §4.1 framing on the way: every
    event is exactly an ``event:`` line naming its type and one ``data:`` line; no
    ``[DONE]``."""
    events: list[dict[str, Any]] = []
    comments = 0
    block: list[str] = []
    for line in [*lines, ""]:
        if line:
            block.append(line)
            continue
        if not block:
            continue
        if all(b.startswith(":") for b in block):
            comments += 1
        else:
            assert len(block) == 2, block
            name, data = block
            assert name.startswith("event: ") and data.startswith("data: "), block
            assert data != "data: [DONE]"
            event = json.loads(data[len("data: ") :])
            assert event["type"] == name[len("event: ") :]
            events.append(event)
        block = []
    return events, comments


def read_stream(
    http: httpx.Client, method: str, url: str, *, stop_after: int | None = None, **kwargs: Any
) -> tuple[list[dict[str, Any]], int]:
    """Read an SSE response to its end (or close it after ``stop_after`` events)."""
    lines: list[str] = []
    count = 0
    with http.stream(method, url, **kwargs) as resp:
        assert resp.status_code == 200, resp.read()
        assert resp.headers["content-type"].startswith("text/event-stream")
        for line in resp.iter_lines():
            lines.append(line)
            if line.startswith("data: "):
                count += 1
                if stop_after is not None and count >= stop_after:
                    break
    return parse_sse(lines)


def check_stream(events: list[dict[str, Any]], *, from_start: bool = True) -> dict[str, Any]:
    """Every event valid for the SDK and the Open Responses schema; numbering gap-free; exactly
    one terminal event, last; indexes and ids consistent with the final Response; deltas
    concatenate to their ``.done`` text. Returns the final Response."""
    for event in events:
        assert_wire_event(event)
    numbers = [e["sequence_number"] for e in events]
    start = 0 if from_start else numbers[0]
    assert numbers == list(range(start, start + len(events)))
    if from_start:
        assert events[0]["type"] == "response.created"
    terminal = [e for e in events if e["type"] in TERMINAL_TYPES]
    assert len(terminal) == 1 and terminal[0] is events[-1]
    final: dict[str, Any] = terminal[0]["response"]
    assert {e["response"]["id"] for e in events if "response" in e} == {final["id"]}
    if from_start:  # a resumed tail lacks the start of its items; check the whole log instead
        _check_items(events, final["output"])
    return final


def _check_items(events: list[dict[str, Any]], output: list[dict[str, Any]]) -> None:
    added = [e["output_index"] for e in events if e["type"] == "response.output_item.added"]
    done = {
        e["output_index"]: e["item"] for e in events if e["type"] == "response.output_item.done"
    }
    assert added == list(range(len(added)))
    assert sorted(done) == added and len(output) == len(added)
    texts: dict[tuple[int, int], list[str]] = defaultdict(list)
    for e in events:
        if "output_index" in e and "item" not in e:
            assert e["item_id"] == output[e["output_index"]]["id"], e
        key = (e.get("output_index", -1), e.get("content_index", e.get("summary_index", -1)))
        if e["type"].endswith(".delta"):
            texts[key].append(e["delta"])
        elif e["type"] == "response.output_text.done":
            assert "".join(texts[key]) == e["text"]
            assert output[key[0]]["content"][key[1]]["text"] == e["text"]
        elif e["type"] == "response.refusal.done":
            assert "".join(texts[key]) == e["refusal"]
            assert output[key[0]]["content"][key[1]]["refusal"] == e["refusal"]
        elif e["type"] == "response.reasoning_summary_text.done":
            assert "".join(texts[key]) == e["text"]
            assert output[key[0]]["summary"][key[1]]["text"] == e["text"]
        elif e["type"] == "response.function_call_arguments.done":
            assert "".join(texts[key]) == e["arguments"]
            assert output[key[0]]["arguments"] == e["arguments"]
            assert output[key[0]]["name"] == e["name"]
    for index, item in done.items():
        assert item == output[index]
