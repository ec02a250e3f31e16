"""The SQL store against real databases: SQLite and Postgres (see conftest.py)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from openai.types.responses import Response
from sqlalchemy import Engine, event, inspect, select, text
from sqlmodel import SQLModel

from shared.errors import InvalidRequest
from shared.schema.requests import parse_create_request
from shared.schema.response import Status, echo_params, response_object, usage_object
from shared.store import Store, make_engine, migrate
from shared.store.tables import INPUT, OUTPUT, ItemRow, ResponseRow

T0 = 1_763_700_000
SDK_KEYS = {
    "id",
    "object",
    "created_at",
    "status",
    "completed_at",
    "error",
    "incomplete_details",
    "output",
    "usage",
    "model",
    "instructions",
    "background",
    "store",
    "max_output_tokens",
    "max_tool_calls",
    "parallel_tool_calls",
    "previous_response_id",
    "reasoning",
    "service_tier",
    "temperature",
    "top_p",
    "presence_penalty",
    "frequency_penalty",
    "top_logprobs",
    "text",
    "tool_choice",
    "tools",
    "truncation",
    "user",
    "metadata",
    "safety_identifier",
    "prompt_cache_key",
}
TERMINAL = [Status.COMPLETED, Status.FAILED, Status.CANCELLED, Status.INCOMPLETE]


def make_row(
    response_id: str,
    *,
    tenant: str = "tenant-a",
    status: Status = Status.QUEUED,
    body: dict[str, Any] | None = None,
    created_at: int = T0,
) -> ResponseRow:
    body = body if body is not None else {"model": "m", "input": "hi", "background": True}
    return ResponseRow(
        id=response_id,
        tenant=tenant,
        status=status,
        model="m",
        background=bool(body.get("background")),
        store=body.get("store") is not False,
        stream=False,
        created_at=created_at,
        params=echo_params(parse_create_request(body), model="m"),
    )


def message(item_id: str, text_: str = "hi", role: str = "user") -> dict[str, Any]:
    part_type = "output_text" if role == "assistant" else "input_text"
    return {
        "id": item_id,
        "type": "message",
        "role": role,
        "status": "completed",
        "content": [{"type": part_type, "text": text_}],
    }


def output_message(item_id: str, text_: str) -> dict[str, Any]:
    item = message(item_id, text_, role="assistant")
    item["content"][0].update(annotations=[], logprobs=[])
    return item


def create(
    store: Store,
    response_id: str,
    *,
    items: list[dict[str, Any]] | None = None,
    **row: Any,
) -> ResponseRow:
    new = make_row(response_id, **row)
    store.create_response(row=new, input_items=items if items is not None else [message("msg_1")])
    return new


def item_count(engine: Engine, response_id: str) -> int:
    with engine.connect() as conn:
        rows = conn.execute(select(ItemRow.pk).where(ItemRow.response_id == response_id)).all()
    return len(rows)


# ---- migrations --------------------------------------------------------------------------


def test_migration_on_a_new_sqlite_file_creates_the_tables_and_can_run_twice(tmp_path):
    url = f"sqlite:///{tmp_path / 'nested' / 'dir' / 'resq.sqlite3'}"
    migrate.upgrade(url)
    migrate.upgrade(url)
    engine = make_engine(url)
    try:
        tables = set(inspect(engine).get_table_names())
        with engine.connect() as conn:
            versions = conn.execute(text("SELECT version_num FROM alembic_version")).all()
    finally:
        engine.dispose()
    assert tables == {
        "alembic_version",
        "responses",
        "response_items",
        "idempotency_keys",
        "webhook_endpoints",
        "webhook_events",
        "webhook_deliveries",
        "webhook_attempts",
        "conversations",
        "conversation_items",
        "prompts",
        "prompt_versions",
    }
    assert [v[0] for v in versions] == ["0008"]


def test_migration_is_idempotent_and_matches_the_table_models(database_url, engine):
    migrate.upgrade(database_url)  # already at head: must be a no-op
    inspector = inspect(engine)
    assert {"alembic_version", "responses", "response_items"} <= set(inspector.get_table_names())
    for table in ("responses", "response_items"):
        assert {c["name"] for c in inspector.get_columns(table)} == set(
            SQLModel.metadata.tables[table].columns.keys()
        )
    with engine.connect() as conn:
        versions = conn.execute(text("SELECT version_num FROM alembic_version")).all()
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    assert [v[0] for v in versions] == ["0008"]
    assert diff == []


# ---- create, read, render ----------------------------------------------------------------


def test_create_get_render_returns_the_exact_response(store):
    body = {"model": "m", "input": "hi", "background": True, "instructions": "Be brief."}
    items = [message("msg_1"), message("msg_2", "second")]
    row = create(store, "resp_1", items=items, body=body)

    got = store.get_response(response_id="resp_1")
    assert got is not None
    assert (got.id, got.tenant, got.status, got.model) == ("resp_1", "tenant-a", "queued", "m")
    assert (got.background, got.store, got.stream, got.created_at) == (True, True, False, T0)
    assert (got.started_at, got.ended_at, got.completed_at, got.attempts) == (None, None, None, 0)
    assert (got.error, got.incomplete_details, got.usage) == (None, None, None)
    assert got.params == row.params
    assert store.items(response_id="resp_1", kind=INPUT) == items
    assert store.items(response_id="resp_1", kind=OUTPUT) == []
    assert store.count_responses() == 1

    rendered = store.render(got)
    expected = response_object(
        response_id="resp_1",
        created_at=T0,
        status="queued",
        params=echo_params(parse_create_request(body), model="m"),
        output=[],
    )
    assert rendered == expected
    missing = SDK_KEYS - set(rendered)
    assert missing == set()
    assert rendered["object"] == "response"
    assert rendered["instructions"] == "Be brief."
    assert rendered["completed_at"] is None

    sdk = Response.model_validate(rendered)
    assert (sdk.id, sdk.status, sdk.model, sdk.created_at) == ("resp_1", "queued", "m", T0)
    assert sdk.background is True
    assert sdk.output == []


def test_render_uses_given_output_and_shows_completed_at_only_when_completed(store):
    create(store, "resp_1")
    store.claim(response_id="resp_1", now=T0 + 1)
    out = [output_message("msg_out", "hello")]
    done = store.finish(
        response_id="resp_1", status=Status.COMPLETED, now=T0 + 5, output=out, usage=None
    )
    assert done is not None
    assert store.render(done)["output"] == out
    assert store.render(done)["completed_at"] == T0 + 5
    assert store.render(done, output=[])["output"] == []

    done.status = Status.INCOMPLETE.value  # render only; completed_at must disappear
    assert store.render(done)["completed_at"] is None


def test_json_params_and_items_round_trip_exactly(store):
    body = {
        "model": "m",
        "input": "hi",
        "instructions": "Réponds en français — 日本語も OK 🚀",
        "temperature": 1,
        "top_p": 0.35,
        "presence_penalty": -1.25,
        "metadata": {"note": "naïve café ✓", "empty": "", "emoji": "🧪"},
        "text": {
            "format": {
                "type": "json_schema",
                "name": "answer",
                "strict": True,
                "schema": {
                    "type": "object",
                    "properties": {
                        "score": {"type": "number", "minimum": 2.5e-7, "maximum": 12345.678},
                        "tags": {"type": "array", "items": {"type": "string"}},
                        "nested": {"type": ["object", "null"], "properties": {}},
                    },
                    "required": ["score", "tags", "nested"],
                    "additionalProperties": False,
                },
            },
            "verbosity": "low",
        },
        "tools": [
            {
                "type": "function",
                "name": "lookup",
                "description": "Ünïcödé tool",
                "parameters": {"type": "object", "properties": {"x": {"default": 0.1}}},
                "strict": False,
            }
        ],
        "tool_choice": {"type": "function", "name": "lookup"},
        "reasoning": {"effort": "low", "summary": "auto"},
    }
    params = echo_params(parse_create_request(body), model="m")
    items = [
        message("msg_ü", 'ünïcödé 🚀 "quotes" \\ backslash\nnewline'),
        {
            "id": "fc_1",
            "type": "function_call",
            "call_id": "call_1",
            "name": "lookup",
            "arguments": '{"x": 0.1}',
            "status": "completed",
        },
        {"id": "fco_1", "type": "function_call_output", "call_id": "call_1", "output": "1.5"},
    ]
    create(store, "resp_json", items=items, body=body)

    got = store.get_response(response_id="resp_json")
    assert got is not None
    assert got.params == params
    assert type(got.params["temperature"]) is float and got.params["temperature"] == 1.0
    assert got.params["top_p"] == 0.35
    assert got.params["presence_penalty"] == -1.25
    schema = got.params["text"]["format"]["schema"]
    assert schema["properties"]["score"] == {
        "type": "number",
        "minimum": 2.5e-7,
        "maximum": 12345.678,
    }
    assert got.params["metadata"] == {"note": "naïve café ✓", "empty": "", "emoji": "🧪"}
    assert got.params["tools"][0]["parameters"]["properties"]["x"] == {"default": 0.1}
    assert store.items(response_id="resp_json", kind=INPUT) == items


def test_the_status_column_reads_back_as_status_and_stores_its_string(store, engine):
    create(store, "resp_1")
    store.claim(response_id="resp_1", now=T0)
    row = store.get_response(response_id="resp_1")
    assert row is not None and type(row.status) is Status and row.status is Status.IN_PROGRESS
    with engine.connect() as conn:
        raw = conn.execute(text("SELECT status FROM responses WHERE id = 'resp_1'")).scalar()
    assert type(raw) is str and raw == "in_progress"


def test_get_response_filters_by_tenant(store):
    create(store, "resp_1", tenant="tenant-a")

    assert store.get_response(response_id="resp_1", tenant="tenant-b") is None
    mine = store.get_response(response_id="resp_1", tenant="tenant-a")
    assert mine is not None and mine.id == "resp_1"
    anyone = store.get_response(response_id="resp_1")
    assert anyone is not None and anyone.tenant == "tenant-a"
    assert store.get_response(response_id="resp_missing") is None
    assert store.get_response(response_id="resp_missing", tenant="tenant-a") is None


# ---- claim -------------------------------------------------------------------------------


def test_claim_takes_a_queued_response_once(store):
    create(store, "resp_1")

    claimed = store.claim(response_id="resp_1", now=T0 + 3)
    assert claimed is not None
    assert (claimed.id, claimed.status, claimed.started_at, claimed.attempts) == (
        "resp_1",
        "in_progress",
        T0 + 3,
        1,
    )
    assert store.claim(response_id="resp_1", now=T0 + 4) is None

    stored = store.get_response(response_id="resp_1")
    assert stored is not None
    assert (stored.status, stored.started_at, stored.attempts) == ("in_progress", T0 + 3, 1)


def test_claim_is_atomic_across_concurrent_workers(store):
    create(store, "resp_race")
    workers = 8
    barrier = threading.Barrier(workers)

    def attempt(n: int) -> ResponseRow | None:
        barrier.wait(timeout=10)
        return store.claim(response_id="resp_race", now=T0 + n)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(attempt, range(workers)))

    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    stored = store.get_response(response_id="resp_race")
    assert stored is not None
    assert (stored.status, stored.attempts, stored.started_at) == (
        "in_progress",
        1,
        winners[0].started_at,
    )


@pytest.mark.parametrize("status", TERMINAL, ids=lambda s: s.value)
def test_claim_of_a_terminal_response_returns_none(store, status):
    create(store, "resp_1", status=status)

    assert store.claim(response_id="resp_1", now=T0 + 1) is None
    stored = store.get_response(response_id="resp_1")
    assert stored is not None
    assert (stored.status, stored.started_at, stored.attempts) == (status.value, None, 0)


def test_claim_after_cancel_and_of_unknown_response_returns_none(store):
    create(store, "resp_1")
    assert store.cancel(response_id="resp_1", now=T0 + 1) == "queued"

    assert store.claim(response_id="resp_1", now=T0 + 2) is None
    assert store.claim(response_id="resp_missing", now=T0 + 2) is None
    stored = store.get_response(response_id="resp_1")
    assert stored is not None
    assert (stored.status, stored.attempts) == ("cancelled", 0)


# ---- finish ------------------------------------------------------------------------------


def test_finish_completed_writes_status_usage_completed_at_and_output(store):
    create(store, "resp_1")
    store.claim(response_id="resp_1", now=T0 + 1)
    out = [output_message("msg_a", "one"), output_message("msg_b", "two")]
    usage = usage_object(12, 34, reasoning_tokens=5)

    done = store.finish(
        response_id="resp_1", status=Status.COMPLETED, now=T0 + 9, output=out, usage=usage
    )

    for row in (done, store.get_response(response_id="resp_1")):
        assert row is not None
        assert (row.status, row.ended_at, row.completed_at) == ("completed", T0 + 9, T0 + 9)
        assert (row.usage, row.error, row.incomplete_details) == (usage, None, None)
    assert store.items(response_id="resp_1", kind=OUTPUT) == out
    assert store.items(response_id="resp_1", kind=INPUT) == [message("msg_1")]


def test_finish_failed_writes_error_without_completed_at(store):
    create(store, "resp_1")
    store.claim(response_id="resp_1", now=T0 + 1)
    error = {"code": "server_error", "message": "upstream broke"}

    done = store.finish(
        response_id="resp_1", status=Status.FAILED, now=T0 + 2, output=[], error=error
    )

    for row in (done, store.get_response(response_id="resp_1")):
        assert row is not None
        assert (row.status, row.ended_at, row.completed_at) == ("failed", T0 + 2, None)
        assert (row.error, row.usage, row.incomplete_details) == (error, None, None)
    assert store.render(store.get_response(response_id="resp_1"))["error"] == error


def test_finish_incomplete_writes_incomplete_details(store):
    create(store, "resp_1")
    store.claim(response_id="resp_1", now=T0 + 1)
    details = {"reason": "max_output_tokens"}
    usage = usage_object(3, 16)
    partial = [output_message("msg_a", "trunc")]

    done = store.finish(
        response_id="resp_1",
        status=Status.INCOMPLETE,
        now=T0 + 2,
        output=partial,
        incomplete_details=details,
        usage=usage,
    )

    assert done is not None
    assert (done.status, done.completed_at, done.ended_at) == ("incomplete", None, T0 + 2)
    assert (done.incomplete_details, done.usage, done.error) == (details, usage, None)
    assert store.items(response_id="resp_1", kind=OUTPUT) == partial


def test_finish_replaces_all_earlier_output_items(store):
    create(store, "resp_1")
    store.claim(response_id="resp_1", now=T0 + 1)
    for i in range(3):
        store.save_output_item(
            response_id="resp_1", position=i, item=output_message(f"msg_{i}", "draft")
        )
    final = [output_message("msg_final", "done")]

    store.finish(response_id="resp_1", status=Status.COMPLETED, now=T0 + 2, output=final)

    assert store.items(response_id="resp_1", kind=OUTPUT) == final
    assert store.find_item(tenant="tenant-a", item_id="msg_2") is None


def test_finish_writes_only_the_items_that_differ_from_what_was_saved(store, engine):
    create(store, "resp_1")
    store.claim(response_id="resp_1", now=T0 + 1)
    saved = {i: output_message(f"msg_{i}", "done") for i in range(3)}
    for position, item in saved.items():
        store.save_output_item(response_id="resp_1", position=position, item=item)
    # Item 0 as saved, item 1 changed since, item 2 gone, item 3 new.
    final = [saved[0], output_message("msg_1", "changed"), output_message("msg_3", "new")]
    written: list[str] = []

    def record(_conn, _cursor, statement, parameters, _context, executemany):
        if statement.startswith("INSERT INTO response_items"):
            rows = parameters if executemany else [parameters]
            written.extend(repr(row) for row in rows)

    event.listen(engine, "before_cursor_execute", record)
    try:
        store.finish(
            response_id="resp_1", status=Status.COMPLETED, now=T0 + 2, output=final, saved=saved
        )
    finally:
        event.remove(engine, "before_cursor_execute", record)

    assert store.items(response_id="resp_1", kind=OUTPUT) == final
    assert store.find_item(tenant="tenant-a", item_id="msg_2") is None
    assert len(written) == 2  # items 1 and 3; item 0 was not written again
    assert not any("msg_0" in row for row in written)


def test_finish_keeps_a_cancel_that_landed_first_but_stores_the_output(store):
    create(store, "resp_1")
    store.claim(response_id="resp_1", now=T0 + 1)
    assert store.cancel(response_id="resp_1", now=T0 + 2) == "in_progress"
    out = [output_message("msg_a", "late")]

    done = store.finish(
        response_id="resp_1",
        status=Status.COMPLETED,
        now=T0 + 3,
        output=out,
        usage=usage_object(1, 2),
    )

    for row in (done, store.get_response(response_id="resp_1")):
        assert row is not None
        assert (row.status, row.ended_at, row.completed_at, row.usage) == (
            "cancelled",
            T0 + 2,
            None,
            None,
        )
    assert store.items(response_id="resp_1", kind=OUTPUT) == out


def test_finish_from_queued_only_when_allowed(store):
    create(store, "resp_1")

    kept = store.finish(response_id="resp_1", status=Status.FAILED, now=T0 + 1, output=[])
    assert kept is not None and kept.status == "queued"

    done = store.finish(
        response_id="resp_1",
        status=Status.COMPLETED,
        now=T0 + 2,
        output=[],
        from_statuses=("queued", "in_progress"),
    )
    assert done is not None
    assert (done.status, done.completed_at) == ("completed", T0 + 2)


def test_finish_of_a_deleted_response_returns_none_and_stores_nothing(store, engine):
    create(store, "resp_1")
    assert store.delete_response(response_id="resp_1", tenant="tenant-a") is True

    out = [output_message("msg_a", "x")]
    assert store.finish(response_id="resp_1", status=Status.COMPLETED, now=T0, output=out) is None
    assert item_count(engine, "resp_1") == 0


# ---- cancel ------------------------------------------------------------------------------


def test_cancel_of_a_queued_response(store):
    create(store, "resp_1")

    assert store.cancel(response_id="resp_1", now=T0 + 7) == "queued"
    stored = store.get_response(response_id="resp_1")
    assert stored is not None
    assert (stored.status, stored.ended_at, stored.completed_at) == ("cancelled", T0 + 7, None)
    assert store.cancel(response_id="resp_1", now=T0 + 8) is None
    stored = store.get_response(response_id="resp_1")
    assert stored is not None and stored.ended_at == T0 + 7


@pytest.mark.parametrize("status", TERMINAL, ids=lambda s: s.value)
def test_cancel_of_a_terminal_response_returns_none(store, status):
    create(store, "resp_1", status=status)

    assert store.cancel(response_id="resp_1", now=T0 + 1) is None
    stored = store.get_response(response_id="resp_1")
    assert stored is not None
    assert (stored.status, stored.ended_at) == (status.value, None)


def test_cancel_of_an_unknown_response_returns_none(store):
    assert store.cancel(response_id="resp_missing", now=T0) is None


# ---- output items ------------------------------------------------------------------------


def test_save_output_item_inserts_and_replaces_by_position(store):
    create(store, "resp_1")
    first = output_message("msg_a", "partial")
    second = output_message("msg_b", "other")
    replaced = output_message("msg_a", "partial and then some")

    store.save_output_item(response_id="resp_1", position=0, item=first)
    assert store.items(response_id="resp_1", kind=OUTPUT) == [first]
    store.save_output_item(response_id="resp_1", position=1, item=second)
    store.save_output_item(response_id="resp_1", position=0, item=replaced)

    assert store.items(response_id="resp_1", kind=OUTPUT) == [replaced, second]
    assert store.items(response_id="resp_1", kind=INPUT) == [message("msg_1")]
    assert store.find_item(tenant="tenant-a", item_id="msg_a") == replaced


def test_save_output_item_is_a_no_op_for_a_deleted_response(store, engine):
    create(store, "resp_1")
    store.delete_response(response_id="resp_1", tenant="tenant-a")

    store.save_output_item(response_id="resp_1", position=0, item=output_message("msg_a", "x"))
    store.save_output_item(response_id="resp_never", position=0, item=output_message("m", "x"))

    assert item_count(engine, "resp_1") == 0
    assert item_count(engine, "resp_never") == 0
    assert store.count_responses() == 0


# ---- delete ------------------------------------------------------------------------------


def test_delete_response_removes_the_row_and_its_items_for_its_tenant_only(store, engine):
    create(store, "resp_1", tenant="tenant-a", items=[message("msg_1"), message("msg_2")])
    create(store, "resp_2", tenant="tenant-a", items=[message("msg_3")])
    store.save_output_item(response_id="resp_1", position=0, item=output_message("msg_o", "x"))
    assert item_count(engine, "resp_1") == 3

    assert store.delete_response(response_id="resp_1", tenant="tenant-b") is False
    assert store.get_response(response_id="resp_1") is not None
    assert item_count(engine, "resp_1") == 3

    assert store.delete_response(response_id="resp_1", tenant="tenant-a") is True
    assert store.get_response(response_id="resp_1") is None
    assert item_count(engine, "resp_1") == 0
    assert store.count_responses() == 1
    assert store.items(response_id="resp_2", kind=INPUT) == [message("msg_3")]

    assert store.delete_response(response_id="resp_1", tenant="tenant-a") is False
    assert store.delete_response(response_id="resp_missing", tenant="tenant-a") is False


# ---- find_item ---------------------------------------------------------------------------


def test_find_item_only_within_the_tenant_and_newest_first(store):
    create(store, "resp_a1", tenant="tenant-a", items=[message("msg_dup", "older")])
    create(store, "resp_a2", tenant="tenant-a", items=[message("msg_dup", "newer")])
    create(store, "resp_b1", tenant="tenant-b", items=[message("msg_b", "b's secret")])

    assert store.find_item(tenant="tenant-a", item_id="msg_dup") == message("msg_dup", "newer")
    assert store.find_item(tenant="tenant-b", item_id="msg_b") == message("msg_b", "b's secret")
    assert store.find_item(tenant="tenant-a", item_id="msg_b") is None
    assert store.find_item(tenant="tenant-b", item_id="msg_dup") is None
    assert store.find_item(tenant="tenant-a", item_id="msg_missing") is None


# ---- list_input_items --------------------------------------------------------------------


@pytest.fixture
def five(store: Store) -> Store:
    """resp_1 with input items msg_0 … msg_4, plus noise that must never be listed."""
    create(store, "resp_1", items=[message(f"msg_{i}", f"text {i}") for i in range(5)])
    create(store, "resp_other", items=[message("msg_9"), message("msg_0", "not resp_1's")])
    store.save_output_item(response_id="resp_1", position=0, item=output_message("msg_out", "o"))
    return store


def ids_of(items: list[dict[str, Any]]) -> list[str]:
    return [item["id"] for item in items]


def test_list_input_items_first_page_in_each_order(five):
    asc = five.list_input_items(response_id="resp_1", limit=2, order="asc")
    assert (ids_of(asc.items), asc.has_more) == (["msg_0", "msg_1"], True)
    assert asc.items[0] == message("msg_0", "text 0")

    desc = five.list_input_items(response_id="resp_1", limit=2, order="desc")
    assert (ids_of(desc.items), desc.has_more) == (["msg_4", "msg_3"], True)

    default = five.list_input_items(response_id="resp_1", limit=2)
    assert ids_of(default.items) == ["msg_4", "msg_3"]

    everything = five.list_input_items(response_id="resp_1", limit=5, order="asc")
    assert (ids_of(everything.items), everything.has_more) == (
        ["msg_0", "msg_1", "msg_2", "msg_3", "msg_4"],
        False,
    )
    assert five.list_input_items(response_id="resp_missing", limit=2).items == []


@pytest.mark.parametrize(
    ("order", "pages"),
    [
        ("asc", [["msg_0", "msg_1"], ["msg_2", "msg_3"], ["msg_4"]]),
        ("desc", [["msg_4", "msg_3"], ["msg_2", "msg_1"], ["msg_0"]]),
    ],
)
def test_list_input_items_after_cursor_walks_every_page(five, order, pages):
    seen: list[tuple[list[str], bool]] = []
    after = None
    while True:
        page = five.list_input_items(response_id="resp_1", limit=2, order=order, after=after)
        seen.append((ids_of(page.items), page.has_more))
        if not page.has_more:
            break
        after = page.items[-1]["id"]
        assert len(seen) < 5, "pagination does not terminate"

    assert seen == [(p, i < len(pages) - 1) for i, p in enumerate(pages)]


@pytest.mark.parametrize(
    ("order", "before", "expected", "has_more"),
    [
        ("asc", "msg_4", ["msg_2", "msg_3"], True),
        ("asc", "msg_2", ["msg_0", "msg_1"], False),
        ("asc", "msg_1", ["msg_0"], False),
        ("desc", "msg_0", ["msg_2", "msg_1"], True),
        ("desc", "msg_2", ["msg_4", "msg_3"], False),
        ("desc", "msg_4", [], False),
    ],
)
def test_list_input_items_before_cursor(five, order, before, expected, has_more):
    page = five.list_input_items(response_id="resp_1", limit=2, order=order, before=before)

    assert (ids_of(page.items), page.has_more) == (expected, has_more)


def test_list_input_items_between_two_cursors(five):
    page = five.list_input_items(
        response_id="resp_1", limit=10, order="asc", after="msg_0", before="msg_4"
    )
    assert (ids_of(page.items), page.has_more) == (["msg_1", "msg_2", "msg_3"], False)

    page = five.list_input_items(
        response_id="resp_1", limit=10, order="desc", after="msg_4", before="msg_1"
    )
    assert (ids_of(page.items), page.has_more) == (["msg_3", "msg_2"], False)


@pytest.mark.parametrize("param", ["after", "before"])
@pytest.mark.parametrize("cursor", ["msg_nope", "msg_9", "msg_out"])
def test_list_input_items_unknown_cursor_is_a_400(five, param, cursor):
    # msg_9 is another response's input item and msg_out is resp_1's output item.
    with pytest.raises(InvalidRequest) as caught:
        five.list_input_items(response_id="resp_1", limit=2, **{param: cursor})

    assert (caught.value.status, caught.value.type) == (400, "invalid_request_error")
    assert (caught.value.param, caught.value.code) == (param, "invalid_value")
    assert cursor in caught.value.message
