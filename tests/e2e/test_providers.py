"""The Responses upstream and the Anthropic upstream end to end: the openai SDK against resq,
resq against the fake upstreams of tests/fakes (real HTTP servers speaking the documented wire
shapes). Text, streaming, reasoning, tool round trips, images, PDFs, structured output with one
failed validation, cancel mid-stream, upstream 429 / 529 / 500, and what each upstream got."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import openai
import pytest
from pydantic import BaseModel

from tests.e2e.conftest import ANTHROPIC_KEY, RESPONSES_KEY, Stack
from tests.e2e.helpers import TERMINAL, check, create_raw, retrieve_raw, wait_status
from tests.e2e.streams import check_stream, read_stream

pytestmark = pytest.mark.e2e

PROVIDERS = ["claude-e2e", "responses-e2e"]
PDF_BYTES = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"
PNG_DATA_URL = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAE"
    "hQGAhKmMIQAAAABJRU5ErkJggg=="
)


class Person(BaseModel):
    name: str
    age: int


PERSON_SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


def say(**script: Any) -> tuple[str, str]:
    """A user message scripting the fake upstreams, and a marker that finds its requests."""
    marker = uuid.uuid4().hex
    return f"run {marker}\nupstream: {json.dumps({'key': marker, **script})}", marker


def fake(stack: Stack, model: str) -> Any:
    return stack.anthropic if model.startswith("claude") else stack.responses


def bodies(stack: Stack, model: str, marker: str) -> list[dict[str, Any]]:
    """What the upstream of ``model`` received for the requests carrying ``marker``."""
    found = [r["body"] for r in fake(stack, model).requests if marker in json.dumps(r["body"])]
    return [b for b in found if b is not None]


def headers(stack: Stack, model: str, marker: str) -> dict[str, str]:
    requests = fake(stack, model).requests
    return next(r["headers"] for r in requests if marker in json.dumps(r["body"]))


@pytest.mark.parametrize("model", PROVIDERS)
def test_text_and_what_the_upstream_receives(
    stack: Stack, client: openai.OpenAI, model: str
) -> None:
    text, marker = say(mode="text", text="Hello from the fake", usage={"input_tokens": 31})
    raw = create_raw(
        client, model=model, input=text, instructions="Be brief.", max_output_tokens=77
    )
    parsed = check(raw)
    assert parsed.status == "completed" and parsed.output_text == "Hello from the fake"
    assert parsed.usage is not None and parsed.usage.input_tokens == 31
    assert parsed.model == model

    (body,) = bodies(stack, model, marker)
    sent = headers(stack, model, marker)
    assert body["stream"] is True
    if model.startswith("claude"):
        assert body["model"] == "claude-fake-1"
        assert body["max_tokens"] == 77 and body["system"] == "Be brief."
        assert sent["x-api-key"] == ANTHROPIC_KEY and sent["anthropic-version"] == "2023-06-01"
    else:
        assert body["model"] == "gpt-fake-1" and body["store"] is False
        assert "background" not in body and body["max_output_tokens"] == 77
        assert body["instructions"] == "Be brief."
        assert sent["authorization"] == f"Bearer {RESPONSES_KEY}"
    assert "secret" not in stack.worker_log()


def test_anthropic_gets_its_route_default_max_tokens(stack: Stack, client: openai.OpenAI) -> None:
    text, marker = say(mode="text", text="ok")
    assert check(create_raw(client, model="claude-e2e", input=text)).status == "completed"
    (body,) = bodies(stack, "claude-e2e", marker)
    assert body["max_tokens"] == 4096


@pytest.mark.parametrize("model", PROVIDERS)
def test_streaming_events_parse_and_carry_the_upstream_text(stack: Stack, model: str) -> None:
    text, _ = say(mode="text", tokens=6, text="one two three four five six")
    with stack.http() as http:
        events, _ = read_stream(
            http, "POST", "/v1/responses", json={"model": model, "input": text, "stream": True}
        )
    final = check_stream(events)
    deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
    assert "".join(deltas) == "one two three four five six" and len(deltas) >= 2
    assert final["status"] == "completed"


@pytest.mark.parametrize("model", PROVIDERS)
def test_reasoning_becomes_reasoning_items(stack: Stack, client: openai.OpenAI, model: str) -> None:
    text, _ = say(mode="reasoning", reasoning=["First I think.", "Then I check."], text="42")
    raw = create_raw(
        client,
        model=model,
        input=text,
        reasoning={"effort": "medium", "summary": "auto"},
        include=["reasoning.encrypted_content"],
        max_output_tokens=20000,
    )
    parsed = check(raw)
    assert parsed.output_text == "42"
    reasoning = [i for i in raw["output"] if i["type"] == "reasoning"]
    summaries = [p["text"] for item in reasoning for p in item["summary"]]
    assert summaries == ["First I think.", "Then I check."]
    assert all(item["encrypted_content"] for item in reasoning)
    # A read without include[] shows what the create asked for.
    assert retrieve_raw(client, parsed.id)["output"][0]["encrypted_content"]


@pytest.mark.parametrize("model", PROVIDERS)
def test_reasoning_without_include_hides_encrypted_content(
    stack: Stack, client: openai.OpenAI, model: str
) -> None:
    text, _ = say(mode="reasoning", reasoning="Quietly.", text="ok")
    raw = create_raw(client, model=model, input=text, reasoning={"effort": "low"})
    check(raw)
    assert raw["output"][0]["type"] == "reasoning"
    assert raw["output"][0].get("encrypted_content") is None
    shown = client.responses.retrieve(raw["id"], include=["reasoning.encrypted_content"])
    assert shown.output[0].type == "reasoning" and shown.output[0].encrypted_content


def test_anthropic_thinking_goes_back_in_a_tool_loop(stack: Stack, client: openai.OpenAI) -> None:
    text, marker = say(mode="reasoning", reasoning="I need the weather.", redacted=True)
    text2, _ = say(mode="tool_calls", call_id="toolu_loop1", arguments={"city": "Oslo"})
    first = check(
        create_raw(
            client,
            model="claude-e2e",
            input=f"{text}",
            reasoning={"effort": "low"},
        )
    )
    assert [i.type for i in first.output] == ["reasoning", "reasoning", "message"]
    second = check(
        create_raw(
            client,
            model="claude-e2e",
            input=text2,
            previous_response_id=first.id,
            reasoning={"effort": "low"},
        )
    )
    assert second.output[-1].type == "function_call"
    (body,) = bodies(stack, "claude-e2e", text2.split()[1])
    assistant = body["messages"][1]["content"]
    assert assistant[0]["type"] == "thinking" and assistant[0]["signature"].startswith("sig-")
    assert assistant[1]["type"] == "redacted_thinking" and assistant[1]["data"].startswith(
        "redacted-"
    )
    assert marker in json.dumps(body)


@pytest.mark.parametrize("model", PROVIDERS)
def test_a_function_tool_round_trip(stack: Stack, client: openai.OpenAI, model: str) -> None:
    text, marker = say(
        mode="tool_calls",
        calls=[
            {"id": "call_up_1", "name": "get_weather", "arguments": {"city": "Oslo"}},
            {"id": "call_up_2", "name": "get_weather", "arguments": {"city": "Rome"}},
        ],
    )
    tool = {
        "type": "function",
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    }
    first = check(create_raw(client, model=model, input=text, tools=[tool]))
    calls = [i for i in first.output if i.type == "function_call"]
    assert [(c.call_id, json.loads(c.arguments)) for c in calls] == [
        ("call_up_1", {"city": "Oslo"}),
        ("call_up_2", {"city": "Rome"}),
    ]
    outputs = [
        {"type": "function_call_output", "call_id": c.call_id, "output": f"sunny in {c.call_id}"}
        for c in calls
    ]
    second = check(
        create_raw(client, model=model, input=outputs, previous_response_id=first.id, tools=[tool])
    )
    assert second.output_text.startswith("The tool said: sunny in call_up_"), second.output_text

    sent = bodies(stack, model, marker)
    assert len(sent) == 2
    if model.startswith("claude"):
        assert sent[0]["tools"][0]["input_schema"] == tool["parameters"]
        uses = [b for b in sent[1]["messages"][1]["content"] if b["type"] == "tool_use"]
        assert [u["id"] for u in uses] == ["call_up_1", "call_up_2"]
        results = sent[1]["messages"][2]["content"]
        assert [r["tool_use_id"] for r in results] == ["call_up_1", "call_up_2"]
    else:
        kinds = [i["type"] for i in sent[1]["input"]]
        assert kinds[-4:] == ["function_call"] * 2 + ["function_call_output"] * 2


@pytest.mark.parametrize("model", PROVIDERS)
def test_images_reach_the_upstream_in_its_form(
    stack: Stack, client: openai.OpenAI, model: str
) -> None:
    text, marker = say(mode="text", text="a tiny image")
    content = [
        {"type": "input_text", "text": text},
        {"type": "input_image", "image_url": PNG_DATA_URL, "detail": "auto"},
        {"type": "input_image", "image_url": "https://images.example.com/cat.jpg", "detail": "low"},
    ]
    parsed = check(create_raw(client, model=model, input=[{"role": "user", "content": content}]))
    assert parsed.output_text == "a tiny image"
    (body,) = bodies(stack, model, marker)
    if model.startswith("claude"):
        blocks = body["messages"][0]["content"]
        assert blocks[1]["source"]["type"] == "base64"
        assert blocks[1]["source"]["media_type"] == "image/png"
        assert blocks[2]["source"] == {"type": "url", "url": "https://images.example.com/cat.jpg"}
    else:
        parts = body["input"][0]["content"]
        assert parts[1]["image_url"] == PNG_DATA_URL
        assert parts[2]["image_url"] == "https://images.example.com/cat.jpg"


@pytest.fixture(scope="module")
def file_server() -> Iterator[str]:
    """A loopback server with one PDF, for ``file_url``."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            if self.path != "/docs/report.pdf":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/pdf")
            self.send_header("Content-Length", str(len(PDF_BYTES)))
            self.end_headers()
            self.wfile.write(PDF_BYTES)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("model", PROVIDERS)
