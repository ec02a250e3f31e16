"""Celery tasks. Thin: unpack the id, build dependencies, call the domain function."""

from __future__ import annotations

import logging
import time

import redis
from celery import Celery, Task
from kombu.exceptions import OperationalError

from shared import keys
from shared.fair import waiting_anywhere
from shared.metrics import sample_history
from shared.queue import (
    DELIVER_WEBHOOK,
    REAP,
    RUN_RESPONSE,
    SAMPLE_QUEUE,
    SWEEP_WEBHOOKS,
    enqueue_delivery,
    enqueue_response,
    is_paused,
    queue_depth,
    queue_for,
)
from shared.schema.job import JobSpec
from shared.store.admin import AdminStore
from shared.tenancy import reconcile
from worker import delivery
from worker.drain import PROCESS_DRAIN
from worker.execute import execute
from worker.reaper import reap
from worker.runtime import Runtime, runtime

log = logging.getLogger(__name__)

PAUSED_RESEND_DELAY_SECONDS = 0.5


def _paused(rt: Runtime, queue: str) -> bool:
    """Whether operators paused ``queue``. Redis away: run the job (the pause is advisory;
    losing the message to a failed task would leave the job queued until the reaper
    re-sends it)."""
    try:
        return is_paused(rt.bus.redis, queue)
    except redis.RedisError as exc:
        log.warning("cannot read the pause flag of %s (%s); running the job", queue, exc)
        return False


def register(app: Celery) -> None:
    _register_runs(app)
    _register_upkeep(app)


def _requeue(app: Celery, rt: Runtime, response_id: str) -> None:
    """Send a lost job again, on the queue its service tier picks."""
    row = rt.store.get_response(response_id=response_id)
    tier = JobSpec.model_validate(row.params).service_tier if row is not None else None
    enqueue_response(app, response_id, queue_for(tier))


def _register_runs(app: Celery) -> None:
    """The job task, and the reaper that finds jobs whose worker was lost."""

    @app.task(
        name=RUN_RESPONSE,
        bind=True,
        acks_late=True,
        reject_on_worker_lost=True,
        ignore_result=True,
    )
    def run_response(task: Task, response_id: str) -> None:
        rt = runtime()
        queue = (task.request.delivery_info or {}).get("routing_key") or keys.QUEUE
        if _paused(rt, queue):
            # Taken from a queue that is paused: the pause reached this worker a moment
            # late (or not at all). The job goes back to its queue untouched, and this
            # worker stops consuming the queue, so it cannot spin on it.
            log.info("response %s: queue %s is paused; sending it back", response_id, queue)
            app.control.cancel_consumer(queue, destination=[task.request.hostname])
            time.sleep(PAUSED_RESEND_DELAY_SECONDS)
            enqueue_response(app, response_id, queue)
            return
        if execute(response_id, rt.run_deps(PROCESS_DRAIN)):
            # Handed back (the worker is stopping, or Redis went away): another run takes it.
            try:
                _requeue(app, rt, response_id)
            except (OperationalError, redis.RedisError) as exc:
                # Stored as queued all the same: the reaper's sweep of stuck queued jobs sends
                # it once the broker answers again.
                log.warning("response %s: could not send it again yet: %s", response_id, exc)

    @app.task(name=REAP, ignore_result=True)
    def reap_lost_jobs() -> None:
        rt = runtime()
        reap(
            store=rt.store,
            bus=rt.bus,
            enqueue=lambda response_id: _requeue(app, rt, response_id),
            heartbeat_timeout=rt.settings.heartbeat_timeout_seconds,
            max_attempts=rt.settings.max_attempts,
            # Jobs waiting in the tenants' fair queues are a backlog too.
            queue_depth=lambda: queue_depth(rt.bus.redis) + waiting_anywhere(rt.bus.redis),
            queued_resend_after=rt.settings.queued_resend_seconds,
        )
        # The tenants' counts, as the store has them (a crash may have left them off).
        reconcile(rt.bus.redis, AdminStore(rt.store).active_by_tenant())


def _register_upkeep(app: Celery) -> None:
    """Webhook deliveries and their sweep, and the queue-depth history."""

    @app.task(name=DELIVER_WEBHOOK, acks_late=True, ignore_result=True)
    def deliver_webhook(delivery_id: str, attempts: int) -> None:
        rt = runtime()
        delivery.deliver(
            delivery_id,
            attempts,
            hooks=rt.hooks,
            client=rt.http,
            outbound=rt.outbound,
            policy=delivery.Policy.from_settings(rt.settings),
            metrics=rt.metrics,
        )

    @app.task(name=SAMPLE_QUEUE, ignore_result=True)
    def sample_queue() -> None:
        rt = runtime()
        sample_history(rt.bus.redis, AdminStore(rt.store), now=time.time())

    @app.task(name=SWEEP_WEBHOOKS, ignore_result=True)
    def sweep_webhooks() -> None:
        rt = runtime()
        delivery.sweep(
            hooks=rt.hooks,
            enqueue=lambda delivery_id, attempts: enqueue_delivery(app, delivery_id, attempts),
            clock=time.time,
        )
