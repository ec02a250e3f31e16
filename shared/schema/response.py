"""The Response object (``object: "response"``, spec digest §2).

A Response is assembled from what the store keeps: the echoed request parameters (fixed at
create time), the lifecycle fields (status, timestamps, error, usage) and the output items.
Create, retrieve, cancel and every lifecycle event use ``response_object`` so they can
never disagree.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from shared.schema.job import (
    DEFAULT_TEXT,
    ENCRYPTED_REASONING,
    UNECHOED,
    ConversationRef,
    JobSpec,
    ReasoningSpec,
)
from shared.schema.requests import CreateResponseRequest
from shared.schema.tools import FunctionTool, McpTool


class Status(StrEnum):
    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INCOMPLETE = "incomplete"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset(
    {Status.COMPLETED, Status.FAILED, Status.CANCELLED, Status.INCOMPLETE}
)


def echo_params(
    req: CreateResponseRequest,
    *,
    model: str,
    conversation_id: str | None = None,
    tools: Sequence[FunctionTool | McpTool | dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The request parameters a Response echoes, with OpenAI's defaults filled in (§2.1, §2.4):
    the dump of the request's ``JobSpec``, stored as the row's ``params``."""
    return job_spec(req, model=model, conversation_id=conversation_id, tools=tools).model_dump()


def job_spec(
    req: CreateResponseRequest,
    *,
    model: str,
    conversation_id: str | None = None,
    tools: Sequence[FunctionTool | McpTool | dict[str, Any]] | None = None,
) -> JobSpec:
    """The job a create request asks for. ``tools`` are the checked tools
    (``shared.schema.tools.prepare_tools``); without them, the request's own.

    Numbers that the Open Responses schema requires to be numbers (never null) get their
    defaults when the client sent nothing or ``null``.
    """
    text = req.text.model_dump(by_alias=True, exclude_none=True) if req.text else {}
    text = {**DEFAULT_TEXT, **text}
    if text["format"].get("type") == "json_schema":
        text["format"] = {"description": None, "strict": False, **text["format"]}
    reasoning = ReasoningSpec()
    if req.reasoning is not None:
        reasoning = ReasoningSpec(
            effort=req.reasoning.effort,
            summary=req.reasoning.summary or req.reasoning.generate_summary,
        )
    return JobSpec(
        model=model,
        instructions=req.instructions,
        background=bool(req.background),
        store=req.store is not False,
        conversation=ConversationRef(id=conversation_id) if conversation_id else None,
        max_output_tokens=req.max_output_tokens,
        max_tool_calls=req.max_tool_calls,
        parallel_tool_calls=True if req.parallel_tool_calls is None else req.parallel_tool_calls,
        previous_response_id=req.previous_response_id,
        prompt=req.prompt,
        prompt_cache_key=req.prompt_cache_key,
        prompt_cache_retention=req.prompt_cache_retention,
        reasoning=reasoning,
        safety_identifier=req.safety_identifier,
        service_tier=req.service_tier or "auto",
        temperature=1.0 if req.temperature is None else float(req.temperature),
        top_p=1.0 if req.top_p is None else float(req.top_p),
        presence_penalty=0.0 if req.presence_penalty is None else float(req.presence_penalty),
        frequency_penalty=0.0 if req.frequency_penalty is None else float(req.frequency_penalty),
        top_logprobs=0 if req.top_logprobs is None else req.top_logprobs,
        text=text,
        tool_choice="auto" if req.tool_choice is None else req.tool_choice,
        tools=list(tools if tools is not None else req.tools or []),
        truncation=req.truncation or "disabled",
        user=req.user,
        metadata=dict(req.metadata or {}),
        include=list(req.include or []),
    )


def response_object(
    *,
    response_id: str,
    created_at: int,
    status: str,
    params: dict[str, Any],
    output: list[dict[str, Any]],
    completed_at: int | None = None,
    error: dict[str, Any] | None = None,
    incomplete_details: dict[str, Any] | None = None,
    usage: dict[str, Any] | None = None,
    truncation_details: dict[str, Any] | None = None,
    include: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The Response as JSON-ready data, fields in OpenAI's order.

    ``truncation_details`` is resq's own field, present only when ``truncation: "auto"``
    dropped items from the context: ``{"dropped_items", "dropped_input_tokens"}``. A reasoning
    item's ``encrypted_content`` shows only when ``include`` (else the create's) asks for it."""
    wanted = params.get("include", ()) if include is None else include
    if ENCRYPTED_REASONING not in wanted:
        output = [_without_encrypted(item) for item in output]
    body = {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "completed_at": completed_at if status == Status.COMPLETED else None,
        "error": error,
        "incomplete_details": incomplete_details,
        "output": output,
        "usage": usage,
        **{k: v for k, v in params.items() if k not in UNECHOED},
    }
    if truncation_details is not None:
        body["truncation_details"] = truncation_details
    return body


def _without_encrypted(item: dict[str, Any]) -> dict[str, Any]:
    if item.get("type") != "reasoning" or not item.get("encrypted_content"):
        return item
    return {k: v for k, v in item.items() if k != "encrypted_content"}


def usage_object(
    input_tokens: int,
    output_tokens: int,
    reasoning_tokens: int = 0,
    cached_tokens: int = 0,
    cache_write_tokens: int = 0,
) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {
            "cached_tokens": cached_tokens,
            "cache_write_tokens": cache_write_tokens,
        },
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
        "total_tokens": input_tokens + output_tokens,
    }
