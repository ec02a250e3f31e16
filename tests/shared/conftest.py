"""Store fixtures: a Store over each backend's database (``tests/conftest.py``), emptied
before each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, delete

from shared.store import Store, make_engine
from shared.store.tables import (
    ConversationItemRow,
    ConversationRow,
    ItemRow,
    PromptRow,
    PromptVersionRow,
    ResponseRow,
    WebhookAttemptRow,
    WebhookDeliveryRow,
    WebhookEndpointRow,
    WebhookEventRow,
)


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url, pool_size=2)
    yield engine
    engine.dispose()


@pytest.fixture
def store(engine: Engine) -> Store:
    """A Store over empty tables."""
    with engine.begin() as conn:
        for table in (WebhookAttemptRow, WebhookDeliveryRow, WebhookEventRow, WebhookEndpointRow):
            conn.execute(delete(table))
        conn.execute(delete(ConversationItemRow))
        conn.execute(delete(ConversationRow))
        conn.execute(delete(ItemRow))
        conn.execute(delete(ResponseRow))
        conn.execute(delete(PromptVersionRow))
        conn.execute(delete(PromptRow))
    return Store(engine)
