"""What the Anthropic and Responses providers send upstream, built from resq's items (pure;
the streams themselves are tested against the fake upstreams in tests/worker/test_upstreams.py).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from shared.routing import Route, Router
from shared.settings import SettingsError
from worker.fetch import inline_files
from worker.providers import anthropic, chat_completions, openai_responses
from worker.providers.base import Finish, ProviderRequest

PDF_B64 = base64.b64encode(b"%PDF-1.4 fake").decode()
PNG_URL = "data:image/png;base64,iVBORw0KGgo="


def user(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": list(parts)}


def request(*items: dict[str, Any], **kwargs: Any) -> ProviderRequest:
    return ProviderRequest(model="m", input_items=list(items), **kwargs)


TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    "strict": True,
}
CALL = {
    "type": "function_call",
    "call_id": "toolu_1",
    "name": "get_weather",
    "arguments": '{"city": "Oslo"}',
}
OUTPUT = {"type": "function_call_output", "call_id": "toolu_1", "output": "cold"}
QUESTION = user({"type": "input_text", "text": "weather?"})


def test_anthropic_body_maps_system_messages_media_and_tools() -> None:
    body = anthropic.build_body(
        request(
            {"type": "message", "role": "developer", "content": "Be brief."},
            user(
                {"type": "input_text", "text": "Look"},
                {"type": "input_image", "image_url": "https://example.com/cat.png"},
                {"type": "input_image", "image_url": PNG_URL},
                {
                    "type": "input_file",
                    "filename": "a.pdf",
                    "file_data": f"data:application/pdf;base64,{PDF_B64}",
                },
            ),
            CALL,
            OUTPUT,
            instructions="You are terse.",
            tools=[TOOL],
            tool_choice="required",
            parallel_tool_calls=False,
            temperature=0.2,
        ),
        "claude-x",
        1000,
    )
    assert body["model"] == "claude-x" and body["stream"] is True and body["max_tokens"] == 1000
    assert body["system"] == "You are terse.\n\nBe brief."
    assert body["temperature"] == 0.2
    first, call, result = body["messages"]
    assert first["role"] == "user"
    assert first["content"] == [
        {"type": "text", "text": "Look"},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
        },
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": PDF_B64},
            "title": "a.pdf",
        },
    ]
    assert call == {
        "role": "assistant",
        "content": [
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}}
        ],
    }
    assert result == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "cold"}],
    }
    assert body["tools"] == [
        {"name": "get_weather", "description": "Weather", "input_schema": TOOL["parameters"]}
    ]
    assert body["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}


@pytest.mark.parametrize(
    ("choice", "sent"),
    [
        ("auto", {"type": "auto"}),
        ("none", {"type": "none"}),
        ({"type": "function", "name": "get_weather"}, {"type": "tool", "name": "get_weather"}),
    ],
)
def test_anthropic_tool_choice(choice: Any, sent: dict[str, Any]) -> None:
    body = anthropic.build_body(request(user(), tools=[TOOL], tool_choice=choice), "c", 100)
    assert body["tool_choice"] == sent


def test_anthropic_thinking_budget_and_what_it_excludes() -> None:
    body = anthropic.build_body(
        request(
            user({"type": "input_text", "text": "hi"}),
            reasoning={"effort": "medium"},
            temperature=0.5,
        ),
        "c",
        20000,
    )
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 8192}
    assert "temperature" not in body  # thinking takes no sampling changes
    small = anthropic.build_body(request(reasoning={"effort": "high"}), "c", 900)
    assert "thinking" not in small  # no budget of 1024 fits under max_tokens
    # The echo's defaults (1.0) are never sent.
    plain = anthropic.build_body(request(temperature=1.0, top_p=1.0), "c", 100)
    assert "temperature" not in plain and "top_p" not in plain


def test_anthropic_thinking_blocks_go_back_and_a_tool_loop_without_one_thinks_no_more() -> None:
    thought = {
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": "Hmm."}],
        "encrypted_content": "sig-1",
    }
    redacted = {"type": "reasoning", "summary": [], "encrypted_content": "redacted_thinking:xyz"}
    body = anthropic.build_body(
        request(QUESTION, thought, redacted, CALL, OUTPUT, reasoning={"effort": "low"}), "c", 5000
    )
    assert body["messages"][1]["content"][:2] == [
        {"type": "thinking", "thinking": "Hmm.", "signature": "sig-1"},
        {"type": "redacted_thinking", "data": "xyz"},
    ]
    assert body["thinking"]["type"] == "enabled"
    foreign = {"type": "reasoning", "summary": [{"type": "summary_text", "text": "x"}]}
    body = anthropic.build_body(
        request(QUESTION, foreign, CALL, OUTPUT, reasoning={"effort": "low"}), "c", 5000
    )
    assert body["messages"][1]["content"][0]["type"] == "tool_use"
    assert "thinking" not in body


def test_anthropic_structured_output_forms() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    fmt = {"format": {"type": "json_schema", "name": "x", "schema": schema, "strict": True}}
    body = anthropic.build_body(request(text=fmt), "c", 100)
    assert body["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
    body = anthropic.build_body(request(text={"format": {"type": "json_object"}}), "c", 100)
    assert body["system"] == anthropic.JSON_OBJECT_NOTE


def test_responses_body_is_stream_and_store_false_and_never_background() -> None:
    body = openai_responses.build_body(
        request(
            user(
                {"type": "input_text", "text": "hi"},
                {"type": "input_file", "file_data": PDF_B64, "filename": "a.pdf"},
            ),
            {"type": "reasoning", "id": "rs_1", "summary": [], "status": "completed"},
            {"type": "reasoning", "id": "rs_2", "summary": [], "encrypted_content": "enc"},
            {**CALL, "id": "fc_1", "status": "completed"},
            OUTPUT,
            instructions="be brief",
            tools=[TOOL],
            reasoning={"effort": "high", "summary": None},
            max_output_tokens=50,
            temperature=1.0,
        ),
        "gpt-x",
    )
    assert body["stream"] is True and body["store"] is False and "background" not in body
    assert body["include"] == ["reasoning.encrypted_content"]
    assert body["instructions"] == "be brief" and body["max_output_tokens"] == 50
    assert body["reasoning"] == {"effort": "high"}
    assert "temperature" not in body
    assert body["tools"] == [TOOL]
    items = body["input"]
    assert [i["type"] for i in items] == [
        "message",
        "reasoning",
        "function_call",
        "function_call_output",
    ]
    assert items[0]["content"][1] == {
        "type": "input_file",
        "file_data": f"data:application/pdf;base64,{PDF_B64}",
        "filename": "a.pdf",
    }
    assert items[1] == {
        "type": "reasoning",
        "id": "rs_2",
        "summary": [],
        "encrypted_content": "enc",
    }
    assert "id" not in items[2] and "status" not in items[2]


def test_file_urls_are_fetched_and_inlined() -> None:
    fetched: list[str] = []

    def fetch(url: str) -> tuple[bytes, str]:
        fetched.append(url)
        return b"%PDF-1.4", "application/pdf"

    items = [user({"type": "input_file", "file_url": "https://files.example/r/report.pdf"}), OUTPUT]
    out = inline_files(items, fetch)
    assert fetched == ["https://files.example/r/report.pdf"]
    part = out[0]["content"][0]
    assert part["filename"] == "report.pdf" and "file_url" not in part
    assert (
        part["file_data"] == "data:application/pdf;base64," + base64.b64encode(b"%PDF-1.4").decode()
    )
    assert out[1] is OUTPUT


def test_routes_for_the_new_providers(tmp_path: Any) -> None:
    models = tmp_path / "models.toml"
    models.write_text(
        """
