"""Create, background, poll, cancel, delete, input items, models — with the openai SDK."""

from __future__ import annotations

import json
import os
import signal
import time

import openai
import pytest

from tests.e2e.conftest import Stack
from tests.e2e.helpers import (
    TERMINAL,
    assert_error,
    check,
    create_raw,
    raw_json,
    retrieve_raw,
    script,
    wait_status,
)

pytestmark = pytest.mark.e2e


def test_sync_create_returns_completed_response(client: openai.OpenAI) -> None:
    raw = create_raw(client, model="resq-builtin", input="hi", metadata={"run": "1"})
    parsed = check(raw)
    assert parsed.status == "completed"
    assert parsed.output_text == "You said: hi"
    assert parsed.metadata == {"run": "1"}
    assert parsed.background is False
    assert raw["completed_at"] is not None and raw["completed_at"] >= raw["created_at"]
    assert parsed.usage is not None and parsed.usage.output_tokens == 3
    assert parsed.usage.total_tokens == parsed.usage.input_tokens + 3
    # retrieve returns exactly what create returned
    assert retrieve_raw(client, parsed.id) == raw


def test_sync_create_via_sdk_parsed_object(client: openai.OpenAI) -> None:
    response = client.responses.create(model="resq-builtin", input="parsed please")
    assert response.status == "completed"
    assert response.output_text == "You said: parsed please"
    assert response._request_id is not None and response._request_id.startswith("req_")


def test_background_goes_queued_in_progress_completed(client: openai.OpenAI) -> None:
    raw = create_raw(
        client,
        model="resq-builtin",
        background=True,
        input=script(text="slow", words=12, delay_ms=60),
    )
    check(raw)
    assert raw["status"] == "queued"
    assert raw["background"] is True
    assert raw["output"] == [] and raw["usage"] is None
    seen = ["queued"]
    deadline = time.monotonic() + 20
    while seen[-1] not in TERMINAL:
        assert time.monotonic() < deadline
        current = retrieve_raw(client, raw["id"])
        check(current)
        if current["status"] != seen[-1]:
            seen.append(current["status"])
        time.sleep(0.02)
    assert seen == ["queued", "in_progress", "completed"]
    final = client.responses.retrieve(raw["id"])
    assert final.output_text.startswith("slow alpha bravo")
    assert len(final.output_text.split()) == 13


def test_cancel_while_running_keeps_partial_output(client: openai.OpenAI) -> None:
    created = client.responses.create(
        model="resq-builtin", background=True, input=script(words=400, delay_ms=20)
    )
    wait_status(client, created.id, {"in_progress"})
    time.sleep(0.6)
    raw = raw_json(client.responses.with_raw_response.cancel(created.id))
    parsed = check(raw)
    assert parsed.status == "cancelled"
    assert raw["completed_at"] is None
    assert len(parsed.output) == 1
    message = parsed.output[0]
    assert message.type == "message" and message.status == "incomplete"
    words = parsed.output_text.split()
    assert 0 < len(words) < 400
    # The job really stopped: nothing changes afterwards and it never flips to completed.
    time.sleep(0.5)
    assert retrieve_raw(client, created.id) == raw
    # A second cancel returns it unchanged.
    assert raw_json(client.responses.with_raw_response.cancel(created.id)) == raw


def test_cancel_while_queued_never_runs_the_model(stack: Stack, client: openai.OpenAI) -> None:
    # Freeze the worker so the job cannot start; it stays queued until the worker thaws.
    os.kill(stack.worker_pid, signal.SIGSTOP)
    try:
        created = client.responses.create(model="resq-builtin", background=True, input="queued")
        assert created.status == "queued"
        cancelled = raw_json(client.responses.with_raw_response.cancel(created.id))
        check(cancelled)
        assert cancelled["status"] == "cancelled"
        assert cancelled["output"] == [] and cancelled["usage"] is None
    finally:
        os.kill(stack.worker_pid, signal.SIGCONT)
    deadline = time.monotonic() + 15
    while f"response {created.id}: not claimable" not in stack.worker_log():
        assert time.monotonic() < deadline, "the worker never took the cancelled task"
        time.sleep(0.05)
    # The API wrote the cancelled job's log; the worker added nothing (it never ran).
    log = stack.redis().xrange(f"resq:events:{created.id}")
    types = [fields[b"t"].decode() for _id, fields in log]
    assert types == ["response.created", "response.queued", "response.incomplete"]
    final = json.loads(log[-1][1][b"d"])["response"]
    assert final == cancelled
    assert retrieve_raw(client, created.id) == cancelled


def test_cancel_of_ended_background_response_is_unchanged(client: openai.OpenAI) -> None:
    created = client.responses.create(model="resq-builtin", background=True, input="done soon")
    done = wait_status(client, created.id, TERMINAL)
    assert done["status"] == "completed"
    again = raw_json(client.responses.with_raw_response.cancel(created.id))
    assert again == done


def test_cancel_of_non_background_response_is_400(client: openai.OpenAI) -> None:
    created = client.responses.create(model="resq-builtin", input="sync")
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.cancel(created.id)
    assert_error(info.value, 400, "invalid_request", "response_id")


