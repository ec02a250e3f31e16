"""Run one response: claim it, call the provider, publish events, persist the outcome.

Dependencies come in as arguments (store, bus, provider lookup), so this runs the same in
a Celery task and in a unit test with stand-ins at the boundaries.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from typing import Any

from shared.bus import Emitter, EventBus
from shared.context import Fitted, fit, history, model_items
from shared.errors import InvalidRequest, ResqError
from shared.routing import Route
from shared.schema.events import ErrorEvent, ResponseEvent, StreamEvent, terminal_type
from shared.schema.response import Status, usage_object
from shared.settings import (
    DEFAULT_HEARTBEAT_SECONDS,
    DEFAULT_HEARTBEAT_TIMEOUT_SECONDS,
    DEFAULT_JOB_TIME_LIMIT_SECONDS,
    Settings,
)
from shared.store import Store
from shared.store.tables import INPUT, ResponseRow
from worker.heartbeat import Heartbeat
from worker.providers.base import Delta, Provider, ProviderError, ProviderRequest
from worker.stream_state import StreamState

log = logging.getLogger(__name__)

CANCEL_CHECK_SECONDS = 0.2  # how often a running job looks for a cancel
# Events produced within this long of the last publish wait and go out together, in one Redis
# round trip: an upstream that bursts many chunks at once costs a few publishes, not one per
# chunk. The first event of a run, and any event after a quiet spell, goes out at once.
FLUSH_SECONDS = 0.005
LIFECYCLE_START = frozenset({"response.created", "response.queued", "response.in_progress"})


@dataclass(frozen=True)
class Limits:
    """Per-job bounds, from the settings (README, "Durability")."""

    time_limit_seconds: float = DEFAULT_JOB_TIME_LIMIT_SECONDS
    heartbeat_seconds: float = DEFAULT_HEARTBEAT_SECONDS
    heartbeat_timeout_seconds: float = DEFAULT_HEARTBEAT_TIMEOUT_SECONDS

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            time_limit_seconds=settings.job_time_limit_seconds,
            heartbeat_seconds=settings.heartbeat_seconds,
            heartbeat_timeout_seconds=settings.heartbeat_timeout_seconds,
        )


@dataclass
class Outcome:
    status: Status
    error: dict[str, Any] | None = None
    incomplete_details: dict[str, Any] | None = None


def _provider_request(row: ResponseRow, input_items: list[dict[str, Any]]) -> ProviderRequest:
    p = row.params
    return ProviderRequest(
        model=row.model,
        input_items=input_items,
        instructions=p.get("instructions"),
        tools=p.get("tools") or [],
        tool_choice=p.get("tool_choice", "auto"),
        parallel_tool_calls=p.get("parallel_tool_calls", True),
        max_output_tokens=p.get("max_output_tokens"),
        temperature=p.get("temperature"),
        top_p=p.get("top_p"),
        reasoning=p.get("reasoning"),
        text=p.get("text"),
    )


class Run:
    def __init__(
        self,
        row: ResponseRow,
        *,
        store: Store,
        bus: EventBus,
        provider: Provider,
        clock: Callable[[], float] = time.time,
        time_limit: float = DEFAULT_JOB_TIME_LIMIT_SECONDS,
        route: Route | None = None,
    ) -> None:
        self.row = row
        self.store = store
        self.bus = bus
        self.provider = provider
        self.route = route  # None: no context window to fit (unit tests)
        self.truncation_details: dict[str, Any] | None = None
        self.clock = clock
        self.time_limit = time_limit
        last = bus.last(row.id)
        # A re-run (the reaper re-queued a lost attempt that had sent no output) continues the
        # numbering of the log after the lifecycle events it already holds.
        self.resumed = last is not None
        self.emitter = Emitter(bus, row.id, start=last.sequence_number + 1 if last else 0)
        self.state = StreamState()
        self.pending: list[StreamEvent] = []  # produced, not yet published
        self.finished: list[int] = []  # output items the pending events finished
        self.last_flush = 0.0

    def _lifecycle(self, type_: str, status: Status) -> ResponseEvent:
        snapshot = self.store.render(self.row, output=[], status=status.value)
        return ResponseEvent(type=type_, response=snapshot)

    def start_events(self) -> None:
        if self.resumed:
            return
        first = Status.QUEUED if self.row.background else Status.IN_PROGRESS
        events = [self._lifecycle("response.created", first)]
        if self.row.background:
            events.append(self._lifecycle("response.queued", Status.QUEUED))
        events.append(self._lifecycle("response.in_progress", Status.IN_PROGRESS))
        self.emitter.emit(*events)

    def _flush(self) -> None:
        """Publish the pending events, then save the output items they finished (so a run
        that dies later keeps them)."""
        self.emitter.emit(*self.pending)
        self.pending = []
        for index in self.finished:
            self.store.save_output_item(
                response_id=self.row.id, position=index, item=self.state.output[index]
            )
        self.finished = []
        self.last_flush = time.monotonic()

    def context(self) -> Fitted:
        """What the model sees: inherited history, then this response's input, fitted to
        the route's window (``shared.context``)."""
        p = self.row.params
        own = self.store.items(response_id=self.row.id, kind=INPUT)
        inherited = history(
            self.store,
            previous_response_id=self.row.previous_response_id,
            conversation_id=(p.get("conversation") or {}).get("id"),
        )
        items = model_items(inherited + own)
        if self.route is None:
            return Fitted(items, 0)
        return fit(
            items,
            instructions=p.get("instructions"),
            tools=p.get("tools") or [],
            route=self.route,
            truncation=p.get("truncation"),
        )

    def generate(self) -> Outcome:
        """Stream from the provider until it finishes, fails, or a cancel arrives."""
        try:
            fitted = self.context()
        except InvalidRequest as exc:  # the chain or the context changed since the create
            log.warning("response %s: cannot build its context: %s", self.row.id, exc.message)
            return Outcome(Status.FAILED, error={"code": "invalid_prompt", "message": exc.message})
        self.truncation_details = fitted.details()
        request = _provider_request(self.row, fitted.items)
        if self.bus.cancel_requested(self.row.id):
            return Outcome(Status.CANCELLED)
        started = last_check = time.monotonic()
        try:
            with DeltaFeed(self.provider.stream(request)) as feed:
                while True:
                    wait = None
                    if self.pending:
                        wait = max(0.0, self.last_flush + FLUSH_SECONDS - time.monotonic())
                    delta = feed.next(wait)
                    if delta is DeltaFeed.QUIET:
                        self._flush()
                        continue
                    if delta is DeltaFeed.END:
                        break
                    self.pending += self.state.apply(delta)
                    self.finished += self.state.done_indexes
                    now = time.monotonic()
                    if now - self.last_flush >= FLUSH_SECONDS:
                        self._flush()
                    if now - last_check >= CANCEL_CHECK_SECONDS:
                        last_check = now
                        if self.bus.cancel_requested(self.row.id):
                            return Outcome(Status.CANCELLED)
                        if now - started > self.time_limit:
                            return self._over_time()
        except ProviderError as exc:
            log.warning("response %s: provider failed: %s", self.row.id, exc.message)
            return Outcome(Status.FAILED, error={"code": exc.code, "message": exc.message})
        reason = self.state.finish_reason
        if reason in ("length", "content_filter"):
            detail = "max_output_tokens" if reason == "length" else "content_filter"
            return Outcome(Status.INCOMPLETE, incomplete_details={"reason": detail})
        return Outcome(Status.COMPLETED)

    def _over_time(self) -> Outcome:
        log.warning("response %s: over the job time limit (%g s)", self.row.id, self.time_limit)
        return Outcome(
            Status.FAILED,
            error={
                "code": "server_error",
                "message": "The response ran longer than the job time limit of "
                f"{self.time_limit:g} s (RESQ_JOB_TIME_LIMIT_SECONDS) and was stopped.",
            },
        )

    def finish(self, outcome: Outcome) -> None:
        item_status = "completed" if outcome.status == Status.COMPLETED else "incomplete"
        # Whatever is pending and the closing events, in one publish: store.finish below
        # writes every output item at once.
        self.emitter.emit(*self.pending, *self.state.close(item_status))
        self.pending, self.finished = [], []
        usage = self.state.usage
        from_statuses: tuple[str, ...] = (Status.IN_PROGRESS.value,)
        if outcome.status == Status.CANCELLED:
            from_statuses += (Status.CANCELLED.value,)
        row = self.store.finish(
            response_id=self.row.id,
            status=outcome.status,
            now=int(self.clock()),
            output=self.state.output,
            error=outcome.error,
            incomplete_details=outcome.incomplete_details,
            usage=usage_object(
                usage.input_tokens, usage.output_tokens, usage.reasoning_tokens, usage.cached_tokens
            )
            if usage
            else None,
            truncation_details=self.truncation_details,
            from_statuses=from_statuses,
        )
        if row is None:
            log.info("response %s: deleted while running; dropping its events", self.row.id)
            self.bus.drop(self.row.id)
            return
        final = self.store.render(row, output=self.state.output)
        ending: list[StreamEvent] = []
        if row.status == Status.FAILED and row.error:
            # The documented flat error event first, then the terminal event (§4.4).
            ending.append(ErrorEvent(code=row.error.get("code"), message=row.error["message"]))
        ending.append(ResponseEvent(type=terminal_type(row.status), response=final))
        self.emitter.emit(*ending)
        if not row.store:
            self.bus.expire_soon(row.id)
        log.info("response %s: %s", row.id, row.status)


