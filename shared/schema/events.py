"""Stream events (spec digest §4.2), as pydantic models.

Builders create them without a ``sequence_number``; ``shared.bus.Emitter`` stamps it, the
only place that does, when the event is published. ``wire(n)`` is the JSON-ready event in
OpenAI's key order (``type`` and ``sequence_number`` first). Tests parse every one of these
with the openai SDK's own event types.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

JSON = dict[str, Any]


class Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: str

    def wire(self, sequence_number: int) -> JSON:
        data = self.model_dump()
        return {"type": data.pop("type"), "sequence_number": sequence_number, **data}


class ResponseEvent(Event):
    """A lifecycle event carrying a full Response snapshot."""

    type: Literal[
        "response.created",
        "response.queued",
        "response.in_progress",
        "response.completed",
        "response.failed",
        "response.incomplete",
    ]
    response: JSON


# The log of every response opens with these, before any output: ``created``, ``queued``
# (background only), ``in_progress`` (``shared.lifecycle.opening_events``).
OPENING_TYPES = frozenset({"response.created", "response.queued", "response.in_progress"})

# The event that ends a stream whose response ended with a status. The SDK's event union has
# no ``response.cancelled``: a cancelled response ends its stream with ``response.incomplete``
# whose Response carries ``status: "cancelled"``. Both SDKs end cleanly on it (the raw stream
# stops; the Agents SDK reports a non-completed response).
_TERMINAL_BY_STATUS = {
    "completed": "response.completed",
    "failed": "response.failed",
    "incomplete": "response.incomplete",
    "cancelled": "response.incomplete",
}
TERMINAL_TYPES = frozenset(_TERMINAL_BY_STATUS.values())


def terminal_type(status: str) -> str:
    """The event that ends a stream whose response ended with ``status``."""
    return _TERMINAL_BY_STATUS[status]


class OutputItemEvent(Event):
    type: Literal["response.output_item.added", "response.output_item.done"]
    output_index: int
    item: JSON


class _InItem(Event):
    item_id: str
    output_index: int


class _InPart(_InItem):
    content_index: int


class ContentPartEvent(_InPart):
    type: Literal["response.content_part.added", "response.content_part.done"]
    part: JSON


class OutputTextDelta(_InPart):
    type: Literal["response.output_text.delta"] = "response.output_text.delta"
    delta: str
    logprobs: list[JSON] = Field(default_factory=list)


class OutputTextDone(_InPart):
    type: Literal["response.output_text.done"] = "response.output_text.done"
    text: str
    logprobs: list[JSON] = Field(default_factory=list)


class RefusalDelta(_InPart):
    type: Literal["response.refusal.delta"] = "response.refusal.delta"
    delta: str


class RefusalDone(_InPart):
    type: Literal["response.refusal.done"] = "response.refusal.done"
    refusal: str


class FunctionCallArgumentsDelta(_InItem):
    type: Literal["response.function_call_arguments.delta"] = (
        "response.function_call_arguments.delta"
    )
    delta: str


class FunctionCallArgumentsDone(_InItem):
    """Carries ``name`` too: SDK 2.x requires it (spec digest §9)."""

    type: Literal["response.function_call_arguments.done"] = "response.function_call_arguments.done"
    name: str
    arguments: str


class McpEvent(_InItem):
    """An MCP item's progress: its tool listing, or its call."""

    type: Literal[
        "response.mcp_list_tools.in_progress",
        "response.mcp_list_tools.completed",
        "response.mcp_list_tools.failed",
        "response.mcp_call.in_progress",
        "response.mcp_call.completed",
        "response.mcp_call.failed",
    ]


class McpCallArgumentsDelta(_InItem):
    type: Literal["response.mcp_call_arguments.delta"] = "response.mcp_call_arguments.delta"
    delta: str


class McpCallArgumentsDone(_InItem):
    type: Literal["response.mcp_call_arguments.done"] = "response.mcp_call_arguments.done"
    arguments: str


class ReasoningSummaryPartEvent(_InItem):
    type: Literal["response.reasoning_summary_part.added", "response.reasoning_summary_part.done"]
    summary_index: int
    part: JSON


class ReasoningSummaryTextDelta(_InItem):
    type: Literal["response.reasoning_summary_text.delta"] = "response.reasoning_summary_text.delta"
    summary_index: int
    delta: str


class ReasoningSummaryTextDone(_InItem):
    type: Literal["response.reasoning_summary_text.done"] = "response.reasoning_summary_text.done"
    summary_index: int
    text: str


class ErrorEvent(Event):
    """The documented flat ``error`` event (§4.4). Never a nested ``error`` object: the
    Python SDK raises on any event with a top-level ``error`` key."""

    type: Literal["error"] = "error"
    code: str | None
    message: str
    param: str | None = None


StreamEvent = (
    ResponseEvent
    | OutputItemEvent
    | ContentPartEvent
    | OutputTextDelta
    | OutputTextDone
    | RefusalDelta
    | RefusalDone
    | FunctionCallArgumentsDelta
    | FunctionCallArgumentsDone
    | McpEvent
    | McpCallArgumentsDelta
    | McpCallArgumentsDone
    | ReasoningSummaryPartEvent
    | ReasoningSummaryTextDelta
    | ReasoningSummaryTextDone
    | ErrorEvent
)
