"""The provider interface: a request in, a stream of normalised deltas out.

A provider never builds Responses events; ``worker.stream_state`` does that from the deltas.
Failures are raised as ``ProviderError`` with the upstream's answer in the message.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class RefusalDelta:
    text: str


@dataclass(frozen=True)
class ReasoningDelta:
    """Reasoning summary text; ``part`` is the summary part it belongs to (a new index opens a
    new part of the same reasoning item)."""

    text: str
    part: int = 0


@dataclass(frozen=True)
class ReasoningDone:
    """The reasoning item the model was writing is complete. ``encrypted_content`` is what the
    upstream needs to see it again on a later turn (OpenAI's ``encrypted_content``, Anthropic's
    signed thinking block), kept with the item and shown to a client that ``include``s
    ``reasoning.encrypted_content``. A ``ReasoningDone`` with no summary before it is a
    reasoning item with no readable text (Anthropic's ``redacted_thinking``)."""

    encrypted_content: str | None = None


@dataclass(frozen=True)
class ToolCallDelta:
    index: int
    arguments: str = ""
    call_id: str | None = None
    name: str | None = None


@dataclass(frozen=True)
class Usage:
    input_tokens: int
    output_tokens: int
    reasoning_tokens: int = 0
    cached_tokens: int = 0  # input tokens read from the upstream's prompt cache
    cache_write_tokens: int = 0  # input tokens written to it (Anthropic's cache_creation)


FinishReason = Literal["stop", "length", "content_filter", "tool_calls"]


@dataclass(frozen=True)
class Finish:
    reason: FinishReason


Delta = TextDelta | RefusalDelta | ReasoningDelta | ReasoningDone | ToolCallDelta | Usage | Finish


class ProviderError(Exception):
    """The upstream failed. ``code`` is a Response error code (``server_error``,
    ``rate_limit_exceeded``); ``status`` is the upstream HTTP status when there was one."""

    def __init__(self, message: str, *, code: str = "server_error", status: int | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status


@dataclass(frozen=True)
class ProviderRequest:
    model: str
    input_items: list[dict[str, Any]]
    instructions: str | None = None
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_choice: Any = "auto"
    parallel_tool_calls: bool = True
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    reasoning: dict[str, Any] | None = None
    text: dict[str, Any] | None = None


class Provider(Protocol):
    def stream(self, request: ProviderRequest) -> Iterator[Delta]:
        """Yield deltas; close the generator to abandon the upstream call."""
        ...


def message_text(item: dict[str, Any]) -> str:
    """The text of a message item's text parts, joined."""
    content = item.get("content")
    if isinstance(content, str):
        return content
    parts = content if isinstance(content, list) else []
    return "".join(
        str(p.get("text", p.get("refusal", "")))
        for p in parts
        if isinstance(p, dict) and p.get("type") in {"input_text", "output_text", "refusal"}
    )
