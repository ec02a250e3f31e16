"""``POST /v1/responses/compact`` as data (README, "Conversation state"): the job that asks the
model for a summary, and the answer made of what it wrote. The API stores and queues the job
and waits for its end; every decision is here, so it is tested without Flask or a queue.

The job is an ordinary response (``store: false``, truncation ``"auto"``) whose input is the
request's own instructions as a developer message, the whole context, then
``COMPACTION_PROMPT``, under ``COMPACTION_INSTRUCTIONS``. The answer keeps every user message
of the context and ends with one ``compaction`` item carrying the summary
(``encode_compaction``), to be sent as ``input`` next time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared import ids
from shared.errors import InvalidRequest, ServerError
from shared.lifecycle import opening_status
from shared.model_context import (
    COMPACTION_INSTRUCTIONS,
    COMPACTION_PROMPT,
    encode_compaction,
    fit,
    text_message,
)
from shared.routing import Route
from shared.schema.items import ensure_id
from shared.schema.requests import parse_create_request
from shared.schema.response import Status, echo_params
from shared.store.tables import ResponseRow


@dataclass(frozen=True)
class CompactionJob:
    """The summary's response as it is stored and queued: its row and input items."""

    row: ResponseRow
    input_items: list[dict[str, Any]]


def compaction_job(
    *,
    tenant: str,
    model: str,
    instructions: str | None,
    items: list[dict[str, Any]],
    route: Route,
    now: int,
) -> CompactionJob:
    """The job that summarises ``items`` (the model-ready context). Raises the 400 for an
    empty context, and for one that cannot fit even truncated: the job runs with truncation
    "auto", so only a context whose last item alone is too long would fail, and that is
    better said now than as a failed job."""
    if not items:
        raise InvalidRequest(
            "Nothing to compact: give 'input', 'previous_response_id', or both.",
            param="input",
            code="missing_required_parameter",
        )
    lead = [] if instructions is None else [text_message("developer", instructions)]
    job_items = [*lead, *items, text_message("user", COMPACTION_PROMPT)]
    job = parse_create_request(
        {
            "model": model,
            "input": [],
            "instructions": COMPACTION_INSTRUCTIONS,
            "store": False,
            "truncation": "auto",
        }
    )
    row = ResponseRow(
        id=ids.new_id(ids.RESPONSE),
        tenant=tenant,
        status=opening_status(background=False),
        model=model,
        store=False,
        created_at=now,
        params=echo_params(job, model=model),
    )
    fit(job_items, instructions=COMPACTION_INSTRUCTIONS, tools=[], route=route, truncation="auto")
    return CompactionJob(row=row, input_items=[ensure_id(i) for i in job_items])


def compaction_result(
    final: dict[str, Any], context: list[dict[str, Any]], *, job: ResponseRow
) -> dict[str, Any]:
    """The ``response.compaction`` answer from the job's final Response (as its terminal event
    carried it) and the context as the request gave it (history then own input, before
    ``model_items``). A job that did not complete is a 500 naming why."""
    if final["status"] != Status.COMPLETED:
        reason = (final.get("error") or {}).get("message") or final["status"]
        raise ServerError(f"The model could not compact the conversation: {reason}")
    summary = "".join(
        part.get("text", "")
        for item in final["output"]
        if item.get("type") == "message"
        for part in item.get("content", [])
        if part.get("type") == "output_text"
    )
    kept = [i for i in context if i.get("type") == "message" and i.get("role") == "user"]
    compaction = {
        "id": ids.new_id(ids.COMPACTION),
        "type": "compaction",
        "encrypted_content": encode_compaction(summary),
    }
    return {
        "id": job.id,
        "object": "response.compaction",
        "created_at": job.created_at,
        "output": [*kept, compaction],
        "usage": final["usage"],
    }