def execute(
    response_id: str,
    *,
    store: Store,
    bus: EventBus,
    provider_for: Callable[[str], Provider],
    route_for: Callable[[str], Route] | None = None,
    clock: Callable[[], float] = time.time,
    limits: Limits = Limits(),
) -> None:
    """Run a queued response to its end. Does nothing if it already ended or started."""
    row = store.claim(response_id=response_id, now=int(clock()))
    if row is None:
        log.info("response %s: not claimable (ended, cancelled or taken); skipping", response_id)
        return
    route = None
    try:
        provider = provider_for(row.model)
        route = route_for(row.model) if route_for is not None else None
    except ResqError as exc:
        provider = _Failing(exc.message)
    run = Run(
        row,
        store=store,
        bus=bus,
        provider=provider,
        clock=clock,
        time_limit=limits.time_limit_seconds,
        route=route,
    )
    with Heartbeat(
        bus, response_id, every=limits.heartbeat_seconds, ttl=limits.heartbeat_timeout_seconds
    ):
        _run(run, response_id)


def _run(run: Run, response_id: str) -> None:
    run.start_events()
    try:
        outcome = run.generate()
    except Exception:
        log.exception("response %s: unexpected error in the run", response_id)
        outcome = Outcome(
            Status.FAILED,
            error={
                "code": "server_error",
                "message": "resq worker error while running the response",
            },
        )
    run.finish(outcome)


