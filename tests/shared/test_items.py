"""The input item union (shared.schema.items): what each shape normalises to, key for key and
in the client's order, and OpenAI's code, param and message for what it refuses."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared.errors import InvalidRequest
from shared.schema.items import normalize_input
from shared.schema.requests import parse_create_request


def normalized(value: Any) -> list[dict[str, Any]]:
    return normalize_input(parse_create_request({"model": "m", "input": value}).input)


def test_a_string_is_one_user_message() -> None:
    assert normalized("hi") == [
        {
            "role": "user",
            "content": [{"type": "input_text", "text": "hi"}],
            "type": "message",
            "status": "completed",
        }
    ]


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        # Unknown keys stay where the client put them; resq's defaults come after.
        ({"content": "hi", "x": 1, "role": "assistant"},
         {"content": [{"type": "output_text", "text": "hi", "annotations": [], "logprobs": []}],
          "x": 1, "role": "assistant", "type": "message", "status": "completed"}),
        ({"type": "message", "role": "assistant", "status": "incomplete",
          "content": [{"text": "a", "type": "output_text"}, {"type": "refusal"}]},
         {"type": "message", "role": "assistant", "status": "incomplete",
          "content": [{"annotations": [], "text": "a", "type": "output_text"},
                      {"type": "refusal"}]}),
        ({"id": "msg_1", "extra": True}, {"type": "item_reference", "id": "msg_1"}),
        ({"call_id": "c", "type": "function_call_output", "output": []},
         {"call_id": "c", "type": "function_call_output", "output": []}),
        ({"type": "web_search_call", "anything": {"a": 1}},
         {"type": "web_search_call", "anything": {"a": 1}}),
    ],
)  # fmt: skip
def test_items_keep_what_the_client_sent(item: dict[str, Any], expected: dict[str, Any]) -> None:
    (found,) = normalized([item])
    assert json.dumps(found) == json.dumps(expected)  # same keys, values and order


@pytest.mark.parametrize(
    ("item", "code", "param", "message"),
    [
        (5, "invalid_type", "input[0]",
         "Invalid type for 'input[0]': expected an object, but got an integer instead."),
        ({}, "missing_required_parameter", "input[0].type",
         "Missing required parameter: 'input[0].type'."),
        ({"type": "foo", "id": 5}, "invalid_type", "input[0].id",
         "Invalid type for 'input[0].id': expected a string, but got an integer instead."),
        ({"role": "bot", "content": "x"}, "invalid_value", "input[0].role",
         "Invalid value: 'bot'. Supported values are: 'user', 'assistant', 'system' and "
         "'developer'."),
        ({"role": "user", "content": [{"type": "input_text", "text": 5}]},
         "missing_required_parameter", "input[0].content[0].text",
         "Missing required parameter: 'input[0].content[0].text'."),
        ({"role": "assistant", "content": [{"type": []}]}, "invalid_value",
         "input[0].content[0].type",
         "Invalid value: '[]'. Supported values are: 'output_text' and 'refusal'."),
        ({"type": "function_call_output", "call_id": "c", "output": None}, "invalid_type",
         "input[0].output",
         "Invalid type for 'input[0].output': expected a string or an array, but got null "
         "instead."),
        ({"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}", "id": None},
         "invalid_type", "input[0].id",
         "Invalid type for 'input[0].id': expected a string, but got null instead."),
        ({"type": "reasoning", "summary": [{"type": "summary_text"}]}, "invalid_type",
         "input[0].summary[0].text",
         "Invalid type for 'input[0].summary[0].text': expected a string, but got null "
         "instead."),
        ({"type": "reasoning", "summary": [], "encrypted_content": 5}, "invalid_type",
         "input[0].encrypted_content",
         "Invalid type for 'input[0].encrypted_content': expected a string or null, but got an "
         "integer instead."),
        ({"type": "item_reference", "id": None}, "missing_required_parameter", "input[0].id",
         "Missing required parameter: 'input[0].id'."),
    ],
)  # fmt: skip
def test_refused_items_get_openais_error(item: Any, code: str, param: str, message: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        normalized([item])
    assert (info.value.code, info.value.param, str(info.value)) == (code, param, message)
