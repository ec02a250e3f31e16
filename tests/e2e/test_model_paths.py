"""Every path of the built-in model and of a Chat Completions upstream, end to end."""

from __future__ import annotations

import json

import openai
import pytest

from tests.e2e.conftest import Stack
from tests.e2e.helpers import TERMINAL, check, create_raw, retrieve_raw, script, wait_status

pytestmark = pytest.mark.e2e


def test_reasoning_then_text(client: openai.OpenAI) -> None:
    raw = create_raw(
        client,
        model="resq-builtin",
        input=script(reasoning="Let me think.", text="The answer is 4."),
    )
    parsed = check(raw)
    assert [item.type for item in parsed.output] == ["reasoning", "message"]
    assert parsed.output[0].summary[0].text == "Let me think."
    assert parsed.output_text == "The answer is 4."
    assert parsed.usage is not None and parsed.usage.output_tokens_details.reasoning_tokens == 3


def test_refusal(client: openai.OpenAI) -> None:
    raw = create_raw(client, model="resq-builtin", input=script(refusal="I can't help."))
    parsed = check(raw)
    assert parsed.status == "completed"
    part = parsed.output[0].content[0]
    assert part.type == "refusal" and part.refusal == "I can't help."
    assert parsed.output_text == ""


def test_function_calls(client: openai.OpenAI) -> None:
    tools = [
        {
            "type": "function",
            "name": "get_weather",
            "description": "weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
                "additionalProperties": False,
            },
            "strict": True,
        }
    ]
    raw = create_raw(
        client,
        model="resq-builtin",
        tools=tools,
        input=script(
            tool_calls=[
                {"name": "get_weather", "arguments": {"city": "Paris"}},
                {"name": "get_weather", "arguments": {"city": "Rome"}},
            ]
        ),
    )
    parsed = check(raw)
    assert parsed.tools[0].name == "get_weather"
    calls = [item for item in parsed.output if item.type == "function_call"]
    assert [json.loads(c.arguments) for c in calls] == [{"city": "Paris"}, {"city": "Rome"}]
    assert all(c.call_id.startswith("call_") and c.id.startswith("fc_") for c in calls)
    assert len({c.call_id for c in calls}) == 2


def test_scripted_upstream_error_fails_the_response(client: openai.OpenAI) -> None:
    raw = create_raw(
        client,
        model="resq-builtin",
        input=script(text="a b c d e", error={"message": "model crashed", "after_tokens": 2}),
    )
    parsed = check(raw)
    assert parsed.status == "failed"
    assert parsed.error is not None
    assert parsed.error.code == "server_error" and parsed.error.message == "model crashed"
    assert raw["completed_at"] is None


def test_max_output_tokens_makes_it_incomplete(client: openai.OpenAI) -> None:
    raw = create_raw(client, model="resq-builtin", max_output_tokens=16, input=script(words=50))
    parsed = check(raw)
    assert parsed.status == "incomplete"
    assert parsed.incomplete_details is not None
    assert parsed.incomplete_details.reason == "max_output_tokens"
    assert len(parsed.output_text.split()) == 16
    assert parsed.output[0].status == "incomplete"
    assert raw["max_output_tokens"] == 16


def test_params_are_echoed(client: openai.OpenAI) -> None:
    raw = create_raw(
        client,
        model="resq-builtin",
        input="x",
        instructions="be brief",
        temperature=0.2,
        top_p=0.5,
        text={"format": {"type": "json_object"}, "verbosity": "low"},
        reasoning={"effort": "low"},
        user="u1",
        safety_identifier="s1",
        prompt_cache_key="pk",
        parallel_tool_calls=False,
        tool_choice="none",
    )
    check(raw)
    assert (raw["instructions"], raw["temperature"], raw["top_p"]) == ("be brief", 0.2, 0.5)
    assert raw["text"] == {"format": {"type": "json_object"}, "verbosity": "low"}
    assert raw["reasoning"] == {"effort": "low", "summary": None}
    assert (raw["user"], raw["safety_identifier"], raw["prompt_cache_key"]) == ("u1", "s1", "pk")
    assert raw["parallel_tool_calls"] is False and raw["tool_choice"] == "none"


# ---- Chat Completions upstream -------------------------------------------------------------


def test_upstream_text_and_usage(stack: Stack, client: openai.OpenAI) -> None:
    raw = create_raw(
        client,
        model="upstream-fast",
        input="hello upstream",
        instructions="be nice",
        max_output_tokens=100,
    )
    parsed = check(raw)
    assert parsed.status == "completed"
    assert parsed.output_text == "Hello from upstream"
    assert parsed.usage is not None and parsed.usage.output_tokens > 0
    assert raw["model"] == "upstream-fast"
    sent = stack.upstream.requests[-1]
    assert sent["body"]["model"] == "fake-model"
    assert sent["body"]["stream"] is True
    assert sent["body"]["messages"][0] == {"role": "system", "content": "be nice"}
    assert sent["body"]["max_tokens"] == 100
    assert sent["headers"]["authorization"] == "Bearer sk-upstream-secret"


@pytest.mark.parametrize(
    ("model", "message", "expected"),
    [
        ("upstream-fast", 'upstream: {"mode": "status", "status": 500}', "HTTP 500"),
        ("upstream-slow", 'upstream: {"mode": "hang", "seconds": 5}', "timed out"),
        ("upstream-dead", "anything", "could not reach upstream"),
    ],
    ids=["upstream-500", "upstream-timeout", "connection-refused"],
)
def test_upstream_failures_fail_the_response(
    client: openai.OpenAI, model: str, message: str, expected: str
) -> None:
    created = client.responses.create(model=model, input=message, background=True)
    raw = wait_status(client, created.id, TERMINAL)
    parsed = check(raw)
    assert parsed.status == "failed"
    assert parsed.error is not None and parsed.error.code == "server_error"
    assert expected in parsed.error.message
    assert retrieve_raw(client, created.id)["status"] == "failed"


def test_upstream_429_maps_to_rate_limit(client: openai.OpenAI) -> None:
    raw = create_raw(
        client, model="upstream-fast", input='upstream: {"mode": "status", "status": 429}'
    )
    parsed = check(raw)
    assert parsed.status == "failed"
    assert parsed.error is not None and parsed.error.code == "rate_limit_exceeded"
    assert "HTTP 429" in parsed.error.message
