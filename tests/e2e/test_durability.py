"""Fault injection with real processes: workers killed or stopped mid-job, Redis gone for a
while, the whole stack restarted with jobs queued. Nothing accepted is lost."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai.types.responses import ResponseOutputMessage

from tests.e2e import launched
from tests.e2e.durable import DURABLE_ENV, MiniStack
from tests.e2e.helpers import TERMINAL, check, retrieve_raw, script
from tests.e2e.streams import TERMINAL_TYPES, check_stream, read_stream

pytestmark = pytest.mark.e2e

# heartbeat timeout 2 s + reaper every 1 s + a re-run: well inside this bound
RECOVERY_SECONDS = 20


@pytest.fixture(scope="module")
def mini(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MiniStack]:
    stack = MiniStack(tmp_path_factory.mktemp("durable")).start()
    try:
        yield stack
    finally:
        stack.close()


def wait_terminal(client: openai.OpenAI, rid: str, timeout: float = RECOVERY_SECONDS) -> Any:
    return launched.wait_terminal(client, rid, timeout)


def max_running_together(client: openai.OpenAI, rids: list[str], timeout: float = 30) -> int:
    """The most of ``rids`` seen in progress at one time, watched until all have ended."""
    deadline = time.monotonic() + timeout
    most = 0
    while True:
        statuses = [client.responses.retrieve(r).status for r in rids]
        most = max(most, statuses.count("in_progress"))
        if all(s in TERMINAL for s in statuses):
            return most
        assert time.monotonic() < deadline, f"still running: {statuses}"
        time.sleep(0.05)


def runner_pid(mini: MiniStack, rid: str, timeout: float = 15) -> int:
    deadline = time.monotonic() + timeout
    while True:
        value = mini.redis().get(f"resq:hb:{rid}")
        if value:
            return int(value.decode().rsplit(":", 1)[1])
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.05)


def log_of(mini: MiniStack, rid: str) -> list[dict[str, Any]]:
    events, _ = read_stream(
        mini.http, "GET", f"{mini.root_url}/v1/responses/{rid}", params={"stream": "true"}
    )
    return events


def test_worker_killed_before_output_the_job_reruns(mini: MiniStack) -> None:
    client = mini.client()
    rid = client.responses.create(
        model="resq-builtin", background=True, input=script(text="survived", delay_ms=2500)
    ).id
    mini.kill_pid(runner_pid(mini, rid))  # SIGKILL while the model has said nothing yet
    mini.add_worker()
    final = wait_terminal(client, rid)
    assert final.status == "completed" and final.output_text == "survived"
    events = log_of(mini, rid)
    check_stream(events)  # one created, gap-free numbering across both attempts
    assert [e["type"] for e in events].count("response.in_progress") == 1


def test_worker_killed_after_output_fails_cleanly(mini: MiniStack) -> None:
    client = mini.client()
    rid = client.responses.create(
        model="resq-builtin", background=True, input=script(words=300, delay_ms=30)
    ).id
    pid = runner_pid(mini, rid)
    r = mini.redis()
    deadline = time.monotonic() + 10
    while not any(
        f[b"t"] == b"response.output_text.delta" for _i, f in r.xrange(f"resq:events:{rid}")
    ):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    killed_at = time.monotonic()
    mini.kill_pid(pid)
    mini.add_worker()
    final = wait_terminal(client, rid)
    assert time.monotonic() - killed_at < RECOVERY_SECONDS
    assert final.status == "failed"
    assert final.error is not None and "after output had started" in final.error.message
    events = log_of(mini, rid)
    assert [e["type"] for e in events][-2:] == ["error", "response.failed"]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))


def test_worker_killed_mid_message_the_failed_response_keeps_its_text(mini: MiniStack) -> None:
    client = mini.client()
    answer = " ".join(f"word{i}" for i in range(300))
    rid = client.responses.create(
        model="resq-builtin", background=True, input=script(text=answer, delay_ms=30)
    ).id
    pid = runner_pid(mini, rid)
    r = mini.redis()
    deadline = time.monotonic() + 10
    while (
        sum(f[b"t"] == b"response.output_text.delta" for _i, f in r.xrange(f"resq:events:{rid}"))
        < 5
    ):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    mini.kill_pid(pid)  # mid-message: no output_item.done yet, nothing saved in the store
    mini.add_worker()
    final = wait_terminal(client, rid)
    events = log_of(mini, rid)
    streamed = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert streamed and answer.startswith(streamed) and streamed != answer
    assert "response.output_item.done" not in [e["type"] for e in events]
    assert final.status == "failed"
    assert final.error is not None and final.error.code == "server_error"
    assert "stopped after output had started" in final.error.message
    assert [(i.type, i.status) for i in final.output] == [("message", "incomplete")]
    message = final.output[0]
    assert isinstance(message, ResponseOutputMessage) and message.role == "assistant"
    assert [part.type for part in message.content] == ["output_text"]
    assert final.output_text == streamed
    raw = check(retrieve_raw(client, rid))  # every spec field, the SDK parses it losslessly
    assert raw == final
    # the log ends as the store does: the same partial output in response.failed
    assert [e["type"] for e in events][-2:] == ["error", "response.failed"]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[-1]["response"] == retrieve_raw(client, rid)


def test_sigterm_lets_running_jobs_finish_and_loses_nothing(mini: MiniStack) -> None:
    client = mini.client()
    for name in mini.workers:
        mini.worker_ready(name)
    running = [
        client.responses.create(
            model="resq-builtin", background=True, input=script(words=15, delay_ms=100)
        ).id
        for _ in range(3)
    ]
    for rid in running:
        runner_pid(mini, rid)
    mini.stop_workers(signal.SIGTERM)  # warm shutdown: running jobs finish first
    for rid in running:
        assert client.responses.retrieve(rid).status == "completed"
    # accepted while no worker runs: queued, and run once a worker is back
    queued = [
        client.responses.create(model="resq-builtin", background=True, input="later").id
        for _ in range(3)
    ]
    assert {client.responses.retrieve(r).status for r in queued} == {"queued"}
    mini.add_worker()
    for rid in queued:
        assert wait_terminal(client, rid).status == "completed"


def test_redis_outage_is_503_and_loses_nothing(mini: MiniStack) -> None:
    client = mini.client()
    for name in mini.workers:
        mini.worker_ready(name)
    slots = int(DURABLE_ENV["RESQ_WORKER_CONCURRENCY"]) * len(mini.workers)
    # More jobs than slots, so every slot is busy (and acks fail) while Redis is away.
    accepted = [
        client.responses.create(
            model="resq-builtin", background=True, input=script(words=5, delay_ms=100)
        ).id
        for _ in range(slots + 2)
    ]
    mini.redis_server.stop()
    try:
        for _ in range(3):
            with pytest.raises(openai.InternalServerError) as info:
                client.responses.create(model="resq-builtin", background=True, input="x")
            assert info.value.status_code == 503
            body = info.value.response.json()["error"]
            assert body["type"] == "server_error" and body["code"] == "service_unavailable"
        assert client.responses.retrieve(accepted[0]).id == accepted[0]  # the store answers
    finally:
        mini.redis_server.start()
    # Nothing accepted is lost: jobs the outage interrupted mid-output end failed with a
    # reason (the reaper's, or the worker's own when its event publish failed), the others
    # complete.
    reasons = ("stopped after output had started", "resq worker error while running")
    for rid in accepted:
        final = wait_terminal(client, rid, timeout=30)
        assert final.status == "completed" or (
            final.status == "failed"
            and final.error is not None
            and any(r in final.error.message for r in reasons)
        ), (rid, final.status, final.error)
    # The same workers carry on with every slot: an ack that failed during the outage must not
    # keep its prefetch slot (shared/broker.py). Jobs of 3 s, one per slot, run side by side
    # only if every worker got all of its slots back.
    after = [
        client.responses.create(
            model="resq-builtin", background=True, input=script(words=6, delay_ms=500)
        ).id
        for _ in range(slots)
    ]
    assert max_running_together(client, after) == slots
    assert {client.responses.retrieve(r).status for r in after} == {"completed"}


def test_api_sigterm_ends_streams_cleanly_for_resume(mini: MiniStack) -> None:
    client = mini.client()
    rid = client.responses.create(
        model="resq-builtin", background=True, input=script(words=60, delay_ms=50)
    ).id
    got: list[list[dict[str, Any]]] = []
    reader = threading.Thread(target=lambda: got.append(log_of(mini, rid)))
    reader.start()
    time.sleep(1.0)
    assert mini.api is not None
    mini.api.send_signal(signal.SIGTERM)
    reader.join(10)
    assert not reader.is_alive(), "the stream was not ended by the API's stop"
    head = got[0]  # read to a clean end of body: no exception, no terminal event
    assert head and head[-1]["type"] not in TERMINAL_TYPES
    mini.api.wait(15)
    mini.start_api()
    tail, _ = read_stream(
        mini.http,
        "GET",
        f"{mini.root_url}/v1/responses/{rid}",
        params={"stream": "true", "starting_after": head[-1]["sequence_number"]},
    )
    final = check_stream(head + tail)
    assert final["status"] == "completed"


def test_restart_everything_with_jobs_queued(mini: MiniStack) -> None:
    client = mini.client()
    mini.stop_workers(signal.SIGTERM)
    queued = [
        client.responses.create(model="resq-builtin", background=True, input=f"queued {i}").id
        for i in range(4)
    ]
    assert mini.api is not None
    mini.api.send_signal(signal.SIGTERM)
    mini.api.wait(30)
    mini.redis_server.stop()  # SIGTERM: Redis writes its append-only file
    mini.redis_server.start()
    mini.start_api()
    mini.add_worker()
    for i, rid in enumerate(queued):
        final = wait_terminal(client, rid, timeout=30)
        assert final.status == "completed" and final.output_text == f"You said: queued {i}"
