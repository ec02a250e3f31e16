"""worker.mcp_client against a real MCP server (tests.fakes.mcp_server) in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import MCPError

from ops.embedded_redis import free_port
from tests.fakes.mcp_server import McpServerProcess
from worker import mcp_client
from worker.mcp_client import McpCancelled, McpError

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "test-token-123"


def call(
    url: str,
    name: str,
    arguments: dict[str, Any] | None = None,
    *,
    headers: dict[str, str] | None = None,
    timeout: float = 10,
    cancelled: Callable[[], bool] | None = None,
) -> str:
    return mcp_client.call_tool(
        url, name, arguments or {}, headers=headers or {}, timeout=timeout, cancelled=cancelled
    )


@pytest.fixture(scope="module")
def server() -> Iterator[McpServerProcess]:
    with McpServerProcess() as proc:
        yield proc


@pytest.fixture(scope="module")
def token_server() -> Iterator[McpServerProcess]:
    with McpServerProcess(token=TOKEN) as proc:
        yield proc


@pytest.fixture(scope="module")
def sse_server() -> Iterator[McpServerProcess]:
    with McpServerProcess(sse=True) as proc:
        yield proc


def test_list_tools(server: McpServerProcess) -> None:
    tools = {tool.name: tool for tool in mcp_client.list_tools(server.url, headers={}, timeout=10)}
    assert set(tools) == {"add", "echo", "slow", "fail", "whoami"}
    add = tools["add"]
    assert add.description == "Add two integers"
    assert add.input_schema["type"] == "object"
    assert add.input_schema["properties"]["a"]["type"] == "integer"
    assert add.input_schema["properties"]["b"]["type"] == "integer"
    assert sorted(add.input_schema["required"]) == ["a", "b"]
    assert tools["echo"].description == "Echo text back"
    assert tools["echo"].input_schema["properties"]["text"]["type"] == "string"
    assert tools["slow"].input_schema["properties"]["seconds"]["type"] == "number"
    assert tools["whoami"].input_schema["properties"] == {}


def test_call_add_and_echo(server: McpServerProcess) -> None:
    assert call(server.url, "add", {"a": 2, "b": 40}) == "42"
    assert call(server.url, "echo", {"text": "héllo"}) == "héllo"


def test_tool_error(server: McpServerProcess) -> None:
    with pytest.raises(McpError) as info:
        call(server.url, "fail", {"message": "boom 7"})
    assert info.value.kind == "tool"
    assert info.value.content is not None and "boom 7" in info.value.content
    assert "boom 7" in info.value.message


def test_unknown_tool(server: McpServerProcess) -> None:
    # The SDK's MCPServer answers an unknown tool with a tool result flagged isError
    # ("Unknown tool: nope"), not a JSON-RPC error, so it surfaces as kind "tool".
    with pytest.raises(McpError) as info:
        call(server.url, "nope")
    assert info.value.kind == "tool"
    assert "Unknown tool: nope" in (info.value.content or "")


def test_jsonrpc_error_maps_to_protocol() -> None:
    # No test-server tool answers with a JSON-RPC error, so check the mapping itself on the
    # shape the SDK raises (an MCPError inside anyio's exception groups).
    error = mcp_client._translate(ExceptionGroup("tg", [MCPError(-32602, "bad params")]), None)
    assert (error.kind, error.code, error.message) == ("protocol", -32602, "bad params")


def test_unreachable_is_connection_error() -> None:
    url = f"http://127.0.0.1:{free_port()}/mcp"
    started = time.monotonic()
    with pytest.raises(McpError) as info:
        call(url, "add", {"a": 1, "b": 2})
    assert info.value.kind == "connection"
    assert time.monotonic() - started < 5


def test_headers_reach_the_server(server: McpServerProcess) -> None:
    assert (
        call(server.url, "whoami", headers={"Authorization": "Bearer abc.def"}) == "Bearer abc.def"
    )
    assert call(server.url, "whoami") == "anonymous"


def test_missing_token_is_http_401(token_server: McpServerProcess) -> None:
    with pytest.raises(McpError) as info:
        mcp_client.list_tools(token_server.url, headers={}, timeout=10)
    assert (info.value.kind, info.value.code) == ("http", 401)
    with pytest.raises(McpError) as info:
        call(token_server.url, "whoami")
    assert (info.value.kind, info.value.code) == ("http", 401)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    assert call(token_server.url, "whoami", headers=headers) == f"Bearer {TOKEN}"


def test_cancelled_stops_a_slow_call(server: McpServerProcess) -> None:
    cancel_at = time.monotonic() + 0.5
    with pytest.raises(McpCancelled):
        call(
            server.url,
            "slow",
            {"seconds": 5},
            timeout=30,
            cancelled=lambda: time.monotonic() >= cancel_at,
        )
    assert time.monotonic() - cancel_at < 1.0
    # The shared loop is still healthy after an abandoned call.
    assert call(server.url, "echo", {"text": "ok"}) == "ok"


def test_timeout_is_a_connection_error(server: McpServerProcess) -> None:
    started = time.monotonic()
    with pytest.raises(McpError) as info:
        call(server.url, "slow", {"seconds": 5}, timeout=1)
    assert info.value.kind == "connection"
    assert "timed out" in info.value.message
    assert time.monotonic() - started < 3


def test_sse_transport(sse_server: McpServerProcess) -> None:
    assert sse_server.url.endswith("/sse")
    names = {tool.name for tool in mcp_client.list_tools(sse_server.url, headers={}, timeout=10)}
    assert names == {"add", "echo", "slow", "fail", "whoami"}
    assert call(sse_server.url, "add", {"a": 1, "b": 2}) == "3"
    assert call(sse_server.url, "whoami", headers={"Authorization": "Bearer sse"}) == "Bearer sse"
    with pytest.raises(McpError) as info:
        call(sse_server.url, "fail", {"message": "sse boom"})
    assert info.value.kind == "tool" and "sse boom" in (info.value.content or "")


def test_sse_fallback_when_streamable_http_is_refused() -> None:
    # The URL does not end with /sse, so streamable HTTP is tried first; the SSE-only server
    # answers that POST with 405 and the client falls back to SSE on the same URL.
    with McpServerProcess(sse=True, sse_path="/events") as proc:
        assert call(proc.url, "echo", {"text": "via sse"}) == "via sse"
        # Nothing served at all: the streamable HTTP status is reported.
        with pytest.raises(McpError) as info:
            mcp_client.list_tools(proc.base_url + "/nothing", headers={}, timeout=10)
        assert (info.value.kind, info.value.code) == ("http", 404)


GEVENT_SCRIPT = textwrap.dedent(
    """
    from gevent import monkey

    monkey.patch_all()

    import json
    import sys
    import time

    import gevent

    from worker import mcp_client

    assert monkey.is_module_patched("socket") and monkey.is_module_patched("threading")
    url = sys.argv[1]
    mcp_client.call_tool(url, "echo", {"text": "warm-up"}, headers={}, timeout=30)

    ticks = 0

    def ticker():
        global ticks
        while True:
            gevent.sleep(0.05)
            ticks += 1

    ticking = gevent.spawn(ticker)
    started = time.monotonic()
    slow = [
        gevent.spawn(mcp_client.call_tool, url, "slow", {"seconds": 1}, headers={}, timeout=30)
        for _ in range(2)
    ]
    gevent.joinall(slow, raise_error=True)
    elapsed = time.monotonic() - started
    ticking.kill()

    echoes = [
        gevent.spawn(mcp_client.call_tool, url, "echo", {"text": str(i)}, headers={}, timeout=30)
        for i in range(10)
    ]
    gevent.joinall(echoes, raise_error=True)

    cancel_at = time.monotonic() + 0.3

    def cancelled_call():
        try:
            mcp_client.call_tool(
                url, "slow", {"seconds": 5}, headers={}, timeout=30,
                cancelled=lambda: time.monotonic() >= cancel_at,
            )
        except mcp_client.McpCancelled as exc:
            return type(exc).__name__

    cancelled = gevent.spawn(cancelled_call)
    cancelled.join()
    print(json.dumps({
        "slow": [g.value for g in slow],
        "elapsed": elapsed,
        "ticks": ticks,
        "echoes": [g.value for g in echoes],
        "cancelled": cancelled.value,
        "cancel_latency": time.monotonic() - cancel_at,
    }))
    """
)


def test_concurrent_greenlets_under_gevent(server: McpServerProcess) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", GEVENT_SCRIPT, server.url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["slow"] == ["slept 1.0", "slept 1.0"]
    # Two 1 s calls in two greenlets overlap: ~1 s in all, not ~2 s.
    assert report["elapsed"] < 1.8, report
    # Other greenlets kept running while both calls waited on the network (~20 ticks of 50 ms).
    assert report["ticks"] >= 10, report
    assert report["echoes"] == [str(i) for i in range(10)]
    assert report["cancelled"] == "McpCancelled"
    assert report["cancel_latency"] < 1.0, report
