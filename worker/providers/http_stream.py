"""What every provider that streams from an HTTP upstream shares: one connection pool per
route, the retry loop, and reading server-sent events.

A subclass says where to POST (``url``), what to send (``body``), which headers (``headers``)
and how the upstream's events become deltas (``deltas``). Retries: an attempt that fails before
it produced any delta is retried when the failure is transient (HTTP 429 and 5xx, and whatever
``retryable_status`` adds, timeouts, connection errors, a stream that breaks before its first
delta), with exponential backoff and full jitter, or after the upstream's ``retry-after-ms`` /
``retry-after``, up to ``retries`` extra attempts within ``retry_budget_seconds``. Other 4xx
are not retried. Once a delta has been yielded nothing is retried: the caller may already have
streamed it to a client, so a later failure is raised at once. Closing the generator closes
the upstream connection (a cancel).
"""

from __future__ import annotations

import json
import logging
import random
import ssl
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import closing
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import httpx

from worker.providers.base import Delta, ProviderRequest
from worker.providers.retry import AttemptFailed, backoff_seconds, retry_after_seconds

log = logging.getLogger(__name__)

_RETRYABLE_TRANSPORT = (httpx.NetworkError, httpx.RemoteProtocolError, httpx.ProxyError)
JSON = dict[str, Any]


@lru_cache(maxsize=1)
def ssl_context() -> ssl.SSLContext:
    """One CA bundle load per process (building a context costs ~20 ms of CPU)."""
    return ssl.create_default_context()


@dataclass(frozen=True)
class ServerEvent:
    """One server-sent event: its ``event:`` name (empty when none) and its ``data:``."""

    name: str
    data: str


def server_events(lines: Iterator[str]) -> Iterator[ServerEvent]:
    """The events of an SSE body, by the WHATWG rules that matter here: ``event:`` and ``data:``
    fields, several ``data:`` lines joined by newlines, a blank line ends an event, comments
    (``:``) and other fields are skipped."""
    name, data = "", list[str]()
    for line in lines:
        if not line:
            if data:
                yield ServerEvent(name, "\n".join(data))
            name, data = "", []
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            data.append(value)
        elif field == "event":
            name = value
    if data:
        yield ServerEvent(name, "\n".join(data))


def event_json(url: str, event: ServerEvent) -> JSON:
    """An event's data as a JSON object, or ``AttemptFailed``."""
    try:
        payload = json.loads(event.data)
    except json.JSONDecodeError as exc:
        raise AttemptFailed(
            f"upstream {url} sent an event that is not JSON", event.data[:200]
        ) from exc
    if not isinstance(payload, dict):
        raise AttemptFailed(f"upstream {url} sent an event that is not an object", event.data[:200])
    return payload


def error_message(response: httpx.Response) -> str:
    """The message of an error body (OpenAI's ``{"error": {"message"}}``, Anthropic's
    ``{"type": "error", "error": {"message"}}``), else the start of the body."""
    try:
        data = json.loads(response.read())
        err = data.get("error", data)
        if isinstance(err, dict):
            return str(err.get("message") or err)
        return str(err)
    except (ValueError, AttributeError):
        return response.text[:500]


