"""``Idempotency-Key`` against the real stack (two API processes, a Celery worker, Redis, the
SQLite store), with the openai SDK sending the header as ``extra_headers``.

A retried POST must never make a second job: checked by the ids, by the store's row count,
by the API logs (one "queued" line per job, across both API processes), by the claim
counter and by the job's event log (one ``response.created``).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import pytest

from shared import keys
from shared.store import Store, make_engine
from tests.e2e.conftest import Stack
from tests.e2e.helpers import assert_error, check, raw_json, script, wait_status

pytestmark = pytest.mark.e2e

REPLAYED = "idempotent-replayed"


@pytest.fixture(scope="module")
def store(stack: Stack) -> Iterator[Store]:
    """The stack's own store, read from the test process."""
    engine = make_engine(stack.database_url, pool_size=1)
    yield Store(engine)
    engine.dispose()


def new_key() -> str:
    return f"idem-{uuid.uuid4()}"


def create(client: openai.OpenAI, key: str, **kwargs: Any) -> tuple[dict[str, Any], bool]:
    """A create with the key; the raw Response and whether it was marked replayed."""
    resp = client.responses.with_raw_response.create(
        extra_headers={"Idempotency-Key": key}, **kwargs
    )
    replayed = resp.headers.get(REPLAYED)
    assert replayed in (None, "true")
    return raw_json(resp), replayed == "true"


def queued_lines(stack: Stack, response_id: str) -> int:
    """How many times an API process enqueued the response (service logs one line each)."""
    needle = f"response {response_id}: queued"
    return sum(p.read_text().count(needle) for p in stack.log_dir.glob("api*.log"))


def assert_one_job(stack: Stack, store: Store, response_id: str) -> None:
    assert queued_lines(stack, response_id) == 1
    row = store.get_response(response_id=response_id)
    assert row is not None and row.attempts == 1
    entries = stack.redis().xrange(keys.events(response_id))
    types = [fields[b"t"].decode() for _entry_id, fields in entries]
    assert types.count("response.created") == 1, types


def test_background_create_retried_five_times_runs_one_job(
    stack: Stack, client: openai.OpenAI, store: Store
) -> None:
    key = new_key()
    before = store.count_responses()
    body = {"model": "resq-builtin", "input": script(text="once", delay_ms=20), "background": True}

    answers = [create(client, key, **body) for _ in range(5)]

    assert [replayed for _raw, replayed in answers] == [False, True, True, True, True]
    ids = {raw["id"] for raw, _replayed in answers}
    assert len(ids) == 1
    (rid,) = ids
    for raw, _replayed in answers:
        check(raw)
    assert store.count_responses() == before + 1
    final = wait_status(client, rid, {"completed"})
    assert check(final).output_text == "once"
    assert_one_job(stack, store, rid)

    late, replayed = create(client, key, **body)  # after the end: the finished Response
    assert replayed and late == final


def test_sync_create_retried_returns_the_same_completed_response(
    stack: Stack, client: openai.OpenAI, store: Store
) -> None:
    key = new_key()
    before = store.count_responses()

    first, first_replayed = create(client, key, model="resq-builtin", input="hello again")
    again, again_replayed = create(client, key, model="resq-builtin", input="hello again")

    assert (first_replayed, again_replayed) == (False, True)
    parsed = check(first)
    assert (parsed.status, parsed.output_text) == ("completed", "You said: hello again")
    assert again == first
    assert store.count_responses() == before + 1
    assert_one_job(stack, store, parsed.id)


