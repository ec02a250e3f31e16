"""The built-in model: deterministic, offline, scriptable from the request.

Without a script it answers ``You said: <the last user message>``. A user message whose
text starts with ``#resq`` followed by a JSON object scripts the run (README, "The built-in
model"):

    #resq {"text": "Hello there", "words": 50, "delay_ms": 20,
           "reasoning": "Thinking first.", "refusal": "I can't help with that.",
           "tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}],
           "error": {"message": "upstream exploded", "code": "server_error", "after_tokens": 3}}

``words`` N produces N generated words after ``text``; ``delay_ms`` paces every token;
``wait_ms`` is a silence before the first one (an upstream that thinks before it speaks);
``max_output_tokens`` is honoured (the run stops with finish reason ``length``).
``rounds`` scripts a tool loop: a list of rounds of calls; after the user's message it makes
round one, after their results round two, and so on, then answers ``text`` (or ``Tool
results: …``, the outputs it got). ``tool_choice`` ``"none"`` stops it calling tools;
``"required"`` or a named function without a script makes it call that (or the first) tool
with ``{}``; ``parallel_tool_calls: false`` keeps one call per round.
``{"show_context": true}`` makes it answer with what it was given (``describe``): the
instructions and every item of its context, in order (images and files as ``[image …]`` and
``[file <name> <media type>]``). Asked for a compaction summary
(``shared.model_context.COMPACTION_PROMPT``), it answers with the same description of everything
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
from shared.media import media_of
from shared.model_context import COMPACTION_PROMPT
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


def _describe_media(item: dict[str, Any]) -> str:
    """`` [image https://…]``, `` [file report.pdf application/pdf]`` for each image or file."""
    content = item.get("content")
    out = []
    for part in content if isinstance(content, list) else []:
        media = media_of(part) if isinstance(part, dict) else None
        if media is None:
            continue
        if media.kind == "image":
            out.append(f" [image {media.url or media.media_type}]")
        else:
            out.append(f" [file {media.filename or '-'} {media.media_type}]")
    return "".join(out)


def _describe_item(item: dict[str, Any]) -> str:
    itype = item.get("type")
    if itype == "message":
        return f"{item.get('role')}: {message_text(item)}{_describe_media(item)}"
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

        calls = _planned_calls(script, request)
        if script.get("wait_ms"):
            self.sleep(float(script["wait_ms"]) / 1000.0)
        try:
            if script.get("reasoning"):
                yield from produce(ReasoningDelta, str(script["reasoning"]))
            if script.get("refusal"):
                yield from produce(RefusalDelta, str(script["refusal"]))
            elif calls:
                yield from self._tool_calls(calls)
            else:
                yield from produce(TextDelta, _reply_text(script, last_user, request))
            if isinstance(fail, dict):  # a failure scripted past the end still fires
                raise _failure(fail)
        except _OutOfBudget:
            yield usage()
            yield Finish("length")
            return
        yield usage()
        yield Finish("tool_calls" if calls and not script.get("refusal") else "stop")

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


def _since_last_user(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    last = max(
        (
            i
            for i, item in enumerate(items)
            if item.get("type") == "message" and item.get("role") == "user"
        ),
        default=-1,
    )
    return items[last + 1 :]


def _rounds_done(items: list[dict[str, Any]]) -> int:
    """Tool-call rounds since the last user message: runs of consecutive function calls."""
    rounds, previous = 0, None
    for item in _since_last_user(items):
        kind = item.get("type")
        if kind == "function_call" and previous != "function_call":
            rounds += 1
        previous = kind
    return rounds


def _planned_calls(script: dict[str, Any], request: ProviderRequest) -> list[dict[str, Any]]:
    """The calls to make this turn: the script's next round (``tool_calls`` is round one,
    ``rounds`` lists several), or, with ``tool_choice`` forcing a call and no script, one
    call of the forced (or first) tool with ``{}``. None with ``tool_choice: "none"``."""
    choice = request.tool_choice
    if choice == "none":
        return []
    rounds = script.get("rounds")
    if rounds is None:
        rounds = [script["tool_calls"]] if script.get("tool_calls") else []
    if not isinstance(rounds, list) or not all(isinstance(r, list) for r in rounds):
        raise ProviderError("built-in model: 'rounds' must be a list of lists of calls")
    done = _rounds_done(request.input_items)
    calls: list[dict[str, Any]] = []
    if done < len(rounds):
        calls = rounds[done]
    elif done == 0 and request.tools and (choice == "required" or isinstance(choice, dict)):
        name = choice.get("name") if isinstance(choice, dict) else None
        calls = [{"name": name or request.tools[0]["name"], "arguments": {}}]
    return calls if request.parallel_tool_calls else calls[:1]


def _reply_text(script: dict[str, Any], last_user: str, request: ProviderRequest) -> str:
    if script.get("show_context"):
        return describe(request.instructions, request.input_items)
    if _rounds_done(request.input_items) and not script.get("text"):
        outputs = [
            token_count.item_text(i)
            for i in _since_last_user(request.input_items)
            if i.get("type") == "function_call_output"
        ]
        return "Tool results: " + "; ".join(outputs)
    if not script and last_user == COMPACTION_PROMPT:
        return describe(request.instructions, request.input_items[:-1])
    if not script:
        return f"You said: {last_user}" if last_user else "Hello! I am the resq built-in model."
    text = str(script.get("text", ""))
    words = int(script.get("words", 0))
    generated = " ".join(_WORDS[i % len(_WORDS)] for i in range(words))
    if text and generated:
        return f"{text} {generated}"
    if not (text or generated) and (script.get("tool_calls") or script.get("rounds")):
        return "Answering without tools."  # its calls were not wanted (tool_choice "none")
    return text or generated