class StreamingHttpProvider:
    """A provider that POSTs one streaming request per attempt (see the module docstring)."""

    name = "upstream"
    retryable_status: frozenset[int] = frozenset()  # beyond 429 and 5xx

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None,
        retries: int,
        retry_budget_seconds: float,
        upstream_model: str | None = None,
        timeout: float = 60.0,
        auth_header: str | None = None,
        max_output_tokens: int | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.retries = retries
        self.retry_budget_seconds = retry_budget_seconds
        self.upstream_model = upstream_model
        self.timeout = timeout
        self.auth_header = auth_header  # the key goes in this header as it is, not as Bearer
        self.max_output_tokens = max_output_tokens  # the route's default
        self.transport = transport
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.clock = clock
        # One client for every job of this route in the process: its connections to the
        # upstream are kept alive and reused (a new client per job cost a connection and a
        # client's set-up each time). No cap on connections: every running job may stream.
        self.client = httpx.Client(
            headers=self.headers(),
            timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0)),
            verify=ssl_context(),
            transport=self.transport,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=100),
        )

    # ---- what a protocol says -------------------------------------------------------------

    @property
    def url(self) -> str:
        raise NotImplementedError

    def headers(self) -> dict[str, str]:
        if not self.api_key:
            return {}
        if self.auth_header:
            return {self.auth_header: self.api_key}
        return {"Authorization": f"Bearer {self.api_key}"}

    def body(self, request: ProviderRequest) -> JSON:
        raise NotImplementedError

    def deltas(self, url: str, response: httpx.Response) -> Iterator[Delta]:
        """The deltas of one answered attempt; failures as ``AttemptFailed``."""
        raise NotImplementedError

    def error_code(self, status: int, message: str) -> str:
        """The Response error code for an upstream's HTTP error."""
        return "rate_limit_exceeded" if status == 429 else "server_error"

    # ---- the loop ---------------------------------------------------------------------

    def stream(self, request: ProviderRequest) -> Iterator[Delta]:
        url = self.url
        body = self.body(request)
        started = self.clock()
        attempt = 0
        while True:
            attempt += 1
            output_started = False
            try:
                with closing(self._attempt(url, body)) as deltas:
                    for delta in deltas:
                        output_started = True
                        yield delta
                return
            except AttemptFailed as failure:
                if output_started:
                    raise failure.midstream() from failure
                wait, why = self._next_wait(failure, attempt, started)
                if wait is None:
                    raise failure.given_up(attempt, why) from failure
                log.warning(
                    "upstream attempt %d of %d failed, retrying in %.2f s: %s",
                    attempt,
                    self.retries + 1,
                    wait,
                    failure,
                )
                self.sleep(wait)

    def _next_wait(
        self, failure: AttemptFailed, attempt: int, started: float
    ) -> tuple[float | None, str]:
        """The wait before the next attempt, or None and why (for the message) to give up."""
        if not failure.retryable or attempt > self.retries:
            return None, ""
        remaining = self.retry_budget_seconds - (self.clock() - started)
        if failure.retry_after is not None:
            if failure.retry_after > remaining:
                return None, (
                    f" (it asked to wait {failure.retry_after:g} s, beyond the "
                    f"{self.retry_budget_seconds:g} s retry budget)"
                )
            return failure.retry_after, ""
        wait = backoff_seconds(attempt, self.rng)
        if wait > remaining:
            return None, f" (the {self.retry_budget_seconds:g} s retry budget ran out)"
        return wait, ""

    def _http_failure(self, url: str, response: httpx.Response) -> AttemptFailed:
        status = response.status_code
        message = error_message(response)
        return AttemptFailed(
            f"upstream {url} answered HTTP {status}",
            message,
            code=self.error_code(status, message),
            status=status,
            retryable=status == 429 or status >= 500 or status in self.retryable_status,
            retry_after=retry_after_seconds(response.headers, time.time()),
        )

    def _attempt(self, url: str, body: JSON) -> Generator[Delta, None, None]:
        """One request; every failure comes out as ``AttemptFailed``."""
        answered = False
        try:
            with self.client.stream("POST", url, json=body) as response:
                if response.status_code >= 400:
                    raise self._http_failure(url, response)
                answered = True
                yield from self.deltas(url, response)
        except httpx.TimeoutException as exc:
            detail = f"{type(exc).__name__}, timeout {self.timeout:g} s"
            raise AttemptFailed(f"upstream {url} timed out", detail) from exc
        except httpx.TransportError as exc:
            head = (
                f"upstream {url} broke off its answer"
                if answered
                else f"could not reach upstream {url}"
            )
            detail = str(exc) or type(exc).__name__
            retryable = isinstance(exc, _RETRYABLE_TRANSPORT)
            raise AttemptFailed(head, detail, retryable=retryable) from exc
