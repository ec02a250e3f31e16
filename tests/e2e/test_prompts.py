"""Prompt templates end to end: prompts made over HTTP (the SDK has no prompts API), responses
run with ``prompt`` through the openai SDK against the real stack; the built-in model's
``show_context`` proves what a version rendered."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.e2e.conftest import KEY_B, Stack
from tests.e2e.helpers import TERMINAL, check, create_raw, script, wait_status
from tests.fakes.receiver import Behaviour, Receiver, running_receiver

pytestmark = pytest.mark.e2e

SHOW = script(show_context=True)
VERSION_1 = {
    "model": "resq-builtin",
    "instructions": "You help {{ customer }}.",
    "messages": [
        {
            "role": "user",
            "content": "Order {{ order_id }}{% if photo is defined %}, see {{ photo }}{% endif %}.",
        }
    ],
    "variables": {
        "type": "object",
        "properties": {
            "customer": {"type": "string"},
            "order_id": {"type": "string", "pattern": "^[A-Z]-[0-9]+$"},
            "photo": {"type": "object"},
        },
        "required": ["customer", "order_id"],
    },
    "temperature": 0.3,
}
VERSION_2 = {**VERSION_1, "instructions": "You answer {{ customer }} briefly.", "temperature": 0.9}
ADA = {"customer": "Ada", "order_id": "A-1"}


def make_prompt(stack: Stack, key: str | None = None) -> str:
    with stack.http(*(key,) if key else ()) as http:
        made = http.post(
            "/v1/prompts", json={"name": f"support-{uuid.uuid4().hex[:8]}", "version": VERSION_1}
        )
        assert made.status_code == 200, made.text
        pid: str = made.json()["id"]
        two = http.post(f"/v1/prompts/{pid}/versions", json=VERSION_2)
        assert two.status_code == 200 and two.json()["version"] == "2", two.text
    return pid


@pytest.fixture(scope="module")
def prompt_id(stack: Stack) -> str:
    return make_prompt(stack)


def test_runs_the_default_version_then_an_explicit_one(
    stack: Stack, client: openai.OpenAI, prompt_id: str
) -> None:
    raw = create_raw(client, prompt={"id": prompt_id, "variables": ADA}, input=SHOW)
    first = check(raw)
    assert first.output_text == (
        "instructions: - | developer: You help Ada. | user: Order A-1. | user: " + SHOW
    )
    assert first.prompt is not None and first.prompt.version == "1"
    assert first.temperature == 0.3 and first.model == "resq-builtin"
    assert isinstance(first.instructions, list) and len(first.instructions) == 2

    with stack.http() as http:
        http.post(f"/v1/prompts/{prompt_id}", json={"default_version": "2"}).raise_for_status()
    second = check(create_raw(client, prompt={"id": prompt_id, "variables": ADA}, input=SHOW))
    assert second.output_text.startswith("instructions: - | developer: You answer Ada briefly.")
    assert second.prompt is not None and second.prompt.version == "2"
    assert second.temperature == 0.9
    pinned = check(
        create_raw(client, prompt={"id": prompt_id, "version": "1", "variables": ADA}, input=SHOW)
    )
    assert pinned.output_text.startswith("instructions: - | developer: You help Ada.")
    with stack.http() as http:
        http.post(f"/v1/prompts/{prompt_id}", json={"default_version": "1"}).raise_for_status()


def test_an_image_variable_lands_as_a_part(client: openai.OpenAI, prompt_id: str) -> None:
    photo = {"type": "input_image", "image_url": "https://images.example.com/parcel.jpg"}
    raw = create_raw(
        client, prompt={"id": prompt_id, "variables": {**ADA, "photo": photo}}, input=SHOW
    )
    parsed = check(raw)
    assert "user: Order A-1, see . [image https://images.example.com/parcel.jpg]" in (
        parsed.output_text
    )
    content = raw["instructions"][1]["content"]
    assert content[1] == {**photo, "detail": "auto"}
    assert content[0] == {"type": "input_text", "text": "Order A-1, see "}


def test_the_request_wins_where_it_sets_a_field(client: openai.OpenAI, prompt_id: str) -> None:
    raw = create_raw(
        client,
        prompt={"id": prompt_id, "variables": ADA},
        input=SHOW,
        temperature=0.1,
        instructions="Own rules.",
    )
    parsed = check(raw)
    assert parsed.temperature == 0.1
    assert parsed.output_text.startswith(
        "instructions: - | developer: Own rules. | user: Order A-1."
    )


def test_streamed_with_a_prompt(client: openai.OpenAI, prompt_id: str) -> None:
    with client.responses.stream(
        prompt={"id": prompt_id, "variables": ADA}, input=SHOW, model="resq-builtin"
    ) as stream:
        final = stream.get_final_response()
    assert final.output_text.startswith("instructions: - | developer: You help Ada.")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from running_receiver()


def test_background_with_a_webhook(stack: Stack, receiver: Receiver) -> None:
    client = stack.client(KEY_B)
    pid = make_prompt(stack, KEY_B)
    url = receiver.behave("/prompted", Behaviour())
    hook = client.webhooks.create(name="p", url=url, event_types=["response.completed"])  # type: ignore[arg-type]
    try:
        raw = create_raw(client, prompt={"id": pid, "variables": ADA}, input=SHOW, background=True)
        assert raw["status"] == "queued" and raw["prompt"]["id"] == pid
        done = check(wait_status(client, raw["id"], TERMINAL))
        assert done.output_text.startswith("instructions: - | developer: You help Ada.")
        (got,) = receiver.wait_for("/prompted", 1)
        event = client.webhooks.unwrap(got.body, got.headers, secret=hook.signing_secret)
        assert event.data.id == raw["id"]  # type: ignore[union-attr]
    finally:
        client.webhooks.delete(hook.id)


@pytest.mark.parametrize(
    ("prompt", "error", "status", "param", "code"),
    [
        ({"id": "pmpt_nope"}, openai.NotFoundError, 404, "prompt.id", None),
        ({"version": "7"}, openai.NotFoundError, 404, "prompt.version", None),
        (
            {"variables": {"customer": "Ada"}},
            openai.BadRequestError,
            400,
            "prompt.variables.order_id",
            "missing_required_parameter",
        ),
        (
            {"variables": {**ADA, "coupon": "X"}},
            openai.BadRequestError,
            400,
            "prompt.variables.coupon",
            "unknown_parameter",
        ),
        (
            {"variables": {**ADA, "customer": ["Ada"]}},
            openai.BadRequestError,
            400,
            "prompt.variables.customer",
            "invalid_type",
        ),
        (
            {"variables": {**ADA, "order_id": "one"}},
            openai.BadRequestError,
            400,
            "prompt.variables.order_id",
            "invalid_value",
        ),
    ],
)
def test_errors_through_the_sdk(
    stack: Stack,
    client: openai.OpenAI,
    prompt_id: str,
    prompt: dict[str, Any],
    error: type[openai.APIStatusError],
    status: int,
    param: str,
    code: str | None,
) -> None:
    before = len(stack.redis().keys("resq:events:*"))
    with pytest.raises(error) as caught:
        client.responses.create(prompt={"id": prompt_id, **prompt}, input="x", background=True)  # type: ignore[arg-type]
    body = caught.value.body
    assert caught.value.status_code == status and isinstance(body, dict)
    assert body["param"] == param, body
    if code is not None:
        assert body["code"] == code, body
    assert len(stack.redis().keys("resq:events:*")) == before  # nothing was queued


@pytest.mark.parametrize(
    ("template", "code"),
    [
        ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "invalid_prompt_template"),
        ("{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}", None),
        ("{{ 'x' * 1000000000 }}", None),
    ],
)
def test_a_sandbox_escape_or_a_runaway_template_is_a_400(
    stack: Stack, client: openai.OpenAI, template: str, code: str | None
) -> None:
    with stack.http() as http:
        made = http.post(
            "/v1/prompts",
            json={
                "name": f"evil-{uuid.uuid4().hex[:8]}",
                "version": {**VERSION_1, "instructions": template},
            },
        )
    assert made.status_code == 200, made.text  # it compiles: the harm is in running it
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(prompt={"id": made.json()["id"], "variables": ADA}, input="x")
    body = caught.value.body
    assert isinstance(body, dict) and body["param"] == "prompt.instructions", body
    if code is not None:
        assert body["code"] == code


def test_a_template_that_does_not_compile_is_refused_when_saved(stack: Stack) -> None:
    with stack.http() as http:
        made = http.post(
            "/v1/prompts",
            json={"name": "broken", "version": {**VERSION_1, "instructions": "{% if %}"}},
        )
    assert made.status_code == 400
    error = made.json()["error"]
    assert (error["param"], error["code"]) == ("version.instructions", "invalid_prompt_template")
