"""Tenant limits and fair queues with real processes (Redis, the API, beat, two Celery workers
with their dispatchers) and the openai SDK: every limit's 429 body and headers, the SDK's
retry getting through, a small tenant's jobs starting long before a big tenant's backlog is
done, nothing lost across a restart with both backlogs queued, and the per-tenant numbers
admin and /metrics show for a known workload."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.durable import MiniStack, running
from tests.e2e.helpers import TERMINAL, script

pytestmark = pytest.mark.e2e

ADMIN = "sk-admin-tenants"
KEYS = {"a": "sk-tenant-a", "b": "sk-tenant-b", "rpm": "sk-rpm", "tpm": "sk-tpm", "q": "sk-q"}
TENANTS = """
[tenants.rpm]
requests_per_minute = 20

[tenants.tpm]
tokens_per_minute = 300

[tenants.q]
queued = 2
running = 1
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MiniStack]:
    root = tmp_path_factory.mktemp("tenants")
    tenants = root / "tenants.toml"
    tenants.write_text(TENANTS)
    env = {
        "RESQ_API_KEYS": ",".join(f"{key}:{tenant}" for tenant, key in KEYS.items()),
        "RESQ_ADMIN_KEYS": ADMIN,
        "RESQ_TENANTS_FILE": str(tenants),
        "RESQ_DISPATCH_BUFFER": "4",
    }
    with running(root, extra_env=env) as stack:
        yield stack


def client(stack: MiniStack, tenant: str, retries: int = 0) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{stack.root_url}/v1",
        api_key=KEYS[tenant],
        max_retries=retries,
        http_client=stack.http,
    )


def admin(stack: MiniStack, path: str) -> Any:
    got = stack.http.get(f"{stack.root_url}{path}", headers={"Authorization": f"Bearer {ADMIN}"})
    assert got.status_code == 200, got.text
    return got.json()


def wait_all(sdk: openai.OpenAI, ids: list[str], timeout: float = 90) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    status: dict[str, str] = {}
    while True:
        for rid in ids:
            if status.get(rid) not in TERMINAL:
                status[rid] = sdk.responses.retrieve(rid).status or ""
        if all(s in TERMINAL for s in status.values()):
            return status
        assert time.monotonic() < deadline, {
            s: list(status.values()).count(s) for s in status.values()
        }
        time.sleep(0.2)


def refused(call: Any) -> openai.RateLimitError:
    with pytest.raises(openai.RateLimitError) as caught:
        call()
    error = caught.value
    assert isinstance(error.body, dict) and error.body["code"] == "rate_limit_exceeded"
    assert set(error.body) == {"message", "type", "param", "code"}
    return error


def test_requests_per_minute_429_then_the_sdk_retry_gets_through(stack: MiniStack) -> None:
    sdk = client(stack, "rpm")
    for _ in range(20):
        sdk.responses.create(model="resq-builtin", input="hi", background=True)
    error = refused(lambda: sdk.responses.create(model="resq-builtin", input="hi", background=True))
    headers = error.response.headers
    assert headers["x-ratelimit-limit-requests"] == "20"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-reset-requests"].endswith("s")
    assert 0 < int(headers["retry-after-ms"]) <= 3000 and error.body["type"] == "requests"  # type: ignore[index]
    started = time.monotonic()
    patient = client(stack, "rpm", retries=2)
    raw = patient.responses.with_raw_response.create(
        model="resq-builtin", input="hi", background=True
    )
    assert raw.http_response.status_code == 200 and time.monotonic() - started > 0.5
    assert raw.headers["x-ratelimit-limit-requests"] == "20"


def test_tokens_per_minute_are_charged_then_settled(stack: MiniStack) -> None:
    sdk = client(stack, "tpm")
    first = sdk.responses.create(model="resq-builtin", input="one two", max_output_tokens=250)
    assert first.status == "completed"
    # 250 + the input were charged, a few tokens used: the rest came back at the end.
    second = sdk.responses.create(model="resq-builtin", input="one two", max_output_tokens=250)
    assert second.status == "completed"
    held = sdk.responses.create(
        model="resq-builtin", input=script(wait_ms=3000), max_output_tokens=250, background=True
    )
    error = refused(
        lambda: sdk.responses.create(model="resq-builtin", input="x", max_output_tokens=250)
    )
    assert error.body["type"] == "tokens"  # type: ignore[index]
    assert error.response.headers["x-ratelimit-limit-tokens"] == "300"
    assert "x-ratelimit-remaining-tokens" in error.response.headers
    huge = refused(
        lambda: sdk.responses.create(model="resq-builtin", input="x", max_output_tokens=5000)
    )
    assert huge.response.headers["x-should-retry"] == "false" and "too large" in huge.message
    wait_all(sdk, [held.id])


