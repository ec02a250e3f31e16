"""One response's model turns and tool rounds (pure control flow; I/O through ``RunDeps``).

The run lists the MCP servers' tools, makes the calls the request's approvals allow, then
asks the model, runs the MCP tools it calls and asks again, until the model answers, is cut
short, or stops for the client (a function call, an approval request). Between deltas and
around tool calls it looks for a cancel, the worker's shutdown and the job's time limit,
and raises a ``worker.outcome.Stop`` when the run must end; ``worker.execute`` turns that,
or any failure, into the Response's end.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from shared.model_context import (
    Fitted,
    fit,
    history,
    instruction_items,
    instructions_text,
    model_items,
)
from shared.routing import Route
from shared.schema.job import ENCRYPTED_REASONING, JobSpec
from shared.schema.response import Status
from shared.secrets import unseal
from shared.store.tables import INPUT, ResponseRow
from worker.delta_feed import DeltaFeed
from worker.deps import RunDeps
from worker.fetch import inline_files
from worker.mcp_results import McpCancelled
from worker.outcome import Cancelled, HandBack, Outcome, OverTime, ShutDown, Stop
from worker.providers.base import (
    Delta,
    Provider,
    ProviderRequest,
    ReasoningDelta,
    RefusalDelta,
    TextDelta,
    ToolCallDelta,
)
from worker.publisher import Publisher
from worker.stream_state import StreamState
from worker.structured import Validation
from worker.tools import Toolbox

log = logging.getLogger(__name__)

CANCEL_CHECK_SECONDS = 0.2  # how often a running job looks for a cancel
OUTPUT_DELTAS = (TextDelta, RefusalDelta, ReasoningDelta, ToolCallDelta)
MAX_MODEL_TURNS = 32  # model turns in one response's tool loop
CUT_SHORT = ("length", "content_filter")  # finish reasons that leave the response incomplete
JSON = dict[str, Any]


@dataclass(frozen=True)
class Job:
    """A claimed response and what runs it."""

    row: ResponseRow
    spec: JobSpec  # its parameters, loaded once
    provider: Provider
    route: Route | None  # None: no context window to fit (unit tests)


@dataclass
class Produced:
    """What a run has made so far, which its end records whatever stopped it."""

    state: StreamState = field(default_factory=StreamState)  # output items, usage
    first_output: float | None = None  # when the model produced its first output
    truncation_details: JSON | None = None


@dataclass(frozen=True)
class Context:
    own: list[JSON]  # this response's own input items
    raw: list[JSON]  # the whole context as stored: inherited history, then ``own``
    fitted: Fitted  # what the model sees of it, fitted to the route's window


def load_context(job: Job, deps: RunDeps) -> Context:
    """The context of ``job`` as it stands now (``shared.model_context``; a conversation may have
    grown since the create). Raises ``ResqError`` if the chain or the window no longer allows
    the run."""
    own = deps.store.items(response_id=job.row.id, kind=INPUT)
    inherited = history(
        deps.store,
        previous_response_id=job.row.previous_response_id,
        conversation_id=job.spec.conversation_id,
    )
    raw = inherited + own
    items = model_items(raw)
    if job.route is None:
        return Context(own, raw, Fitted(items, 0))
    fitted = fit(
        items,
        instructions=instructions_text(job.spec.instructions),
        tools=job.spec.tool_dicts(),
        route=job.route,
        truncation=job.spec.truncation,
    )
    return Context(own, raw, fitted)


class Run:
    def __init__(
        self, job: Job, deps: RunDeps, publisher: Publisher, context: Context, box: Toolbox
    ) -> None:
        self.job = job
        self.deps = deps
        self.publisher = publisher
        self.context = context
        self.box = box
        self.state = StreamState(
            mcp=box.targets.get,
            tool_budget=job.spec.max_tool_calls,
            reveal_encrypted=ENCRYPTED_REASONING in job.spec.include,
        )
        self.produced = Produced(self.state, truncation_details=context.fitted.details())
        self.turn_start = 0  # where the current model turn's output items begin
        # What the model sees of the context, files fetched (``worker.fetch``), once per run.
        fetch = deps.fetch
        self.items = inline_files(context.fitted.items, fetch) if fetch else context.fitted.items
        leading = instruction_items(job.spec.instructions)  # a prompt's rendered messages
        self.leading = inline_files(leading, fetch) if fetch and leading else leading
        # Structured outputs resq validates (``worker.structured``): the answer's text is held
        # until it passes; a failed answer and what was wrong go to the model on the next try.
        self.validation = Validation.for_job(job.spec.text, job.route, job.spec.validation)
        self.held: list[str] = []
        self.rejected: list[str] = []  # the problem with each failed answer, in order
        self.retry_items: list[JSON] = []

    @classmethod
    def prepare(cls, job: Job, deps: RunDeps, publisher: Publisher) -> Run:
        """Read the job's context and unseal its MCP credentials (``ResqError`` if either
        cannot be had)."""
        context = load_context(job, deps)
        sealed = job.row.tool_secrets
        credentials = unseal(deps.secret_key, sealed) if sealed else {}
        box = Toolbox.build(
            job.spec.tools,
            credentials,
            timeout=deps.limits.mcp_timeout_seconds,
            outbound=deps.outbound,
        )
        return cls(job, deps, publisher, context, box)

    def generate(self) -> Outcome:
        """Run the model, and the MCP tools it calls, until it answers, stops for the client
        (function calls, approval requests) or is cut short. Raises ``Stop`` when the run
        must end early; provider errors come out as they are."""
        self._check_stop()
        self._list_tools()
        self._run_approved()
        choice = self.job.spec.tool_choice
        for _turn in range(MAX_MODEL_TURNS):
            self._stream(self._request(choice))
            if self._answer_rejected():
                self.publisher.publish(self.state.end_turn())
                continue  # asked again, with what was wrong
            if self.state.finish_reason in CUT_SHORT:
                break  # cut short: the open item ends with the response, incomplete
            self.publisher.publish(self.state.end_turn())
            calls = list(self.state.pending_calls)
            for index in calls:
                self._call(index)
            if not calls or self._waiting_for_client():
                break
            choice = "auto"  # a forced choice applies to the first turn only
        reason = self.state.finish_reason
        if reason in CUT_SHORT:
            detail = "max_output_tokens" if reason == "length" else "content_filter"
            return Outcome(Status.INCOMPLETE, incomplete_details={"reason": detail})
        return Outcome(Status.COMPLETED)

    def _request(self, choice: Any) -> ProviderRequest:
        tools, turn_choice = self.box.for_model(choice)
        if self.state.out_of_calls:
            turn_choice = "none"
        spec = self.job.spec
        accepts = self.job.route.accepts if self.job.route is not None else None
        return ProviderRequest(
            model=self.job.row.model,
            input_items=self.leading
            + self.items
            + model_items(self.state.output)
            + self.retry_items,
            instructions=spec.instructions if isinstance(spec.instructions, str) else None,
            tools=tools,
            tool_choice=turn_choice,
            parallel_tool_calls=spec.parallel_tool_calls,
            max_output_tokens=spec.max_output_tokens,
            # A route whose model takes no temperature / top_p gets none (a request that set
            # one was refused at create; these are the echo's defaults).
            temperature=spec.temperature if accepts is None or accepts.temperature else None,
            top_p=spec.top_p if accepts is None or accepts.top_p else None,
            reasoning=spec.reasoning.model_dump(),
            text=spec.text,
        )

    def _stop(self) -> Stop | None:
        """How the run must end now, if it must: a cancel arrived, or the worker is shutting
        down and its grace period is over (``worker.drain``)."""
        if self.deps.cancel_requested(self.job.row.id):
            return Cancelled()
        if not self.deps.drain.expired():
            return None
        if not self.state.output and not self.publisher.pending:
            return HandBack()
        return ShutDown()

    def _check_stop(self) -> None:
        stop = self._stop()
        if stop is not None:
            raise stop

    def _waiting_for_client(self) -> bool:
        """The model called a client function or asked for an approval: the client acts."""
        return any(
            item["type"] in ("function_call", "mcp_approval_request")
            for item in self.state.output[self.turn_start :]
        )

    def _list_tools(self) -> None:
        """List each MCP server's tools, unless the context already holds a listing of it
        (a continued chain is not listed again)."""
        for label, server in self.box.servers.items():
            tools = self.box.known_listing(label, self.context.raw)
            if tools is None:
                index, events = self.state.start_list_tools(label)
                self.publisher.publish(events)
                tools, error = self.box.list_tools(server)
                self.publisher.publish(self.state.finish_list_tools(index, tools, error))
                if error is not None:
                    continue
            self.box.register(label, tools)

    def _run_approved(self) -> None:
        """Make the calls this request's ``mcp_approval_response`` items (its own input)
        approve."""
        raw = self.context.raw
        requests = {i["id"]: i for i in raw if i.get("type") == "mcp_approval_request"}
        made = {i.get("approval_request_id") for i in raw if i.get("type") == "mcp_call"}
        for answer in self.context.own:
            request_id = answer.get("approval_request_id")
            if answer.get("type") != "mcp_approval_response" or not answer.get("approve"):
                continue
            request = requests.get(request_id)
            if request is None or request_id in made:
                continue
            index, events = self.state.start_mcp_call(
                request["server_label"], request["name"], request["arguments"], request_id
            )
            self.publisher.publish(events)
            self._call(index)

    def _call(self, index: int) -> None:
        """Run one pending MCP call and publish how it ended."""
        self._check_stop()
        item = self.state.output[index]
        try:
            output, error = self.box.call(
                item["server_label"],
                item["name"],
                item["arguments"],
                cancelled=lambda: self._stop() is not None,
            )
        except McpCancelled:
            self._check_stop()
            raise Cancelled() from None
        self.publisher.publish(self.state.finish_mcp_call(index, output=output, error=error))

    def _stream(self, request: ProviderRequest) -> None:
        """One model turn: stream from the provider until it finishes."""
        self.turn_start = len(self.state.output)
        limit = self.deps.limits.time_limit_seconds
        started = last_check = time.monotonic()
        with DeltaFeed(self.job.provider.stream(request)) as feed:
            # A quiet upstream still wakes the run to look for a cancel or a stop.
            while True:
                delta = feed.next(self.publisher.wait(CANCEL_CHECK_SECONDS))
                if delta is DeltaFeed.END:
                    return
                if delta is DeltaFeed.QUIET:
                    if self.publisher.pending:
                        self.publisher.flush()
                else:
                    self._apply(delta)
                now = time.monotonic()
                if now - last_check >= CANCEL_CHECK_SECONDS:
                    last_check = now
                    self._check_stop()
                    if now - started > limit:
                        raise OverTime(limit)

    def _apply(self, delta: Delta) -> None:
        if self.produced.first_output is None and isinstance(delta, OUTPUT_DELTAS):
            self.produced.first_output = self.deps.clock()
        if self.validation is not None:
            if isinstance(delta, TextDelta):
                self.held.append(delta.text)
                return
            if self.held and isinstance(delta, OUTPUT_DELTAS):
                self._release_held()  # text before a tool call or a refusal is no answer
        self.publisher.add(self.state.apply(delta))

    def _release_held(self) -> None:
        text, self.held = "".join(self.held), []
        self.publisher.add(self.state.apply(TextDelta(text)))

    def _answer_rejected(self) -> bool:
        """Judge the turn's held answer: show it if it passes (or was cut short: the response
        ends incomplete either way); else note what was wrong for the next try, or raise
        ``OutputInvalid`` when the route's retries are spent."""
        if not self.held or self.validation is None:
            return False
        answer = "".join(self.held)
        problem = None
        if self.state.finish_reason not in CUT_SHORT:
            problem = self.validation.problem(answer)
        if problem is None:
            self._release_held()
            return False
        self.held = []
        self.rejected.append(problem)
        log.info(
            "response %s: answer %d failed validation: %s",
            self.job.row.id,
            len(self.rejected),
            problem,
        )
        if len(self.rejected) > self.validation.retries:
            raise self.validation.failure(len(self.rejected), self.rejected[0])
        self.retry_items += self.validation.retry_items(answer, problem)
        return True
