"""The prompts API and ``prompt`` on create through the Flask app (fakeredis, a SQLite file;
tests/e2e/test_prompts.py runs them through the real stack and the openai SDK): every error is
a 400/404 with OpenAI's body, the right code and param, and nothing is stored or queued."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from shared.store import Store
from tests.api.factory import store_of

VERSION = {
    "model": "resq-builtin",
    "instructions": "You help {{ customer }}.",
    "messages": [{"role": "user", "content": "My order is {{ order_id }}."}],
    "variables": {
        "type": "object",
        "properties": {"customer": {"type": "string"}, "order_id": {"type": "string"}},
        "required": ["customer", "order_id"],
    },
    "temperature": 0.2,
}


def create_prompt(client: FlaskClient, **version: Any) -> dict[str, Any]:
    resp = client.post("/v1/prompts", json={"name": "support", "version": {**VERSION, **version}})
    assert resp.status_code == 200, resp.get_json()
    body: dict[str, Any] = resp.get_json()
    return body


def error_of(resp: Any, status: int = 400) -> dict[str, Any]:
    assert resp.status_code == status, resp.get_json()
    error: dict[str, Any] = resp.get_json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def test_create_list_update_and_versions(client: FlaskClient) -> None:
    made = create_prompt(client)
    assert made["id"].startswith("pmpt_") and made["object"] == "prompt"
    assert (made["default_version"], made["latest_version"]) == ("1", "1")
    pid = made["id"]
    two = client.post(f"/v1/prompts/{pid}/versions", json={**VERSION, "temperature": 0.9})
    assert two.status_code == 200, two.get_json()
    assert two.get_json()["version"] == "2" and two.get_json()["object"] == "prompt.version"
    listed = client.get(f"/v1/prompts/{pid}/versions").get_json()
    assert [v["version"] for v in listed["data"]] == ["2", "1"]
    one = client.get(f"/v1/prompts/{pid}/versions/1").get_json()
    assert one["temperature"] == 0.2 and one["instructions"] == VERSION["instructions"]
    updated = client.post(f"/v1/prompts/{pid}", json={"default_version": "2", "description": "d"})
    assert updated.get_json()["default_version"] == "2"
    assert client.get("/v1/prompts").get_json()["data"][0]["id"] == pid
    assert client.delete(f"/v1/prompts/{pid}").get_json()["deleted"] is True
    assert error_of(client.get(f"/v1/prompts/{pid}"), 404)["param"] == "prompt_id"


@pytest.mark.parametrize(
    ("version", "param", "code"),
    [
        ({"instructions": "Hi {{ name "}, "version.instructions", "invalid_prompt_template"),
        (
            {"messages": [{"role": "user", "content": "{% for %}"}]},
            "version.messages[0].content",
            "invalid_prompt_template",
        ),
        ({"model": "no-such-model"}, "version.model", "model_not_found"),
        ({"temperature": 7}, "version.temperature", "decimal_above_max_value"),
        ({"variables": {"type": "nonsense"}}, "version.variables", "invalid_json_schema"),
        (
            {"text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": 5}}}},
            "version.text.format.schema",
            "invalid_json_schema",
        ),
    ],
)
def test_a_bad_version_is_refused_when_saved(
    client: FlaskClient, app: Any, version: dict[str, Any], param: str, code: str
) -> None:
    resp = client.post("/v1/prompts", json={"name": "p", "version": {**VERSION, **version}})
    error = error_of(resp)
    assert (error["param"], error["code"]) == (param, code), error
    assert client.get("/v1/prompts").get_json()["data"] == []


def test_prompt_names_are_unique(client: FlaskClient) -> None:
    create_prompt(client)
    error = error_of(client.post("/v1/prompts", json={"name": "support", "version": VERSION}))
    assert error["param"] == "name"


def run(client: FlaskClient, **body: Any) -> Any:
    return client.post("/v1/responses", json={"background": True, **body})


def test_a_prompt_on_create_becomes_instructions_settings_and_echo(
    client: FlaskClient, app: Any, sent: list[str]
) -> None:
    pid = create_prompt(client)["id"]
    resp = run(
        client,
        prompt={"id": pid, "variables": {"customer": "Ada", "order_id": "A-1"}},
        input="Where is it?",
    )
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    assert body["model"] == "resq-builtin" and body["temperature"] == 0.2
    assert body["prompt"] == {
        "id": pid,
        "version": "1",
        "variables": {"customer": "Ada", "order_id": "A-1"},
    }
    assert body["instructions"] == [
        {"type": "message", "role": "developer", "content": "You help Ada."},
        {"type": "message", "role": "user", "content": "My order is A-1."},
    ]
    assert "validation" not in body and len(sent) == 1
    # The request's own value wins.
    own = run(
        client,
        prompt={"id": pid, "version": "1", "variables": {"customer": "B", "order_id": "2"}},
        input="x",
        temperature=0.7,
        instructions="Be curt.",
    ).get_json()
    assert own["temperature"] == 0.7
    assert own["instructions"][0] == {"type": "message", "role": "developer", "content": "Be curt."}
    assert own["instructions"][1]["content"] == "My order is 2."


@pytest.mark.parametrize(
    ("prompt", "status", "param", "code"),
    [
        ({"id": "pmpt_missing"}, 404, "prompt.id", None),
        ({"version": "9"}, 404, "prompt.version", None),
        ({"version": "first"}, 400, "prompt.version", "invalid_value"),
        (
            {"variables": {"customer": "Ada"}},
            400,
            "prompt.variables.order_id",
            "missing_required_parameter",
        ),
        (
            {"variables": {"customer": "Ada", "order_id": "1", "extra": "x"}},
            400,
            "prompt.variables.extra",
            "unknown_parameter",
        ),
        (
            {"variables": {"customer": 5, "order_id": "1"}},
            400,
            "prompt.variables.customer",
            "invalid_type",
        ),
        ({"id": 5}, 400, "prompt.id", "invalid_type"),
    ],
)
def test_prompt_errors_on_create(
    client: FlaskClient,
    app: Any,
    sent: list[str],
    prompt: dict[str, Any],
    status: int,
    param: str,
    code: str | None,
) -> None:
    pid = create_prompt(client)["id"]
    resp = run(client, prompt={"id": pid, **prompt}, input="x")
    error = error_of(resp, status)
    assert error["param"] == param, error
    if code is not None:
        assert error["code"] == code, error
    assert sent == [] and store_of(app).count_responses() == 0


def test_a_sandbox_escape_is_a_400_never_a_500(
    client: FlaskClient, app: Any, sent: list[str]
) -> None:
    made = create_prompt(client, instructions="{{ ''.__class__.__mro__[1].__subclasses__() }}")
    resp = run(
        client,
        prompt={"id": made["id"], "variables": {"customer": "a", "order_id": "b"}},
        input="x",
    )
    error = error_of(resp)
    assert error["code"] == "invalid_prompt_template" and error["param"] == "prompt.instructions"
    assert sent == []


def test_model_may_come_from_the_prompt_or_must_come_from_somewhere(
    client: FlaskClient, sent: list[str]
) -> None:
    version = {k: v for k, v in VERSION.items() if k != "model"}
    resp = client.post("/v1/prompts", json={"name": "nomodel", "version": version})
    pid = resp.get_json()["id"]
    variables = {"customer": "a", "order_id": "b"}
    error = error_of(run(client, prompt={"id": pid, "variables": variables}, input="x"))
    assert (error["param"], error["code"]) == ("model", "missing_required_parameter")
    ok = run(client, prompt={"id": pid, "variables": variables}, input="x", model="resq-builtin")
    assert ok.status_code == 200


def test_other_tenants_prompts_are_not_found(make_app: Any, sent: list[str]) -> None:
    app = make_app(env={"RESQ_API_KEYS": "sk-a:a,sk-b:b"})
    client = app.test_client()
    a = {"Authorization": "Bearer sk-a"}
    b = {"Authorization": "Bearer sk-b"}
    pid = client.post("/v1/prompts", json={"name": "p", "version": VERSION}, headers=a).get_json()[
        "id"
    ]
    assert client.get(f"/v1/prompts/{pid}", headers=b).status_code == 404
    resp = client.post("/v1/responses", json={"prompt": {"id": pid}, "input": "x"}, headers=b)
    assert error_of(resp, 404)["param"] == "prompt.id"


def test_input_tokens_counts_the_rendered_prompt(client: FlaskClient, store: Store) -> None:
    pid = create_prompt(client)["id"]
    variables = {"customer": "Ada Lovelace", "order_id": "A-1"}
    with_prompt = client.post(
        "/v1/responses/input_tokens",
        json={"prompt": {"id": pid, "variables": variables}, "input": "hello there"},
    ).get_json()
    plain = client.post(
        "/v1/responses/input_tokens", json={"model": "resq-builtin", "input": "hello there"}
    ).get_json()
    # The built-in model counts a token per word: "You help Ada Lovelace." "My order is A-1."
    assert with_prompt["input_tokens"] == plain["input_tokens"] + 8


def test_admin_shows_the_prompt_and_version_a_response_ran(client: FlaskClient) -> None:
    pid = create_prompt(client)["id"]
    variables = {"customer": "Ada", "order_id": "A-1"}
    rid = run(client, prompt={"id": pid, "variables": variables}, input="x").get_json()["id"]
    plain = run(client, model="resq-builtin", input="x").get_json()["id"]
    detail = client.get(f"/v1/admin/responses/{rid}").get_json()
    assert detail["prompt"] == f"{pid}@1"
    listed = {r["id"]: r["prompt"] for r in client.get("/v1/admin/responses").get_json()["data"]}
    assert listed == {rid: f"{pid}@1", plain: None}
