"""The shape of the project: deployment files, import direction, nothing done at import.

STYLE.md practices 1 and 2: ``shared`` imports neither ``api`` nor ``worker``, ``api`` and
``worker`` never import each other, and importing any package (even the entrypoints that
build the Flask and Celery apps) opens no connection, so it works with nothing running.
The operator tools (``ops``) sit on top: they may import ``shared``, never ``api`` or ``worker``,
and nothing on a request's path (``api``, ``worker``, ``shared``) imports them.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from ops.launcher import worker_command
from shared import keys
from shared.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("api", "worker", "shared", "ops")
# package → top-level packages it must never import
FORBIDDEN_IMPORTS = {
    "shared": {"api", "worker", "ops"},
    "api": {"worker", "ops"},
    "worker": {"api", "ops"},
    "ops": {"api", "worker"},
}
# module prefix → module prefixes it must never import (finer than the package rule)
FORBIDDEN_MODULE_IMPORTS = {
    # The wire schema is pure shapes: the store builds on it, never the other way round.
    "shared.schema": ("shared.store", "shared.bus", "sqlmodel", "sqlalchemy", "redis", "httpx"),
    # SQL only in the store; the store knows nothing of Redis or HTTP.
    "shared.store": ("shared.bus", "redis", "httpx"),
    # The lifecycle is pure functions and the event log: no store writes of its own.
    "shared.lifecycle": ("shared.store.jobs", "shared.store.responses"),
}
SERVICE_ENV = ("DATABASE_URL", "REDIS_URL")
# STYLE.md practice 11, as the issue that split the big modules set it.
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


# ---- docker-compose.yml and Procfile ----------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(entry.partition("=")[::2] for entry in env)
    return {str(k): str(v) for k, v in env.items()}


def _command(service: dict[str, Any]) -> str:
    command = service.get("command", "")
    return " ".join(command) if isinstance(command, list) else str(command)


def test_compose_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"redis", "postgres", "migrate", "api", "worker", "beat", "flower"}
    assert "celery -A worker.celery_app beat" in _command(services["beat"])
    assert services["redis"]["image"] == "redis:7"
    assert "--appendonly yes" in _command(services["redis"])
    assert services["postgres"]["image"] == "postgres:16"
    postgres_env = _environment(services["postgres"])
    assert (postgres_env["POSTGRES_PASSWORD"], postgres_env["POSTGRES_DB"]) == ("resq", "resq")
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert "ping" in services["redis"]["healthcheck"]["test"]
    assert set(compose.get("volumes", {})) == {"redis-data", "postgres-data"}


@pytest.mark.parametrize("name", ["api", "worker"])
def test_compose_app_services_wait_for_their_backends(compose: dict[str, Any], name: str) -> None:
    service = compose["services"][name]
    depends_on = service["depends_on"]
    for backend in ("redis", "postgres"):
        assert depends_on[backend] == {"condition": "service_healthy"}
    env = _environment(service)
    assert env["DATABASE_URL"] == "postgresql://resq:resq@postgres:5432/resq"
    assert env["REDIS_URL"] == "redis://redis:6379/0"
    assert (service["build"], service["image"]) == (".", "resq:local")  # the Dockerfile's image
    assert depends_on["migrate"] == {"condition": "service_completed_successfully"}


def test_compose_commands_match_the_procfile(compose: dict[str, Any]) -> None:
    api, worker = compose["services"]["api"], compose["services"]["worker"]
    api_command = _command(api)
    # The migration is its own one-shot service, the Procfile's release step.
    assert _command(compose["services"]["migrate"]) == _procfile()["release"]
    assert (
        "gunicorn api.wsgi:app --worker-class api.gunicorn_worker.Worker --workers 1 "
        "--worker-connections 2000 --bind 0.0.0.0:8080"
    ) in api_command
    assert "/readyz" in " ".join(api["healthcheck"]["test"])
    # Every queue, as the launcher's worker takes them: jobs by tier, then webhook sends.
    queues = f"--queues {','.join(keys.ALL_QUEUES)} "
    assert (
        "celery -A worker.celery_app worker --pool gevent "
        f"--concurrency ${{RESQ_WORKER_CONCURRENCY:-200}} {queues}"
        "--without-gossip --without-mingle"
    ) in _command(worker)
    assert queues in (REPO_ROOT / "Procfile").read_text()
    assert queues.strip() in " ".join(worker_command(Settings()))
    procfile = _procfile()
    assert procfile["api"].split("--bind")[0] in api_command
    assert procfile["worker"].split("--concurrency")[0] in _command(worker)


def _procfile() -> dict[str, str]:
    entries: dict[str, str] = {}
    for line in (REPO_ROOT / "Procfile").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, sep, command = line.partition(":")
            assert sep, f"Procfile line without 'name:': {line!r}"
            entries[name.strip()] = command.strip()
    return entries


def test_procfile() -> None:
    procfile = _procfile()
    assert procfile["api"].split()[:2] == ["gunicorn", "api.wsgi:app"]
    assert "--worker-class api.gunicorn_worker.Worker" in procfile["api"]
    assert procfile["worker"].split()[:3] == ["celery", "-A", "worker.celery_app"]
    assert "--pool gevent" in procfile["worker"]
    assert "--queues resq" in procfile["worker"]
    assert procfile["beat"].split()[:4] == ["celery", "-A", "worker.celery_app", "beat"]


# ---- import direction ----------------------------------------------------------------------


def imported_packages(source: str, package: str) -> set[tuple[int, str]]:
    """(line, top-level package) of every absolute import in ``source``, anywhere in it.

    Relative imports stay inside ``package`` and are reported as ``package``.
    """
    found: set[tuple[int, str]] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {(node.lineno, alias.name.split(".")[0]) for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            top = package if node.level else (node.module or "").split(".")[0]
            found.add((node.lineno, top))
    return found


def test_import_checker_sees_every_form() -> None:
    source = (
        "import os, api.errors\n"
        "from worker.tasks import register\n"
        "from . import sibling\n"
        "def f():\n"
        "    import worker\n"
    )
    assert imported_packages(source, "shared") == {
        (1, "os"),
        (1, "api"),
        (2, "worker"),
        (3, "shared"),
        (5, "worker"),
    }


def test_import_direction() -> None:
    assert set(FORBIDDEN_IMPORTS) == set(PACKAGES), "every package has its rule"
    violations = []
    for package, forbidden in FORBIDDEN_IMPORTS.items():
        files = sorted((REPO_ROOT / package).rglob("*.py"))
        assert files, f"no Python files under {package}/"
        for path in files:
            for line, top in imported_packages(path.read_text(), package):
                if top in forbidden:
                    violations.append(f"{path.relative_to(REPO_ROOT)}:{line} imports {top}")
    assert not violations, "forbidden imports:\n" + "\n".join(sorted(violations))


def imported_modules(source: str, module: str) -> set[tuple[int, str]]:
    """(line, dotted name) of every import in ``source`` (the code of ``module``), relative
    ones resolved; ``from a import b`` counts as ``a.b``, which may be a module or a name."""
    found: set[tuple[int, str]] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {(node.lineno, alias.name) for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module.split(".")[: -node.level]
                base = ".".join([*parent, base] if base else parent)
            found |= {(node.lineno, f"{base}.{alias.name}") for alias in node.names}
    return found


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_module_import_checker_resolves_relative_and_from_imports() -> None:
    source = "from ..store import tables\nimport shared.bus\nfrom shared.store.tables import Row\n"
    assert imported_modules(source, "shared.schema.items") == {
        (1, "shared.store.tables"),
        (2, "shared.bus"),
        (3, "shared.store.tables.Row"),
    }
    assert _under("shared.store.tables.Row", "shared.store")
    assert not _under("shared.storefront", "shared.store")


def test_module_import_rules() -> None:
    violations = []
    for path in sorted(REPO_ROOT.glob("shared/**/*.py")):
        module = _module_name(path)
        for owner, forbidden in FORBIDDEN_MODULE_IMPORTS.items():
            if not _under(module, owner):
                continue
            for line, name in imported_modules(path.read_text(), module):
                if any(_under(name, bad) for bad in forbidden):
                    violations.append(f"{path.relative_to(REPO_ROOT)}:{line} imports {name}")
    assert not violations, "forbidden imports:\n" + "\n".join(sorted(violations))


def _code_files() -> list[Path]:
    return [
        path
        for package in PACKAGES
        for path in sorted((REPO_ROOT / package).rglob("*.py"))
        if "migrations" not in path.parts
    ]


def test_modules_and_functions_stay_small() -> None:
    too_long = []
    for path in _code_files():
        source = path.read_text()
        where = path.relative_to(REPO_ROOT)
        if source.count("\n") > MAX_MODULE_LINES:
            too_long.append(f"{where}: {source.count(chr(10))} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{where}:{node.lineno} {node.name}: {length} lines")
    assert not too_long, (
        f"over {MAX_MODULE_LINES} lines a module or {MAX_FUNCTION_LINES} a function "
        "(split by concept):\n" + "\n".join(too_long)
    )


# ---- nothing happens at import ---------------------------------------------------------------

# Runs in a fresh interpreter: records every attempt to open a network connection or an
# SQLite database (audit events), imports the modules, and reports what happened.
_IMPORT_PROBE = """
import json, logging, sys
attempts = []
def hook(event, args):
    if event in ("socket.connect", "sqlite3.connect", "socket.getaddrinfo"):
        attempts.append(f"{event} {args!r}")
