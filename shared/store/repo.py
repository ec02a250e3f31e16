"""``Store``: the object the API and the worker hold, one engine behind every query they run."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Engine, literal
from sqlmodel import select

from shared.store.jobs import JobStore
from shared.store.responses import ResponseStore


class Store(JobStore, ResponseStore):
    """Responses, their items and their runs in one object (the classes it combines hold
    the queries); conversations, webhooks and the operator queries are built over it
    (``WebhookStore(store)``)."""

    def __init__(
        self, engine: Engine, *, on_deliveries: Callable[[list[str]], None] | None = None
    ) -> None:
        """``on_deliveries`` is called with the ids of new webhook deliveries after the
        transaction that wrote them committed (to send them now; the sweep sends them anyway
        if this fails or is not given)."""
        self.engine = engine
        self.on_deliveries = on_deliveries

    def ping(self) -> None:
        """One round trip to the database; raises if it does not answer."""
        with self.engine.connect() as connection:
            connection.execute(select(literal(1)))