def test_a_pdf_inline_and_by_url(
    stack: Stack, client: openai.OpenAI, model: str, file_server: str
) -> None:
    text, marker = say(mode="text", text="read it")
    b64 = base64.b64encode(PDF_BYTES).decode()
    content = [
        {"type": "input_text", "text": text},
        {
            "type": "input_file",
            "filename": "inline.pdf",
            "file_data": f"data:application/pdf;base64,{b64}",
        },
        {"type": "input_file", "file_url": f"{file_server}/docs/report.pdf"},
    ]
    parsed = check(create_raw(client, model=model, input=[{"role": "user", "content": content}]))
    assert parsed.status == "completed", parsed.error
    (body,) = bodies(stack, model, marker)
    if model.startswith("claude"):
        docs = [b for b in body["messages"][0]["content"] if b["type"] == "document"]
        assert [d["source"] for d in docs] == [
            {"type": "base64", "media_type": "application/pdf", "data": b64}
        ] * 2
        assert [d["title"] for d in docs] == ["inline.pdf", "report.pdf"]
    else:
        files = [p for p in body["input"][0]["content"] if p["type"] == "input_file"]
        assert [f["file_data"] for f in files] == [f"data:application/pdf;base64,{b64}"] * 2
        assert [f["filename"] for f in files] == ["inline.pdf", "report.pdf"]


