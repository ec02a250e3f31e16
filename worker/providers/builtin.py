"""The built-in model: deterministic, offline, scriptable from the request.

Without a script it answers ``You said: <the last user message>``. A user message whose
text starts with ``#resq`` followed by a JSON object scripts the run (README, "The built-in
model"):

    #resq {"text": "Hello there", "words": 50, "delay_ms": 20,
           "reasoning": "Thinking first.", "refusal": "I can't help with that.",
           "tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}],
           "error": {"message": "upstream exploded", "code": "server_error", "after_tokens": 3}}

``words`` N produces N generated words after ``text``; ``delay_ms`` paces every token;
``max_output_tokens`` is honoured (the run stops with finish reason ``length``).
``{"show_context": true}`` makes it answer with what it was given (``describe``): the
instructions and every item of its context, in order. Asked for a compaction summary
(``shared.context.COMPACTION_PROMPT``), it answers with the same description of everything
before the request. Input tokens are counted as ``shared.tokens`` counts them for it: one
per word.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

from shared import tokens as token_count
from shared.context import COMPACTION_PROMPT
from worker.providers.base import (
    Delta,
    Finish,
    ProviderError,
    ProviderRequest,
    ReasoningDelta,
    RefusalDelta,
    TextDelta,
    ToolCallDelta,
    Usage,
    message_text,
)

SCRIPT_MARKER = "#resq"
_TOKEN = re.compile(r"\s*\S+\s*|\s+")
_WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel")


def tokens(text: str) -> list[str]:
    """Split text into word tokens whose concatenation is the text."""
    return _TOKEN.findall(text)


def _script(request: ProviderRequest) -> tuple[dict[str, Any], str]:
    last_user = ""
    for item in request.input_items:
        if item.get("type") == "message" and item.get("role") == "user":
            last_user = message_text(item)
    stripped = last_user.strip()
    if not stripped.startswith(SCRIPT_MARKER):
        return {}, last_user
    try:
        script = json.loads(stripped[len(SCRIPT_MARKER) :] or "{}")
    except json.JSONDecodeError as exc:
        raise ProviderError(f"built-in model: the #resq script is not valid JSON: {exc}") from exc
    if not isinstance(script, dict):
        raise ProviderError("built-in model: the #resq script must be a JSON object")
    return script, last_user


def _input_tokens(request: ProviderRequest) -> int:
    return token_count.count(request.instructions, request.input_items, method=token_count.BUILTIN)


def _describe_item(item: dict[str, Any]) -> str:
    itype = item.get("type")
    if itype == "message":
        return f"{item.get('role')}: {message_text(item)}"
    if itype == "function_call":
        return f"function_call {item.get('name')}({item.get('arguments', '')})"
    if itype == "function_call_output":
        return f"function_call_output {item.get('call_id')}: {token_count.item_text(item)}"
    return str(itype)


def describe(instructions: str | None, items: list[dict[str, Any]]) -> str:
    """What the model was given, in one line: ``instructions: … | user: … | assistant: …``."""
    return " | ".join([f"instructions: {instructions or '-'}"] + [_describe_item(i) for i in items])


class BuiltinModel:
    def __init__(self, sleep: Callable[[float], None] = time.sleep) -> None:
        self.sleep = sleep

    def stream(self, request: ProviderRequest) -> Iterator[Delta]:
        script, last_user = _script(request)
        delay = float(script.get("delay_ms", 0)) / 1000.0
        budget = request.max_output_tokens
        fail = script.get("error")
        fail_after = int(fail.get("after_tokens", 0)) if isinstance(fail, dict) else None
        emitted = 0
        reasoning_tokens = 0

        def produce(
            kind: type[TextDelta] | type[RefusalDelta] | type[ReasoningDelta], text: str
        ) -> Iterator[Delta]:
            nonlocal emitted, reasoning_tokens
            for tok in tokens(text):
                if isinstance(fail, dict) and fail_after is not None and emitted >= fail_after:
                    raise _failure(fail)
                if budget is not None and emitted >= budget:
                    raise _OutOfBudget
                if delay:
                    self.sleep(delay)
                emitted += 1
                if kind is ReasoningDelta:
                    reasoning_tokens += 1
                yield kind(tok)

        def usage() -> Usage:
            return Usage(_input_tokens(request), emitted, reasoning_tokens)

        try:
            if script.get("reasoning"):
                yield from produce(ReasoningDelta, str(script["reasoning"]))
            if script.get("refusal"):
                yield from produce(RefusalDelta, str(script["refusal"]))
            elif script.get("tool_calls"):
                yield from self._tool_calls(script["tool_calls"])
            else:
                yield from produce(TextDelta, _reply_text(script, last_user, request))
            if isinstance(fail, dict):  # a failure scripted past the end still fires
                raise _failure(fail)
        except _OutOfBudget:
            yield usage()
            yield Finish("length")
            return
        yield usage()
        yield Finish(
            "tool_calls" if script.get("tool_calls") and not script.get("refusal") else "stop"
        )

    def _tool_calls(self, calls: Any) -> Iterator[Delta]:
        if not isinstance(calls, list):
            raise ProviderError("built-in model: 'tool_calls' must be a list")
        for index, call in enumerate(calls):
            arguments = call.get("arguments", {})
            if not isinstance(arguments, str):
                arguments = json.dumps(arguments)
            yield ToolCallDelta(index=index, call_id=call.get("call_id"), name=call["name"])
            for chunk in (arguments[i : i + 8] for i in range(0, len(arguments), 8)):
                yield ToolCallDelta(index=index, arguments=chunk)


class _OutOfBudget(Exception):
    pass


def _failure(fail: dict[str, Any]) -> ProviderError:
    status = fail.get("status")
    return ProviderError(
        str(fail.get("message", "built-in model failure")),
        code=str(fail.get("code", "server_error")),
        status=int(status) if status is not None else None,
    )


def _reply_text(script: dict[str, Any], last_user: str, request: ProviderRequest) -> str:
    if script.get("show_context"):
        return describe(request.instructions, request.input_items)
    if not script and last_user == COMPACTION_PROMPT:
        return describe(request.instructions, request.input_items[:-1])
    if not script:
        return f"You said: {last_user}" if last_user else "Hello! I am the resq built-in model."
    text = str(script.get("text", ""))
    words = int(script.get("words", 0))
    generated = " ".join(_WORDS[i % len(_WORDS)] for i in range(words))
    if text and generated:
        return f"{text} {generated}"
    return text or generated
