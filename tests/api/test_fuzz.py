"""A bounded property-based fuzz run of the API against its own OpenAPI document.

schemathesis reads ``/openapi.json`` and generates requests for every operation, valid ones
(positive) and ones that break the document (negative), and each goes to the app. Asserted
for every answer: no 5xx; every error is exactly OpenAI's error envelope, as JSON; a refused
request queued no job; every answer fits the document (status, content type, body schema,
each SSE event). Then the app still answers ``/healthz`` and ``/readyz``. Every failure is
collected, one example per kind, and all are reported together; none is filtered out.

Size: ``EXAMPLES`` per operation and mode, repeats skipped: about 320 cases per store, some
18 s each (most of it the admin API's Celery broadcasts, which wait 1 s for worker replies).

In-process (tests/api) rather than against the e2e stack: the app is the one gunicorn runs,
with stand-ins only at its edges, so a run is deterministic, isolated (its own store, its own
Redis) and takes seconds. The e2e stack is shared by every e2e test and has no admin key, so
the admin API would be out of reach, and errors gunicorn raises itself (a request line or
headers over its limits) are not something a document describes; named tests cover them.

The stand-ins: the store on SQLite and on Postgres; a private Redis server (``EmbeddedRedis``)
as event bus and as Celery's broker, so the admin API's control commands get their real
answers; and an ``enqueue`` that records each id and runs the job at once with the worker's
own ``execute`` and the built-in model, so sync, streamed and compacting requests end as they
do with a worker.

Generation is steered towards real objects, or nearly every request would stop at a 404 or a
``model_not_found``: for operations with ids in their path, half the cases use ids of objects
made just before (a stored response, a conversation and its item, a webhook endpoint and its
delivery), and half the bodies that take a ``model`` name one resq serves.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
import schemathesis
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.core.failures import FailureGroup
from schemathesis.core.transport import Response
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api import create_app
from ops.embedded_redis import EmbeddedRedis
from shared import keys
from shared.bus import EventBus
from shared.settings import Settings
from shared.store import Store, make_engine
from worker.deps import RunDeps
from worker.execute import execute
from worker.providers.base import Provider
from worker.providers.builtin import BuiltinModel

EXAMPLES = 6  # per operation and generation mode (fewer where fewer distinct cases exist)
# Hypothesis's and schemathesis's seed; RESQ_FUZZ_SEED=n explores other cases.
SEED = int(os.environ.get("RESQ_FUZZ_SEED", "15"))
ADMIN_KEY = "sk-fuzz-admin"  # an admin key acts as tenant "admin" on the tenant endpoints
MODEL = "resq-builtin"
HOOK_URL = "http://127.0.0.1:9/hook"  # the discard port: a test event is refused at once
DOCUMENT_CHECKS = [status_code_conformance, content_type_conformance, response_schema_conformance]
ENVELOPE_KEYS = ["message", "type", "param", "code"]


@dataclass
class Fuzzed:
    app: Flask
    client: FlaskClient
    enqueued: list[str]


def _instant(_model: str) -> Provider:
    return BuiltinModel(sleep=lambda _s: None)


@pytest.fixture
def fuzzed(database_url: str, tmp_path: Path) -> Iterator[Fuzzed]:
    server = EmbeddedRedis(tmp_path / "redis", persist=False).start()
    try:
        settings_ = Settings.from_env(
            {
                "DATABASE_URL": database_url,
                "REDIS_URL": server.url,
                "RESQ_API_KEYS": "sk-fuzz-tenant:fuzz",
                "RESQ_ADMIN_KEYS": ADMIN_KEY,
                "RESQ_OUTBOUND_ALLOW_LOOPBACK": "true",
                "RESQ_SSE_KEEPALIVE_SECONDS": "1",
                "RESQ_SYNC_TIMEOUT_SECONDS": "10",
            }
        )
        store = Store(make_engine(database_url))
        bus = EventBus(redis.Redis.from_url(server.url), ttl_seconds=600)
        # The inline runner below is the worker: /readyz sees it by its heartbeat.
        bus.redis.zadd(keys.WORKERS, {"fuzz-worker": time.time() + 3600})
        enqueued: list[str] = []

        def run_now(response_id: str) -> None:
            enqueued.append(response_id)
            execute(response_id, RunDeps(store=store, bus=bus, provider_for=_instant))

        app = create_app(settings_, store=store, bus=bus, enqueue=run_now)
        client = app.test_client()
        client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {ADMIN_KEY}"
        yield Fuzzed(app, client, enqueued)
        bus.redis.close()
        store.engine.dispose()
    finally:
        server.stop()


# ---- real objects to aim at ---------------------------------------------------------------


def _ok(client: FlaskClient, method: str, path: str, body: Any = None) -> dict[str, Any]:
    answer = client.open(path, method=method, json=body)
    assert answer.status_code == 200, (method, path, answer.get_json())
    found: dict[str, Any] = answer.get_json()
    return found


REAL_IDS = {"response_id", "conversation_id", "item_id", "endpoint_id", "delivery_id", "model"}


def real_ids(client: FlaskClient) -> dict[str, str]:
    """Fresh objects for the path parameters (an earlier case may have deleted the last ones)."""
    endpoint = _ok(
        client,
        "POST",
        "/v1/webhook_endpoints",
        {"name": "fuzz", "url": HOOK_URL, "event_types": ["response.completed"]},
    )
    response = _ok(
        client, "POST", "/v1/responses", {"model": MODEL, "input": "hi", "background": True}
    )
    deliveries = _ok(client, "GET", f"/v1/webhook_endpoints/{endpoint['id']}/deliveries")
    conversation = _ok(
        client, "POST", "/v1/conversations", {"items": [{"role": "user", "content": "hi"}]}
    )
    items = _ok(client, "GET", f"/v1/conversations/{conversation['id']}/items")
    return {
        "response_id": response["id"],
        "conversation_id": conversation["id"],
        "item_id": items["data"][0]["id"],
        "endpoint_id": endpoint["id"],
        "delivery_id": deliveries["data"][0]["id"],
        "model": MODEL,
    }


# ---- what is wrong with an answer -------------------------------------------------------


@dataclass
class Found:
    kind: str
    operation: str
    status: int
    request: str
    answer: str
    why: str
    count: int = 1


@dataclass
class Failures:
    by_key: dict[tuple[str, ...], Found] = field(default_factory=dict)
    cases: int = 0

    def add(self, kind: str, detail: str, case: Case, response: Response, why: str = "") -> None:
        key = (case.operation.label, kind, str(response.status_code), detail)
        if key in self.by_key:
            self.by_key[key].count += 1
            return
        self.by_key[key] = Found(
            kind=f"{kind}: {detail}" if detail else kind,
            operation=case.operation.label,
            status=response.status_code,
            request=case.as_curl_command(headers={"Authorization": f"Bearer {ADMIN_KEY}"}),
            answer=response.content[:400].decode(errors="replace"),
            why=why[:600],
        )

    def report(self) -> str:
        lines = [f"{len(self.by_key)} distinct failures in {self.cases} cases:"]
        for f in self.by_key.values():
            lines += [
                f"- {f.operation} -> {f.status} ({f.kind}) x{f.count}",
                f"    {f.request}",
                f"    {f.answer}",
                *([f"    {f.why}"] if f.why else []),
            ]
        return "\n".join(lines)


def envelope_problem(response: Response) -> str | None:
    """Why an error answer is not exactly ``{"error": {message, type, param, code}}`` as JSON."""
    content_type = ",".join(response.headers.get("content-type", []))
    if content_type.split(";")[0].strip() != "application/json":
        return f"content type {content_type!r}"
    try:
        body = json.loads(response.content)
    except ValueError:
        return "body is not JSON"
    if not isinstance(body, dict) or list(body) != ["error"] or not isinstance(body["error"], dict):
        return "not an object with exactly one key, 'error'"
    error = body["error"]
    if sorted(error) != sorted(ENVELOPE_KEYS):
        return f"error keys {sorted(error)}"
    if not isinstance(error["message"], str) or not isinstance(error["type"], str):
        return "message or type is not a string"
    if not all(error[k] is None or isinstance(error[k], str) for k in ("param", "code")):
        return "param or code is neither a string nor null"
    return None


def check(case: Case, response: Response, failures: Failures, queued: bool) -> None:
    failures.cases += 1
    if queued and response.status_code >= 400:
        failures.add("a refused request queued a job", "", case, response)
    if response.status_code >= 500:
        code = None
        with contextlib.suppress(ValueError, KeyError, TypeError):
            code = json.loads(response.content)["error"]["code"]
        failures.add("5xx", str(code), case, response)
    if response.status_code >= 400:
        problem = envelope_problem(response)
        if problem is not None:
            failures.add("not the error envelope", problem, case, response)
    try:
        case.validate_response(response, checks=DOCUMENT_CHECKS)
    except FailureGroup as group:
        for failure in group.exceptions:
            failures.add(
                "does not fit the document", failure.title, case, response, failure.message
            )


# ---- the run ------------------------------------------------------------------------------


def _declared(operation: Any) -> dict[str, Any]:
    declared: dict[str, Any] = operation.schema.raw_schema["paths"][operation.path]
    return declared[operation.method.lower()]


def _takes_model(operation: Any) -> bool:
    """Whether the operation's JSON body has a ``model`` property (per the document)."""
    body = _declared(operation).get("requestBody", {}).get("content", {})
    name = body.get("application/json", {}).get("schema", {}).get("$ref", "").rsplit("/", 1)[-1]
    schemas = operation.schema.raw_schema["components"]["schemas"]
    return "model" in schemas.get(name, {}).get("properties", {})


