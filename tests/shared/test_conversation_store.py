"""Conversation state in the store, on SQLite and Postgres: the previous_response_id chain
(loaded in a bounded number of queries), store=false responses leaving nothing, and
conversations with the items responses append to them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import Engine, event, select

from shared.schema.response import Status
from shared.store import ChainBroken, Store
from shared.store.conversations import ConversationStore
from shared.store.tables import ConversationRow, ItemRow, ResponseRow
from tests.shared.test_store import T0, create, message, output_message


@contextmanager
def counted_queries(engine: Engine) -> Iterator[list[str]]:
    """Every SQL statement the engine runs inside the block."""
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


def finish(store: Store, response_id: str, output: list[dict[str, Any]], **kw: Any) -> None:
    store.claim(response_id=response_id, now=T0)
    store.finish(response_id=response_id, status=Status.COMPLETED, now=T0, output=output, **kw)


def chain(store: Store, length: int) -> list[str]:
    """``length`` finished responses, each continuing the one before."""
    ids: list[str] = []
    for i in range(length):
        response_id = f"resp_{i:04d}"
        row_body = {"model": "m", "input": "x", "background": True}
        create(
            store,
            response_id,
            items=[message(f"msg_in_{i}", f"question {i}")],
            body=row_body,
        )
        if ids:
            with store.session() as s:
                row = s.get(ResponseRow, response_id)
                assert row is not None
                row.previous_response_id = ids[-1]
                s.add(row)
                s.commit()
        finish(store, response_id, [output_message(f"msg_out_{i}", f"answer {i}")])
        ids.append(response_id)
    return ids


def test_a_chain_of_200_loads_in_two_queries(store: Store, engine: Engine) -> None:
    ids = chain(store, 200)
    with counted_queries(engine) as statements:
        items = store.chain_items(response_id=ids[-1])
    assert len(statements) == 2, statements
    assert [item["id"] for item in items[:4]] == ["msg_in_0", "msg_out_0", "msg_in_1", "msg_out_1"]
    assert len(items) == 400
    assert items[-1]["id"] == "msg_out_199"


def test_a_chain_with_a_deleted_link_is_broken(store: Store) -> None:
    ids = chain(store, 3)
    store.delete_response(response_id=ids[1], tenant="tenant-a")
    with pytest.raises(ChainBroken) as info:
        store.chain_items(response_id=ids[2])
    assert info.value.missing_id == ids[1]
    with pytest.raises(ChainBroken):
        store.chain_items(response_id="resp_unknown")


def test_store_false_is_deleted_when_it_ends(store: Store, engine: Engine) -> None:
    row = create(store, "resp_ephemeral", body={"model": "m", "input": "hi", "store": False})
    store.claim(response_id=row.id, now=T0)
    final = store.finish(
        response_id=row.id,
        status=Status.COMPLETED,
        now=T0 + 1,
        output=[output_message("msg_out", "bye")],
    )
    assert final is not None and final.status == "completed" and final.completed_at == T0 + 1
    assert store.get_response(response_id=row.id) is None
    with engine.connect() as conn:
        assert conn.execute(select(ItemRow.pk).where(ItemRow.response_id == row.id)).all() == []


def _conversation(store: Store, items: list[dict[str, Any]]) -> str:
    row = ConversationRow(id="conv_1", tenant="tenant-a", created_at=T0, meta={"k": "v"})
    ConversationStore(store).create(row, items)
    return row.id


def in_conversation(store: Store, response_id: str, conversation_id: str) -> None:
    """Echo ``{"id": conversation_id}`` in the response's params, as the API writes it."""
    with store.session() as s:
        row = s.get(ResponseRow, response_id)
        assert row is not None
        row.params = {**row.params, "conversation": {"id": conversation_id}}
        s.add(row)
        s.commit()


def test_a_finished_response_appends_its_items_to_its_conversation(store: Store) -> None:
    conversations = ConversationStore(store)
    conv = _conversation(store, [message("msg_seed", "seed")])
    body = {"model": "m", "input": "x"}
    create(store, "resp_ok", items=[message("msg_seed"), message("msg_q", "q")], body=body)
    in_conversation(store, "resp_ok", conv)
    finish(store, "resp_ok", [output_message("msg_a", "a")])
    ids = [item["id"] for item in conversations.all_items(conversation_id=conv)]
    # msg_seed was replayed as input: it is not added twice.
    assert ids == ["msg_seed", "msg_q", "msg_a"]

    create(store, "resp_bad", items=[message("msg_q2", "q2")], body=body)
    in_conversation(store, "resp_bad", conv)
    store.claim(response_id="resp_bad", now=T0)
    store.finish(response_id="resp_bad", status=Status.FAILED, now=T0, output=[])
    assert len(conversations.all_items(conversation_id=conv)) == 3


def test_conversation_items_page_both_ways(store: Store) -> None:
    conversations = ConversationStore(store)
    conv = _conversation(store, [message(f"msg_{i}", str(i)) for i in range(5)])
    page = conversations.list_items(conversation_id=conv, limit=2, order="asc")
    assert page is not None and [i["id"] for i in page.items] == ["msg_0", "msg_1"]
    assert page.has_more
    page = conversations.list_items(conversation_id=conv, limit=2, order="asc", after="msg_3")
    assert page is not None and [i["id"] for i in page.items] == ["msg_4"]
    assert not page.has_more
    page = conversations.list_items(conversation_id=conv, limit=3, after="msg_3")
    assert page is not None and [i["id"] for i in page.items] == ["msg_2", "msg_1", "msg_0"]
    assert conversations.list_items(conversation_id=conv, limit=2, after="msg_x") is None
    assert conversations.delete_item(conversation_id=conv, item_id="msg_2")
    assert conversations.get_item(conversation_id=conv, item_id="msg_2") is None
    assert not conversations.delete(tenant="tenant-b", conversation_id=conv)
    assert conversations.delete(tenant="tenant-a", conversation_id=conv)
    assert conversations.all_items(conversation_id=conv) == []
