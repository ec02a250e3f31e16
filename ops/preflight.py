"""``make run``'s checks before it starts anything: each problem is one line that names the
setting and what to do, found in about a second, instead of a child's traceback later.

``check`` raises ``ConfigError``; the launcher prints its message and exits with status 1.
The cheap checks come first; the database is then migrated to the newest schema (which
``make run`` does at every start), so a database that cannot be migrated is found too.

The launcher runs them apart (``check_apart``: ``python -m ops.preflight``, a process that
exits once they are done), so what they import (the Redis client, the Postgres driver,
SQLAlchemy, Alembic and the migrations: ~35 MB of RSS) never stays in the launcher, which lives
as long as the stack. The checks import those only inside the functions that need them.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

from shared.routing import Router
from shared.settings import Settings, SettingsError

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("text", "json")
REDIS_TIMEOUT_SECONDS = 1.0
DB_TIMEOUT_SECONDS = 2
POSTGRES = "postgresql+psycopg://"  # what Settings makes of postgres:// and postgresql://
LOG_FORMAT = "resq: %(message)s"  # the launcher's lines, and this module's when run apart
CONFIG_ERROR_STATUS = 3  # ``python -m ops.preflight``: a ConfigError, its message on stdout


class ConfigError(Exception):
    """A setting or a part resq needs is wrong; the message says which and what to do."""


def load_settings(env: dict[str, str]) -> Settings:
    try:
        settings = Settings.from_env(env)
    except SettingsError as exc:
        raise ConfigError(str(exc)) from None
    if not 0 < settings.port < 65536:
        raise ConfigError(f"RESQ_PORT must be a port number (1-65535), got {settings.port}")
    if settings.log_level not in LOG_LEVELS:
        raise ConfigError(
            f"RESQ_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {settings.log_level!r}"
        )
    if settings.log_format not in LOG_FORMATS:
        raise ConfigError(f"RESQ_LOG_FORMAT must be text or json, got {settings.log_format!r}")
    if settings.worker_concurrency < 1:
        raise ConfigError("RESQ_WORKER_CONCURRENCY must be at least 1")
    if settings.shutdown_grace_seconds < 0:
        raise ConfigError("RESQ_SHUTDOWN_GRACE_SECONDS must not be negative")
    if settings.dispatch_buffer < 1:
        raise ConfigError("RESQ_DISPATCH_BUFFER must be 1 or more")
    return settings


def check_models_file(settings: Settings) -> None:
    try:
        Router.from_file(settings.models_file)
    except SettingsError as exc:
        raise ConfigError(f"RESQ_MODELS_FILE: {exc}") from None


def check_tenants_file(settings: Settings) -> None:
    from shared.tenancy import TenantPolicy  # only when checking: the launcher stays lean

    try:
        TenantPolicy.from_settings(settings)
    except SettingsError as exc:
        raise ConfigError(f"RESQ_TENANTS_FILE: {exc}") from None


def check_port(host: str, port: int) -> None:
    """The API's address is free (bound the way gunicorn binds it, then let go)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"port {port} on {host} is already in use: stop what listens there, or "
                    "set RESQ_PORT to a free port"
                ) from None
            raise ConfigError(
                f"cannot listen on {host}:{port} (RESQ_HOST, RESQ_PORT): {exc.strerror}"
            ) from None


def check_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(
        url, socket_timeout=REDIS_TIMEOUT_SECONDS, socket_connect_timeout=REDIS_TIMEOUT_SECONDS
    )
    try:
        client.ping()
    except (redis.RedisError, ValueError) as exc:
        raise ConfigError(
            f"REDIS_URL: Redis at {_safe_url(url)} does not answer ({exc}): start it, "
            "or unset REDIS_URL to let resq run a private one"
        ) from None
    finally:
        client.close()


def check_database(url: str) -> None:
    """Reachable: a connection with the driver alone (SQLAlchemy and alembic take a second to
    import; a wrong URL is found before that)."""
    if url.startswith("sqlite:///"):
        folder = Path(url.removeprefix("sqlite:///")).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"DATABASE_URL: cannot create the folder {folder} for SQLite: {exc.strerror}"
            ) from None
        if not os.access(folder, os.W_OK):
            raise ConfigError(f"DATABASE_URL: the folder {folder} for SQLite is not writable")
        return
    if not url.startswith(POSTGRES):
        raise ConfigError(
            "DATABASE_URL must start with sqlite:/// or postgresql:// (got "
            f"{_safe_url(url).partition('://')[0]}://…)"
        )
    import psycopg

    try:
        psycopg.connect(
            "postgresql://" + url.removeprefix(POSTGRES), connect_timeout=DB_TIMEOUT_SECONDS
        ).close()
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"DATABASE_URL: cannot reach the database at {_safe_url(url)}: {reason}"
        ) from None


def migrate_database(url: str) -> None:
    """Migratable: brings it to the newest schema (``make run`` does that at every start)."""
    quiet = logging.getLogger("alembic")  # its INFO lines say nothing a user needs here
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    import sqlalchemy.exc

    from shared.store import migrate

    try:
        migrate.upgrade(url)
    except sqlalchemy.exc.SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise ConfigError(
            f"DATABASE_URL: cannot migrate the database at {_safe_url(url)}: {reason}"
        ) from None
    except Exception as exc:  # a driver or migration problem: still one line, with its type
        raise ConfigError(
            f"DATABASE_URL: cannot migrate the database at {_safe_url(url)}: "
            f"{type(exc).__name__}: {exc}"
        ) from None
    finally:
        quiet.setLevel(level)


def _safe_url(url: str) -> str:
    """The URL without its password."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not sep or not at:
        return url
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in userinfo else url


def check(env: dict[str, str]) -> Settings:
    """Every check, cheapest first; the settings if all pass."""
    settings = load_settings(env)
    check_models_file(settings)
    check_tenants_file(settings)
    check_port(settings.host, settings.port)
    if settings.redis_url:
        check_redis(settings.redis_url)
    check_database(settings.database_url)
    migrate_database(settings.database_url)
    return settings


def check_apart(env: dict[str, str]) -> None:
    """``check`` in a process of its own (module docstring): returns once every check passed;
    raises ``ConfigError`` with the same one line ``check`` would have raised."""
    done = subprocess.run(
        [sys.executable, "-m", "ops.preflight"], env=env, stdout=subprocess.PIPE, check=False
    )
    message = done.stdout.decode().strip()
    if done.returncode == CONFIG_ERROR_STATUS and message:
        raise ConfigError(message)
    if done.returncode != 0:  # not a configuration problem: its traceback is on stderr
        raise RuntimeError(f"the configuration check failed (exit status {done.returncode})")


def main() -> int:
    """``python -m ops.preflight``: every check over this environment; a ``ConfigError``'s
    message goes to stdout, for ``check_apart`` to raise again."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    try:
        check(dict(os.environ))
    except ConfigError as exc:
        print(exc, flush=True)
        return CONFIG_ERROR_STATUS
    return 0


if __name__ == "__main__":
    sys.exit(main())
