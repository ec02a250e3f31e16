"""Every Redis key resq uses, and their lifetimes, in one place."""

from __future__ import annotations

PREFIX = "resq"
QUEUE = "resq"  # the Celery queue jobs run on
HIGH_QUEUE = "resq.high"  # service_tier "priority"
LOW_QUEUE = "resq.low"  # service_tier "flex"
JOB_QUEUES = (HIGH_QUEUE, QUEUE, LOW_QUEUE)
# Webhook sends and housekeeping (the reaper, queue samples): short tasks on a queue of their
# own, so a job backlog never holds them up (and the reverse).
WEBHOOK_QUEUE = "resq.webhooks"
ALL_QUEUES = (*JOB_QUEUES, WEBHOOK_QUEUE)

METRICS = f"{PREFIX}:metrics"  # hash: every counter and histogram bucket (shared.metrics)
OPEN_STREAMS = f"{PREFIX}:metrics:streams"  # hash: open SSE streams per API process
HISTORY = f"{PREFIX}:history"  # list: queue samples, newest first (shared.metrics)
HISTORY_LENGTH = 720  # one hour at one sample every 5 s
# sorted set: each worker node's name, scored by the time of its last heartbeat (taken while
# its consumer runs); /readyz and the worker's container check read it (worker.presence).
WORKERS = f"{PREFIX}:workers"
WORKER_BEAT_SECONDS = 5.0  # how often a worker writes its heartbeat
WORKER_FRESH_SECONDS = 20.0  # a worker heartbeat older than this is stale

CANCEL_TTL_SECONDS = 24 * 3600


def events(response_id: str) -> str:
    """The stream holding a response's events, ``sequence_number`` n at entry id ``0-(n+1)``."""
    return f"{PREFIX}:events:{response_id}"


def tail_wake(reader: str) -> str:
    """A stream one API process's event-log reader also reads: appending to it wakes the
    reader's blocked ``XREAD`` (``api.tail``). It expires when the process is gone."""
    return f"{PREFIX}:tail:{reader}"


def cancel(response_id: str) -> str:
    """Set when a cancel was asked for; the worker checks it between upstream chunks."""
    return f"{PREFIX}:cancel:{response_id}"


def heartbeat(response_id: str) -> str:
    """Present while a worker runs the response; it expires if the worker stops beating."""
    return f"{PREFIX}:hb:{response_id}"


def resent(response_id: str) -> str:
    """Set when the reaper re-sent a stuck queued job's message, so it does so once a while."""
    return f"{PREFIX}:resent:{response_id}"


def paused(queue: str) -> str:
    """Set while operators have paused a queue (``shared.queue`` pauses, resumes and reads it:
    workers check it as they start and as they take a job; ``/metrics`` reports it)."""
    return f"{PREFIX}:paused:{queue}"


# ---- tenants (shared.tenancy, worker.dispatcher) ----------------------------------------------

TENANTS_WAITING = f"{PREFIX}:fair:tenants"  # set: tenants with jobs waiting for dispatch
DISPATCH_WAKE = f"{PREFIX}:fair:wake"  # list: a push wakes the dispatcher
DISPATCH_LOCK = f"{PREFIX}:fair:lock"  # which worker process dispatches (a lease)
RATE_LIMITED = f"{PREFIX}:metrics:rate_limited"  # hash: "<tenant>|<limit>" → refusals


def tenant_buckets(tenant: str) -> str:
    """Hash: the tenant's request and token buckets (``r``/``rt``, ``t``/``tt``)."""
    return f"{PREFIX}:limit:{tenant}"


def tenant_counts(tenant: str) -> str:
    """Hash: the tenant's ``queued`` and ``running`` jobs."""
    return f"{PREFIX}:tenant:{tenant}"


def tenant_waiting(tenant: str, queue: str) -> str:
    """Sorted set: the tenant's jobs waiting for ``queue`` (a job queue), by arrival."""
    return f"{PREFIX}:fair:{tenant}:{queue}"
