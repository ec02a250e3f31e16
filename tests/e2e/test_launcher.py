"""``make run``'s launcher: starts the whole embedded stack, answers, and stops everything it
started on SIGINT, SIGTERM, or when its parent (make) goes away; a configuration problem ends
it at once with one line."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from ops.embedded_redis import free_port
from tests.e2e.launched import REPO, alive, descendants, launcher_env

pytestmark = pytest.mark.e2e


def start(tmp_path: Path, via_shell: bool) -> tuple[subprocess.Popen[bytes], str, Path]:
    port = free_port()
    env = launcher_env(tmp_path / "var", port)
    command = [sys.executable, "-m", "ops.launcher"]
    if via_shell:  # like make: a parent that does not forward signals
        command = ["sh", "-c", " ".join(command) + "; true"]
    log = tmp_path / "launcher.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(command, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    return proc, f"http://127.0.0.1:{port}", log


def wait_answer(url: str, proc: subprocess.Popen[bytes], log: Path) -> dict[str, object]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
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
    proc, url, log = start(tmp_path, via_shell)
    try:
        body = wait_answer(url, proc, log)
        assert body["status"] == "completed"
        assert (tmp_path / "var" / "resq.db").exists()
        assert (tmp_path / "var" / "redis" / "appendonly.aof").exists()
        ready = httpx.get(f"{url}/readyz", timeout=5).json()
        assert ready["status"] == "ready" and ready["checks"]["workers"]["fresh"] == 1
        started = descendants(proc.pid)
        assert len(started) >= 5  # (launcher,) redis, gunicorn master + worker, celery, beat
        proc.send_signal(how)
        deadline = time.monotonic() + 30
        while any(alive(pid) for pid in started):
            assert time.monotonic() < deadline, "processes left running after the stop"
            time.sleep(0.1)
        if not via_shell:
            assert proc.wait(10) == 0
            out = log.read_text()
            assert "Traceback" not in out  # the idle stop is quiet
            assert out.rstrip().endswith("resq: stopped")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def test_the_banner_comes_last_and_names_the_operator_tools(tmp_path: Path) -> None:
    proc, url, log = start(tmp_path, via_shell=False)
    try:
        deadline = time.monotonic() + 60
        while "Flower" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        out = log.read_text()
        banner = out[out.index("resq is running at") :]
        for needle in (f"{url}/v1", f"{url}/admin", f"{url}/metrics", ".venv/bin/resq", "flower"):
            assert needle in banner, needle
        # Printed once the worker is ready: its banner and "ready." line come before ours.
        assert out.index(" ready.") < out.index("resq is running at")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


def _taken_port() -> tuple[socket.socket, int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock, int(sock.getsockname()[1])


BAD_MODELS = "[[route]\nmatch = 'x'\n"


@pytest.mark.parametrize(
    ("case", "setting"),
    [
        ("models-file", "RESQ_MODELS_FILE"),
        ("database", "DATABASE_URL"),
        ("port", "RESQ_PORT"),
        ("port-value", "RESQ_PORT"),
        ("redis", "REDIS_URL"),
        ("number", "RESQ_SHUTDOWN_GRACE_SECONDS"),
    ],
)
def test_bad_configuration_fails_fast_in_one_line(tmp_path: Path, case: str, setting: str) -> None:
    env = launcher_env(tmp_path / "var", free_port())
    taken = None
    if case == "models-file":
        (tmp_path / "models.toml").write_text(BAD_MODELS)
        env["RESQ_MODELS_FILE"] = str(tmp_path / "models.toml")
    elif case == "database":
        env["DATABASE_URL"] = "postgresql://resq:secret@127.0.0.1:1/resq"
    elif case == "port":
        taken, port = _taken_port()
        env["RESQ_PORT"] = str(port)
    elif case == "port-value":
        env["RESQ_PORT"] = "eighty"
    elif case == "redis":
        env["REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0"
    else:
        env["RESQ_SHUTDOWN_GRACE_SECONDS"] = "soon"
    started = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "ops.launcher"],
            env=env,
            cwd=REPO,
            capture_output=True,
            timeout=30,
        )
    finally:
        if taken is not None:
            taken.close()
    took = time.monotonic() - started
    lines = (done.stdout + done.stderr).decode().strip().splitlines()
    assert done.returncode == 1
    assert len(lines) == 1, lines
    assert lines[0].startswith("resq: cannot start: ") and setting in lines[0], lines[0]
    assert "secret" not in lines[0]  # a password in a URL is not printed
    assert not (tmp_path / "var" / "redis").exists()  # nothing was started
    print(f"\n[drill] bad {case}: exit 1 after {took:.2f} s: {lines[0]}")