def test_delete_then_404(client: openai.OpenAI) -> None:
    created = client.responses.create(model="resq-builtin", input="delete me")
    assert client.responses.delete(created.id) is None
    for call in (
        lambda: client.responses.retrieve(created.id),
        lambda: client.responses.delete(created.id),
        lambda: client.responses.cancel(created.id),
        lambda: client.responses.input_items.list(created.id),
    ):
        with pytest.raises(openai.NotFoundError) as info:
            call()
        assert_error(info.value, 404, None, "response_id")


def test_delete_body_is_canonical(stack: Stack) -> None:
    client = stack.client()
    created = client.responses.create(model="resq-builtin", input="x")
    with stack.http() as http:
        resp = http.request(
            "DELETE", f"/v1/responses/{created.id}", headers={"Content-Type": "application/json"}
        )
    assert resp.status_code == 200
    assert resp.json() == {"id": created.id, "object": "response", "deleted": True}


def test_input_items_paging(stack: Stack, client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": f"message {i}"} for i in range(5)]
    created = client.responses.create(model="resq-builtin", input=messages)
    listed = list(client.responses.input_items.list(created.id, limit=2, order="asc"))
    assert [item.content[0].text for item in listed] == [f"message {i}" for i in range(5)]
    ids_asc = [item.id for item in listed]
    assert all(i.startswith("msg_") for i in ids_asc) and len(set(ids_asc)) == 5
    first = client.responses.input_items.list(created.id, limit=2)
    assert [i.id for i in first.data] == ids_asc[::-1][:2]
    assert first.has_more is True
    assert [i.id for i in client.responses.input_items.list(created.id)] == ids_asc[::-1]
    after = client.responses.input_items.list(created.id, order="asc", after=ids_asc[1], limit=10)
    assert [i.id for i in after.data] == ids_asc[2:] and after.has_more is False
    with stack.http() as http:
        page = http.get(
            f"/v1/responses/{created.id}/input_items",
            params={"order": "asc", "before": ids_asc[3], "limit": 2},
        ).json()
        assert [i["id"] for i in page["data"]] == ids_asc[1:3]
        assert page["first_id"] == ids_asc[1] and page["last_id"] == ids_asc[2]
        assert page["has_more"] is True
        page = http.get(
            f"/v1/responses/{created.id}/input_items",
            params={"include[]": "message.output_text.logprobs"},
        ).json()
        assert len(page["data"]) == 5


def test_string_input_is_listed_as_a_message(client: openai.OpenAI) -> None:
    created = client.responses.create(model="resq-builtin", input="just text")
    page = client.responses.input_items.list(created.id)
    assert len(page.data) == 1
    item = page.data[0]
    assert item.type == "message" and item.role == "user" and item.id.startswith("msg_")
    assert item.content[0].type == "input_text" and item.content[0].text == "just text"


def test_item_reference_and_untyped_messages(client: openai.OpenAI) -> None:
    first = client.responses.create(model="resq-builtin", input="remember me")
    out_id = first.output[0].id
    second = client.responses.create(
        model="resq-builtin",
        input=[{"id": out_id}, {"role": "user", "content": "and now?"}],  # type: ignore[list-item]
    )
    assert second.output_text == "You said: and now?"
    items = list(client.responses.input_items.list(second.id, order="asc"))
    assert items[0].id == out_id and items[0].role == "assistant"
    assert items[0].content[0].text == "You said: remember me"


def test_retrieve_with_include_array(client: openai.OpenAI) -> None:
    created = client.responses.create(model="resq-builtin", input="x")
    got = client.responses.retrieve(created.id, include=["message.output_text.logprobs"])
    assert got.id == created.id and got.status == "completed"


def test_models_list_shows_routes(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert ids == [
        "resq-builtin",
        "tiny-context",
        "upstream-fast",
        "upstream-slow",
        "upstream-dead",
        "claude-e2e",
        "responses-e2e",
        "responses-reasoner",
    ]
    assert client.models.retrieve("resq-builtin").owned_by == "builtin"


def test_tenant_isolation(client: openai.OpenAI, client_b: openai.OpenAI) -> None:
    mine = client.responses.create(model="resq-builtin", background=True, input="mine")
    wait_status(client, mine.id, TERMINAL)
    for call in (
        lambda: client_b.responses.retrieve(mine.id),
        lambda: client_b.responses.cancel(mine.id),
        lambda: client_b.responses.delete(mine.id),
        lambda: client_b.responses.input_items.list(mine.id),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    done = client.responses.retrieve(mine.id)
    assert done.status == "completed"
    foreign_item = {"id": done.output[0].id}
    with pytest.raises(openai.BadRequestError) as info:
        client_b.responses.create(model="resq-builtin", input=[foreign_item])  # type: ignore[list-item]
    assert_error(info.value, 400, "item_not_found", "input[0]")
    # the owner can still reference it
    again = client.responses.create(model="resq-builtin", input=[foreign_item])  # type: ignore[list-item]
    assert again.status == "completed"
