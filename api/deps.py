"""The API's dependencies, built once by ``create_app`` and reached from views."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from celery import Celery
from flask import current_app

from api.auth import Authenticator
from api.tail import Tail
from shared.bus import EventBus
from shared.fair import FairQueues
from shared.metrics import Recorder
from shared.netpolicy import OutboundPolicy
from shared.routing import Router
from shared.settings import Settings
from shared.store import Store
from shared.store.webhooks import WebhookStore
from shared.tenancy import Limiter


@dataclass(frozen=True)
class Deps:
    settings: Settings
    store: Store
    bus: EventBus
    tail: Tail  # follows event logs for streams and waits (one reader per process)
    router: Router
    auth: Authenticator
    enqueue: Callable[[str, str], None]  # (response id, queue)
    celery: Celery  # for control commands (workers, pause/resume)
    metrics: Recorder
    hooks: WebhookStore
    outbound: OutboundPolicy
    send_delivery: Callable[[str, int], None]  # (delivery id, its attempts so far)
    limiter: Limiter  # per-tenant limits and counters (``shared.tenancy``)
    fair: FairQueues | None  # None: RESQ_FAIR_QUEUES=false, jobs go straight to Celery
    # Set when the process is asked to stop: open streams end cleanly so clients resume
    # (with starting_after) on another API process.
    stopping: threading.Event = field(default_factory=threading.Event)


def deps() -> Deps:
    found: Deps = current_app.extensions["resq"]
    return found
