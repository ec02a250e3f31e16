"""A request that asks a route for more than its model accepts, or sends media resq cannot pass
on, is a 400 at create (status, code, param) and nothing is stored or queued."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from shared.store import Store
from tests.api.factory import build_app, store_of

MODELS = """
[[route]]
match = "o-reasoner"
provider = "openai_responses"
base_url = "https://api.openai.com/v1"
accepts = { temperature = false, top_p = false, tools = false, images = false }

[[route]]
match = "local-llama"
provider = "vllm"
base_url = "http://127.0.0.1:9/v1"

[[route]]
match = "claude-x"
provider = "anthropic"
"""
PDF = {"type": "input_file", "filename": "a.pdf", "file_data": "JVBERi0xLjQ="}
IMAGE = {"type": "input_image", "image_url": "https://example.com/cat.png"}


@pytest.fixture
def setup(tmp_path: Path, sent: list[str]) -> tuple[FlaskClient, Store]:
    models = tmp_path / "models.toml"
    models.write_text(MODELS)
    app = build_app(tmp_path, env={"RESQ_MODELS_FILE": str(models)}, enqueue=sent.append)
    return app.test_client(), store_of(app)


def user(*parts: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "input_text", "text": "look"}, *parts]}]


@pytest.mark.parametrize(
    ("body", "param", "named"),
    [
        (
            {"model": "o-reasoner", "input": "hi", "temperature": 0.2},
            "temperature",
            "'temperature'",
        ),
        ({"model": "o-reasoner", "input": "hi", "top_p": 0.5}, "top_p", "'top_p'"),
        (
            {"model": "o-reasoner", "input": "hi", "tools": [{"type": "function", "name": "f"}]},
            "tools",
            "'tools'",
        ),
        ({"model": "o-reasoner", "input": user(IMAGE)}, "input", "image input"),
        ({"model": "local-llama", "input": user(PDF)}, "input", "file input"),
    ],
)
def test_what_a_route_does_not_accept_is_a_400_naming_the_route(
    setup: tuple[FlaskClient, Store],
    sent: list[str],
    body: dict[str, Any],
    param: str,
    named: str,
) -> None:
    client, store = setup
    resp = client.post("/v1/responses", json={**body, "background": True})
    assert resp.status_code == 400, resp.get_json()
    error = resp.get_json()["error"]
    assert error["code"] == "unsupported_parameter" and error["param"] == param
    assert error["type"] == "invalid_request_error"
    assert named in error["message"] and f"route '{body['model']}'" in error["message"]
    assert sent == [] and store.count_responses() == 0


def test_what_a_route_accepts_is_queued(setup: tuple[FlaskClient, Store], sent: list[str]) -> None:
    client, _ = setup
    for body in (
        {"model": "o-reasoner", "input": "hi", "reasoning": {"effort": "high"}},
        {"model": "claude-x", "input": user(IMAGE, PDF), "temperature": 0.3},
        {"model": "local-llama", "input": user(IMAGE)},
    ):
        resp = client.post("/v1/responses", json={**body, "background": True})
        assert resp.status_code == 200, resp.get_json()
    assert len(sent) == 3


@pytest.mark.parametrize(
    ("part", "param", "code"),
    [
        (
            {"type": "input_file", "file_id": "file-1"},
            "input[0].content[1].file_id",
            "unsupported_parameter",
        ),
        (
            {"type": "input_image", "file_id": "file-1"},
            "input[0].content[1].file_id",
            "unsupported_parameter",
        ),
        (
            {"type": "input_image", "image_url": "ftp://x/y.png"},
            "input[0].content[1].image_url",
            "invalid_value",
        ),
        (
            {"type": "input_file", "filename": "a.pdf"},
            "input[0].content[1]",
            "missing_required_parameter",
        ),
        (
            {"type": "input_file", "file_url": "http://169.254.169.254/latest/meta-data"},
            "input[0].content[1].file_url",
            "url_not_allowed",
        ),
        (
            {"type": "input_file", "file_url": "http://127.0.0.1:8080/secret.pdf"},
            "input[0].content[1].file_url",
            "url_not_allowed",
        ),
    ],
)
def test_media_resq_cannot_pass_on_is_a_400(
    setup: tuple[FlaskClient, Store], sent: list[str], part: dict[str, Any], param: str, code: str
) -> None:
    client, _ = setup
    resp = client.post("/v1/responses", json={"model": "claude-x", "input": user(part)})
    assert resp.status_code == 400, resp.get_json()
    error = resp.get_json()["error"]
    assert (error["param"], error["code"]) == (param, code)
    assert sent == []


def test_a_broken_json_schema_is_a_400(setup: tuple[FlaskClient, Store], sent: list[str]) -> None:
    client, _ = setup
    fmt = {
        "type": "json_schema",
        "name": "x",
        "schema": {"type": "object", "properties": {"a": {"type": 5}}},
    }
    resp = client.post(
        "/v1/responses", json={"model": "claude-x", "input": "hi", "text": {"format": fmt}}
    )
    assert resp.status_code == 400, resp.get_json()
    error = resp.get_json()["error"]
    assert (error["param"], error["code"]) == ("text.format.schema", "invalid_json_schema")
    assert "properties/a/type" in error["message"]
    assert sent == []
