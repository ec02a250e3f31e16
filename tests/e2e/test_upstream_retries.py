"""Upstream retries end to end: the worker retries a transient upstream failure that came
before any output, and gives up with a message that counts the attempts.

The stack's worker runs with ``RESQ_UPSTREAM_RETRIES=2`` and
``RESQ_UPSTREAM_RETRY_BUDGET_SECONDS=10`` (tests/e2e/conftest.py): three attempts at most.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import openai
import pytest

from tests.e2e.conftest import Stack
from tests.e2e.helpers import TERMINAL, check, create_raw, retrieve_raw, wait_status

pytestmark = pytest.mark.e2e

FAILED_MIDSTREAM = "(failed mid-stream after output had started; not retried)"


def _message(**script: Any) -> tuple[str, str]:
    """A user message scripting the fake upstream, and the marker that finds its requests."""
    marker = uuid.uuid4().hex
    return f"run {marker}\nupstream: {json.dumps({'key': marker, **script})}", marker


def _attempts(stack: Stack, marker: str) -> int:
    """How many requests the upstream received for the message with ``marker``."""
    return sum(marker in json.dumps(r["body"]) for r in stack.upstream.requests)


def _url(stack: Stack) -> str:
    return f"{stack.upstream.base_url}/chat/completions"


def test_429_twice_then_200_completes(stack: Stack, client: openai.OpenAI) -> None:
    text, marker = _message(
        mode="flaky", failures=2, status=429, retry_after=0, text="Third time lucky"
    )
    raw = create_raw(client, model="upstream-fast", input=text)

    parsed = check(raw)
    assert parsed.status == "completed"
    assert parsed.error is None
    assert parsed.output_text == "Third time lucky"
    assert _attempts(stack, marker) == 3
    assert retrieve_raw(client, parsed.id)["status"] == "completed"
    log = stack.worker_log()
    assert "upstream attempt 1 of 3 failed, retrying in 0.00 s: " in log
    assert "upstream attempt 2 of 3 failed, retrying in 0.00 s: " in log
    assert "sk-upstream-secret" not in log


def test_retried_attempts_leave_no_trace_in_the_stream(stack: Stack, client: openai.OpenAI) -> None:
    text, marker = _message(mode="flaky", failures=2, status=503, retry_after_ms=50)
    with client.responses.stream(model="upstream-fast", input=text) as stream:
        types = [event.type for event in stream]
        final = stream.get_final_response()

    assert types == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert final.output_text == "Hello from upstream"
    assert _attempts(stack, marker) == 3


def test_500_always_fails_after_the_retries(stack: Stack, client: openai.OpenAI) -> None:
    text, marker = _message(mode="status", status=500, message="always broken")
    started = time.monotonic()
    created = client.responses.create(model="upstream-fast", input=text, background=True)
    raw = wait_status(client, created.id, TERMINAL)

    parsed = check(raw)
    assert parsed.status == "failed"
    assert parsed.error is not None
    assert parsed.error.code == "server_error"
    assert parsed.error.message == (
        f"upstream {_url(stack)} answered HTTP 500 after 3 attempts: always broken"
    )
    assert _attempts(stack, marker) == 3
    assert time.monotonic() - started < 10  # two backoff waits of at most 0.5 s and 1 s
    assert retrieve_raw(client, created.id)["error"] == raw["error"]


def test_retry_after_beyond_the_budget_fails_at_once(stack: Stack, client: openai.OpenAI) -> None:
    text, marker = _message(mode="flaky", failures=99, status=429, retry_after=60)
    started = time.monotonic()
    raw = create_raw(client, model="upstream-fast", input=text)

    parsed = check(raw)
    assert parsed.status == "failed"
    assert parsed.error is not None
    assert parsed.error.code == "rate_limit_exceeded"
    assert parsed.error.message == (
        f"upstream {_url(stack)} answered HTTP 429 after 1 attempt (it asked to wait 60 s, "
        "beyond the 10 s retry budget): Rate limit reached for fake-model."
    )
    assert _attempts(stack, marker) == 1
    assert time.monotonic() - started < 5


def test_failure_after_output_started_is_not_retried(stack: Stack, client: openai.OpenAI) -> None:
    text, marker = _message(mode="error_midstream", text="Partial answer", message="kaboom")
    raw = create_raw(client, model="upstream-fast", input=text)

    parsed = check(raw)
    assert parsed.status == "failed"
    assert parsed.error is not None
    assert parsed.error.code == "server_error"
    assert parsed.error.message == (
        f"upstream {_url(stack)} sent an error in the stream: kaboom {FAILED_MIDSTREAM}"
    )
    assert parsed.output_text == "Partial answer"
    assert _attempts(stack, marker) == 1
