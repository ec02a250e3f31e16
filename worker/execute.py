"""Run one response: claim it, run it (``worker.run``), record how it ended.

Dependencies come in as one object (``worker.deps.RunDeps``), so this runs the same in a
Celery task and in a unit test with stand-ins at the boundaries.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import redis

from shared import lifecycle, logs
from shared.errors import ResqError
from shared.schema.job import JobSpec
from shared.schema.response import Status, usage_object
from shared.store.tables import ResponseRow
from worker.deps import RunDeps
from worker.heartbeat import Heartbeat
from worker.outcome import EarlierOutput, HandBack, Outcome, ended_by
from worker.providers.base import Provider, ProviderError, ProviderRequest
from worker.publisher import Publisher
from worker.run import Job, Produced, Run

log = logging.getLogger(__name__)

# Redis not answering (stopped, restarting, loading its file): a run that has sent no output
# yet goes back to the queue rather than failing.
REDIS_AWAY = (redis.ConnectionError, redis.TimeoutError)


def execute(response_id: str, deps: RunDeps) -> bool:
    """Run a queued response to its end. Does nothing if it already ended or started.

    True if the run was handed back instead (``worker.outcome.HandBack``: the worker is
    stopping, or Redis stopped answering, before any output went out): the response is
    ``queued`` again, and the caller sends its message again."""
    row = deps.store.claim(response_id=response_id, now=int(deps.clock()))
    if row is None:
        log.info("response %s: not claimable (ended, cancelled or taken); skipping", response_id)
        return False
    _count(deps, "started", row.tenant)
    limits = deps.limits
    with (
        logs.bind(response_id=row.id, tenant=row.tenant, model=row.model),
        Heartbeat(
            deps.bus,
            response_id,
            every=limits.heartbeat_seconds,
            ttl=limits.heartbeat_timeout_seconds,
        ),
        deps.cancels.watching(row.id) if deps.cancels is not None else nullcontext(),
    ):
        return _run(row, deps)


def _run(row: ResponseRow, deps: RunDeps) -> bool:
    route = None
    try:
        provider: Provider = deps.provider_for(row.model)
        route = deps.route_for(row.model) if deps.route_for is not None else None
    except ResqError as exc:
        provider = _Failing(exc.message)
    started = deps.clock()
    publisher = Publisher(deps.store, deps.bus, row.id)
    publisher.open(row)
    produced = Produced()
    reason = ""
    try:
        if publisher.output_out:
            raise EarlierOutput()
        job = Job(row, JobSpec.model_validate(row.params), provider, route)
        run = Run.prepare(job, deps, publisher)
        produced = run.produced
        outcome = run.generate()
    except Exception as exc:
        if isinstance(exc, REDIS_AWAY) and not publisher.output_out:
            exc = HandBack(f"Redis did not answer before any output went out: {exc}")
        if isinstance(exc, ProviderError) and deps.metrics is not None:
            deps.metrics.upstream_error(
                route.provider if route is not None else "unknown", str(exc.status or exc.code)
            )
        outcome = ended_by(exc, row.id)
        reason = exc.reason if isinstance(exc, HandBack) else ""
    if outcome.status == Status.QUEUED:
        assert row.started_at is not None
        if deps.store.requeue(response_id=row.id, started_at=row.started_at, refund=True):
            log.warning("response %s: handed back to the queue (%s)", row.id, reason)
            _count(deps, "handed_back", row.tenant)
            return True
        # Cancelled (or taken over by the reaper) meanwhile: end it as the store now says.
        outcome = Outcome(Status.CANCELLED)
    _finish(row, deps, publisher, produced, outcome, started)
    usage = produced.state.usage
    used = usage.input_tokens + usage.output_tokens if usage is not None else 0
    charged = int(row.params.get("charged_tokens") or 0)
    _count(deps, "ended", row.tenant, charged=charged, used=used, now=deps.clock())
    return False


def _count(deps: RunDeps, event: str, tenant: str, **kwargs: Any) -> None:
    """Tell the tenant's counts (``shared.tenancy.TenantCounters``); Redis errors are left
    to the reaper, which sets the counts again from the store."""
    if deps.tally is None:
        return
    try:
        getattr(deps.tally, event)(tenant, **kwargs)
    except redis.RedisError as exc:
        log.warning("tenant %s: could not count a job %s: %s", tenant, event, exc)


def _finish(
    row: ResponseRow,
    deps: RunDeps,
    publisher: Publisher,
    produced: Produced,
    outcome: Outcome,
    started: float,
) -> None:
    """Record the outcome in the store, then end the event log with it. With Redis away, the
    store still records the end, and the reaper writes the log's terminal event from it once
    Redis answers (``shared.lifecycle.close_log``)."""
    state = produced.state
    item_status = "completed" if outcome.status == Status.COMPLETED else "incomplete"
    # Whatever is pending and the closing events, in one publish: store.finish below
    # writes every output item at once.
    closing = state.close(item_status)
    logged = _publish_or_warn(row.id, lambda: publisher.close(closing))
    timings = _timings(row, started, deps.clock(), produced.first_output)
    from_statuses: tuple[Status, ...] = (Status.IN_PROGRESS,)
    if outcome.status == Status.CANCELLED:
        from_statuses += (Status.CANCELLED,)
    usage = state.usage
    final = deps.store.finish(
        response_id=row.id,
        status=outcome.status,
        now=int(deps.clock()),
        output=state.output,
        saved=publisher.saved,
        error=outcome.error,
        incomplete_details=outcome.incomplete_details,
        usage=usage_object(
            usage.input_tokens,
            usage.output_tokens,
            usage.reasoning_tokens,
            usage.cached_tokens,
            usage.cache_write_tokens,
        )
        if usage
        else None,
        truncation_details=produced.truncation_details,
        timings=timings,
        from_statuses=from_statuses,
    )
    if not logged:
        return
    if final is None:
        log.info("response %s: deleted while running; dropping its events", row.id)
        deps.bus.drop(row.id)
        return
    if deps.metrics is not None:
        deps.metrics.finished(
            model=final.model, status=final.status, timings=timings, usage=final.usage
        )
    ending = lifecycle.closing_events(final, deps.store.render(final, output=state.output))
    if not _publish_or_warn(row.id, lambda: publisher.end(ending)):
        return
    if not final.store:
        deps.bus.expire_soon(final.id)
    log.info("response %s: %s", final.id, final.status)


def _publish_or_warn(response_id: str, publish: Callable[[], None]) -> bool:
    """Run ``publish``; False (and a warning) if Redis did not answer."""
    try:
        publish()
    except REDIS_AWAY as exc:
        log.warning(
            "response %s: Redis did not take the closing events (%s); the end is recorded "
            "in the store and the reaper ends the log",
            response_id,
            exc,
        )
        return False
    return True


def _timings(
    row: ResponseRow, started: float, ended: float, first_output: float | None
) -> dict[str, Any]:
    queued_at = row.enqueued_at or float(row.created_at)
    return {
        "queue_wait": round(max(0.0, started - queued_at), 6),
        "run": round(ended - started, 6),
        "first_token": round(first_output - started, 6) if first_output else None,
    }


class _Failing:
    """A provider that fails at once (the route disappeared since the response was queued)."""

    def __init__(self, message: str) -> None:
        self.message = message

    def stream(self, request: ProviderRequest) -> Any:
        raise ProviderError(self.message)
        yield  # pragma: no cover