[[route]]
match = "claude-*"
provider = "anthropic"
api_key_env = "ANTHROPIC_API_KEY"

[[route]]
match = "o4-*"
provider = "openai_responses"
base_url = "https://api.openai.com/v1"
accepts = { temperature = false, top_p = false }
json_retries = 1
validate_json = true

[[route]]
match = "llama"
provider = "vllm"
base_url = "http://vllm:8000/v1"
"""
    )
    router = Router.from_file(models)
    claude, o4, llama = router.routes
    assert claude.provider == "anthropic" and claude.base_url == "https://api.anthropic.com"
    assert claude.max_output_tokens == 4096
    assert not o4.accepts.temperature and o4.accepts.tools and o4.json_retries == 1
    assert not llama.accepts.files and llama.accepts.images
    bad = tmp_path / "bad.toml"
    bad.write_text('[[route]]\nmatch = "x"\nprovider = "anthropic"\naccepts = { colour = true }\n')
    with pytest.raises(SettingsError, match="unknown keys"):
        Router.from_file(bad)
    bad.write_text('[[route]]\nmatch = "x"\nprovider = "openai_responses"\n')
    with pytest.raises(SettingsError, match="needs a 'base_url'"):
        Router.from_file(bad)
    assert Route("x", "anthropic") != claude


def test_chat_completions_takes_inline_images_and_files() -> None:
    pdf = {"type": "input_file", "filename": "a.pdf", "file_data": PDF_B64}
    image = {"type": "input_image", "image_url": PNG_URL, "detail": "low"}
    messages = chat_completions.to_messages(
        request(user({"type": "input_text", "text": "see"}, image, pdf))
    )
    assert messages[0]["content"] == [
        {"type": "text", "text": "see"},
        {"type": "image_url", "image_url": {"url": PNG_URL, "detail": "low"}},
        {
            "type": "file",
            "file": {"file_data": f"data:application/pdf;base64,{PDF_B64}", "filename": "a.pdf"},
        },
    ]


WIRE = Path(__file__).parent.parent / "fakes" / "wire"


def _documented(name: str) -> dict[str, Any]:
    events: dict[str, Any] = json.loads((WIRE / name).read_text())["events"]
    return {key: entry["data"] for key, entry in events.items()}


def test_the_documented_anthropic_events_parse() -> None:
    events = _documented("anthropic_messages.json")
    read = anthropic._Read()
    deltas = [
        d
        for key, data in events.items()
        if key not in ("error", "message_stop")
        for d in anthropic.parse_event(data["type"], data, read)
    ]
    kinds = {type(d).__name__ for d in deltas}
    assert {"TextDelta", "ReasoningDelta", "ToolCallDelta"} <= kinds
    assert read.input_tokens > 0 and read.stop_reason is not None
    failure = anthropic._stream_error("u", events["error"])
    assert failure.retryable and "overloaded_error" in failure.detail


def test_the_documented_responses_events_parse() -> None:
    events = _documented("openai_responses.json")
    deltas = [
        d for data in events.values() for d in openai_responses.parse_event(data["type"], data)
    ]
    kinds = [type(d).__name__ for d in deltas]
    assert {"TextDelta", "ReasoningDelta", "ReasoningDone", "ToolCallDelta"} <= set(kinds)
    end = list(
        openai_responses.ResponsesProvider._end(
            "response.incomplete", events["response.incomplete"]["response"], False
        )
    )
    assert end[-1] == Finish("length")
    failed = openai_responses.ResponsesProvider._failure(
        "u", "response.failed", events["response.failed"]
    )
    assert failed.detail
