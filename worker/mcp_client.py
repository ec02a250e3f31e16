"""A small synchronous client for MCP servers, for worker code running in gevent greenlets.

The ``mcp`` SDK is async (anyio on asyncio). Greenlets of one thread share asyncio's
"running loop" slot, so two greenlets cannot each ``asyncio.run`` at the same time. Every
call therefore runs on one shared asyncio loop on a native thread of its own; the calling
greenlet waits on an event that the loop sets when the call is done, and that wait yields to
the gevent hub, so other greenlets keep running meanwhile.

Transport: streamable HTTP, or the legacy SSE transport when the URL path ends with ``/sse``
or the server answers the streamable HTTP handshake with 404 or 405. Header values carry
secrets and are never logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar
from urllib.parse import urlsplit

import anyio
import httpx2
from gevent import monkey
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import (
    CONNECTION_CLOSED,
    REQUEST_TIMEOUT,
    AudioContent,
    CallToolResult,
    EmbeddedResource,
    ImageContent,
    Implementation,
    ResourceLink,
    TextContent,
    TextResourceContents,
    Tool,
)

from worker.mcp_results import McpCancelled, McpError, McpTool

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

_POLL_SECONDS = 0.2  # how often `cancelled` is asked
_GRACE_SECONDS = 2.0  # the waiting side gives up this long after the loop side's own timeout
_MAX_PAGES = 100  # tools/list pages followed
_FALLBACK_STATUSES = (404, 405)  # a streamable HTTP handshake answered so means "try SSE"
_CLIENT_INFO = Implementation(name="resq", version="0.1.0")


def list_tools(url: str, *, headers: dict[str, str], timeout: float) -> list[McpTool]:
    """The server's tools (every page)."""

    async def op(client: Client) -> list[Tool]:
        tools: list[Tool] = []
        cursor: str | None = None
        for _ in range(_MAX_PAGES):
            page = await client.list_tools(cursor=cursor)
            tools.extend(page.tools)
            cursor = page.next_cursor
            if cursor is None:
                break
        return tools

    tools = _call(url, headers, timeout, op, None)
    return [
        McpTool(
            name=tool.name,
            description=tool.description,
            input_schema=tool.input_schema,
            annotations=(
                tool.annotations.model_dump(by_alias=True, exclude_none=True)
                if tool.annotations is not None
                else None
            ),
        )
        for tool in tools
    ]


def call_tool(
    url: str,
    name: str,
    arguments: dict[str, Any],
    *,
    headers: dict[str, str],
    timeout: float,
    cancelled: Callable[[], bool] | None = None,
) -> str:
    """Call a tool and return its content as text; a tool error raises ``McpError("tool")``."""

    async def op(client: Client) -> CallToolResult:
        return await client.call_tool(name, arguments)

    result = _call(url, headers, timeout, op, cancelled)
    text = _render_content(result)
    if result.is_error:
        raise McpError("tool", text or f"tool {name!r} failed", content=text)
    return text


def _render_content(result: CallToolResult) -> str:
    """The text of a tool result; other content is named in brackets."""
    parts: list[str] = []
    for block in result.content:
        if isinstance(block, TextContent):
            parts.append(block.text)
        elif isinstance(block, ImageContent):
            parts.append(f"[image: {block.mime_type}]")
        elif isinstance(block, AudioContent):
            parts.append(f"[audio: {block.mime_type}]")
        elif isinstance(block, ResourceLink):
            parts.append(f"[resource link: {block.uri}]")
        elif isinstance(block, EmbeddedResource):
            resource = block.resource
            if isinstance(resource, TextResourceContents):
                parts.append(resource.text)
            else:
                parts.append(f"[resource: {resource.uri}]")
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content))
    return "\n".join(parts)


# --- running the async SDK ---------------------------------------------------------------


