"""The engine every store class shares, and the base those classes have in common."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlmodel import Session

CONNECT_TIMEOUT_SECONDS = 10


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """Once per pooled connection (WAL itself is a property of the file, kept across opens)."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_engine(url: str, *, pool_size: int = 10) -> Engine:
    """An engine for SQLite (WAL, foreign keys on) or Postgres (psycopg 3)."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=pool_size,
            max_overflow=pool_size * 4,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(
        url,
        pool_size=pool_size,
        # Bounded: a busy process waits (up to 30 s) for one of its connections rather than
        # opening more. With 4x, one worker (20 + 80) and one API (10 + 40) could ask for 150,
        # past Postgres's default max_connections of 100, and did under bench.run's submit
        # ("too many clients already" failed jobs). Now 40 + 20.
        max_overflow=pool_size,
        pool_pre_ping=True,
        # A database host that does not answer fails a connect in seconds, not never.
        connect_args={"connect_timeout": CONNECT_TIMEOUT_SECONDS},
    )


class Queries:
    """The base of every store class: the one engine and a short session over it.

    A concept's class is built over the ``Store`` and shares its engine
    (``WebhookStore(store)``); ``Store`` itself is built from the engine."""

    engine: Engine

    def __init__(self, store: Queries) -> None:
        self.engine = store.engine

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session whose objects stay readable after its commit (callers read the rows a
        method returns after the method's session closed)."""
        with Session(self.engine, expire_on_commit=False) as session:
            yield session
