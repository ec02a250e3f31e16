"""Celery tasks. Thin: unpack the id, build dependencies, call the domain function."""

from __future__ import annotations

from celery import Celery

from shared.queue import RUN_RESPONSE
from worker.execute import execute
from worker.runtime import runtime


def register(app: Celery) -> None:
    @app.task(name=RUN_RESPONSE, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
    def run_response(response_id: str) -> None:
        rt = runtime()
        execute(response_id, store=rt.store, bus=rt.bus, provider_for=rt.provider_for)
