"""Every error case: status + error.type + error.code + error.param, never HTML."""

from __future__ import annotations

import json
import re
import socket
from typing import Any

import openai
import pytest

from tests.e2e.conftest import KEY_A, Stack
from tests.e2e.helpers import assert_error, assert_http_error, script

pytestmark = pytest.mark.e2e

BASE = {"model": "resq-builtin", "input": "hi"}

CASES: list[tuple[str, dict[str, Any], str, str]] = [
    ("missing model", {"input": "hi"}, "missing_required_parameter", "model"),
    ("missing input", {"model": "resq-builtin"}, "missing_required_parameter", "input"),
    ("model wrong type", {**BASE, "model": 5}, "invalid_type", "model"),
    ("input wrong type", {**BASE, "input": 5}, "invalid_type", "input"),
    ("temperature wrong type", {**BASE, "temperature": "hot"}, "invalid_type", "temperature"),
    (
        "temperature too high",
        {**BASE, "temperature": 2.5},
        "decimal_above_max_value",
        "temperature",
    ),
    (
        "temperature too low",
        {**BASE, "temperature": -0.1},
        "decimal_below_min_value",
        "temperature",
    ),
    ("top_p too high", {**BASE, "top_p": 1.5}, "decimal_above_max_value", "top_p"),
    (
        "max_output_tokens too low",
        {**BASE, "max_output_tokens": 10},
        "integer_below_min_value",
        "max_output_tokens",
    ),
    (
        "metadata too many keys",
        {**BASE, "metadata": {f"k{i}": "v" for i in range(17)}},
        "object_above_max_properties",
        "metadata",
    ),
    (
        "metadata key too long",
        {**BASE, "metadata": {"k" * 65: "v"}},
        "property_name_above_max_length",
        "metadata." + "k" * 65,
    ),
    (
        "metadata value too long",
        {**BASE, "metadata": {"k": "v" * 513}},
        "string_above_max_length",
        "metadata.k",
    ),
    ("metadata value not a string", {**BASE, "metadata": {"k": 1}}, "invalid_type", "metadata.k"),
    (
        "background without store",
        {**BASE, "background": True, "store": False},
        "invalid_value",
        "store",
    ),
    ("bad enum", {**BASE, "truncation": "sometimes"}, "invalid_value", "truncation"),
    ("stream wrong type", {**BASE, "stream": "yes"}, "invalid_type", "stream"),
    (
        "message without role",
        {**BASE, "input": [{"content": "x"}]},
        "missing_required_parameter",
        "input[0].role",
    ),
    ("unknown model", {**BASE, "model": "no-such-model"}, "model_not_found", "model"),
]


@pytest.mark.parametrize(
    ("body", "code", "param"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_create_validation(stack: Stack, body: dict[str, Any], code: str, param: str) -> None:
    with stack.http() as http:
        resp = http.post("/v1/responses", json=body)
    assert_http_error(resp, 400, code, param)


def test_sdk_raises_bad_request_with_fields(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="resq-builtin", input="hi", max_output_tokens=10)
    assert_error(info.value, 400, "integer_below_min_value", "max_output_tokens")
    assert info.value.code == "integer_below_min_value"
    assert info.value.param == "max_output_tokens"
    assert "Expected a value >= 16, but got 10 instead." in info.value.message


def test_unknown_top_level_keys_are_accepted(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model="resq-builtin", input="hi", extra_body={"some_future_field": {"x": 1}}
    )
    assert response.status == "completed"


def test_invalid_json_body(stack: Stack) -> None:
    with stack.http() as http:
        resp = http.post(
            "/v1/responses", content=b"{not json", headers={"Content-Type": "application/json"}
        )
    assert_http_error(resp, 400, "invalid_json", None)


def test_unknown_ids_are_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.responses.retrieve("resp_doesnotexist")
    assert_error(info.value, 404, None, "response_id")
    assert "resp_doesnotexist" in info.value.message


def test_unknown_route_and_wrong_method_are_json(stack: Stack) -> None:
    with stack.http() as http:
        assert_http_error(http.get("/v1/nothing-here"), 404, "unknown_url", None)
        assert_http_error(http.put("/v1/responses", json={}), 405, "method_not_allowed", None)
        assert_http_error(http.get("/nothing"), 404, "unknown_url", None)


@pytest.mark.parametrize(
    ("key", "code"), [(None, "missing_api_key"), ("sk-wrong", "invalid_api_key")]
)
def test_authentication(stack: Stack, key: str | None, code: str) -> None:
    with stack.http(key) as http:
        resp = http.post("/v1/responses", json=BASE)
    assert_http_error(resp, 401, code, None, type_="authentication_error")
    assert KEY_A not in resp.text


def test_sdk_authentication_error(stack: Stack) -> None:
    with pytest.raises(openai.AuthenticationError) as info:
        stack.client("sk-nope").responses.create(**BASE)
    assert_error(info.value, 401, "invalid_api_key", None, type_="authentication_error")


def test_error_after_enqueue_says_do_not_retry(stack: Stack) -> None:
    """A sync request that outlives RESQ_SYNC_TIMEOUT_SECONDS: the job exists, so the SDK must
    not re-POST it."""
    with stack.http() as http:
        resp = http.post(
            "/v1/responses",
            json={"model": "resq-builtin", "input": script(words=400, delay_ms=25)},
        )
    assert_http_error(resp, 500, "server_error", None, type_="server_error")
    assert resp.headers["x-should-retry"] == "false"


def test_empty_json_bodies_on_cancel_and_delete(stack: Stack) -> None:
    client = stack.client()
    created = client.responses.create(model="resq-builtin", input="x", background=True)
    with stack.http() as http:
        headers = {"Content-Type": "application/json", "Content-Length": "0"}
        assert http.post(f"/v1/responses/{created.id}/cancel", headers=headers).status_code == 200
        assert (
            http.request("DELETE", f"/v1/responses/{created.id}", headers=headers).status_code
            == 200
        )


def raw_request(stack: Stack, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send bytes as they are (no client library would send these) and read the answer."""
    host, port = stack.root_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
            if b"\r\n\r\n" in data:
                head, _, body = data.partition(b"\r\n\r\n")
                length = re.search(rb"(?i)content-length: *(\d+)", head)
                if length and len(body) >= int(length.group(1)):
                    break
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


@pytest.mark.parametrize(
    ("case", "request_bytes", "status"),
    [
        ("request line over 4094 bytes",
         b"GET /v1/responses/" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        ("a header over 8190 bytes",
         b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 431),
        ("more than 100 headers",
         b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
         + b"".join(b"X-H%d: v\r\n" % i for i in range(120)) + b"\r\n", 431),
        ("a NUL in a header", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", 400),
        ("a negative Content-Length",
         b"POST /v1/responses HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n", 400),
    ],
)  # fmt: skip
def test_errors_gunicorn_answers_itself_are_json(
    stack: Stack, case: str, request_bytes: bytes, status: int
) -> None:
    got, headers, body = raw_request(stack, request_bytes)
    assert got == status, (case, body[:200])
    assert headers["content-type"] == "application/json"
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["message"]


def test_options_is_a_json_405(stack: Stack) -> None:
    with stack.http() as http:
        resp = http.request("OPTIONS", "/v1/responses")
    assert resp.status_code == 405 and resp.headers["content-type"] == "application/json"
    assert resp.json()["error"]["code"] == "method_not_allowed"
