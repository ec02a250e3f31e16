"""Databases for the tests of every package: one migrated database per backend per session.

SQLite is a file under the session's temporary directory. Postgres is a throwaway database
on the server at 127.0.0.1:5432, created here and dropped at the end of the session; when
that server is unreachable the Postgres tests are skipped locally and fail in CI
(``CI=true``).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from shared.store import migrate

POSTGRES_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/{name}"

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


def _admin() -> psycopg.Connection:
    return psycopg.connect(POSTGRES_ADMIN_DSN, autocommit=True, connect_timeout=3)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A freshly created and migrated Postgres database, dropped after the session."""
    try:
        _admin().close()
    except psycopg.OperationalError as exc:
        message = f"PostgreSQL is not reachable ({POSTGRES_ADMIN_DSN}): {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    name = f"resq_test_{secrets.token_hex(6)}"
    with _admin() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        url = POSTGRES_URL.format(name=name)
        migrate.upgrade(url)
        yield url
    finally:
        with _admin() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A migrated SQLite database file (the directory is created by the migration)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('store') / 'db' / 'resq.sqlite3'}"
    migrate.upgrade(url)
    return url


@pytest.fixture(scope="session", params=BACKENDS)
def database_url(request: pytest.FixtureRequest) -> str:
    """The URL of a migrated database, once per backend."""
    return str(request.getfixturevalue(f"{request.param}_url"))