def _breakable(operation: Any) -> bool:
    """Whether negative generation has something to break: a body, a query parameter or a
    path parameter narrower than any string (an operation without one makes it impossible)."""
    parameters = _declared(operation).get("parameters", [])
    any_string = {"type": "string"}
    return "requestBody" in _declared(operation) or any(
        p["in"] != "path" or p["schema"] != any_string for p in parameters
    )


def fuzz_operation(
    operation: Any, mode: GenerationMode, fuzzed: Fuzzed, failures: Failures
) -> None:
    strategy = operation.as_strategy(generation_mode=mode)
    names = {p.name for p in operation.path_parameters}
    # With its path fixed, a negative case needs something else to break.
    others = len(operation.query) or len(operation.body) or mode is GenerationMode.POSITIVE
    if names & REAL_IDS and others:
        known = {k: v for k, v in real_ids(fuzzed.client).items() if k in names}
        strategy = st.one_of(strategy, operation.as_strategy(mode, path_parameters=known))
    takes_model = _takes_model(operation)
    sent: set[str] = set()

    @seed(SEED)
    @settings(
        max_examples=EXAMPLES,
        database=None,
        deadline=None,
        phases=[Phase.generate],  # nothing raises, so nothing to shrink
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.filter_too_much,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )
    @given(case=strategy, served_model=st.booleans() if takes_model else st.just(False))
    def one(case: Case, served_model: bool) -> None:
        if takes_model and served_model and isinstance(case.body, dict):
            case.body["model"] = MODEL
        request = case.as_curl_command()
        if request not in sent:  # generation repeats itself on small input spaces
            sent.add(request)
            queued = len(fuzzed.enqueued)
            response = case.call()
            check(case, response, failures, queued=len(fuzzed.enqueued) > queued)

    one()