def test_a_missing_file_url_fails_the_response_saying_why(
    client: openai.OpenAI, file_server: str
) -> None:
    content = [
        {"type": "input_text", "text": "read"},
        {"type": "input_file", "file_url": f"{file_server}/docs/missing.pdf"},
    ]
    raw = create_raw(client, model="claude-e2e", input=[{"role": "user", "content": content}])
    parsed = check(raw)
    assert parsed.status == "failed" and parsed.error is not None
    assert "missing.pdf" in parsed.error.message and "HTTP 404" in parsed.error.message


def test_a_route_that_refuses_images_says_so_at_create(client: openai.OpenAI) -> None:
    content = [
        {"type": "input_text", "text": "see"},
        {"type": "input_image", "image_url": PNG_DATA_URL},
    ]
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(
            model="responses-reasoner", input=[{"role": "user", "content": content}]
        )
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["code"] == "unsupported_parameter" and error["param"] == "input"
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="responses-reasoner", input="hi", temperature=0.3)
    assert isinstance(caught.value.body, dict) and caught.value.body["param"] == "temperature"


def _sequence(**extra: Any) -> tuple[str, str]:
    return say(
        mode="sequence",
        answers=[
            {"mode": "text", "text": '{"name": "Ada", "age": "thirty-six"}'},
            {"mode": "text", "text": '{"name": "Ada", "age": 36}'},
        ],
        **extra,
    )


