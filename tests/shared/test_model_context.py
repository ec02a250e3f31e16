"""``shared.compaction``: the job a compaction runs and the answer made of its result, as data."""

from __future__ import annotations

from typing import Any

import pytest

from shared.compaction import compaction_job, compaction_result
from shared.errors import InvalidRequest, ServerError
from shared.model_context import (
    COMPACTION_INSTRUCTIONS,
    COMPACTION_PROMPT,
    ContextTooLong,
    decode_compaction,
    text_message,
)
from shared.routing import BUILTIN, Route

ROUTE = Route(match="resq-*", provider=BUILTIN)
USER = text_message("user", "plan a trip", "msg_1")
ASSISTANT = {
    "id": "msg_2",
    "type": "message",
    "role": "assistant",
    "status": "completed",
    "content": [{"type": "output_text", "text": "where to?", "annotations": []}],
}
USAGE = {"input_tokens": 9, "output_tokens": 2, "total_tokens": 11}


def job(**overrides: Any) -> Any:
    kwargs: dict[str, Any] = {
        "tenant": "t1",
        "model": "resq-builtin",
        "instructions": "keep names",
        "items": [USER, ASSISTANT],
        "route": ROUTE,
        "now": 1700000000,
    }
    return compaction_job(**{**kwargs, **overrides})


def final(status: str, output: list[dict[str, Any]], error: Any = None) -> dict[str, Any]:
    return {"status": status, "output": output, "error": error, "usage": USAGE}


def test_the_job_is_a_sync_unstored_auto_truncated_response() -> None:
    made = job()
    row = made.row
    assert row.id.startswith("resp_") and (row.tenant, row.model) == ("t1", "resq-builtin")
    assert (row.status, row.store, row.background, row.created_at) == (
        "in_progress",
        False,
        False,
        1700000000,
    )
    assert row.params["instructions"] == COMPACTION_INSTRUCTIONS
    assert row.params["truncation"] == "auto" and row.params["store"] is False


def test_the_jobs_input_is_the_instructions_the_context_and_the_prompt() -> None:
    items = job().input_items
    assert [(i["role"], i["content"][0]["text"]) for i in items] == [
        ("developer", "keep names"),
        ("user", "plan a trip"),
        ("assistant", "where to?"),
        ("user", COMPACTION_PROMPT),
    ]
    assert all(i["id"] for i in items)
    assert [i["role"] for i in job(instructions=None).input_items] == ["user", "assistant", "user"]


def test_nothing_to_compact_is_a_400() -> None:
    with pytest.raises(InvalidRequest) as raised:
        job(items=[])
    assert (raised.value.code, raised.value.param) == ("missing_required_parameter", "input")


def test_a_context_whose_last_item_cannot_fit_is_a_400() -> None:
    with pytest.raises(ContextTooLong):
        job(route=Route(match="resq-*", provider=BUILTIN, context_window=5))


def test_the_answer_keeps_user_messages_and_ends_with_the_summary() -> None:
    row = job().row
    summary = [{**ASSISTANT, "content": [
        {"type": "output_text", "text": "Trip: ", "annotations": []},
        {"type": "refusal", "refusal": "no"},
        {"type": "output_text", "text": "Rome.", "annotations": []},
    ]}]  # fmt: skip
    answer = compaction_result(final("completed", summary), [USER, ASSISTANT], job=row)
    *kept, compaction = answer.pop("output")
    assert answer == {
        "id": row.id,
        "object": "response.compaction",
        "created_at": 1700000000,
        "usage": USAGE,
    }
    assert kept == [USER]
    assert compaction["id"].startswith("cmp_") and compaction["type"] == "compaction"
    assert decode_compaction(compaction["encrypted_content"]) == "Trip: Rome."


@pytest.mark.parametrize(
    ("status", "error", "reason"),
    [("failed", {"code": "server_error", "message": "upstream down"}, "upstream down"),
     ("incomplete", None, "incomplete")],
)  # fmt: skip
def test_a_job_that_did_not_complete_is_a_500_saying_why(
    status: str, error: Any, reason: str
) -> None:
    with pytest.raises(ServerError) as raised:
        compaction_result(final(status, [], error), [USER], job=job().row)
    assert str(raised.value) == f"The model could not compact the conversation: {reason}"