def _call(
    url: str,
    headers: dict[str, str],
    timeout: float,
    op: Callable[[Client], Awaitable[_T]],
    cancelled: Callable[[], bool] | None,
) -> _T:
    logger.debug("MCP request to %s", _safe_url(url))
    return _run_on_loop(lambda: _with_client(url, headers, timeout, op), timeout, cancelled)


class _LoopThread:
    """An asyncio loop running forever on a native thread (not a greenlet)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop: asyncio.AbstractEventLoop | None = None
        # Native primitives: the caller blocks its OS thread (briefly) without switching
        # greenlets, so two greenlets can never start two loops.
        ready = monkey.get_original("_thread", "allocate_lock")()
        ready.acquire()

        def main() -> None:
            try:
                loop = asyncio.new_event_loop()
                self.loop = loop
            finally:
                ready.release()
            loop.run_forever()

        monkey.get_original("_thread", "start_new_thread")(main, ())
        ready.acquire()
        if self.loop is None:
            raise RuntimeError("could not start the MCP event loop")


_loop_thread: _LoopThread | None = None
_loop_lock = monkey.get_original("_thread", "allocate_lock")()


def _shared_loop() -> asyncio.AbstractEventLoop:
    global _loop_thread
    with _loop_lock:
        if _loop_thread is None or _loop_thread.pid != os.getpid():  # a fork has no thread
            _loop_thread = _LoopThread()
        assert _loop_thread.loop is not None
        return _loop_thread.loop


class _Pending:
    """One call in flight on the shared loop."""

    def __init__(self) -> None:
        # threading.Event is gevent's Event under monkey patching, which may be set from
        # another thread; waiting on it yields to the hub.
        self.done = threading.Event()
        self.task: asyncio.Task[None] | None = None
        self.abandoned = False
        self.value: Any = None
        self.error: BaseException | None = None


def _run_on_loop(
    make: Callable[[], Awaitable[_T]],
    timeout: float,
    cancelled: Callable[[], bool] | None,
) -> _T:
    """Run ``make()`` on the shared loop and wait for it without blocking other greenlets."""
    if cancelled is not None and cancelled():
        raise McpCancelled("cancelled")
    loop = _shared_loop()
    pending = _Pending()

    async def runner() -> None:
        try:
            pending.value = await make()
        except BaseException as exc:  # handed to the waiting side, cancellation included
            pending.error = exc
        finally:
            pending.done.set()

    def start() -> None:  # on the loop thread
        if pending.abandoned:
            pending.done.set()
        else:
            pending.task = loop.create_task(runner())

    def abandon() -> None:  # on the loop thread
        pending.abandoned = True
        if pending.task is not None:
            pending.task.cancel()

    loop.call_soon_threadsafe(start)
    deadline = time.monotonic() + timeout + _GRACE_SECONDS
    try:
        while True:
            remaining = deadline - time.monotonic()
            wait = min(remaining, _POLL_SECONDS) if cancelled is not None else remaining
            if pending.done.wait(max(wait, 0.0)):
                break
            if cancelled is not None and cancelled():
                raise McpCancelled("cancelled")
            if time.monotonic() >= deadline:
                raise McpError("connection", f"timed out after {timeout:g}s")
    except BaseException:  # cancelled, timed out, or the greenlet was killed: stop the call
        loop.call_soon_threadsafe(abandon)
        raise
    if pending.error is not None:
        raise pending.error
    return pending.value


# --- on the loop thread --------------------------------------------------------------------


async def _with_client(
    url: str, headers: dict[str, str], timeout: float, op: Callable[[Client], Awaitable[_T]]
) -> _T:
    """Connect, run ``op``, disconnect, all within ``timeout``; failures become McpError."""
    try:
        with anyio.fail_after(timeout):
            if _is_sse_url(url):
                return await _over_sse(url, headers, timeout, op)
            try:
                return await _over_streamable_http(url, headers, timeout, op)
            except _HandshakeRejected as rejected:
                logger.debug("MCP server answered HTTP %s; trying SSE", rejected.error.code)
                try:
                    return await _over_sse(url, headers, timeout, op)
                except McpError as error:
                    if error.kind == "http" and error.code in _FALLBACK_STATUSES:
                        raise rejected.error from None  # neither transport is served there
                    raise
    except TimeoutError:
        raise McpError("connection", f"timed out after {timeout:g}s") from None


class _HandshakeRejected(Exception):
    def __init__(self, error: McpError) -> None:
        super().__init__(error.message)
        self.error = error


async def _over_streamable_http(
    url: str, headers: dict[str, str], timeout: float, op: Callable[[Client], Awaitable[_T]]
) -> _T:
    # The transport turns an HTTP error status into a stand-in JSON-RPC error, so the status
    # of the latest POST is kept here (None if it was a success or a real JSON-RPC error).
    http_status: list[int | None] = [None]

    async def on_response(response: httpx2.Response) -> None:
        if response.request.method != "POST":
            return
        status = response.status_code
        http_status[0] = status if status >= 400 and not await _is_jsonrpc_error(response) else None

    connected = False
    try:
        async with httpx2.AsyncClient(
            headers=headers,
            timeout=httpx2.Timeout(timeout),
            event_hooks={"response": [on_response]},
        ) as http:
            transport = streamable_http_client(url, http_client=http)
            async with Client(transport, cache=None, client_info=_CLIENT_INFO) as client:
                connected = True
                return await op(client)
    except Exception as exc:
        error = _translate(exc, http_status[0])
        if not connected and error.kind == "http" and error.code in _FALLBACK_STATUSES:
            raise _HandshakeRejected(error) from exc
        raise error from exc


async def _over_sse(
    url: str, headers: dict[str, str], timeout: float, op: Callable[[Client], Awaitable[_T]]
) -> _T:
    try:
        transport = sse_client(url, headers=headers, timeout=timeout, sse_read_timeout=timeout)
        async with Client(transport, mode="legacy", cache=None, client_info=_CLIENT_INFO) as client:
            return await op(client)
    except Exception as exc:
        raise _translate(exc, None) from exc


async def _is_jsonrpc_error(response: httpx2.Response) -> bool:
    """Whether an error response carries a JSON-RPC error body (a protocol error)."""
    if not response.headers.get("content-type", "").lower().startswith("application/json"):
        return False
    try:
        body = json.loads(await response.aread())  # cached: the transport reads it again
    except (httpx2.HTTPError, httpx2.StreamError, ValueError):
        return False
    return isinstance(body, dict) and "jsonrpc" in body and "error" in body


def _translate(exc: BaseException, http_status: int | None) -> McpError:
    """The McpError for an SDK or transport failure (possibly inside exception groups)."""
    leaves = list(_leaves(exc))
    for leaf in leaves:
        if isinstance(leaf, McpError):
            return leaf
    for leaf in leaves:
        if isinstance(leaf, httpx2.HTTPStatusError):
            status = leaf.response.status_code
            return McpError("http", f"MCP server answered HTTP {status}", code=status)
    for leaf in leaves:
        if isinstance(leaf, MCPError):
            if http_status is not None:
                return McpError("http", f"MCP server answered HTTP {http_status}", code=http_status)
            if leaf.code in (CONNECTION_CLOSED, REQUEST_TIMEOUT):
                return McpError("connection", leaf.message)
            return McpError("protocol", leaf.message, code=leaf.code)
    for leaf in leaves:
        if isinstance(leaf, httpx2.TransportError | OSError):
            return McpError("connection", str(leaf) or type(leaf).__name__)
    first = leaves[0] if leaves else exc
    return McpError("protocol", f"{type(first).__name__}: {first}")


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


def _is_sse_url(url: str) -> bool:
    return urlsplit(url).path.rstrip("/").endswith("/sse")


def _safe_url(url: str) -> str:
    """The URL without userinfo, query or fragment, for logs."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path}"
