"""Structured outputs resq validates (``worker.structured``), and reasoning items' encrypted
content, through ``execute`` with a scripted provider: fakeredis for the bus, a SQLite store."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from shared.bus import EventBus
from shared.routing import Route
from shared.store import Store
from shared.store.tables import OUTPUT
from tests.worker.test_execute import events, submit
from worker.deps import RunDeps
from worker.execute import execute
from worker.providers.base import (
    Delta,
    Finish,
    ProviderRequest,
    ReasoningDelta,
    ReasoningDone,
    TextDelta,
    Usage,
)
from worker.structured import Validation

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
STRICT = {"format": {"type": "json_schema", "name": "person", "schema": SCHEMA, "strict": True}}


class Answers:
    """A provider that answers each request with the next script, and keeps the requests."""

    def __init__(self, *answers: list[Delta]) -> None:
        self.answers = list(answers)
        self.requests: list[ProviderRequest] = []

    def stream(self, request: ProviderRequest) -> Iterator[Delta]:
        self.requests.append(request)
        yield from self.answers[min(len(self.requests), len(self.answers)) - 1]


def text(value: str, *pieces: str) -> list[Delta]:
    chunks = list(pieces) or [value]
    return [*(TextDelta(c) for c in chunks), Usage(10, 5), Finish("stop")]


def run(store: Store, bus: EventBus, provider: Answers, route: Route, **body: Any) -> str:
    if "fmt" in body:
        body["text"] = body.pop("fmt")
    rid = submit(store, "who?", **body)
    deps = RunDeps(
        store=store, bus=bus, provider_for=lambda _m: provider, route_for=lambda _m: route
    )
    execute(rid, deps)
    return rid


def test_a_failed_answer_is_never_shown_and_the_model_is_told_why(
    store: Store, bus: EventBus
) -> None:
    provider = Answers(
        text('{"name": "Ada", "age": "old"}'), text("", '{"name": "Ada", ', '"age": 36}')
    )
    route = Route(match="*", provider="openai", json_retries=2)
    rid = run(store, bus, provider, route, fmt=STRICT)

    log = events(bus, rid)
    final = log[-1].json()["response"]
    assert final["status"] == "completed"
    texts = [e.json()["text"] for e in log if e.type == "response.output_text.done"]
    assert texts == ['{"name": "Ada", "age": 36}']
    assert '"old"' not in json.dumps([e.json() for e in log])
    assert [i["type"] for i in final["output"]] == ["message"]
    assert final["usage"]["input_tokens"] == 20  # both attempts count
    assert len(provider.requests) == 2
    retry = provider.requests[1].input_items[-2:]
    assert retry[0]["role"] == "assistant" and '"old"' in retry[0]["content"][0]["text"]
    told = retry[1]["content"][0]["text"]
    assert "person" in told and "$.age" in told and "'old' is not of type 'integer'" in told


def test_the_last_failed_try_fails_the_response_quoting_the_first_problem(
    store: Store, bus: EventBus
) -> None:
    provider = Answers(text("not json"), text('{"name": "Ada"}'))
    route = Route(match="*", provider="openai", json_retries=1)
    rid = run(store, bus, provider, route, fmt=STRICT)

    row = store.get_response(response_id=rid)
    assert row is not None and row.status == "failed"
    assert row.error is not None and row.error["code"] == "server_error"
    message = row.error["message"]
    assert "after 2 attempts" in message and "not valid JSON" in message
    assert "required" not in message  # the first problem, not the last
    assert store.items(response_id=rid, kind=OUTPUT) == []
    assert len(provider.requests) == 2


def test_not_strict_is_not_validated_unless_the_route_says_so(store: Store, bus: EventBus) -> None:
    loose = {"format": {**STRICT["format"], "strict": False}}
    provider = Answers(text("not json"))
    rid = run(store, bus, provider, Route(match="*", provider="openai"), fmt=loose)
    row = store.get_response(response_id=rid)
    assert row is not None and row.status == "completed"

    provider = Answers(text("not json"), text('{"name": "Ada", "age": 1}'))
    forced = Route(match="*", provider="openai", validate_json=True)
    rid = run(store, bus, provider, forced, fmt=loose)
    row = store.get_response(response_id=rid)
    assert row is not None and row.status == "completed"
    assert len(provider.requests) == 2


def test_json_object_is_checked_to_be_an_object_when_the_route_says_so() -> None:
    route = Route(match="*", provider="openai", validate_json=True)
    check = Validation.for_job({"format": {"type": "json_object"}}, route)
    assert check is not None
    assert check.problem("[1, 2]") == "the answer is not a JSON object"
    assert check.problem('{"a": 1}') is None
    assert Validation.for_job({"format": {"type": "json_object"}}, Route("*", "openai")) is None


@pytest.mark.parametrize("include", [None, ["reasoning.encrypted_content"]])
def test_encrypted_reasoning_shows_only_when_included(
    store: Store, bus: EventBus, include: list[str] | None
) -> None:
    provider = Answers(
        [
            ReasoningDelta("Think"),
            ReasoningDelta("Again", part=1),
            ReasoningDone("enc-123"),
            *text("done"),
        ]
    )
    extra = {"include": include} if include else {}
    rid = run(store, bus, provider, Route(match="*", provider="openai"), **extra)

    log = events(bus, rid)
    final = log[-1].json()["response"]
    reasoning = final["output"][0]
    assert [p["text"] for p in reasoning["summary"]] == ["Think", "Again"]
    assert [e.json()["summary_index"] for e in log if "summary_text.delta" in e.type] == [0, 1]
    shown = "enc-123" if include else None
    assert reasoning.get("encrypted_content") == shown
    row = store.get_response(response_id=rid)
    assert row is not None
    # The store keeps it whatever the create asked: the next turn sends it upstream again.
    assert store.items(response_id=rid, kind=OUTPUT)[0]["encrypted_content"] == "enc-123"
    assert store.render(row)["output"][0].get("encrypted_content") == shown
    asked = store.render(row, include=["reasoning.encrypted_content"])
    assert asked["output"][0]["encrypted_content"] == "enc-123"
    assert "include" not in store.render(row)


def test_a_prompt_versions_validation_settings_override_the_routes() -> None:
    loose = {"format": {**STRICT["format"], "strict": False}}
    route = Route(match="*", provider="openai", json_retries=5)
    assert Validation.for_job(loose, route) is None
    check = Validation.for_job(loose, route, {"validate_json": True, "json_retries": 0})
    assert check is not None and check.retries == 0
    assert Validation.for_job(STRICT, route, {"json_retries": 1}).retries == 1  # type: ignore[union-attr]
    forced = Route(match="*", provider="openai", validate_json=True)
    assert Validation.for_job(loose, forced, {"validate_json": False}) is None