sys.addaudithook(hook)
import importlib
for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps({
    "attempts": attempts,
    "root_handlers": len(logging.getLogger().handlers),
}))
"""


def _import_in_subprocess(tmp_path: Path, modules: list[str]) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESQ_")}
    env.update(
        REDIS_URL="redis://127.0.0.1:1/0",  # nothing listens on port 1
        DATABASE_URL=f"sqlite:///{tmp_path}/x.db",
        RESQ_VAR_DIR=str(tmp_path / "var"),
        RESQ_API_KEYS="layout-test-key",
    )
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", _IMPORT_PROBE, *modules],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"importing {modules} failed:\n{result.stderr}"
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["attempts"] == [], f"importing {modules} tried to connect: {report}"
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "import created files"
    return report


def test_importing_the_packages_does_nothing(tmp_path: Path) -> None:
    report = _import_in_subprocess(
        tmp_path, [*PACKAGES, "shared.store", "worker.execute", "ops.cli", "ops.launcher"]
    )
    assert report["root_handlers"] == 0, "a library module configured logging"


@pytest.mark.parametrize("entrypoint", ["api.wsgi", "worker.celery_app"])
def test_building_the_apps_connects_to_nothing(tmp_path: Path, entrypoint: str) -> None:
    """The entrypoints build the Flask / Celery app at import; that must stay lazy too."""
    report = _import_in_subprocess(tmp_path, [entrypoint])
    assert report["root_handlers"] == 1  # entrypoints, and only they, configure logging


def test_the_repository_needs_nothing_beside_it() -> None:
    """A user's clone has no shared folder beside it: nothing ``make run`` or ``make test`` reads
    may point there, and the contract the tests validate against is kept here, unedited."""
    contract = REPO_ROOT / "tests" / "data" / "openresponses" / "openapi.json"
    digest = hashlib.sha256(contract.read_bytes()).hexdigest()
    assert digest in (contract.parent / "SOURCE.md").read_text()
    outside = "../" + "shared"
    sources = [REPO_ROOT / "Makefile", *(REPO_ROOT / ".ci").iterdir()]
    for package in (*PACKAGES, "tests", "bench"):
        sources += (REPO_ROOT / package).rglob("*.py")
    assert [str(p) for p in sources if outside in p.read_text(errors="replace")] == []
