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

from shared import logs
from shared.bus import Emitter, EventBus
from shared.context import Fitted, fit, history, model_items
from shared.errors import ResqError
from shared.metrics import Recorder
from shared.netpolicy import OutboundPolicy
from shared.routing import Route
from shared.schema.events import ErrorEvent, ResponseEvent, StreamEvent, terminal_type
from shared.schema.response import Status, usage_object
from shared.secrets import unseal
from shared.settings import (
    DEFAULT_HEARTBEAT_SECONDS,
    DEFAULT_HEARTBEAT_TIMEOUT_SECONDS,
    DEFAULT_JOB_TIME_LIMIT_SECONDS,
    DEFAULT_MCP_TIMEOUT_SECONDS,
    Settings,
)
from shared.store import Store
from shared.store.jobs import requeue
from shared.store.tables import INPUT, ResponseRow
from worker.drain import Drain
from worker.heartbeat import Heartbeat
from worker.mcp_results import McpCancelled
from worker.providers.base import (
    Delta,
    Provider,
    ProviderError,
    ProviderRequest,
    ReasoningDelta,
    RefusalDelta,
    TextDelta,
    ToolCallDelta,
)
from worker.stream_state import StreamState
from worker.tools import Toolbox

log = logging.getLogger(__name__)

CANCEL_CHECK_SECONDS = 0.2  # how often a running job looks for a cancel
# Events produced within this long of the last publish wait and go out together, in one Redis
# round trip: an upstream that bursts many chunks at once costs a few publishes, not one per
# chunk. The first event of a run, and any event after a quiet spell, goes out at once.
FLUSH_SECONDS = 0.005
OUTPUT_DELTAS = (TextDelta, RefusalDelta, ReasoningDelta, ToolCallDelta)
MAX_MODEL_TURNS = 32  # model turns in one response's tool loop
LIFECYCLE_START = frozenset({"response.created", "response.queued", "response.in_progress"})


@dataclass(frozen=True)
class Limits:
    """Per-job bounds, from the settings (README, "Durability")."""

    time_limit_seconds: float = DEFAULT_JOB_TIME_LIMIT_SECONDS
    heartbeat_seconds: float = DEFAULT_HEARTBEAT_SECONDS
    heartbeat_timeout_seconds: float = DEFAULT_HEARTBEAT_TIMEOUT_SECONDS
    mcp_timeout_seconds: float = DEFAULT_MCP_TIMEOUT_SECONDS

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            time_limit_seconds=settings.job_time_limit_seconds,
            heartbeat_seconds=settings.heartbeat_seconds,
            heartbeat_timeout_seconds=settings.heartbeat_timeout_seconds,
            mcp_timeout_seconds=settings.mcp_timeout_seconds,
        )


@dataclass
class Outcome:
    status: Status
    error: dict[str, Any] | None = None
    incomplete_details: dict[str, Any] | None = None


