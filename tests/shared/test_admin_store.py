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
from shared.store import Store
from shared.store.admin import AdminStore, Filters
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
        lambda: admin.listing(Filters(status=Status.FAILED), limit=20),
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


def test_queue_report_counts_active_and_finished_by_window_model_and_tenant(store: Store) -> None:
    now = T0 + 1000
    create(store, "resp_q", created_at=T0)  # queued
    create(store, "resp_r", created_at=T0 + 1, tenant="tenant-b")
    store.claim(response_id="resp_r", now=T0 + 2)  # in progress
    for rid, ended, status, wait in (
        ("resp_a", now - 30, Status.COMPLETED, 1.0),
        ("resp_b", now - 200, Status.FAILED, 3.0),
        ("resp_c", now - 600, Status.COMPLETED, 5.0),
    ):
        create(store, rid, created_at=T0 + 2)
        store.claim(response_id=rid, now=T0 + 3)
        timings = {"queue_wait": wait, "run": 2 * wait}
        store.finish(response_id=rid, status=status, now=ended, output=[], timings=timings)
    queues = [{"name": "resq", "depth": 4, "paused": False}]
    report = AdminStore(store).queue_report(now=now, queues=queues)
    counts = {"queued": 1, "in_progress": 0, "completed": 2, "failed": 1}
    assert report["object"] == "admin.queue" and report["queues"] == queues
    assert report["totals"] == {
        "queued": 1,
        "in_progress": 1,
        "oldest_queued_age_seconds": 1000.0,
    }
    assert report["windows"]["1m"] == {
        "completed": 1,
        "failed": 0,
        "cancelled": 0,
        "incomplete": 0,
        "throughput_per_second": round(1 / 60, 4),
        "queue_wait_seconds": {"p50": 1.0, "p95": 1.0},
        "run_seconds": {"p50": 2.0, "p95": 2.0},
    }
    assert report["windows"]["15m"]["queue_wait_seconds"] == {"p50": 3.0, "p95": 5.0}
    assert report["by_model"] == [
        {"model": "m", **counts, "in_progress": 1, "cancelled": 0, "incomplete": 0}
    ]
    assert [(t["tenant"], t["in_progress"], t["completed"]) for t in report["by_tenant"]] == [
        ("tenant-a", 0, 2),
        ("tenant-b", 1, 0),
    ]
    assert list(report["by_model"][0]) == [
        "model",
        "queued",
        "in_progress",
        "completed",
        "failed",
        "cancelled",
        "incomplete",
    ]
