"""Fault drills on ``make run``'s stack, with real processes: a child killed is started
again while the rest keeps answering, a group Ctrl-C drains running jobs, a second one stops at
once, and what was accepted always ends in a terminal state.

Each drill prints its figures (time to recover, jobs by final status); ``pytest -s`` shows
them."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.e2e.helpers import script
from tests.e2e.launched import Launched, alive, wait_status, wait_terminal

pytestmark = pytest.mark.e2e

FAST_REAPER = {
    "RESQ_HEARTBEAT_SECONDS": "0.5",
    "RESQ_HEARTBEAT_TIMEOUT_SECONDS": "2",
    "RESQ_REAPER_INTERVAL_SECONDS": "1",
    "RESQ_QUEUED_RESEND_SECONDS": "5",
}


def figures(name: str, **values: object) -> None:
    print(f"\n[drill] {name}: " + ", ".join(f"{k}={v}" for k, v in values.items()))


class Prober:
    """Asks ``/healthz`` every 50 ms from a thread; counts the answers that were not 200."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.asked = self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=2) as http:
            while not self._stop.wait(0.05):
                self.asked += 1
                try:
                    ok = http.get(f"{self.url}/healthz").status_code == 200
                except httpx.TransportError:
                    ok = False
                self.failed += not ok

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def streaming_job(stack: Launched, words: int) -> str:
    """A background job that streams ``words`` words, 20 a second; returned once some of
    its output has gone out."""
    client = stack.client()
    rid = client.responses.create(
        model="resq-builtin", background=True, input=script(words=words, delay_ms=50)
    ).id
    wait_status(client, [rid], "in_progress")
    time.sleep(0.5)
    return rid


def test_a_killed_worker_is_started_again_while_the_api_keeps_answering(tmp_path: Path) -> None:
    with Launched(tmp_path, FAST_REAPER).start() as stack:
        stack.wait_banner()
        client = stack.client()
        streaming = streaming_job(stack, 200)
        worker = stack.child_pid("worker.celery_app worker")
        with Prober(stack.url) as probe:
            killed = time.monotonic()
            os.kill(worker, signal.SIGKILL)
            accepted = [
                client.responses.create(model="resq-builtin", background=True, input=f"n{i}").id
                for i in range(5)
            ]
            first = wait_terminal(client, accepted[0])  # a job runs again: the worker is back
            recovered = time.monotonic() - killed
            finals = [first] + [wait_terminal(client, rid) for rid in accepted[1:]]
            lost = wait_terminal(client, streaming)
        assert probe.asked > 10 and probe.failed == 0  # the API never stopped answering
        assert stack.child_pid("worker.celery_app worker") != worker
        assert f"worker (pid {worker}) was killed by SIGKILL; starting it again" in stack.output()
        assert "(restart 1)" in stack.output()
        assert [f.status for f in finals] == ["completed"] * 5
        assert lost.status == "failed" and "after output had started" in lost.error.message
        assert lost.output_text.startswith("alpha bravo")  # what was streamed is kept
        figures(
            "SIGKILL worker",
            first_job_done_s=round(recovered, 2),
            all_terminal_s=round(time.monotonic() - killed, 2),
            statuses=dict(Counter([f.status for f in finals] + [lost.status])),
            healthz_failures=f"{probe.failed}/{probe.asked}",
        )


def test_a_killed_redis_is_started_again_from_its_file(tmp_path: Path) -> None:
    with Launched(tmp_path, FAST_REAPER).start() as stack:
        stack.wait_banner()
        client = stack.client()
        done = client.responses.create(model="resq-builtin", background=True, input="before").id
        wait_terminal(client, done)
        running = [
            client.responses.create(
                model="resq-builtin", background=True, input=script(words=40, delay_ms=50)
            ).id
            for _ in range(5)
        ]
        waiting = [
            client.responses.create(
                model="resq-builtin", background=True, input=script(text="slow", wait_ms=4000)
            ).id
            for _ in range(3)
        ]
        wait_status(client, running + waiting, "in_progress")
        time.sleep(0.5)
        redis_pid = stack.child_pid("redis-server")
        killed = time.monotonic()
        os.kill(redis_pid, signal.SIGKILL)
        recovered = stack.wait_ready()
        finals = [wait_terminal(client, rid, timeout=90) for rid in running + waiting]
        settled = time.monotonic() - killed
        after = client.responses.create(model="resq-builtin", input="after")
        assert stack.child_pid("redis-server") != redis_pid
        assert f"redis (pid {redis_pid}) was killed by SIGKILL" in stack.output()
        # The event log of a response that ended before the crash came back from the file.
        with stack.http.stream("GET", f"{stack.url}/v1/responses/{done}?stream=true") as r:
            assert "response.completed" in r.read().decode()
        assert after.status == "completed" and after.output_text == "You said: after"
        for final in finals:
            assert final.status == "completed" or (
                final.status == "failed"
                and final.error is not None
                and (
                    "after output had started" in final.error.message
                    or "worker error while running" in final.error.message
                )
            ), (final.id, final.status, final.error)
        # The jobs that had said nothing yet are run again, not failed.
        assert {f.status for f in finals[len(running) :]} == {"completed"}
        figures(
            "SIGKILL redis",
            ready_again_s=round(recovered, 2),
            all_terminal_s=round(settled, 2),
            statuses=dict(Counter(f.status for f in finals)),
        )