@pytest.mark.parametrize("model", PROVIDERS)
def test_structured_output_one_failed_validation_then_parse(
    stack: Stack, client: openai.OpenAI, model: str
) -> None:
    text, marker = _sequence()
    parsed = client.responses.parse(model=model, input=text, text_format=Person)
    assert parsed.status == "completed"
    assert parsed.output_parsed == Person(name="Ada", age=36)
    assert "thirty-six" not in parsed.model_dump_json()

    sent = bodies(stack, model, marker)
    assert len(sent) == 2
    if model.startswith("claude"):
        assert sent[0]["output_config"]["format"]["type"] == "json_schema"
        told = sent[1]["messages"][-1]["content"][0]["text"]
    else:
        assert sent[0]["text"]["format"]["type"] == "json_schema"
        assert sent[0]["text"]["format"]["strict"] is True
        told = sent[1]["input"][-1]["content"][0]["text"]
    assert "Person" in told and "'thirty-six' is not of type 'integer'" in told


@pytest.mark.parametrize("model", PROVIDERS)
def test_structured_output_background_poll_then_parse(client: openai.OpenAI, model: str) -> None:
    text, _ = _sequence()
    queued = client.responses.parse(model=model, input=text, text_format=Person, background=True)
    assert queued.status in ("queued", "in_progress")
    done = check(wait_status(client, queued.id, TERMINAL))
    assert done.status == "completed"
    assert Person.model_validate_json(done.output_text) == Person(name="Ada", age=36)


@pytest.mark.parametrize("model", PROVIDERS)
def test_structured_output_streamed(client: openai.OpenAI, model: str) -> None:
    text, _ = _sequence()
    with client.responses.stream(model=model, input=text, text_format=Person) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert final.output_parsed == Person(name="Ada", age=36)
    assert kinds.count("response.output_text.done") == 1


def test_structured_output_that_never_validates_fails_quoting_the_first_problem(
    client: openai.OpenAI,
) -> None:
    text, _ = say(mode="text", text="not json at all")
    fmt = {"type": "json_schema", "name": "person", "schema": PERSON_SCHEMA, "strict": True}
    raw = create_raw(client, model="responses-e2e", input=text, text={"format": fmt})
    parsed = check(raw)
    assert parsed.status == "failed" and parsed.error is not None
    assert "after 3 attempts" in parsed.error.message
    assert "not valid JSON" in parsed.error.message
    assert raw["output"] == []