class DeltaFeed:
    """The provider's deltas, read by a thread of their own (a greenlet under the gevent
    pool) into a queue, so the run can wait for the next one with a timeout and publish what
    it holds when the upstream goes quiet. Provider errors come out of ``next``."""

    END = object()
    QUIET = object()

    def __init__(self, deltas: Iterator[Delta]) -> None:
        self.deltas = deltas
        self.queue: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.stopped = threading.Event()
        self.reader = threading.Thread(target=self._read, name="resq-deltas", daemon=True)

    def _read(self) -> None:
        with closing(self.deltas):  # type: ignore[type-var]
            try:
                for delta in self.deltas:
                    self.queue.put(("delta", delta))
                    if self.stopped.is_set():
                        return
                self.queue.put(("end", None))
            except BaseException as exc:  # handed to the run, which decides
                self.queue.put(("error", exc))

    def next(self, timeout: float | None) -> Any:
        """The next delta; ``END`` after the last; ``QUIET`` if none came within
        ``timeout``."""
        try:
            kind, value = self.queue.get(timeout=timeout)
        except queue.Empty:
            return self.QUIET
        if kind == "error":
            raise value
        return self.END if kind == "end" else value

    def __enter__(self) -> DeltaFeed:
        self.reader.start()
        return self

    def __exit__(self, *exc: object) -> None:
        # A run that stops early (cancel, time limit) leaves the reader to close the upstream
        # stream when its next chunk arrives (or its read times out).
        self.stopped.set()


class _Failing:
    """A provider that fails at once (the route disappeared since the response was queued)."""

    def __init__(self, message: str) -> None:
        self.message = message

    def stream(self, request: ProviderRequest) -> Any:
        raise ProviderError(self.message)
        yield  # pragma: no cover
