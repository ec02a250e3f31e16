"""Shared checks for end-to-end tests."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import openai
from openai.types.responses import Response

from tests.compat import (
    assert_all_spec_fields,
    assert_sdk_response,
    assert_valid_response,
)

TERMINAL = {"completed", "failed", "cancelled", "incomplete"}


def script(**kwargs: Any) -> str:
    """A user message that scripts the built-in model (README, "The built-in model")."""
    return "#resq " + json.dumps(kwargs)


def check(raw: dict[str, Any]) -> Response:
    """Every Response the API returns: all spec fields, valid Open Responses, lossless SDK parse."""
    assert_all_spec_fields(raw)
    assert_valid_response(raw)
    return assert_sdk_response(raw)


def raw_json(resp: Any) -> dict[str, Any]:
    """The JSON body of a ``with_raw_response`` call."""
    body: dict[str, Any] = json.loads(resp.http_response.content)
    return body


def create_raw(client: openai.OpenAI, **kwargs: Any) -> dict[str, Any]:
    return raw_json(client.responses.with_raw_response.create(**kwargs))


def retrieve_raw(client: openai.OpenAI, response_id: str) -> dict[str, Any]:
    return raw_json(client.responses.with_raw_response.retrieve(response_id))


def wait_status(
    client: openai.OpenAI, response_id: str, statuses: set[str], timeout: float = 20
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        raw = retrieve_raw(client, response_id)
        if raw["status"] in statuses:
            return raw
        assert time.monotonic() < deadline, f"{response_id} stuck in {raw['status']}"
        time.sleep(0.05)


def assert_error(
    exc: openai.APIStatusError,
    status: int,
    code: str | None,
    param: str | None,
    type_: str = "invalid_request_error",
) -> None:
    assert exc.status_code == status, exc.response.text
    body = exc.response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == type_
    assert body["error"]["code"] == code
    assert body["error"]["param"] == param
    assert body["error"]["message"]
    assert exc.response.headers.get("x-request-id", "").startswith("req_")


def assert_http_error(
    resp: httpx.Response,
    status: int,
    code: str | None,
    param: str | None,
    type_: str = "invalid_request_error",
) -> None:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    err = resp.json()["error"]
    assert (err["type"], err["code"], err["param"]) == (type_, code, param)
    assert resp.headers.get("x-request-id", "").startswith("req_")


def output_text(raw: dict[str, Any]) -> str:
    """The text of a raw Response's message output."""
    return "".join(
        part["text"]
        for item in raw["output"]
        if item["type"] == "message"
        for part in item["content"]
        if part["type"] == "output_text"
    )