def test_ctrl_c_to_the_group_lets_50_running_jobs_finish(tmp_path: Path) -> None:
    with Launched(tmp_path).start() as stack:
        stack.wait_banner()
        client = stack.client()
        jobs = [
            client.responses.create(
                model="resq-builtin", background=True, input=script(words=15, delay_ms=100)
            ).id
            for _ in range(50)
        ]
        wait_status(client, jobs, "in_progress")
        redis_pid = stack.child_pid("redis-server")
        stopped = time.monotonic()
        stack.signal_group(signal.SIGINT)
        # Redis stays up while the workers drain: it is stopped last.
        time.sleep(0.5)
        assert alive(redis_pid)
        assert stack.wait_exit() == 0
        drain = time.monotonic() - stopped
        out = stack.output()
        assert "Traceback" not in out
        assert out.rstrip().endswith("resq: stopped")
        stack.start()  # the same data: SQLite and Redis' append-only file
        stack.wait_banner()
        statuses = Counter(client.responses.retrieve(rid).status for rid in jobs)
    assert statuses == {"completed": 50}
    figures("Ctrl-C, 50 running jobs", stop_s=round(drain, 2), statuses=dict(statuses))


def test_jobs_still_running_when_the_grace_ends_are_handed_back_or_failed(
    tmp_path: Path,
) -> None:
    env = {"RESQ_SHUTDOWN_GRACE_SECONDS": "2"}
    with Launched(tmp_path, env).start() as stack:
        stack.wait_banner()
        client = stack.client()
        silent = client.responses.create(
            model="resq-builtin", background=True, input=script(text="late answer", wait_ms=30000)
        ).id
        talking = client.responses.create(
            model="resq-builtin", background=True, input=script(words=400, delay_ms=50)
        ).id
        wait_status(client, [silent, talking], "in_progress")
        time.sleep(1.0)
        stopped = time.monotonic()
        stack.signal_group(signal.SIGINT)
        assert stack.wait_exit() == 0
        stop_s = time.monotonic() - stopped
        assert "Traceback" not in stack.output()
        stack.env["RESQ_SHUTDOWN_GRACE_SECONDS"] = "30"
        stack.start()
        stack.wait_banner()
        failed = client.responses.retrieve(talking)
        assert failed.status == "failed"
        assert "shut down after output had started" in failed.error.message
        text = failed.output_text
        assert text.startswith("alpha bravo") and len(text.split()) < 400
        # The silent one went back to the queue untouched and runs again from the start.
        rerun = wait_terminal(client, silent, timeout=60)
        assert rerun.status == "completed" and rerun.output_text == "late answer"
    figures(
        "grace over",
        stop_s=round(stop_s, 2),
        silent=rerun.status + " after a re-run",
        talking=f"failed with {len(text.split())} words kept",
    )


def test_a_second_ctrl_c_stops_at_once(tmp_path: Path) -> None:
    with Launched(tmp_path, FAST_REAPER).start() as stack:
        stack.wait_banner()
        client = stack.client()
        rid = streaming_job(stack, 600)
        stack.signal_group(signal.SIGINT)
        time.sleep(1.0)
        again = time.monotonic()
        stack.signal_group(signal.SIGINT)
        stack.wait_exit(timeout=20)
        at_once = time.monotonic() - again
        assert at_once < 10, at_once
        # Started again, the job the hard stop cut short still ends in a terminal state.
        stack.start()
        stack.wait_banner()
        final = wait_terminal(client, rid, timeout=60)
        assert final.status == "failed" and "after output had started" in final.error.message
    figures("second Ctrl-C", exit_s=round(at_once, 2), job=final.status)
