"""Idempotency keys in the SQL store, on SQLite and Postgres (see conftest.py).

The rule under test (README, "Behaviour worth knowing"): a key row is written in the same
transaction as its response; a live key yields its row instead of a second response; a key
is dead ``ttl_seconds`` after first use and then replaced; deleting the response frees it.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect, text
from sqlmodel import SQLModel

from shared.schema.requests import parse_create_request
from shared.schema.response import Status, echo_params
from shared.store import IdempotencyKey, Store
from shared.store.tables import INPUT, IdempotencyKeyRow, ResponseRow

T0 = 1_763_700_000
TTL = 100


def make_row(response_id: str, *, tenant: str = "tenant-a") -> ResponseRow:
    body = {"model": "m", "input": "hi", "background": True}
    return ResponseRow(
        id=response_id,
        tenant=tenant,
        status=Status.QUEUED.value,
        model="m",
        background=True,
        store=True,
        stream=False,
        created_at=T0,
        params=echo_params(parse_create_request(body), model="m"),
    )


def message(item_id: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "message",
        "role": "user",
        "status": "completed",
        "content": [{"type": "input_text", "text": "hi"}],
    }


def key(value: str = "k-1", *, now: int = T0, body_hash: str = "h" * 64) -> IdempotencyKey:
    return IdempotencyKey(key=value, body_hash=body_hash, now=now, ttl_seconds=TTL)


def create(
    store: Store, response_id: str, idem: IdempotencyKey | None, *, tenant: str = "tenant-a"
) -> IdempotencyKeyRow | None:
    return store.create_response(
        row=make_row(response_id, tenant=tenant),
        input_items=[message(f"msg_{response_id}")],
        idempotency=idem,
    )


def key_rows(engine: Engine) -> list[tuple[str, str, str, str, int]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT tenant, key, body_hash, response_id, created_at FROM idempotency_keys "
                "ORDER BY tenant, key"
            )
        ).all()
    return [(r[0], r[1], r[2], r[3], r[4]) for r in rows]


def test_migration_creates_the_idempotency_table_like_the_model(engine):
    inspector = inspect(engine)
    columns = {c["name"]: c for c in inspector.get_columns("idempotency_keys")}
    assert set(columns) == set(SQLModel.metadata.tables["idempotency_keys"].columns.keys())
    assert set(columns) == {"tenant", "key", "body_hash", "response_id", "created_at"}
    assert not any(c["nullable"] for c in columns.values())
    pk = inspector.get_pk_constraint("idempotency_keys")["constrained_columns"]
    assert pk == ["tenant", "key"]
    (fk,) = inspector.get_foreign_keys("idempotency_keys")
    assert (fk["constrained_columns"], fk["referred_table"], fk["referred_columns"]) == (
        ["response_id"],
        "responses",
        ["id"],
    )
    assert fk["options"].get("ondelete") == "CASCADE"
    with engine.connect() as conn:
        versions = conn.execute(text("SELECT version_num FROM alembic_version")).all()
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    assert [v[0] for v in versions] == ["0008"]
    assert diff == []


def test_create_with_a_key_stores_the_response_and_the_key_together(store, engine):
    assert create(store, "resp_1", key()) is None

    assert store.count_responses() == 1
    assert store.items(response_id="resp_1", kind=INPUT) == [message("msg_resp_1")]
    assert key_rows(engine) == [("tenant-a", "k-1", "h" * 64, "resp_1", T0)]
    found = store.find_idempotency_key(tenant="tenant-a", idempotency=key(now=T0 + 5))
    assert found is not None
    assert (found.tenant, found.key, found.body_hash, found.response_id, found.created_at) == (
        "tenant-a",
        "k-1",
        "h" * 64,
        "resp_1",
        T0,
    )


def test_lookup_is_per_tenant_and_per_key(store):
    create(store, "resp_1", key())

    assert store.find_idempotency_key(tenant="tenant-b", idempotency=key()) is None
    assert store.find_idempotency_key(tenant="tenant-a", idempotency=key("k-2")) is None
    assert store.find_idempotency_key(tenant="tenant-a", idempotency=key("K-1")) is None
    assert create(store, "resp_b", key(), tenant="tenant-b") is None
    assert store.count_responses() == 2


def test_same_key_twice_returns_the_first_row_and_writes_nothing(store, engine):
    assert create(store, "resp_1", key()) is None

    holder = create(store, "resp_2", key(now=T0 + 1, body_hash="other"))

    assert holder is not None
    assert (holder.response_id, holder.body_hash, holder.created_at) == ("resp_1", "h" * 64, T0)
    assert store.get_response(response_id="resp_2") is None
    assert store.items(response_id="resp_2", kind=INPUT) == []
    assert store.count_responses() == 1
    assert key_rows(engine) == [("tenant-a", "k-1", "h" * 64, "resp_1", T0)]


def test_a_key_lives_exactly_ttl_seconds_then_is_replaced(store, engine):
    create(store, "resp_1", key())

    last_live = T0 + TTL - 1
    assert store.find_idempotency_key(tenant="tenant-a", idempotency=key(now=last_live))
    holder = create(store, "resp_2", key(now=last_live))
    assert holder is not None and holder.response_id == "resp_1"

    assert store.find_idempotency_key(tenant="tenant-a", idempotency=key(now=T0 + TTL)) is None
    assert create(store, "resp_3", key(now=T0 + TTL, body_hash="new")) is None

    assert key_rows(engine) == [("tenant-a", "k-1", "new", "resp_3", T0 + TTL)]
    assert store.get_response(response_id="resp_1") is not None  # the old response stays
    assert store.get_response(response_id="resp_2") is None
    assert store.count_responses() == 2


def test_concurrent_creates_with_one_key_make_one_response(store, engine):
    workers = 8
    barrier = threading.Barrier(workers)

    def attempt(n: int) -> IdempotencyKeyRow | None:
        barrier.wait(timeout=10)
        return create(store, f"resp_{n}", key())

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(attempt, range(workers)))

    winners = [n for n, holder in enumerate(results) if holder is None]
    assert len(winners) == 1
    winner = f"resp_{winners[0]}"
    assert {holder.response_id for holder in results if holder is not None} == {winner}
    assert store.count_responses() == 1
    assert store.get_response(response_id=winner) is not None
    assert key_rows(engine) == [("tenant-a", "k-1", "h" * 64, winner, T0)]


def test_concurrent_creates_replacing_a_dead_key_make_one_response(store, engine):
    create(store, "resp_old", key())
    later = T0 + TTL
    workers = 6
    barrier = threading.Barrier(workers)

    def attempt(n: int) -> IdempotencyKeyRow | None:
        barrier.wait(timeout=10)
        return create(store, f"resp_{n}", key(now=later))

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(attempt, range(workers)))

    winners = [f"resp_{n}" for n, holder in enumerate(results) if holder is None]
    assert len(winners) == 1
    assert {h.response_id for h in results if h is not None} == set(winners)
    assert key_rows(engine) == [("tenant-a", "k-1", "h" * 64, winners[0], later)]
    assert store.count_responses() == 2


def test_deleting_the_response_releases_its_key(store, engine):
    create(store, "resp_1", key())
    create(store, "resp_2", key("k-2"))

    assert store.delete_response(response_id="resp_1", tenant="tenant-a") is True

    assert store.find_idempotency_key(tenant="tenant-a", idempotency=key()) is None
    assert [r[1] for r in key_rows(engine)] == ["k-2"]
    assert create(store, "resp_3", key(now=T0 + 1)) is None
    assert [r[3] for r in key_rows(engine)] == ["resp_3", "resp_2"]


def test_the_database_cascades_a_response_delete_to_its_key(store, engine):
    create(store, "resp_1", key())
    create(store, "resp_2", key("k-2"))

    with engine.begin() as conn:  # plain SQL, no ORM: the foreign key's ON DELETE CASCADE
        conn.execute(text("DELETE FROM responses WHERE id = 'resp_1'"))

    assert key_rows(engine) == [("tenant-a", "k-2", "h" * 64, "resp_2", T0)]


def test_create_without_a_key_is_unchanged(store, engine):
    assert create(store, "resp_1", None) is None
    assert create(store, "resp_2", None) is None

    assert store.count_responses() == 2
    assert key_rows(engine) == []
