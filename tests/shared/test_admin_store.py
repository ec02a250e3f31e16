"""The operator queries use indexes, on SQLite and on Postgres: none of them scans the
responses table, so their cost follows the rows they return, not the millions stored.

Each query is captured as the store runs it and explained with the same parameters. On
Postgres the planner is told to avoid sequential scans (on a small test table it would
rightly prefer one); a query with no usable index still shows a ``Seq Scan`` then."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, event

from shared.schema.response import Status
from shared.store.admin import AdminStore, Filters
from shared.store.repo import Store
from tests.shared.test_store import T0, create


def plans(engine: Engine, call: Callable[[], Any]) -> list[tuple[str, str]]:
    """(statement, its plan) for every statement ``call`` runs."""
    captured: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        captured.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        call()
    finally:
        event.remove(engine, "before_cursor_execute", record)
    out = []
    with engine.connect() as conn:
        sqlite = engine.dialect.name == "sqlite"
        if not sqlite:
            conn.exec_driver_sql("SET enable_seqscan = off")
        for statement, parameters in captured:
            prefix = "EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN "
            rows = conn.exec_driver_sql(prefix + statement, parameters).all()
            out.append((statement, "\n".join(str(row[-1]) for row in rows)))
    return out


def assert_no_table_scan(found: list[tuple[str, str]]) -> None:
    assert found, "no statements captured"
    for statement, plan in found:
        if "responses" not in statement:
            continue
        lines = plan.splitlines()
        full_scans = [
            line
            for line in lines
            if ("SCAN responses" in line and "INDEX" not in line) or "Seq Scan on responses" in line
        ]
        assert not full_scans, f"full scan of responses:\n{statement}\n{plan}"


def test_operator_queries_use_indexes(store: Store, engine: Engine) -> None:
    for i in range(30):
        create(store, f"resp_{i:03d}", created_at=T0 + i)
    admin = AdminStore(store)
    for call in (
        admin.active,
        admin.oldest_queued,
        lambda: admin.finished_since(T0),
        lambda: admin.listing(Filters(status=Status.FAILED.value), limit=20),
        lambda: admin.listing(Filters(model="m"), limit=20, after="resp_010"),
        lambda: admin.listing(Filters(tenant="tenant-a", created_before=T0 + 10), limit=20),
        lambda: admin.webhook_attempts("resp_001"),
    ):
        assert_no_table_scan(plans(engine, call))


def test_listing_pages_newest_first(store: Store) -> None:
    for i in range(5):
        create(store, f"resp_{i:03d}", created_at=T0 + i)
    admin = AdminStore(store)
    rows, more = admin.listing(Filters(), limit=2)
    assert [r.id for r in rows] == ["resp_004", "resp_003"] and more
    rows, more = admin.listing(Filters(), limit=10, after="resp_003")
    assert [r.id for r in rows] == ["resp_002", "resp_001", "resp_000"] and not more
    rows, _ = admin.listing(Filters(created_before=T0 + 2), limit=10)
    assert [r.id for r in rows] == ["resp_001", "resp_000"]
