"""A real MCP server (the ``mcp`` SDK's ``MCPServer``) on 127.0.0.1, for tests.

Run it as ``python -m tests.fakes.mcp_server --port N`` (streamable HTTP at ``/mcp``) or with
``--sse`` (the legacy SSE transport: ``GET /sse``, or ``--sse-path``, plus ``POST /messages/``).
In tests, use ``McpServerProcess``, which starts it as a subprocess on a free port.

Tools: ``add``, ``echo``, ``slow``, ``fail`` (an MCP tool error) and ``whoami`` (the request's
``Authorization`` header). If ``MCP_TEST_REQUIRED_TOKEN`` is set, every HTTP request without
``Authorization: Bearer <token>`` is answered 401.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from ops.embedded_redis import free_port

TOKEN_ENV = "MCP_TEST_REQUIRED_TOKEN"
_ROOT = Path(__file__).resolve().parents[2]


def build_server() -> MCPServer:
    """The MCPServer with the test tools."""
    server: MCPServer = MCPServer("resq-test-mcp", log_level="WARNING")

    @server.tool(description="Add two integers")
    def add(a: int, b: int) -> int:
        return a + b

    @server.tool(description="Echo text back")
    def echo(text: str) -> str:
        return text

    @server.tool(description="Sleep for the given seconds, then answer")
    async def slow(seconds: float) -> str:
        await anyio.sleep(seconds)
        return f"slept {seconds}"

    @server.tool(description="Fail with the given message")
    def fail(message: str) -> str:
        raise ToolError(message)

    @server.tool(description="The Authorization header of the request")
    def whoami(ctx: Context) -> str:
        headers: Mapping[str, str] | None = ctx.headers  # a starlette Headers (case-insensitive)
        value = headers.get("authorization") if headers is not None else None
        return value or "anonymous"

    return server


def require_token(app: Any, token: str) -> Any:
    """Wrap an ASGI app: HTTP requests without ``Authorization: Bearer <token>`` get 401."""
    expected = f"Bearer {token}".encode()

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and dict(scope["headers"]).get(b"authorization") != expected:
            headers = [(b"content-type", b"text/plain")]
            await send({"type": "http.response.start", "status": 401, "headers": headers})
            await send({"type": "http.response.body", "body": b"unauthorized"})
            return
        await app(scope, receive, send)

    return wrapped


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--sse", action="store_true", help="serve the legacy SSE transport")
    parser.add_argument("--sse-path", default="/sse", help="the SSE endpoint's path")
    args = parser.parse_args(argv)
    server = build_server()
    app = server.sse_app(sse_path=args.sse_path) if args.sse else server.streamable_http_app()
    token = os.environ.get(TOKEN_ENV)
    if token:
        app = require_token(app, token)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


class McpServerProcess:
    """The test server as a subprocess on a free port; ``url`` is its MCP endpoint.

    ``sse`` serves the legacy SSE transport at ``sse_path``; ``token`` requires that bearer
    token on every request.
    """

    def __init__(
        self, *, sse: bool = False, sse_path: str = "/sse", token: str | None = None
    ) -> None:
        self.sse = sse
        self.sse_path = sse_path
        self.token = token
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return self.base_url + (self.sse_path if self.sse else "/mcp")

    def start(self, timeout: float = 30.0) -> McpServerProcess:
        self.port = free_port()
        env = dict(os.environ)
        env.pop(TOKEN_ENV, None)
        if self.token:
            env[TOKEN_ENV] = self.token
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_ROOT), env.get("PYTHONPATH")]))
        cmd = [sys.executable, "-m", "tests.fakes.mcp_server", "--port", str(self.port)]
        if self.sse:
            cmd += ["--sse", "--sse-path", self.sse_path]
        self.process = subprocess.Popen(cmd, cwd=_ROOT, env=env, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"MCP test server exited with {self.process.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("MCP test server did not start listening") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> McpServerProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


if __name__ == "__main__":
    main()