@pytest.mark.parametrize("model", PROVIDERS)
def test_cancel_mid_stream_ends_the_response_with_its_partial_text(
    stack: Stack, client: openai.OpenAI, model: str
) -> None:
    text, _ = say(mode="text", tokens=400, delay_ms=20)
    stream = client.responses.create(model=model, input=text, stream=True, background=True)
    response_id = ""
    kinds = []
    for event in stream:
        kinds.append(event.type)
        if event.type == "response.created":
            response_id = event.response.id
        if event.type == "response.output_text.delta" and kinds.count(event.type) == 3:
            client.responses.cancel(response_id)
    final = check(wait_status(client, response_id, TERMINAL))
    assert final.status == "cancelled"
    text_out = final.output[0].content[0].text if final.output else ""  # type: ignore[union-attr]
    assert 0 < len(text_out.split()) < 400
    assert kinds[-1] == "response.incomplete"


@pytest.mark.parametrize(
    ("model", "status", "code"),
    [
        ("claude-e2e", 429, "rate_limit_exceeded"),
        ("claude-e2e", 529, "server_error"),
        ("responses-e2e", 429, "rate_limit_exceeded"),
        ("responses-e2e", 500, "server_error"),
    ],
)
def test_upstream_failures_are_retried_then_reported(
    stack: Stack, client: openai.OpenAI, model: str, status: int, code: str
) -> None:
    text, marker = say(mode="flaky", failures=2, status=status, retry_after=0, text="third time")
    parsed = check(create_raw(client, model=model, input=text))
    assert parsed.status == "completed" and parsed.output_text == "third time"
    assert len(bodies(stack, model, marker)) == 3

    text, marker = say(mode="status", status=status, retry_after=0)
    parsed = check(create_raw(client, model=model, input=text))
    assert parsed.status == "failed" and parsed.error is not None
    assert parsed.error.code == code
    assert f"answered HTTP {status} after 3 attempts" in parsed.error.message
    assert len(bodies(stack, model, marker)) == 3


def test_an_anthropic_error_mid_stream_fails_keeping_the_text(client: openai.OpenAI) -> None:
    text, _ = say(mode="error_midstream", text="partial words here")
    parsed = check(create_raw(client, model="claude-e2e", input=text))
    assert parsed.status == "failed" and parsed.error is not None
    assert "overloaded_error" in parsed.error.message
    assert "not retried" in parsed.error.message


def test_a_length_stop_is_incomplete(client: openai.OpenAI) -> None:
    for model in PROVIDERS:
        text, _ = say(mode="length", text="cut short here")
        parsed = check(create_raw(client, model=model, input=text))
        assert parsed.status == "incomplete"
        assert parsed.incomplete_details is not None
        assert parsed.incomplete_details.reason == "max_output_tokens"


def test_retrieve_keeps_the_answer_after_the_run(client: openai.OpenAI) -> None:
    text, _ = say(mode="text", text="kept")
    raw = create_raw(client, model="claude-e2e", input=text, background=True)
    done = check(wait_status(client, raw["id"], TERMINAL))
    assert done.output_text == "kept"
    assert check(retrieve_raw(client, raw["id"])).output_text == "kept"


@pytest.mark.parametrize("model", PROVIDERS)
def test_the_agents_sdk_runs_a_tool_loop(stack: Stack, model: str) -> None:
    from agents import Agent, Runner, function_tool, set_tracing_disabled
    from agents.models.openai_responses import OpenAIResponsesModel

    from tests.e2e.conftest import KEY_A

    called: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        called.append(city)
        return f"It is mild in {city}."

    text, marker = say(mode="tool_calls", name="get_weather", arguments={"city": "Lisbon"})

    async def run() -> str:
        set_tracing_disabled(True)
        async with openai.AsyncOpenAI(base_url=stack.base_url, api_key=KEY_A, max_retries=0) as sdk:
            agent = Agent(
                name="weather",
                instructions="Use the tool.",
                model=OpenAIResponsesModel(model=model, openai_client=sdk),
                tools=[get_weather],
            )
            result = await Runner.run(agent, input=text)
            return str(result.final_output)

    final = asyncio.run(asyncio.wait_for(run(), timeout=30))
    assert called == ["Lisbon"]
    assert final == "The tool said: It is mild in Lisbon."
    assert len(bodies(stack, model, marker)) == 2
