"""``make run``: the whole embedded stack in one command, supervised.

Checks the configuration first (``ops.preflight``: one line and exit status 1 on a
problem), starts a private Redis (unless ``REDIS_URL`` is set), then the API (gunicorn, gevent
worker), one Celery worker (gevent pool) and beat as child processes, and prints where
everything is once the stack is ready. ``ops.supervisor`` restarts a child that dies and
stops them all in order on SIGINT/SIGTERM (a second one stops at once).

The launcher lives as long as the stack but does little, so it imports little: the checks
(``ops.preflight``) and the wait for readiness (``ops.readiness``) run as short-lived processes
of their own, because the libraries they use (the Redis client, SQLAlchemy, Alembic) would
otherwise stay in it for good. It measured 83 MB of RSS that way, 20 MB this way
(``bench.run --only launcher``); tests/test_lean_processes.py keeps it so.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ops import preflight
from ops.embedded_redis import EmbeddedRedis, die_with_parent
from ops.supervisor import POLL_SECONDS, Child, CrashLoop, Supervisor
from shared import keys
from shared.routing import BUILTIN_MODEL
from shared.settings import Settings

log = logging.getLogger("resq")

READY_TIMEOUT_SECONDS = 60.0
API_GRACE_MARGIN_SECONDS = 5.0  # the API's graceful timeout, past the workers' grace


def spawn(command: list[str], env: dict[str, str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """A child in a process group of its own (a terminal's Ctrl-C reaches only the
    launcher), that gets SIGTERM if the launcher dies."""
    return subprocess.Popen(
        command,
        env=env,
        stdin=subprocess.DEVNULL,
        preexec_fn=die_with_parent,
        process_group=0,
        **kwargs,
    )


def api_command(settings: Settings) -> list[str]:
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "api.wsgi:app",
        "--worker-class",
        "api.gunicorn_worker.Worker",  # gevent, with gunicorn's own errors as JSON
        "--workers",
        "1",
        "--worker-connections",
        "2000",
        "--bind",
        f"{settings.host}:{settings.port}",
        # Requests in flight (a sync create waiting for its job) may finish while the
        # workers drain their running jobs.
        "--graceful-timeout",
        f"{settings.shutdown_grace_seconds + API_GRACE_MARGIN_SECONDS:g}",
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
    is harmless (every reaper step is a conditional update).

    Its schedule is kept in memory (Celery's base ``Scheduler``): every entry repeats every
    few seconds, so nothing is worth keeping across restarts, and there is no schedule file
    that a killed beat could leave half-written for the next start to trip over."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker.celery_app",
        "beat",
        "--scheduler",
        "celery.beat:Scheduler",
        "--loglevel",
        settings.log_level,
    ]


def wait_healthy(url: str, timeout: float, processes: list[subprocess.Popen[bytes]]) -> None:
    """For tests and the bench, which start the processes themselves (not ``make run``)."""
    import urllib.request

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


def wait_ready(
    url: str,
    redis_url: str,
    supervisor: Supervisor,
    orphaned: Callable[[], bool],
    timeout: float = READY_TIMEOUT_SECONDS,
) -> bool:
    """Wait until a worker beats and ``/readyz`` answers 200 (``ops.readiness``, asked by a
    process of its own), keeping the children supervised meanwhile. False if a stop was asked
    for first."""
    probe = spawn(
        [sys.executable, "-m", "ops.readiness", url], dict(os.environ, REDIS_URL=redis_url)
    )
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if supervisor.stop_requests or orphaned():
                return False
            supervisor.watch_once()
            status = probe.poll()
            if status == 0:
                return True
            if status is not None:
                raise RuntimeError(f"the readiness check exited with status {status} (see above)")
            time.sleep(POLL_SECONDS)
    finally:
        if probe.poll() is None:
            probe.kill()
        probe.wait()
    raise CrashLoop(f"resq was not ready at {url}/readyz within {timeout:g} s (see above)")


def banner(settings: Settings, url: str, redis_url: str) -> str:
    grace = settings.shutdown_grace_seconds
    return (
        f"\nresq is running at {url}/v1  (Ctrl-C stops it: running jobs get {grace:g} s "
        "to finish; Ctrl-C again stops at once)\n\n"
        f"  try it     curl -s {url}/v1/responses -H 'Content-Type: application/json' \\\n"
        f'               -d \'{{"model": "{BUILTIN_MODEL}", "input": "hi"}}\'\n'
        f"  dashboard  {url}/admin\n"
        f"  metrics    {url}/metrics     readiness  {url}/readyz\n"
        "  CLI        .venv/bin/resq queue   (or: make cli ARGS=workers)\n"
        f"  Flower     REDIS_URL={redis_url} .venv/bin/celery -A worker.celery_app flower\n"
    )


def main() -> int:
    parent = os.getppid()

    def orphaned() -> bool:
        """Whoever started us (make) is gone."""
        return os.getppid() != parent

    logging.basicConfig(level=logging.INFO, format=preflight.LOG_FORMAT)
    env = dict(os.environ)
    try:
        settings = prepare(env)
    except preflight.ConfigError as exc:
        print(f"resq: cannot start: {exc}", file=sys.stderr, flush=True)
        return 1
    children = redis_children(settings, env)
    settings = Settings.from_env(env)  # again: with the private Redis's URL
    children += app_children(settings, env)
    supervisor = Supervisor(children, grace_seconds=settings.shutdown_grace_seconds)
    signal.signal(signal.SIGINT, supervisor.request_stop)
    signal.signal(signal.SIGTERM, supervisor.request_stop)
    status = supervise(supervisor, settings, orphaned)
    stop(supervisor, settings)
    return status


def prepare(env: dict[str, str]) -> Settings:
    """Check the configuration (``preflight.ConfigError`` on a problem) and complete ``env``
    for the children: the database URL they all use, and this machine's secret key when
    ``RESQ_SECRET_KEY`` is unset."""
    settings = preflight.load_settings(env)
    try:
        settings.var_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise preflight.ConfigError(
            f"RESQ_VAR_DIR: cannot create {settings.var_dir}: {exc.strerror}"
        ) from None
    env["DATABASE_URL"] = settings.database_url
    if not settings.secret_key:
        env["RESQ_SECRET_KEY"] = local_secret_key(settings.var_dir / "secret.key")
    preflight.check_apart(env)
    return settings


def redis_children(settings: Settings, env: dict[str, str]) -> list[Child]:
    """A private Redis when ``REDIS_URL`` is unset (none otherwise); its URL goes into ``env``
    for the children started after it."""
    if settings.redis_url:
        return []
    redis_server = EmbeddedRedis(settings.var_dir / "redis")
    env["REDIS_URL"] = redis_server.url
    return [Child("redis", lambda: _started(redis_server))]


def app_children(settings: Settings, env: dict[str, str]) -> list[Child]:
    return [
        Child("api", lambda: spawn(api_command(settings), env)),
        Child("worker", lambda: spawn(worker_command(settings), env)),
        Child("beat", lambda: spawn(beat_command(settings), env)),
    ]


def supervise(supervisor: Supervisor, settings: Settings, orphaned: Callable[[], bool]) -> int:
    """Start the children, print the banner once resq is ready, and keep them running until a
    stop is asked for or whoever started us is gone. The exit status: 1 if a child kept dying
    or the private Redis could not start."""
    url = f"http://{_reachable(settings.host)}:{settings.port}"
    try:
        supervisor.start_all()
        if wait_ready(url, settings.redis_url, supervisor, orphaned):
            print(banner(settings, url, settings.redis_url), flush=True)
        while not supervisor.stop_requests:
            if orphaned():  # whoever started us (make) is gone: so are we
                break
            supervisor.watch_once()
            time.sleep(POLL_SECONDS)
    except CrashLoop as exc:
        log.error("%s", exc)
        return 1
    except RuntimeError as exc:  # the private Redis could not start, or the readiness check
        log.error("%s", exc)
        return 1
    return 0


def stop(supervisor: Supervisor, settings: Settings) -> None:
    """Stop every child in the order that loses nothing (``ops.supervisor``)."""
    log.info(
        "stopping: running jobs have up to %g s to finish (Ctrl-C again stops at once)",
        settings.shutdown_grace_seconds,
    )
    supervisor.stop_all(
        first=["worker"],
        api=["api"],
        then=["beat"],
        last=["redis"] if "redis" in supervisor.children else [],
    )
    log.info("stopped")


def _started(redis_server: EmbeddedRedis) -> subprocess.Popen[bytes]:
    redis_server.start()
    log.info("Redis at %s (data in %s)", redis_server.url, redis_server.data_dir)
    assert redis_server.process is not None
    return redis_server.process


def _reachable(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


if __name__ == "__main__":
    sys.exit(main())
