"""``make run``'s launcher as a user runs it: ``python -m ops.launcher`` in a session of its
own (a terminal's foreground process group), with its output in a file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import openai

from ops.embedded_redis import free_port

REPO = Path(__file__).resolve().parents[2]
TERMINAL = {"completed", "failed", "cancelled", "incomplete"}


def descendants(pid: int) -> set[int]:
    found: set[int] = set()
    todo = [pid]
    while todo:
        current = todo.pop()
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                if child not in found:
                    found.add(child)
                    todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def launcher_env(var_dir: Path, port: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"REDIS_URL", "DATABASE_URL", "RESQ_API_KEYS", "RESQ_MODELS_FILE"}
    }
    env.update(RESQ_PORT=str(port), RESQ_VAR_DIR=str(var_dir), **(extra or {}))
    return env


class Launched:
    """One launcher process; ``stop`` (or the context manager) leaves nothing running."""

    def __init__(self, root: Path, extra_env: dict[str, str] | None = None) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = launcher_env(root / "var", self.port, extra_env)
        self.runs = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(timeout=30)
        self.known: set[int] = set()

    @property
    def log_path(self) -> Path:
        return self.root / f"launcher-{self.runs}.log"

    def start(self) -> Launched:
        self.runs += 1
        with self.log_path.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ops.launcher"],
                env=self.env,
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own foreground group, as in a terminal
            )
        return self

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_banner(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while "resq is running at" not in self.output():
            assert self.proc is not None and self.proc.poll() is None, self.output()[-3000:]
            assert time.monotonic() < deadline, "no start banner:\n" + self.output()[-3000:]
            time.sleep(0.1)
        assert self.proc is not None
        self.known |= descendants(self.proc.pid)

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.url}/v1", api_key="x", max_retries=0, http_client=self.http
        )

    def ready(self) -> bool:
        try:
            return self.http.get(f"{self.url}/readyz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def wait_ready(self, timeout: float = 60) -> float:
        """Seconds until ``/readyz`` answers 200."""
        started = time.monotonic()
        while not self.ready():
            assert time.monotonic() - started < timeout, "not ready:\n" + self.output()[-3000:]
            time.sleep(0.1)
        return time.monotonic() - started

    def child_pid(self, marker: str) -> int:
        """The pid of the child whose command line holds ``marker`` (the gunicorn master,
        not its worker: the first match from the top)."""
        assert self.proc is not None
        kids = sorted(descendants(self.proc.pid))
        self.known |= set(kids)
        for pid in kids:
            if marker in cmdline(pid) and alive(pid):
                return pid
        raise AssertionError(f"no child running {marker!r}")

    def signal_group(self, sig: signal.Signals) -> None:
        """What a terminal's Ctrl-C does: the signal to the whole foreground group."""
        assert self.proc is not None
        os.killpg(self.proc.pid, sig)

    def wait_exit(self, timeout: float = 90) -> int:
        assert self.proc is not None
        code = self.proc.wait(timeout)
        deadline = time.monotonic() + 15
        while left := [pid for pid in self.known if alive(pid)]:
            assert time.monotonic() < deadline, f"left running: {[cmdline(p) for p in left]}"
            time.sleep(0.1)
        return code

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        for pid in self.known:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)

    def close(self) -> None:
        self.stop()
        self.http.close()

    def __enter__(self) -> Launched:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def wait_terminal(client: openai.OpenAI, rid: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = client.responses.retrieve(rid)
        if got.status in TERMINAL:
            return got
        assert time.monotonic() < deadline, f"{rid} still {got.status}"
        time.sleep(0.1)


def wait_status(client: openai.OpenAI, rids: list[str], status: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    for rid in rids:
        while client.responses.retrieve(rid).status != status:
            assert time.monotonic() < deadline, f"{rid} never {status}"
            time.sleep(0.05)
