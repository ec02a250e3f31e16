"""``make run``'s checks before it starts anything: one line naming the setting."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from ops import preflight
from ops.embedded_redis import free_port
from ops.preflight import ConfigError


def env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"RESQ_VAR_DIR": str(tmp_path / "var"), "RESQ_PORT": str(free_port()), **extra}


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("RESQ_PORT", "99999", "RESQ_PORT must be a port number (1-65535), got 99999"),
        ("RESQ_LOG_LEVEL", "loud", "RESQ_LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, "),
        ("RESQ_LOG_FORMAT", "xml", "RESQ_LOG_FORMAT must be text or json, got 'xml'"),
        ("RESQ_WORKER_CONCURRENCY", "0", "RESQ_WORKER_CONCURRENCY must be at least 1"),
        ("RESQ_SHUTDOWN_GRACE_SECONDS", "-1", "RESQ_SHUTDOWN_GRACE_SECONDS must not be negative"),
        ("RESQ_HEARTBEAT_SECONDS", "often", "RESQ_HEARTBEAT_SECONDS must be a number, got 'often'"),
        ("RESQ_DISPATCH_BUFFER", "0", "RESQ_DISPATCH_BUFFER must be 1 or more"),
        ("RESQ_FAIR_QUEUES", "maybe", "RESQ_FAIR_QUEUES must be true or false, got 'maybe'"),
    ],
)
def test_a_bad_setting_is_named(tmp_path: Path, setting: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        preflight.load_settings(env(tmp_path, **{setting: value}))
    assert str(info.value).startswith(message)


def test_a_malformed_models_file_is_named(tmp_path: Path) -> None:
    models = tmp_path / "models.toml"
    models.write_text("[[route]]\nprovider = 'chat_completions'\n")
    settings = preflight.load_settings(env(tmp_path, RESQ_MODELS_FILE=str(models)))
    with pytest.raises(ConfigError) as info:
        preflight.check_models_file(settings)
    assert str(info.value).startswith("RESQ_MODELS_FILE: ")


def test_a_malformed_tenants_file_is_named(tmp_path: Path) -> None:
    tenants = tmp_path / "tenants.toml"
    tenants.write_text("[tenants.a]\nrequests_per_minute = 'lots'\n")
    settings = preflight.load_settings(env(tmp_path, RESQ_TENANTS_FILE=str(tenants)))
    with pytest.raises(ConfigError) as info:
        preflight.check_tenants_file(settings)
    assert str(info.value).startswith("RESQ_TENANTS_FILE: ")
    assert "requests_per_minute must be a whole number" in str(info.value)


def test_a_taken_port_is_found(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError) as info:
            preflight.check_port("127.0.0.1", port)
    assert str(info.value) == (
        f"port {port} on 127.0.0.1 is already in use: stop what listens there, or set "
        "RESQ_PORT to a free port"
    )
    preflight.check_port("127.0.0.1", port)  # free again


def test_an_unreachable_redis_is_found() -> None:
    with pytest.raises(ConfigError) as info:
        preflight.check_redis(f"redis://:hunter2@127.0.0.1:{free_port()}/0")
    assert str(info.value).startswith("REDIS_URL: Redis at redis://:***@127.0.0.1:")
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://u:p@db/x", "DATABASE_URL must start with sqlite:/// or postgresql://"),
        (
            f"postgresql+psycopg://resq:hunter2@127.0.0.1:{free_port()}/resq",
            "DATABASE_URL: cannot reach the database at postgresql+psycopg://resq:***@",
        ),
    ],
)
def test_a_database_that_cannot_be_used_is_found(url: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        preflight.check_database(url)
    assert str(info.value).startswith(message)
    assert "hunter2" not in str(info.value)


def test_a_fresh_sqlite_file_is_created_and_migrated(tmp_path: Path) -> None:
    settings = preflight.check(env(tmp_path))
    assert settings.database_url == f"sqlite:///{tmp_path / 'var' / 'resq.db'}"
    assert (tmp_path / "var" / "resq.db").stat().st_size > 0
