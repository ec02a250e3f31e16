"""The operator API, /metrics, queue pause/resume, requeue, service-tier queues, JSON logs
and the CLI, end to end (issue 9; README, "Monitoring"): a real API, two Celery worker
processes, beat and Redis, with a known workload."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from shared import keys
from tests.e2e.durable import MiniStack, running
from tests.e2e.helpers import TERMINAL, assert_http_error, script, wait_status

TENANT_KEY = "sk-admin-test-tenant-0123456789"
ADMIN_KEY = "sk-admin-test-operator-9876543210"
MODEL = "resq-builtin"


@pytest.fixture(scope="module")
def mini(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MiniStack]:
    env = {
        "RESQ_API_KEYS": f"{TENANT_KEY}:acme",
        "RESQ_ADMIN_KEYS": ADMIN_KEY,
        "RESQ_LOG_FORMAT": "json",
    }
    with running(tmp_path_factory.mktemp("admin"), env) as stack:
        yield stack


@pytest.fixture(scope="module")
def tenant(mini: MiniStack) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{mini.root_url}/v1", api_key=TENANT_KEY, max_retries=0) as client:
        yield client


@pytest.fixture(scope="module")
def admin(mini: MiniStack) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(base_url=mini.root_url, headers=headers, timeout=30) as client:
        yield client


def metrics(mini: MiniStack) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{mini.root_url}/metrics", timeout=10).text
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def finished(values: dict[Any, float], status: str) -> float:
    key = ("resq_responses_finished_total", (("model", MODEL), ("status", status)))
    return values.get(key, 0.0)


def test_tenants_are_refused(mini: MiniStack) -> None:
    with httpx.Client(base_url=mini.root_url, timeout=10) as http:
        for path in ("/v1/admin/queue", "/v1/admin/workers", "/v1/admin/responses"):
            refused = http.get(path, headers={"Authorization": f"Bearer {TENANT_KEY}"})
            assert_http_error(refused, 403, "permission_denied", None, "permission_error")
        pause = http.post(
            "/v1/admin/queues/resq/pause", headers={"Authorization": f"Bearer {TENANT_KEY}"}
        )
        assert pause.status_code == 403


def test_numbers_match_a_known_workload(
    mini: MiniStack, tenant: openai.OpenAI, admin: httpx.Client
) -> None:
    before = metrics(mini)
    window_before = admin.get("/v1/admin/queue").json()["windows"]["15m"]
    completed = [
        tenant.responses.create(
            model=MODEL, background=True, input=script(text="ok", words=5, delay_ms=60)
        )
        for _ in range(8)
    ]
    failed = [
        tenant.responses.create(
            model=MODEL, background=True, input=script(error={"message": f"boom {i}"})
        )
        for i in range(2)
    ]
    slow = [
        tenant.responses.create(model=MODEL, background=True, input=script(words=200, delay_ms=50))
        for _ in range(3)
    ]
    for response in slow:
        wait_status(tenant, response.id, {"in_progress"})
        tenant.responses.cancel(response.id)
    for response in completed + failed + slow:
        wait_status(tenant, response.id, TERMINAL)

    queue = admin.get("/v1/admin/queue").json()
    window = queue["windows"]["15m"]
    assert window["completed"] - window_before["completed"] == 8
    assert window["failed"] - window_before["failed"] == 2
    assert window["cancelled"] - window_before["cancelled"] == 3
    assert window["run_seconds"]["p50"] is not None and window["run_seconds"]["p50"] > 0.1
    assert window["queue_wait_seconds"]["p95"] is not None
    assert window["throughput_per_second"] > 0
    acme = next(t for t in queue["by_tenant"] if t["tenant"] == "acme")
    assert acme["completed"] >= 8 and acme["failed"] >= 2 and acme["cancelled"] >= 3
    assert [q["name"] for q in queue["queues"]] == [
        "resq.high",
        "resq",
        "resq.low",
        "resq.webhooks",
    ]
    assert queue["totals"]["queued"] == 0 and queue["totals"]["in_progress"] == 0

    after = metrics(mini)
    assert finished(after, "completed") - finished(before, "completed") == 8
    assert finished(after, "failed") - finished(before, "failed") == 2
    assert finished(after, "cancelled") - finished(before, "cancelled") == 3
    count = ("resq_run_seconds_count", (("model", MODEL),))
    assert after[count] - before.get(count, 0) == 13
    ttft = ("resq_time_to_first_token_seconds_count", (("model", MODEL),))
    assert after[ttft] - before.get(ttft, 0) >= 11  # every run that produced output
    tokens = ("resq_tokens_total", (("kind", "output"), ("model", MODEL)))
    assert after[tokens] - before.get(tokens, 0) >= 8 * 6
    assert after[("resq_queue_depth", (("queue", "resq"),))] == 0
    assert ("resq_open_streams", ()) in after
    # Both worker processes ran jobs, and the counters add up across them.
    ran_by = {name for name in mini.workers if any(r.id in mini.log(name) for r in completed)}
    assert len(ran_by) == 2, "the workload should have been spread over both workers"

    # The failures, newest first, with their errors; paging with after.
    listing = admin.get("/v1/admin/responses", params={"status": "failed", "limit": 1}).json()
    assert listing["has_more"] is True and listing["data"][0]["error"]["message"].startswith("boom")
    page_2 = admin.get(
        "/v1/admin/responses",
        params={"status": "failed", "limit": 1, "after": listing["last_id"]},
    ).json()
    assert {listing["data"][0]["id"], page_2["data"][0]["id"]} == {r.id for r in failed}
    by_tenant = admin.get("/v1/admin/responses", params={"tenant": "acme", "limit": 100}).json()
    assert {r.id for r in completed} <= {r["id"] for r in by_tenant["data"]}
    assert admin.get("/v1/admin/responses", params={"older_than": 3600}).json()["data"] == []

    detail = admin.get(f"/v1/admin/responses/{completed[0].id}").json()
    events = [step["event"] for step in detail["timeline"]]
    assert events == ["queued", "started", "first_token", "finished"]
    times = [step["at"] for step in detail["timeline"]]
    assert times == sorted(times)
    assert admin.get("/v1/admin/responses/resp_nope").status_code == 404

    # Every line a worker wrote about a job carries its id, tenant and model (JSON logs).
    lines = [
        json.loads(line)
        for name in mini.workers
        for line in mini.log(name).splitlines()
        if line.startswith("{") and completed[0].id in line
    ]
    ours = [line for line in lines if line["logger"].startswith(("worker", "shared"))]
    assert ours, "no JSON log lines about the job"
    for line in ours:
        assert (line["response_id"], line["tenant"], line["model"]) == (
            completed[0].id,
            "acme",
            MODEL,
        )


def test_workers_are_listed(mini: MiniStack, admin: httpx.Client) -> None:
    body = admin.get("/v1/admin/workers").json()
    assert body["error"] is None
    assert len(body["data"]) == 2
    for worker in body["data"]:
        assert worker["concurrency"] == 4
        assert set(worker["queues"]) >= {"resq", "resq.high", "resq.low", "resq.webhooks"}


def test_pause_and_resume_a_queue(
    mini: MiniStack, tenant: openai.OpenAI, admin: httpx.Client
) -> None:
    assert admin.post("/v1/admin/queues/resq/pause").json() == {"name": "resq", "paused": True}
    try:
        time.sleep(1.0)  # the broadcast reaches both workers
        waiting = tenant.responses.create(model=MODEL, background=True, input="wait for me")
        time.sleep(2.0)
        assert tenant.responses.retrieve(waiting.id).status == "queued"
        queue = admin.get("/v1/admin/queue").json()
        assert {q["name"]: q for q in queue["queues"]}["resq"] == {
            "name": "resq",
            "depth": 1,
            "paused": True,
        }
        assert queue["totals"]["oldest_queued_age_seconds"] >= 1
        # Other queues keep flowing: a "priority" response runs on resq.high meanwhile.
        urgent = tenant.responses.create(
            model=MODEL, background=True, input="urgent", service_tier="priority"
        )
        assert wait_status(tenant, urgent.id, TERMINAL)["status"] == "completed"
        assert metrics(mini)[("resq_queue_paused", (("queue", "resq"),))] == 1
    finally:
        assert admin.post("/v1/admin/queues/resq/resume").json()["paused"] is False
    assert wait_status(tenant, waiting.id, TERMINAL)["status"] == "completed"
    assert admin.post("/v1/admin/queues/nope/pause").status_code == 404


def test_a_job_taken_from_a_paused_queue_goes_back(
    mini: MiniStack, tenant: openai.OpenAI, admin: httpx.Client
) -> None:
    # The flag without the broadcast: as if the pause had not reached the workers yet.
    mini.redis().set(keys.paused("resq"), b"1")
    try:
        bounced = tenant.responses.create(model=MODEL, background=True, input="bounce me")
        deadline = time.monotonic() + 15
        while not any(
            f"response {bounced.id}: queue resq is paused" in mini.log(name)
            for name in mini.workers
        ):
            assert time.monotonic() < deadline, "no worker sent the job back"
            time.sleep(0.2)
        time.sleep(1.5)  # every worker that took it has stopped consuming the queue
        assert tenant.responses.retrieve(bounced.id).status == "queued"
    finally:
        admin.post("/v1/admin/queues/resq/resume")
    assert wait_status(tenant, bounced.id, TERMINAL)["status"] == "completed"


def test_requeue_and_cancel(tenant: openai.OpenAI, admin: httpx.Client) -> None:
    done = tenant.responses.create(model=MODEL, input="run me twice")
    assert done.status == "completed"
    first_end = admin.get(f"/v1/admin/responses/{done.id}").json()["timeline"][-1]["at"]
    again = admin.post(f"/v1/admin/responses/{done.id}/requeue").json()
    assert again["status"] == "queued" and again["error"] is None
    rerun = wait_status(tenant, done.id, TERMINAL)
    assert rerun["status"] == "completed" and rerun["output"][0]["content"][0]["text"] == (
        "You said: run me twice"
    )
    detail = admin.get(f"/v1/admin/responses/{done.id}").json()
    assert detail["attempts"] == 2 and detail["timeline"][-1]["at"] > first_end

    running = tenant.responses.create(
        model=MODEL, background=True, input=script(words=300, delay_ms=50)
    )
    wait_status(tenant, running.id, {"in_progress"})
    conflict = admin.post(f"/v1/admin/responses/{running.id}/requeue")
    assert_http_error(conflict, 409, "conflict", "response_id")
    stopped = admin.post(f"/v1/admin/responses/{running.id}/cancel").json()
    assert stopped["status"] == "cancelled"
    assert wait_status(tenant, running.id, TERMINAL)["status"] == "cancelled"


def test_history_is_sampled(admin: httpx.Client) -> None:
    deadline = time.monotonic() + 20
    while True:
        data = admin.get("/v1/admin/queue/history", params={"minutes": 15}).json()["data"]
        if len(data) >= 2:
            break
        assert time.monotonic() < deadline, "beat never sampled the queue"
        time.sleep(1)
    assert [s["at"] for s in data] == sorted(s["at"] for s in data)
    assert set(data[-1]) == {"at", "depth", "in_progress", "finished_per_second"}


def test_the_cli_shows_the_same_numbers(mini: MiniStack, admin: httpx.Client) -> None:
    env = {"RESQ_URL": mini.root_url, "RESQ_ADMIN_KEY": ADMIN_KEY, "PATH": ""}
    cli = [sys.executable, "-m", "ops.cli"]
    shown = subprocess.run(
        [*cli, "queue", "--json"], env=env, capture_output=True, text=True, timeout=60
    )
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["object"] == "admin.queue"
    table = subprocess.run([*cli, "queue"], env=env, capture_output=True, text=True, timeout=60)
    assert table.returncode == 0 and "resq.high" in table.stdout
    failed = subprocess.run(
        [*cli, "responses", "list", "--status", "failed", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert failed.returncode == 0, failed.stderr
    expected = admin.get("/v1/admin/responses", params={"status": "failed"}).json()["data"]
    assert [r["id"] for r in json.loads(failed.stdout)["data"]] == [r["id"] for r in expected]
    refused = subprocess.run(
        [*cli, "queue"],
        env={**env, "RESQ_ADMIN_KEY": TENANT_KEY},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 1 and "admin key" in refused.stderr
