"""The API under test, built by its own factory (Flask tutorial style) over stand-ins at its
boundaries: a database (a fresh migrated SQLite file unless one is given), fakeredis for the
bus unless another Redis client is given (one that has gone away, say), and an injected
``enqueue`` in place of the broker."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import fakeredis
from flask import Flask
from flask.testing import FlaskClient

from api import create_app
from shared.bus import EventBus
from shared.settings import Settings
from shared.store import Store, make_engine, migrate

AppFactory = Callable[..., Flask]


def build_app(
    tmp_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    database_url: str | None = None,
    migrated: bool = True,
    redis_client: Any = None,
    enqueue: Callable[[str], None],
) -> Flask:
    """An app in open mode with a broker URL nothing uses, unless ``env`` says otherwise.
    ``migrated=False`` leaves the SQLite file without tables (a database not ready)."""
    url = database_url or f"sqlite:///{tmp_path / 'api.db'}"
    if database_url is None and migrated:
        migrate.upgrade(url)
    settings = Settings.from_env(
        {"DATABASE_URL": url, "REDIS_URL": "redis://unused", **(env or {})}
    )
    return create_app(
        settings,
        # Two connections (and their overflow) per app: a test over Postgres builds many.
        store=Store(make_engine(url, pool_size=2)),
        bus=EventBus(
            fakeredis.FakeRedis() if redis_client is None else redis_client, ttl_seconds=60
        ),
        enqueue=enqueue,
    )


def store_of(app: Flask) -> Store:
    """The store an app was built over."""
    found: Store = app.extensions["resq"].store
    return found


def make_client(
    tmp_path: Path, enqueue: Callable[[str], None], *, keys: str = ""
) -> tuple[FlaskClient, Store]:
    """A client of ``build_app`` with these API keys, and its store (for modules that build
    several apps by hand: ``test_openapi.py``)."""
    app = build_app(tmp_path, env={"RESQ_API_KEYS": keys}, enqueue=enqueue)
    return app.test_client(), store_of(app)