def test_sync_retry_while_the_job_runs_waits_for_its_end(
    stack: Stack, client: openai.OpenAI, store: Store
) -> None:
    key = new_key()
    body = {"model": "resq-builtin", "input": script(text="slow", words=20, delay_ms=50)}
    results: dict[str, tuple[dict[str, Any], bool]] = {}
    before = store.count_responses()

    original = threading.Thread(target=lambda: results.update(a=create(client, key, **body)))
    original.start()
    deadline = time.monotonic() + 10
    while store.count_responses() == before:  # the original's row (and key) now exist
        assert time.monotonic() < deadline
        time.sleep(0.01)
    retry_sent = time.monotonic()
    results["b"] = create(stack.client_2(), key, **body)  # the retry, on the other API
    waited = time.monotonic() - retry_sent
    original.join(timeout=15)

    (a, a_replayed), (b, b_replayed) = results["a"], results["b"]
    assert (a_replayed, b_replayed) == (False, True)
    assert check(a).status == "completed"
    assert check(a).output_text.startswith("slow alpha bravo")
    assert b == a
    assert waited > 0.3  # it waited for the ~1 s job instead of answering at once
    assert_one_job(stack, store, a["id"])


def test_stream_retried_replays_the_event_stream_from_the_start(
    stack: Stack, client: openai.OpenAI, store: Store
) -> None:
    key = new_key()
    body = {"model": "resq-builtin", "input": script(text="a b c"), "stream": True}

    first = client.responses.with_raw_response.create(
        extra_headers={"Idempotency-Key": key}, **body
    )
    first_events = [event.model_dump() for event in first.parse()]
    replay = client.responses.with_raw_response.create(
        extra_headers={"Idempotency-Key": key}, **body
    )
    replay_events = [event.model_dump() for event in replay.parse()]

    assert REPLAYED not in first.headers
    assert replay.headers[REPLAYED] == "true"
    assert [e["sequence_number"] for e in first_events] == list(range(len(first_events)))
    assert first_events[0]["type"] == "response.created"
    assert first_events[-1]["type"] == "response.completed"
    assert replay_events == first_events
    assert_one_job(stack, store, first_events[0]["response"]["id"])


def test_same_key_with_another_body_is_409(client: openai.OpenAI, store: Store) -> None:
    key = new_key()
    first, _ = create(client, key, model="resq-builtin", input="one", background=True)
    before = store.count_responses()

    with pytest.raises(openai.ConflictError) as caught:
        create(client, key, model="resq-builtin", input="two", background=True)

    assert_error(caught.value, 409, "idempotency_key_reused", None)
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert store.count_responses() == before
    wait_status(client, first["id"], {"completed"})


def test_the_same_key_in_two_tenants_is_two_responses(
    client: openai.OpenAI, client_b: openai.OpenAI
) -> None:
    key = new_key()
    a, a_replayed = create(client, key, model="resq-builtin", input="hi", background=True)
    b, b_replayed = create(client_b, key, model="resq-builtin", input="hi", background=True)

    assert (a_replayed, b_replayed) == (False, False)
    assert a["id"] != b["id"]
    with pytest.raises(openai.NotFoundError):
        client_b.responses.retrieve(a["id"])


def race(stack: Stack, key: str, background: bool) -> list[tuple[dict[str, Any], bool]]:
    """The same create sent at the same moment to both API processes."""
    barrier = threading.Barrier(2)

    def send(client: openai.OpenAI) -> tuple[dict[str, Any], bool]:
        barrier.wait(timeout=10)
        return create(client, key, model="resq-builtin", input="race", background=background)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(send, (stack.client(), stack.client_2())))


@pytest.mark.parametrize("background", [True, False], ids=["background", "sync"])
def test_racing_posts_on_two_api_processes_make_one_response(
    stack: Stack, store: Store, background: bool
) -> None:
    for _ in range(5):
        before = store.count_responses()

        results = race(stack, new_key(), background)

        ids = {raw["id"] for raw, _replayed in results}
        assert len(ids) == 1
        assert sorted(replayed for _raw, replayed in results) == [False, True]
        assert store.count_responses() == before + 1
        (rid,) = ids
        wait_status(stack.client(), rid, {"completed"})
        assert_one_job(stack, store, rid)