def _provider_request(
    row: ResponseRow,
    input_items: list[dict[str, Any]],
    tools: list[dict[str, Any]],
    tool_choice: Any,
) -> ProviderRequest:
    p = row.params
    return ProviderRequest(
        model=row.model,
        input_items=input_items,
        instructions=p.get("instructions"),
        tools=tools,
        tool_choice=tool_choice,
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
        secret_key: str | None = None,
        outbound: OutboundPolicy | None = None,
        mcp_timeout: float = DEFAULT_MCP_TIMEOUT_SECONDS,
        metrics: Recorder | None = None,
        drain: Drain | None = None,
    ) -> None:
        self.row = row
        self.drain = drain or Drain()
        self.store = store
        self.bus = bus
        self.provider = provider
        self.route = route  # None: no context window to fit (unit tests)
        self.secret_key = secret_key
        self.outbound = outbound
        self.mcp_timeout = mcp_timeout
        self.truncation_details: dict[str, Any] | None = None
        self.metrics = metrics
        self.started = clock()
        self.first_output: float | None = None  # when the model produced its first output
        self.calls_made = 0  # MCP calls run in this response
        self.turn_start = 0  # where the current model turn's output items begin
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

    def context(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]], Fitted]:
        """This response's own input items, the whole context as stored (inherited history,
        then that input), and what the model sees of it, fitted to the route's window
        (``shared.context``)."""
        p = self.row.params
        own = self.store.items(response_id=self.row.id, kind=INPUT)
        inherited = history(
            self.store,
            previous_response_id=self.row.previous_response_id,
            conversation_id=(p.get("conversation") or {}).get("id"),
        )
        raw = inherited + own
        items = model_items(raw)
        if self.route is None:
            return own, raw, Fitted(items, 0)
        fitted = fit(
            items,
            instructions=p.get("instructions"),
            tools=p.get("tools") or [],
            route=self.route,
            truncation=p.get("truncation"),
        )
        return own, raw, fitted

    def _publish(self, events: list[StreamEvent]) -> None:
        """Publish events of items the worker adds itself (MCP listings and calls) now."""
        self.pending += events
        self.finished += self.state.take_done()
        self._flush()

    def generate(self) -> Outcome:
        """Run the model, and the MCP tools it calls, until it answers, fails, stops for
        the client (function calls, approval requests), or a cancel arrives."""
        try:
            own, raw, fitted = self.context()
            credentials = (
                unseal(self.secret_key, self.row.tool_secrets) if self.row.tool_secrets else {}
            )
        except ResqError as exc:  # the chain or the context changed since the create
            log.warning("response %s: cannot prepare the run: %s", self.row.id, exc.message)
            return Outcome(Status.FAILED, error={"code": "invalid_prompt", "message": exc.message})
        self.truncation_details = fitted.details()
        stopped = self._stop_requested()
        if stopped is not None:
            return stopped
        box = Toolbox.from_params(
            self.row.params.get("tools") or [],
            credentials,
            timeout=self.mcp_timeout,
            outbound=self.outbound,
        )
        self._list_tools(box, raw)
        stopped = self._run_approved(box, raw, own)
        if stopped is not None:
            return stopped
        self.state.mcp = box.targets
        cap = self.row.params.get("max_tool_calls")
        if cap is not None:
            self.state.tool_budget = cap - self.calls_made
        choice = self.row.params.get("tool_choice", "auto")
        for _turn in range(MAX_MODEL_TURNS):
            tools, turn_choice = box.for_model(choice)
            if self.state.tool_budget is not None and self.state.tool_budget <= 0:
                turn_choice = "none"
            request = _provider_request(
                self.row, fitted.items + model_items(self.state.output), tools, turn_choice
            )
            stopped = self._stream(request)
            if stopped is not None:
                return stopped
            if self.state.finish_reason in ("length", "content_filter"):
                break  # cut short: the open item ends with the response, incomplete
            self._publish(self.state.end_turn())
            calls = list(self.state.pending_calls)
            for index in calls:
                stopped = self._call(box, index)
                if stopped is not None:
                    return stopped
            if not calls or self._waiting_for_client():
                break
            choice = "auto"  # a forced choice applies to the first turn only
        reason = self.state.finish_reason
        if reason in ("length", "content_filter"):
            detail = "max_output_tokens" if reason == "length" else "content_filter"
            return Outcome(Status.INCOMPLETE, incomplete_details={"reason": detail})
        return Outcome(Status.COMPLETED)

    def _stop_requested(self) -> Outcome | None:
        """How the run must end now, if it must: a cancel arrived, or the worker is shutting
        down and its grace period is over (``worker.drain``)."""
        if self.bus.cancel_requested(self.row.id):
            return Outcome(Status.CANCELLED)
        if not self.drain.expired():
            return None
        if not self.state.output and not self.pending:
            # Nothing but the lifecycle events went out: back to the queue, untouched.
            return Outcome(Status.QUEUED)
        log.warning("response %s: the worker is shutting down; failing the run", self.row.id)
        return Outcome(
            Status.FAILED,
            error={
                "code": "server_error",
                "message": "The worker running this response shut down after output had "
                "started streaming (RESQ_SHUTDOWN_GRACE_SECONDS ran out), so it was not re-run.",
            },
        )

    def _waiting_for_client(self) -> bool:
        """The model called a client function or asked for an approval: the client acts."""
        return any(
            item["type"] in ("function_call", "mcp_approval_request")
            for item in self.state.output[self.turn_start :]
        )

    def _list_tools(self, box: Toolbox, raw: list[dict[str, Any]]) -> None:
        """List each MCP server's tools, unless the context already holds a listing of it
        (a continued chain is not listed again)."""
        for label, server in box.servers.items():
            tools = box.known_listing(label, raw)
            if tools is None:
                index, events = self.state.start_list_tools(label)
                self._publish(events)
                tools, error = box.list_tools(server)
                self._publish(self.state.finish_list_tools(index, tools, error))
                if error is not None:
                    continue
            box.register(label, tools)

    def _run_approved(
        self, box: Toolbox, raw: list[dict[str, Any]], own: list[dict[str, Any]]
    ) -> Outcome | None:
        """Make the calls this request's ``mcp_approval_response`` items (in ``own``, its
        input) approve."""
        requests = {i["id"]: i for i in raw if i.get("type") == "mcp_approval_request"}
        made = {i.get("approval_request_id") for i in raw if i.get("type") == "mcp_call"}
        for answer in own:
            request_id = answer.get("approval_request_id")
            if answer.get("type") != "mcp_approval_response" or not answer.get("approve"):
                continue
            request = requests.get(request_id)
            if request is None or request_id in made:
                continue
            index, events = self.state.start_mcp_call(
                request["server_label"], request["name"], request["arguments"], request_id
            )
            self._publish(events)
            stopped = self._call(box, index)
            if stopped is not None:
                return stopped
        return None

    def _call(self, box: Toolbox, index: int) -> Outcome | None:
        """Run one pending MCP call and publish how it ended; an Outcome if the run must
        stop (a cancel arrived, or the worker's grace period ran out)."""
        stopped = self._stop_requested()
        if stopped is not None:
            return stopped
        item = self.state.output[index]
        self.calls_made += 1
        try:
            output, error = box.call(
                item["server_label"],
                item["name"],
                item["arguments"],
                cancelled=lambda: self._stop_requested() is not None,
            )
        except McpCancelled:
            return self._stop_requested() or Outcome(Status.CANCELLED)
        self._publish(self.state.finish_mcp_call(index, output=output, error=error))
        return None

    def _stream(self, request: ProviderRequest) -> Outcome | None:
        """One model turn: stream from the provider until it finishes (None), fails, or a
        cancel arrives (an Outcome)."""
        self.turn_start = len(self.state.output)
        started = last_check = time.monotonic()
        try:
            with DeltaFeed(self.provider.stream(request)) as feed:
                while True:
                    # A quiet upstream still wakes the run to look for a cancel or a stop.
                    wait = CANCEL_CHECK_SECONDS
                    if self.pending:
                        wait = max(0.0, self.last_flush + FLUSH_SECONDS - time.monotonic())
                    delta = feed.next(wait)
                    if delta is DeltaFeed.END:
                        return None
                    if delta is DeltaFeed.QUIET:
                        if self.pending:
                            self._flush()
                    else:
                        if self.first_output is None and isinstance(delta, OUTPUT_DELTAS):
                            self.first_output = self.clock()
                        self.pending += self.state.apply(delta)
                        self.finished += self.state.done_indexes
                        if time.monotonic() - self.last_flush >= FLUSH_SECONDS:
                            self._flush()
                    now = time.monotonic()
                    if now - last_check >= CANCEL_CHECK_SECONDS:
                        last_check = now
                        stopped = self._stop_requested()
                        if stopped is not None:
                            return stopped
                        if now - started > self.time_limit:
                            return self._over_time()
        except ProviderError as exc:
            log.warning("response %s: provider failed: %s", self.row.id, exc.message)
            if self.metrics is not None:
                provider = self.route.provider if self.route is not None else "unknown"
                self.metrics.upstream_error(provider, str(exc.status or exc.code))
            return Outcome(Status.FAILED, error={"code": exc.code, "message": exc.message})

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
        ended = self.clock()
        queued_at = self.row.enqueued_at or float(self.row.created_at)
        timings = {
            "queue_wait": round(max(0.0, self.started - queued_at), 6),
            "run": round(ended - self.started, 6),
            "first_token": (
                round(self.first_output - self.started, 6) if self.first_output else None
            ),
        }
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
            timings=timings,
            from_statuses=from_statuses,
        )
        if row is None:
            log.info("response %s: deleted while running; dropping its events", self.row.id)
            self.bus.drop(self.row.id)
            return
        if self.metrics is not None:
            self.metrics.finished(
                model=row.model, status=row.status, timings=timings, usage=row.usage
            )
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
    secret_key: str | None = None,
    outbound: OutboundPolicy | None = None,
    metrics: Recorder | None = None,
    drain: Drain | None = None,
) -> bool:
    """Run a queued response to its end. Does nothing if it already ended or started.

    True if the run was handed back instead (``worker.drain``): the response is ``queued``
    again, and the caller sends its message again."""
    row = store.claim(response_id=response_id, now=int(clock()))
    if row is None:
        log.info("response %s: not claimable (ended, cancelled or taken); skipping", response_id)
        return False
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
        secret_key=secret_key,
        outbound=outbound,
        mcp_timeout=limits.mcp_timeout_seconds,
        metrics=metrics,
        drain=drain,
    )
    with (
        logs.bind(response_id=row.id, tenant=row.tenant, model=row.model),
        Heartbeat(
            bus, response_id, every=limits.heartbeat_seconds, ttl=limits.heartbeat_timeout_seconds
        ),
    ):
        return _run(run, response_id)


def _run(run: Run, response_id: str) -> bool:
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
    if outcome.status == Status.QUEUED:
        assert run.row.started_at is not None
        if requeue(run.store, response_id=response_id, started_at=run.row.started_at, refund=True):
            log.info("response %s: the worker is shutting down; handed back", response_id)
            return True
        # Cancelled (or taken over by the reaper) meanwhile: end it as the store now says.
        outcome = Outcome(Status.CANCELLED)
    run.finish(outcome)
    return False


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
