"""``shared.tokenizer``: a route's ``tokenize_url`` is asked for the count, with the route's
key; when it cannot answer, the estimate stands in and a warning says why. The upstream is an
``httpx.MockTransport``."""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import pytest

from shared import tokens
from shared.routing import BUILTIN, Route
from shared.tokenizer import input_tokens, upstream_count

URL = "http://tokenizer.test/tokenize"
ROUTE = Route(
    match="m",
    provider="openai",
    base_url="http://tokenizer.test/v1",
    api_key_env="RESQ_TEST_TOKENIZER_KEY",
    upstream_model="upstream-m",
    tokenize_url=URL,
)
ITEMS = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}]


def answering(status: int, body: Any, seen: list[httpx.Request]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, json=body)

    return httpx.MockTransport(handle)


def test_the_tokenizer_is_asked_with_the_routes_key_and_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RESQ_TEST_TOKENIZER_KEY", "sk-up")
    seen: list[httpx.Request] = []
    count = upstream_count(
        ROUTE, "m", "be brief", ITEMS, transport=answering(200, {"count": 7}, seen)
    )
    assert count == 7
    (request,) = seen
    assert (request.method, str(request.url)) == ("POST", URL)
    assert request.headers["authorization"] == "Bearer sk-up"
    assert json.loads(request.content) == {
        "model": "upstream-m",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi"},
        ],
    }


def test_no_key_in_the_environment_sends_no_authorization(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RESQ_TEST_TOKENIZER_KEY", raising=False)
    seen: list[httpx.Request] = []
    assert (
        upstream_count(ROUTE, "m", None, ITEMS, transport=answering(200, {"count": 3}, seen)) == 3
    )
    assert "authorization" not in seen[0].headers


@pytest.mark.parametrize(
    ("status", "body", "warning"),
    [
        (200, {"count": "7"}, f"tokenizer {URL} answered without an integer 'count'"),
        (200, {"count": True}, f"tokenizer {URL} answered without an integer 'count'"),
        (200, ["not", "an", "object"], f"tokenizer {URL} failed ("),
        (503, {"error": "busy"}, f"tokenizer {URL} failed (Server error '503 Service Unavailable"),
    ],
)
def test_an_answer_without_a_count_is_none_with_a_warning(
    caplog: pytest.LogCaptureFixture, status: int, body: Any, warning: str
) -> None:
    with caplog.at_level(logging.WARNING, logger="shared.tokenizer"):
        assert (
            upstream_count(ROUTE, "m", None, ITEMS, transport=answering(status, body, [])) is None
        )
    assert caplog.records[-1].getMessage().startswith(warning)


def test_without_a_tokenizer_the_count_is_the_builtin_or_the_estimate() -> None:
    builtin = Route(match="resq-*", provider=BUILTIN)
    assert (
        input_tokens(
            builtin, model="resq-x", instructions="a b", items=ITEMS, tools=[], truncation=None
        )
        == 3
    )
    assert input_tokens(
        None, model="", instructions="a b", items=ITEMS, tools=[], truncation=None
    ) == tokens.count("a b", ITEMS, method=tokens.ESTIMATE)


def test_auto_truncation_counts_what_would_remain() -> None:
    small = Route(match="resq-*", provider=BUILTIN, context_window=3)
    items = [
        {"type": "message", "role": "user", "content": "one two three"},
        {"type": "message", "role": "user", "content": "four five"},
    ]
    kept = input_tokens(
        small, model="resq-x", instructions=None, items=items, tools=[], truncation="auto"
    )
    assert kept == 2


def test_a_routes_key_is_read_from_the_variable_it_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESQ_TEST_TOKENIZER_KEY", "sk-1")
    assert ROUTE.api_key() == "sk-1"
    monkeypatch.delenv("RESQ_TEST_TOKENIZER_KEY")
    assert ROUTE.api_key() is None
    assert Route(match="resq-*", provider=BUILTIN).api_key() is None
