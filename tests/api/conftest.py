"""``app``, ``client`` and ``store`` for the API tests (Flask tutorial style), over the stand-ins
of ``tests.api.factory``; the ids the app queues are recorded in ``sent``.

A module that needs other settings overrides ``env``; a test that needs another set-up (a
broker that is down, a Redis that has gone away, a database without tables) builds its own
app with ``make_app``, which takes ``build_app``'s keywords.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from shared.store import Store
from tests.api.factory import AppFactory, build_app, store_of


@pytest.fixture
def env() -> dict[str, str]:
    """Settings (environment variables) on top of ``build_app``'s; none by default."""
    return {}


@pytest.fixture
def sent() -> list[str]:
    """The response ids the app queued, in order."""
    return []


@pytest.fixture
def make_app(tmp_path: Path, env: dict[str, str], sent: list[str]) -> Iterator[AppFactory]:
    """Builds apps like ``app``, with ``build_app``'s keywords changed (``env`` is added to the
    module's); their database connections are closed after the test."""
    made: list[Flask] = []

    def make(**kwargs: Any) -> Flask:
        kwargs["env"] = {**env, **kwargs.get("env", {})}
        kwargs.setdefault("enqueue", sent.append)
        made.append(build_app(tmp_path, **kwargs))
        return made[-1]

    yield make
    for app in made:
        store_of(app).engine.dispose()


@pytest.fixture
def app(make_app: AppFactory) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def store(app: Flask) -> Store:
    return store_of(app)
