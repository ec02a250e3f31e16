"""Stand-ins at the worker's boundaries: a SQLite file store and fakeredis for the bus."""

from __future__ import annotations

from pathlib import Path

import fakeredis
import pytest

from shared.bus import EventBus
from shared.store import Store, make_engine, migrate


@pytest.fixture
def store(tmp_path: Path) -> Store:
    url = f"sqlite:///{tmp_path / 'resq.db'}"
    migrate.upgrade(url)
    return Store(make_engine(url))


@pytest.fixture
def bus() -> EventBus:
    return EventBus(fakeredis.FakeRedis(), ttl_seconds=60)
