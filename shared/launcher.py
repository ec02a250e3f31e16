"""``make run``: the whole embedded stack in one command.

Starts a private Redis (unless ``REDIS_URL`` is set), migrates the database, then runs the
API (gunicorn, gevent worker) and one Celery worker (gevent pool) as child processes. Prints
the URL and a curl to try. SIGINT/SIGTERM stop everything it started.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import FrameType
from typing import Any

from shared import keys
from shared.embedded_redis import EmbeddedRedis, die_with_parent
from shared.routing import BUILTIN_MODEL
from shared.settings import Settings
from shared.store import migrate

log = logging.getLogger("resq")


def spawn(command: list[str], env: dict[str, str], **kwargs: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(command, env=env, preexec_fn=die_with_parent, **kwargs)


def api_command(settings: Settings) -> list[str]:
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "api.wsgi:app",
        "--worker-class",
        "gevent",
        "--workers",
        "1",
        "--worker-connections",
        "2000",
        "--bind",
        f"{settings.host}:{settings.port}",
        "--graceful-timeout",
        "10",
        # Idle keep-alive connections stay open longer than load balancers' and clients'
        # own idle timeouts (60 s is common), so a client never sends on a connection the
        # server is closing at that moment (gunicorn's default is 2 s).
        "--keep-alive",
        "75",
        "--access-logfile",
        "-",
        "--log-level",
        "warning",
    ]


def worker_command(settings: Settings, name: str = "resq@%h") -> list[str]:
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker.celery_app",
        "worker",
        "--pool",
        "gevent",
        "--concurrency",
        str(settings.worker_concurrency),
        "--queues",
        ",".join(keys.ALL_QUEUES),
        "--hostname",
        name,
        "--loglevel",
        settings.log_level,
        "--without-gossip",
        "--without-mingle",
    ]


def beat_command(settings: Settings) -> list[str]:
    """Celery beat: schedules the reaper (``resq.reap``). Beat cannot be embedded in a gevent
    worker, so it is its own (small) process; one per deployment is enough, and a second one
    is harmless (every reaper step is a conditional update)."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker.celery_app",
        "beat",
        "--schedule",
        str((settings.var_dir / "celerybeat-schedule").resolve()),
        "--loglevel",
        settings.log_level,
    ]


def wait_healthy(url: str, timeout: float, processes: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in processes):
            raise RuntimeError("a resq process exited during start-up (see its output above)")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"the API did not answer on {url} within {timeout:g} s")


def stop_all(processes: list[subprocess.Popen[bytes]], timeout: float = 15.0) -> None:
    for p in processes:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for p in processes:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def local_secret_key(path: Path) -> str:
    """The key this machine's ``make run`` uses for MCP credentials: made once, kept in the
    data directory (mode 600), so a restart can still read what was queued before it."""
    if not path.exists():
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="resq: %(message)s")
    settings = Settings.from_env()
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    redis_server = None
    if not settings.redis_url:
        redis_server = EmbeddedRedis(settings.var_dir / "redis").start()
        env["REDIS_URL"] = redis_server.url
        log.info(
            "started a private Redis at %s (data in %s)",
            redis_server.url,
            settings.var_dir / "redis",
        )
    env["DATABASE_URL"] = settings.database_url
    if not settings.secret_key:
        env["RESQ_SECRET_KEY"] = local_secret_key(settings.var_dir / "secret.key")
    migrate.upgrade(settings.database_url)
    settings = Settings.from_env(env)
    processes: list[subprocess.Popen[bytes]] = []
    stopping = False

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        processes.append(spawn(api_command(settings), env))
        processes.append(spawn(worker_command(settings), env))
        processes.append(spawn(beat_command(settings), env))
        url = f"http://{settings.host}:{settings.port}"
        wait_healthy(url, 60, processes)
        print(
            f"\nresq is running at {url}/v1  (Ctrl-C stops it)\n\n"
            f"  curl -s {url}/v1/responses -H 'Content-Type: application/json' \\\n"
            f'    -d \'{{"model": "{BUILTIN_MODEL}", "input": "hi"}}\'\n',
            flush=True,
        )
        parent = os.getppid()
        while not stopping:
            if any(p.poll() is not None for p in processes):
                log.error("a resq process exited; stopping the rest")
                return 1
            if os.getppid() != parent:  # whoever started us (make) is gone: so are we
                break
            time.sleep(0.2)
        return 0
    except RuntimeError as exc:
        log.error("%s", exc)
        return 1
    finally:
        log.info("stopping")
        stop_all(processes)
        if redis_server is not None:
            redis_server.stop()


if __name__ == "__main__":
    sys.exit(main())
