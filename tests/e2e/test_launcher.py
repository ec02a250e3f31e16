"""``make run``'s launcher: starts the whole embedded stack, answers, and stops everything it
started on SIGINT, SIGTERM, or when its parent (make) goes away."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from shared.embedded_redis import free_port

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


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


def start(tmp_path: Path, via_shell: bool) -> tuple[subprocess.Popen[bytes], int, str]:
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"REDIS_URL", "DATABASE_URL", "RESQ_API_KEYS"}
    }
    env.update(RESQ_PORT=str(port), RESQ_VAR_DIR=str(tmp_path / "var"))
    command = [sys.executable, "-m", "shared.launcher"]
    if via_shell:  # like make: a parent that does not forward signals
        command = ["sh", "-c", " ".join(command) + "; true"]
    proc = subprocess.Popen(
        command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    return proc, port, f"http://127.0.0.1:{port}"


def wait_answer(url: str, proc: subprocess.Popen[bytes]) -> dict[str, object]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
        try:
            resp = httpx.post(
                f"{url}/v1/responses", timeout=10, json={"model": "resq-builtin", "input": "hi"}
            )
            body: dict[str, object] = resp.json()
            return body
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError("the launcher's API never answered")


@pytest.mark.parametrize(
    ("how", "via_shell"),
    [(signal.SIGINT, False), (signal.SIGTERM, False), (signal.SIGTERM, True)],
    ids=["sigint", "sigterm", "parent-killed"],
)
def test_launcher_starts_answers_and_stops_everything(
    tmp_path: Path, how: signal.Signals, via_shell: bool
) -> None:
    proc, _port, url = start(tmp_path, via_shell)
    try:
        body = wait_answer(url, proc)
        assert body["status"] == "completed"
        assert (tmp_path / "var" / "resq.db").exists()
        assert (tmp_path / "var" / "redis" / "appendonly.aof").exists()
        started = descendants(proc.pid)
        assert len(started) >= 4  # (launcher,) redis, gunicorn master + worker, celery
        proc.send_signal(how)
        deadline = time.monotonic() + 30
        while any(alive(pid) for pid in started):
            assert time.monotonic() < deadline, "processes left running after the stop"
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        if proc.stdout:
            proc.stdout.close()
