"""Celery tasks. Thin: unpack the id, build dependencies, call the domain function."""

from __future__ import annotations

from celery import Celery

from shared.queue import REAP, RUN_RESPONSE, enqueue_response, queue_depth
from worker.execute import Limits, execute
from worker.reaper import reap
from worker.runtime import runtime


def register(app: Celery) -> None:
    @app.task(name=RUN_RESPONSE, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
    def run_response(response_id: str) -> None:
        rt = runtime()
        execute(
            response_id,
            store=rt.store,
            bus=rt.bus,
            provider_for=rt.provider_for,
            limits=Limits.from_settings(rt.settings),
        )

    @app.task(name=REAP, ignore_result=True)
    def reap_lost_jobs() -> None:
        rt = runtime()
        reap(
            store=rt.store,
            bus=rt.bus,
            enqueue=lambda response_id: enqueue_response(app, response_id),
            heartbeat_timeout=rt.settings.heartbeat_timeout_seconds,
            max_attempts=rt.settings.max_attempts,
            queue_depth=lambda: queue_depth(rt.bus.redis),
            queued_resend_after=rt.settings.queued_resend_seconds,
        )
