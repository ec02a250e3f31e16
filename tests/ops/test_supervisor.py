"""``make run``'s supervisor, with real child processes: a dead child is started again after
a backoff, one that keeps dying stops the stack, and the stop runs in order (workers and API,
then beat, then Redis)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ops.supervisor import Child, CrashLoop, Supervisor, describe_exit

# A child that writes its name to a file when asked to stop (SIGTERM), then exits.
TRAP = """
import signal, sys, time
name, path = sys.argv[1], sys.argv[2]
def stop(*_):
    with open(path, "a") as f:
        f.write(name + "\\n")
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
while True:
    time.sleep(0.05)
"""


def python(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, *args], process_group=0)


def test_exits_are_described_by_signal_name_or_status() -> None:
    assert describe_exit(-9) == "was killed by SIGKILL"
    assert describe_exit(3) == "exited with status 3"


def test_a_dead_child_is_started_again_after_its_backoff(caplog: pytest.LogCaptureFixture) -> None:
    child = Child("worker", lambda: python("-c", "import time; time.sleep(60)"))
    supervisor = Supervisor([child], grace_seconds=1, backoff_first=0.2)
    supervisor.start_all()
    try:
        first = child.process
        assert first is not None
        os.kill(first.pid, signal.SIGKILL)
        first.wait(5)
        supervisor.watch_once()
        assert child.restart_at is not None and not child.running
        assert f"worker (pid {first.pid}) was killed by SIGKILL" in caplog.text
        assert "starting it again in 0.2 s (restart 1)" in caplog.text
        supervisor.watch_once()
        assert child.process is first  # still in its backoff
        time.sleep(0.25)
        supervisor.watch_once()
        assert child.running and child.process is not first and child.restarts == 1
    finally:
        supervisor.stop_all(first=["worker"], api=[], then=[], last=[])
    assert not child.running


def test_a_child_that_keeps_dying_stops_the_stack() -> None:
    child = Child("beat", lambda: python("-c", "raise SystemExit(3)"))
    supervisor = Supervisor([child], grace_seconds=1, backoff_first=0.01, crash_limit=3)
    supervisor.start_all()
    deadline = time.monotonic() + 20
    with pytest.raises(CrashLoop) as info:
        while time.monotonic() < deadline:
            supervisor.watch_once()
            time.sleep(0.02)
    assert str(info.value).startswith("beat died 3 times within 60 s (last: (pid ")
    assert "exited with status 3" in str(info.value)
    assert child.restarts == 2


def test_the_stop_runs_in_order_and_redis_is_last(tmp_path: Path) -> None:
    order = tmp_path / "order"
    names = ["worker", "api", "beat", "redis"]
    children = [Child(n, lambda n=n: python("-c", TRAP, n, str(order))) for n in names]
    supervisor = Supervisor(children, grace_seconds=1)
    supervisor.start_all()
    time.sleep(0.5)  # their handlers are installed
    supervisor.stop_all(first=["worker"], api=["api"], then=["beat"], last=["redis"])
    stopped = order.read_text().split()
    assert sorted(stopped[:2]) == ["api", "worker"]
    assert stopped[2:] == ["beat", "redis"]
    assert not any(c.running for c in children)


def test_a_second_stop_request_kills_what_is_left_at_once() -> None:
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    child = Child("worker", lambda: python("-c", stubborn))
    supervisor = Supervisor([child], grace_seconds=30)
    supervisor.start_all()
    time.sleep(0.3)
    supervisor.request_stop()
    supervisor.request_stop()
    started = time.monotonic()
    supervisor.stop_all(first=["worker"], api=[], then=[], last=[])
    assert time.monotonic() - started < 5
    assert child.process is not None and child.process.returncode == -signal.SIGKILL
