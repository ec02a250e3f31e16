"""A request's context as the API sees it (README, "Conversation state"): checked when a
request arrives (what it continues, the items it references, the tool outputs it answers),
counted for ``POST /v1/responses/input_tokens`` and summarised for
``POST /v1/responses/compact``. What fits, what a count is and what a compaction holds are
decided in ``shared`` (``context``, ``tokenizer``, ``compaction``); this module wires them to
the store and the queue."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from api.deps import Deps
from api.prompt_expansion import expand
from api.service import enqueue, wait_for_end
from shared.compaction import compaction_job, compaction_result
from shared.errors import InvalidRequest, NotFound
from shared.model_context import (
    decode_compaction,
    history,
    invalid_compaction,
    model_items,
    previous_not_found,
)
from shared.schema.items import ensure_id, normalize_input
from shared.schema.params import ConversationParam
from shared.schema.requests import CompactRequest, InputTokensRequest
from shared.schema.response import TERMINAL_STATUSES
from shared.schema.validation import parse_body
from shared.store.conversations import ConversationStore
from shared.tokenizer import input_tokens


@dataclass(frozen=True)
class Context:
    """A request's context as the API checked it: its own input items (ids assigned,
    references resolved) and everything the model would see (history first)."""

    conversation_id: str | None
    inherited: list[dict[str, Any]]
    own_items: list[dict[str, Any]]
    items: list[dict[str, Any]]


def conversation_id(value: str | ConversationParam | None) -> str | None:
    """The id in ``conversation`` (``"conv_…"`` or ``{"id": "conv_…"}``; the request model
    checked that an object has one)."""
    return value["id"] if isinstance(value, dict) else value


def resolve_items(
    deps: Deps, tenant: str, items: list[dict[str, Any]], name: str = "input"
) -> list[dict[str, Any]]:
    """Normalised items ready to store: ids assigned, item references replaced by the items
    they name, compaction items checked to be this server's."""
    resolved = []
    for i, item in enumerate(items):
        if item["type"] == "item_reference":
            found = deps.store.find_item(tenant=tenant, item_id=item["id"])
            if found is None:
                raise InvalidRequest(
                    f"Item with id '{item['id']}' not found.",
                    param=f"{name}[{i}]",
                    code="item_not_found",
                )
            item = found
        elif item["type"] == "compaction" and decode_compaction(item["encrypted_content"]) is None:
            raise invalid_compaction(f"{name}[{i}]")
        resolved.append(ensure_id(item))
    return resolved


def _check_answers(inherited: list[dict[str, Any]], own: list[dict[str, Any]]) -> None:
    """Tool outputs and approval answers in the input must answer something in the context."""
    context = inherited + own
    calls = {i.get("call_id") for i in context if i["type"] == "function_call"}
    requests = {i.get("id") for i in context if i["type"] == "mcp_approval_request"}
    for item in own:
        if item["type"] == "function_call_output" and item.get("call_id") not in calls:
            raise InvalidRequest(
                f"No tool call found for function call output with call_id {item.get('call_id')}.",
                param="input",
            )
        if item["type"] == "mcp_approval_response" and (
            item.get("approval_request_id") not in requests
        ):
            raise InvalidRequest(
                "No MCP approval request found with id "
                f"{item.get('approval_request_id')} for this approval response.",
                param="input",
            )


def _check_continues(
    deps: Deps, *, tenant: str, previous_response_id: str | None, conv_id: str | None
) -> None:
    """What a request continues must exist, be this tenant's, and (a previous response)
    have ended: a context taken from a running response would miss its output."""
    if previous_response_id is not None and conv_id is not None:
        raise InvalidRequest(
            "'previous_response_id' and 'conversation' cannot be used together: a response "
            "continues either a previous response or a conversation.",
            param="conversation",
            code="invalid_request",
        )
    if previous_response_id is not None:
        previous = deps.store.get_response(response_id=previous_response_id, tenant=tenant)
        if previous is None or not previous.store:
            raise previous_not_found(previous_response_id)
        if previous.status not in TERMINAL_STATUSES:
            raise InvalidRequest(
                f"Previous response with id '{previous_response_id}' is still "
                f"{previous.status}. Continue from it once it has ended (poll it, or stream "
                "it to its end).",
                param="previous_response_id",
                code="previous_response_in_progress",
            )
    if conv_id is not None and (
        ConversationStore(deps.store).get(tenant=tenant, conversation_id=conv_id) is None
    ):
        raise NotFound(f"Conversation with id '{conv_id}' not found.", param="conversation")


def check_context(
    deps: Deps,
    *,
    tenant: str,
    raw_input: Any,
    previous_response_id: str | None,
    conversation: str | ConversationParam | None = None,
) -> Context:
    """Check what a request continues, and assemble its context (``shared.model_context``). The
    worker assembles it again when it runs (a conversation may have grown meanwhile)."""
    conv_id = conversation_id(conversation)
    _check_continues(
        deps, tenant=tenant, previous_response_id=previous_response_id, conv_id=conv_id
    )
    own = resolve_items(deps, tenant, normalize_input(raw_input))
    inherited = history(
        deps.store, previous_response_id=previous_response_id, conversation_id=conv_id
    )
    _check_answers(inherited, own)
    return Context(
        conversation_id=conv_id,
        inherited=inherited,
        own_items=own,
        items=model_items(inherited + own),
    )


def count_input_tokens(deps: Deps, body: Any, *, tenant: str) -> dict[str, Any]:
    """``POST /v1/responses/input_tokens``: the tokens the request's whole context would
    take (``shared.tokenizer``)."""
    expanded = expand(deps, body, tenant=tenant)
    req = parse_body(InputTokensRequest, expanded.body if expanded else body)
    route = deps.router.resolve(req.model) if req.model is not None else None
    context = check_context(
        deps,
        tenant=tenant,
        raw_input=req.input,
        previous_response_id=req.previous_response_id,
        conversation=req.conversation,
    )
    leading = expanded.instructions if expanded else []
    count = input_tokens(
        route,
        model=req.model or "",
        instructions=req.instructions,
        items=leading + context.items,
        tools=req.tools or [],
        truncation=req.truncation,
    )
    return {"object": "response.input_tokens", "input_tokens": count}


def compact(deps: Deps, body: Any, *, tenant: str) -> dict[str, Any]:
    """``POST /v1/responses/compact``: the summary runs as a response through the queue like
    any other (``store: false``, so nothing of it stays); ``shared.compaction`` makes the job
    and the answer."""
    expanded = expand(deps, body, tenant=tenant)
    req = parse_body(CompactRequest, expanded.body if expanded else body)
    route = deps.router.resolve(req.model)
    context = check_context(
        deps, tenant=tenant, raw_input=req.input, previous_response_id=req.previous_response_id
    )
    job = compaction_job(
        tenant=tenant,
        model=req.model,
        instructions=req.instructions,
        items=(expanded.instructions if expanded else []) + context.items,
        route=route,
        now=int(time.time()),
    )
    deps.store.create_response(row=job.row, input_items=job.input_items)
    enqueue(deps, job.row)
    final = json.loads(wait_for_end(deps, job.row))
    return compaction_result(final, context.inherited + context.own_items, job=job.row)
