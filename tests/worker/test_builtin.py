"""The built-in model: each scripted path yields exactly the deltas it promises."""

from __future__ import annotations

import json

import pytest

from worker.providers.base import (
    Finish,
    ProviderError,
    ProviderRequest,
    ReasoningDelta,
    RefusalDelta,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from worker.providers.builtin import BuiltinModel, describe, tokens


def request(text: str, **kwargs: object) -> ProviderRequest:
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    return ProviderRequest(model="resq-builtin", input_items=[item], **kwargs)  # type: ignore[arg-type]


def run(text: str, **kwargs: object) -> list[object]:
    sleeps: list[float] = []
    deltas = list(BuiltinModel(sleep=sleeps.append).stream(request(text, **kwargs)))
    return deltas


def script(**kwargs: object) -> str:
    return "#resq " + json.dumps(kwargs)


def test_tokens_concatenate_to_the_text() -> None:
    text = "  Hello,  world!\nnew line "
    assert "".join(tokens(text)) == text


def test_default_reply_echoes_the_last_user_message() -> None:
    deltas = run("hi there")
    text = "".join(d.text for d in deltas if isinstance(d, TextDelta))
    assert text == "You said: hi there"
    assert deltas[-2] == Usage(input_tokens=2, output_tokens=4)
    assert deltas[-1] == Finish("stop")


def test_words_and_pace() -> None:
    sleeps: list[float] = []
    deltas = list(
        BuiltinModel(sleep=sleeps.append).stream(
            request(script(text="Start", words=5, delay_ms=20))
        )
    )
    text = "".join(d.text for d in deltas if isinstance(d, TextDelta))
    assert text == "Start alpha bravo charlie delta echo"
    assert sleeps == [0.02] * 6


def test_reasoning_then_text_counts_reasoning_tokens() -> None:
    deltas = run(script(reasoning="Think hard.", text="Done."))
    kinds = [type(d).__name__ for d in deltas]
    assert kinds == ["ReasoningDelta", "ReasoningDelta", "TextDelta", "Usage", "Finish"]
    usage = deltas[-2]
    assert isinstance(usage, Usage) and usage.reasoning_tokens == 2 and usage.output_tokens == 3


def test_refusal() -> None:
    deltas = run(script(refusal="No way."))
    assert [d.text for d in deltas if isinstance(d, RefusalDelta)] == ["No ", "way."]
    assert deltas[-1] == Finish("stop")


def test_tool_calls_stream_arguments_in_fragments() -> None:
    deltas = run(
        script(
            tool_calls=[
                {"name": "f", "arguments": {"a": 1, "long": "x" * 20}},
                {"name": "g", "call_id": "call_fixed", "arguments": "{}"},
            ]
        )
    )
    calls = [d for d in deltas if isinstance(d, ToolCallDelta)]
    first = [d for d in calls if d.index == 0]
    assert first[0].name == "f" and first[0].arguments == ""
    assert json.loads("".join(d.arguments for d in first)) == {"a": 1, "long": "x" * 20}
    assert len(first) > 2
    second = [d for d in calls if d.index == 1]
    assert second[0].call_id == "call_fixed"
    assert deltas[-1] == Finish("tool_calls")


def test_max_output_tokens_stops_with_length() -> None:
    deltas = run(script(words=40), max_output_tokens=16)
    assert len([d for d in deltas if isinstance(d, TextDelta)]) == 16
    assert deltas[-1] == Finish("length")


def test_scripted_error_after_tokens() -> None:
    model = BuiltinModel(sleep=lambda _s: None)
    stream = model.stream(
        request(
            script(
                text="a b c d",
                error={
                    "message": "boom",
                    "code": "rate_limit_exceeded",
                    "after_tokens": 2,
                    "status": 429,
                },
            )
        )
    )
    got = [next(stream), next(stream)]
    assert [d.text for d in got if isinstance(d, TextDelta)] == ["a ", "b "]
    with pytest.raises(ProviderError) as info:
        next(stream)
    assert (info.value.message, info.value.code, info.value.status) == (
        "boom",
        "rate_limit_exceeded",
        429,
    )


def test_bad_script_is_a_provider_error() -> None:
    with pytest.raises(ProviderError, match="not valid JSON"):
        run("#resq {nope")


def test_reasoning_delta_type_is_distinct() -> None:
    assert ReasoningDelta("x") != TextDelta("x")


def test_describe_names_images_and_files() -> None:
    item = {
        "type": "message",
        "role": "user",
        "content": [
            {"type": "input_text", "text": "look"},
            {"type": "input_image", "image_url": "https://example.com/cat.png"},
            {"type": "input_image", "image_url": "data:image/png;base64,AAAA"},
            {
                "type": "input_file",
                "filename": "r.pdf",
                "file_data": "data:application/pdf;base64,AA==",
            },
        ],
    }
    assert describe(None, [item]) == (
        "instructions: - | user: look [image https://example.com/cat.png] [image image/png]"
        " [file r.pdf application/pdf]"
    )
