"""Conversation state end to end, through the openai SDK: previous_response_id chains, item
references, store=false, the Conversations API, truncation, input token counts and
compaction (issue 7; README, "Conversation state")."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from openai.types.conversations import Conversation, ConversationItem
from openai.types.responses import CompactedResponse, ResponseCompactionItem, ResponseUsage
from openai.types.responses.input_token_count_response import InputTokenCountResponse
from pydantic import TypeAdapter
from sqlalchemy import create_engine, text

from shared import keys
from shared.bus import UNSTORED_TTL_SECONDS
from tests.e2e.conftest import Stack
from tests.e2e.helpers import (
    TERMINAL,
    assert_error,
    check,
    create_raw,
    output_text,
    raw_json,
    retrieve_raw,
    script,
    wait_status,
)

MODEL = "resq-builtin"
SHOW = script(show_context=True)


def seen(raw: dict[str, Any]) -> list[str]:
    """What the built-in model said it was given (``show_context``), one entry per item."""
    return output_text(raw).split(" | ")


def rows_in_db(stack: Stack, response_id: str) -> tuple[int, int]:
    """(responses rows, item rows) the store holds for a response id."""
    engine = create_engine(stack.database_url)
    try:
        with engine.connect() as conn:
            responses = conn.execute(
                text("SELECT count(*) FROM responses WHERE id = :id"), {"id": response_id}
            ).scalar_one()
            items = conn.execute(
                text("SELECT count(*) FROM response_items WHERE response_id = :id"),
                {"id": response_id},
            ).scalar_one()
    finally:
        engine.dispose()
    return responses, items


# ---- previous_response_id ---------------------------------------------------------------


def test_three_turn_chain_sees_every_earlier_turn_but_not_old_instructions(
    client: openai.OpenAI,
) -> None:
    first = create_raw(client, model=MODEL, input="my name is Ada", instructions="be terse")
    second = client.responses.create(
        model=MODEL,
        background=True,
        previous_response_id=first["id"],
        input=[{"role": "user", "content": "I like tea"}],
        instructions="be kind",
    )
    second_raw = wait_status(client, second.id, TERMINAL)
    assert second_raw["status"] == "completed"
    third = create_raw(client, model=MODEL, previous_response_id=second.id, input=SHOW)
    check(third)
    assert third["previous_response_id"] == second.id
    assert seen(third) == [
        "instructions: -",  # neither "be terse" nor "be kind": instructions are not inherited
        "user: my name is Ada",
        "assistant: You said: my name is Ada",
        "user: I like tea",
        "assistant: You said: I like tea",
        f"user: {SHOW}",
    ]
    # input_items lists this request's own input only.
    own = list(client.responses.input_items.list(third["id"]))
    assert [item.content[0].text for item in own] == [SHOW]  # type: ignore[union-attr]
    # The count endpoint agrees with what the model was charged for.
    counted = client.responses.input_tokens.count(
        model=MODEL, previous_response_id=second.id, input=SHOW
    )
    assert counted.input_tokens == third["usage"]["input_tokens"]


def test_streaming_a_continuation_works(client: openai.OpenAI) -> None:
    first = create_raw(client, model=MODEL, input="remember 42")
    with client.responses.stream(
        model=MODEL, previous_response_id=first["id"], input=SHOW
    ) as stream:
        final = stream.get_final_response()
    assert "user: remember 42" in final.output_text
    assert final.previous_response_id == first["id"]


def test_previous_response_errors(client: openai.OpenAI, client_b: openai.OpenAI) -> None:
    def continue_from(response_id: str, **kwargs: Any) -> openai.APIStatusError:
        with pytest.raises(openai.APIStatusError) as info:
            client.responses.create(
                model=MODEL, previous_response_id=response_id, input="next", **kwargs
            )
        return info.value

    code, param = "previous_response_not_found", "previous_response_id"
    assert_error(continue_from("resp_doesnotexist"), 400, code, param)
    foreign = client_b.responses.create(model=MODEL, input="theirs")
    assert_error(continue_from(foreign.id), 400, code, param)
    unstored = client.responses.create(model=MODEL, input="fleeting", store=False)
    assert_error(continue_from(unstored.id), 400, code, param)
    deleted = client.responses.create(model=MODEL, input="gone")
    client.responses.delete(deleted.id)
    assert_error(continue_from(deleted.id), 400, code, param)

    # A chain whose middle was deleted cannot be continued at its end either.
    a = client.responses.create(model=MODEL, input="a")
    b = client.responses.create(model=MODEL, input="b", previous_response_id=a.id)
    c = client.responses.create(model=MODEL, input="c", previous_response_id=b.id)
    client.responses.delete(b.id)
    err = continue_from(c.id)
    assert_error(err, 400, code, param)
    assert b.id in err.message

    running = client.responses.create(
        model=MODEL, background=True, input=script(text="slow", words=40, delay_ms=100)
    )
    assert_error(continue_from(running.id), 400, "previous_response_in_progress", param)
    client.responses.cancel(running.id)

    conversation = client.conversations.create()
    assert_error(
        continue_from(a.id, conversation=conversation.id), 400, "invalid_request", "conversation"
    )


def test_item_references_resolve_to_stored_items(client: openai.OpenAI) -> None:
    earlier = create_raw(client, model=MODEL, input="the code word is plum")
    assistant_item = earlier["output"][0]["id"]
    user_item = client.responses.input_items.list(earlier["id"]).data[0].id
    later = create_raw(
        client,
        model=MODEL,
        input=[
            {"type": "item_reference", "id": user_item},
            {"id": assistant_item},  # untyped: a lone id is an item reference
            {"role": "user", "content": SHOW},
        ],
    )
    assert seen(later)[1:3] == [
        "user: the code word is plum",
        "assistant: You said: the code word is plum",
    ]
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model=MODEL, input=[{"type": "item_reference", "id": "msg_nope"}])
    assert_error(info.value, 400, "item_not_found", "input[0]")


# ---- store=false -------------------------------------------------------------------------


def test_store_false_runs_and_leaves_nothing(client: openai.OpenAI, stack: Stack) -> None:
    plain = create_raw(client, model=MODEL, input="keep this to yourself", store=False)
    check(plain)
    assert plain["status"] == "completed" and plain["store"] is False
    assert output_text(plain) == "You said: keep this to yourself"

    with client.responses.stream(model=MODEL, input="stream it", store=False) as stream:
        streamed = stream.get_final_response()
    assert streamed.output_text == "You said: stream it"

    for response_id in (plain["id"], streamed.id):
        assert rows_in_db(stack, response_id) == (0, 0)
        # Its events stay only long enough for the waiting request to read them.
        assert 0 < stack.redis().ttl(keys.events(response_id)) <= UNSTORED_TTL_SECONDS
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(response_id)
        with pytest.raises(openai.NotFoundError):
            client.responses.input_items.list(response_id)
        with pytest.raises(openai.BadRequestError) as info:
            client.responses.create(model=MODEL, input="more", previous_response_id=response_id)
        assert_error(info.value, 400, "previous_response_not_found", "previous_response_id")

    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model=MODEL, input="x", store=False, background=True)
    assert_error(info.value, 400, "invalid_value", "store")


# ---- conversations ----------------------------------------------------------------------


def test_conversation_flow(client: openai.OpenAI, client_b: openai.OpenAI) -> None:
    created = client.conversations.with_raw_response.create(
        items=[{"role": "user", "content": "hello"}], metadata={"topic": "demo"}
    )
    conv_raw = raw_json(created)
    assert set(conv_raw) == set(Conversation.model_fields)
    conv = Conversation.model_validate(conv_raw)
    assert conv.metadata == {"topic": "demo"} and conv.object == "conversation"

    first = create_raw(client, model=MODEL, input="first", conversation=conv.id)
    check(first)
    assert first["conversation"] == {"id": conv.id}
    second = client.responses.create(
        model=MODEL, background=True, input=SHOW, conversation={"id": conv.id}
    )
    second_raw = wait_status(client, second.id, TERMINAL)
    assert seen(second_raw) == [
        "instructions: -",
        "user: hello",
        "user: first",
        "assistant: You said: first",
        f"user: {SHOW}",
    ]
    # A failed response adds nothing to the conversation.
    failed = create_raw(
        client, model=MODEL, input=script(error={"message": "boom"}), conversation=conv.id
    )
    assert failed["status"] == "failed"

    # Items, oldest first, two per page (the SDK follows last_id).
    items = list(client.conversations.items.list(conv.id, order="asc", limit=2))
    adapter: TypeAdapter[ConversationItem] = TypeAdapter(ConversationItem)
    for item in items:
        adapter.validate_python(item.model_dump(exclude_unset=True))
    texts = [item.content[0].text for item in items]  # type: ignore[union-attr]
    assert texts == ["hello", "first", "You said: first", SHOW, output_text(second_raw)]
    newest_first = client.conversations.items.list(conv.id)
    assert [i.id for i in newest_first.data] == [i.id for i in reversed(items)]
    assert newest_first.has_more is False

    added = client.conversations.items.create(
        conv.id, items=[{"type": "message", "role": "user", "content": "an aside"}]
    )
    assert [i.content[0].text for i in added.data] == ["an aside"]  # type: ignore[union-attr]
    aside = added.data[0].id
    assert client.conversations.items.retrieve(aside, conversation_id=conv.id).id == aside
    after_delete = client.conversations.items.delete(aside, conversation_id=conv.id)
    assert after_delete.id == conv.id and after_delete.object == "conversation"
    with pytest.raises(openai.NotFoundError):
        client.conversations.items.retrieve(aside, conversation_id=conv.id)

    updated = client.conversations.update(conv.id, metadata={"topic": "changed"})
    assert updated.metadata == {"topic": "changed"}
    assert client.conversations.retrieve(conv.id).metadata == {"topic": "changed"}

    # Another tenant sees nothing of it.
    for call in (
        lambda: client_b.conversations.retrieve(conv.id),
        lambda: client_b.conversations.items.list(conv.id),
        lambda: client_b.responses.create(model=MODEL, input="x", conversation=conv.id),
    ):
        with pytest.raises(openai.NotFoundError):
            call()

    deleted = client.conversations.delete(conv.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (
        conv.id,
        "conversation.deleted",
        True,
    )
    with pytest.raises(openai.NotFoundError) as info:
        client.conversations.retrieve(conv.id)
    assert_error(info.value, 404, None, "conversation_id")
    with pytest.raises(openai.NotFoundError) as info:
        client.responses.create(model=MODEL, input="x", conversation=conv.id)
    assert_error(info.value, 404, None, "conversation")


def test_conversation_request_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.conversations.create(items=[{"role": "user", "content": "x"}] * 21)
    assert_error(info.value, 400, "array_above_max_length", "items")
    with pytest.raises(openai.BadRequestError) as info:
        client.conversations.create(metadata={"k": "v" * 600})
    assert_error(info.value, 400, "string_above_max_length", "metadata.k")
    conv = client.conversations.create()
    with pytest.raises(openai.BadRequestError) as info:
        client.conversations.items.create(conv.id, items=[{"type": "message"}])
    assert_error(info.value, 400, "missing_required_parameter", "items[0].role")
    with pytest.raises(openai.BadRequestError) as info:
        client.conversations.items.list(conv.id, after="msg_unknown")
    assert_error(info.value, 400, "invalid_value", "after")


# ---- truncation -------------------------------------------------------------------------


def test_truncation_disabled_refuses_what_does_not_fit(client: openai.OpenAI) -> None:
    long_input = " ".join(f"w{i}" for i in range(50))  # 50 tokens; the window is 40
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="tiny-context", input=long_input)
    assert_error(info.value, 400, "context_length_exceeded", "input")
    assert "40" in info.value.message


def test_truncation_auto_drops_the_oldest_items(client: openai.OpenAI) -> None:
    first = create_raw(client, model="tiny-context", input=" ".join(f"a{i}" for i in range(12)))
    second = create_raw(
        client,
        model="tiny-context",
        previous_response_id=first["id"],
        input=" ".join(f"b{i}" for i in range(12)),
    )
    # With "disabled" (the default) the chain no longer fits ...
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="tiny-context", previous_response_id=second["id"], input=SHOW)
    assert_error(info.value, 400, "context_length_exceeded", "input")
    # ... with "auto" the oldest items go until it does, and the response says so.
    third = create_raw(
        client,
        model="tiny-context",
        previous_response_id=second["id"],
        input=SHOW,
        truncation="auto",
    )
    check(third)
    assert third["status"] == "completed" and third["truncation"] == "auto"
    context = seen(third)
    assert not any(entry.endswith("a0 a1 a2 a3 a4 a5 a6 a7 a8 a9 a10 a11") for entry in context)
    assert context[-1] == f"user: {SHOW}"
    details = third["truncation_details"]
    assert details["dropped_items"] >= 2 and details["dropped_input_tokens"] >= 24
    assert third["usage"]["input_tokens"] <= 40
    counted = client.responses.input_tokens.count(
        model="tiny-context", previous_response_id=second["id"], input=SHOW, truncation="auto"
    )
    assert counted.input_tokens == third["usage"]["input_tokens"]
    # Responses that fit carry no truncation record.
    assert "truncation_details" not in retrieve_raw(client, second["id"])


# ---- input token counts -----------------------------------------------------------------


def test_input_token_counts(client: openai.OpenAI, stack: Stack) -> None:
    raw = raw_json(
        client.responses.input_tokens.with_raw_response.count(
            model=MODEL, input="one two three", instructions="four five"
        )
    )
    assert raw == {"object": "response.input_tokens", "input_tokens": 5}
    InputTokenCountResponse.model_validate(raw)
    ran = client.responses.create(model=MODEL, input="one two three", instructions="four five")
    assert ran.usage is not None and ran.usage.input_tokens == 5
    # Upstream routes get the documented estimate: ceil(characters / 4) + 4 per item.
    estimate = client.responses.input_tokens.count(model="upstream-fast", input="x" * 40)
    assert estimate.input_tokens == 10 + 4
    no_model = client.responses.input_tokens.count(input="x" * 40)
    assert no_model.input_tokens == 14
    # A route with a tokenize_url asks the upstream's tokenizer (the fake one counts two per
    # word plus one per message: system "be brief", user "one two three" → 5 + 7).
    asked = client.responses.input_tokens.count(
        model="upstream-slow", input="one two three", instructions="be brief"
    )
    assert asked.input_tokens == 12
    asked_upstream = [r for r in stack.upstream.requests if r["path"] == "/tokenize"]
    assert asked_upstream and asked_upstream[-1]["body"] == {
        "model": "upstream-slow",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "one two three"},
        ],
    }
    # An unreachable tokenizer falls back to the estimate.
    fallback = client.responses.input_tokens.count(model="upstream-dead", input="x" * 40)
    assert fallback.input_tokens == 14
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.input_tokens.count(model="no-such-model", input="x")
    assert_error(info.value, 400, "model_not_found", "model")
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.input_tokens.count(model=MODEL, previous_response_id="resp_nope")
    assert_error(info.value, 400, "previous_response_not_found", "previous_response_id")


# ---- compaction -------------------------------------------------------------------------


def test_compact_then_continue_from_the_compacted_items(client: openai.OpenAI) -> None:
    first = create_raw(client, model=MODEL, input="my name is Ada")
    second = create_raw(client, model=MODEL, input="I like tea", previous_response_id=first["id"])
    compacted_raw = raw_json(
        client.responses.with_raw_response.compact(model=MODEL, previous_response_id=second["id"])
    )
    assert compacted_raw["object"] == "response.compaction"
    assert set(compacted_raw) == {"id", "object", "created_at", "output", "usage"}
    *kept, last = compacted_raw["output"]
    assert [(i["role"], i["content"][0]["text"]) for i in kept] == [
        ("user", "my name is Ada"),
        ("user", "I like tea"),
    ]
    item = ResponseCompactionItem.model_validate(last)
    assert item.id.startswith("cmp_") and item.encrypted_content
    assert ResponseUsage.model_validate(compacted_raw["usage"]).input_tokens > 0
    # The compaction job itself left nothing behind.
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(compacted_raw["id"])

    # The compacted output, replayed as input, carries the earlier conversation on.
    later = create_raw(
        client,
        model=MODEL,
        input=[*compacted_raw["output"], {"role": "user", "content": SHOW}],
    )
    # Only the summary can have told the model what the assistant said.
    told = output_text(later)
    assert "developer: Summary of the earlier conversation (compacted):" in told
    assert told.index("Summary") < told.index("assistant: You said: I like tea")
    assert told.endswith(f"user: {SHOW}")

    forged = {**last, "encrypted_content": "not-ours"}
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model=MODEL, input=[forged])
    assert_error(info.value, 400, "invalid_encrypted_content", "input[0].encrypted_content")
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.compact(model=MODEL)
    assert_error(info.value, 400, "missing_required_parameter", "input")


def test_compact_through_the_sdk_parser(client: openai.OpenAI) -> None:
    compacted = client.responses.compact(model=MODEL, input="just one message")
    assert isinstance(compacted, CompactedResponse)
    assert compacted.object == "response.compaction"
    # The kept user messages come back as message items (the SDK's output union has no user
    # message type, as with OpenAI's own compactions); the compaction item parses as its type.
    assert [item.type for item in compacted.output] == ["message", "compaction"]
    assert isinstance(compacted.output[-1], ResponseCompactionItem)