def test_queued_and_running_limits(stack: MiniStack) -> None:
    sdk = client(stack, "q")
    long = script(text="done", wait_ms=4000)
    ids = [sdk.responses.create(model="resq-builtin", input=long, background=True).id]
    deadline = time.monotonic() + 10
    while sdk.responses.retrieve(ids[0]).status != "in_progress":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    ids += [
        sdk.responses.create(model="resq-builtin", input=long, background=True).id for _ in range(2)
    ]
    time.sleep(0.5)  # the dispatcher holds them: the tenant runs one at a time
    assert [sdk.responses.retrieve(i).status for i in ids] == ["in_progress", "queued", "queued"]
    by_tenant = {r["tenant"]: r for r in admin(stack, "/v1/admin/queue")["by_tenant"]}
    assert (by_tenant["q"]["queued"], by_tenant["q"]["in_progress"]) == (2, 1)
    metrics = stack.http.get(f"{stack.root_url}/metrics").text
    assert 'resq_tenant_queued{tenant="q"} 2.0' in metrics
    assert 'resq_tenant_running{tenant="q"} 1.0' in metrics

    queued = refused(lambda: sdk.responses.create(model="resq-builtin", input="x", background=True))
    assert "background jobs queued" in queued.message and "limit 2" in queued.message
    busy = refused(lambda: sdk.responses.create(model="resq-builtin", input="x"))
    assert "jobs running" in busy.message
    assert wait_all(sdk, ids) == dict.fromkeys(ids, "completed")

    by_tenant = {r["tenant"]: r for r in admin(stack, "/v1/admin/queue")["by_tenant"]}
    assert by_tenant["q"]["rate_limited"] == {"queued": 1, "running": 1}
    metrics = stack.http.get(f"{stack.root_url}/metrics").text
    assert 'resq_rate_limited_total{limit="queued",tenant="q"} 1.0' in metrics


def _queue_waits(stack: MiniStack, ids: list[str]) -> list[float]:
    return [admin(stack, f"/v1/admin/responses/{rid}")["timings"]["queue_wait"] for rid in ids]


def test_a_small_tenant_is_not_stuck_behind_a_big_backlog(stack: MiniStack) -> None:
    big, small = client(stack, "a"), client(stack, "b")
    job = script(words=4, delay_ms=25)  # ~0.1 s each; 8 slots: 400 jobs take ~5 s
    a_ids = [
        big.responses.create(model="resq-builtin", input=job, background=True).id
        for _ in range(400)
    ]
    b_ids = [
        small.responses.create(model="resq-builtin", input=job, background=True).id
        for _ in range(5)
    ]
    assert set(wait_all(small, b_ids).values()) == {"completed"}
    a_left = sum(big.responses.retrieve(i).status in ("queued", "in_progress") for i in a_ids)
    assert a_left > 50, "A's backlog was done before B's jobs: the test proves nothing"
    assert max(_queue_waits(stack, b_ids)) < 2.0
    assert set(wait_all(big, a_ids, timeout=120).values()) == {"completed"}
    assert max(_queue_waits(stack, a_ids[-5:])) > 2.0  # A's last ones did wait behind its own


def test_a_restart_with_both_backlogs_queued_loses_nothing(stack: MiniStack) -> None:
    big, small = client(stack, "a"), client(stack, "b")
    stack.stop_workers()
    job = script(words=3, delay_ms=10)
    a_ids = [
        big.responses.create(model="resq-builtin", input=job, background=True).id for _ in range(40)
    ]
    b_ids = [
        small.responses.create(model="resq-builtin", input=job, background=True).id
        for _ in range(8)
    ]
    waiting = stack.redis().smembers("resq:fair:tenants")
    assert waiting == {b"a", b"b"}, waiting  # both parked in their fair queues
    assert stack.api is not None
    stack.api.terminate()
    stack.api.wait(30)
    stack.start_api()
    for _ in range(2):
        stack.worker_ready(stack.add_worker())
    everything = {**wait_all(big, a_ids), **wait_all(small, b_ids)}
    assert set(everything.values()) == {"completed"} and len(everything) == 48


def test_a_cancelled_waiting_job_leaves_its_queue_at_once(stack: MiniStack) -> None:
    sdk = client(stack, "q")
    long = script(text="done", wait_ms=2000)
    first = sdk.responses.create(model="resq-builtin", input=long, background=True)
    second = sdk.responses.create(model="resq-builtin", input=long, background=True)
    started = time.monotonic()
    cancelled = sdk.responses.cancel(second.id)
    assert cancelled.status == "cancelled" and time.monotonic() - started < 1.0
    assert stack.redis().zscore("resq:fair:q:resq", second.id) is None
    assert wait_all(sdk, [first.id])[first.id] == "completed"
    raw = httpx.get(
        f"{stack.root_url}/v1/responses/{second.id}",
        headers={"Authorization": f"Bearer {KEYS['q']}"},
    ).json()
    assert raw["status"] == "cancelled" and json.dumps(raw["output"]) == "[]"


def test_the_tenants_file_is_what_admin_reports(stack: MiniStack) -> None:
    rows = {r["tenant"]: r for r in admin(stack, "/v1/admin/queue")["by_tenant"]}
    assert rows["rpm"]["limits"]["requests_per_minute"] == 20
    assert rows["q"]["limits"]["running"] == 1
    assert rows["rpm"]["rate_limited"].get("requests", 0) >= 1
    assert Path(stack.env["RESQ_TENANTS_FILE"]).exists()