def test_fuzz_no_5xx_and_every_error_is_the_envelope(fuzzed: Fuzzed) -> None:
    config = schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "headers": {"Authorization": f"Bearer {ADMIN_KEY}"},
            # Authentication is not what this fuzzes (tests/api/test_app.py does): every case
            # carries the admin key, so every case reaches its route.
            "generation": {"with-security-parameters": False},
        }
    )
    schema = schemathesis.openapi.from_wsgi("/openapi.json", fuzzed.app, config=config)
    failures = Failures()
    started = time.monotonic()
    for result in schema.get_all_operations():
        operation = result.ok()
        modes = [GenerationMode.POSITIVE]
        if _breakable(operation):
            modes.append(GenerationMode.NEGATIVE)
        for mode in modes:
            fuzz_operation(operation, mode, fuzzed, failures)
    elapsed = time.monotonic() - started

    assert fuzzed.client.get("/healthz").get_json() == {"status": "ok"}
    ready = fuzzed.client.get("/readyz")
    assert ready.status_code == 200, ready.get_json()
    if failures.by_key:
        pytest.fail(f"{failures.report()}\n({elapsed:.0f} s)", pytrace=False)
    assert failures.cases >= 200, failures.cases  # a change that empties the run fails here
    print(f"\n[fuzz] {failures.cases} cases in {elapsed:.1f} s: no 5xx, every error the envelope")
