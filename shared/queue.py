"""The Celery app both sides share (the API sends tasks by name, the worker runs them), and
the queues' state in Redis: their depths, and pausing them (this module is the pause's one
owner: the admin API pauses and resumes, workers and ``/metrics`` read it)."""

from __future__ import annotations

from celery import Celery
from redis import Redis

from shared import broker, keys
from shared.settings import Settings

RUN_RESPONSE = "resq.run_response"
REAP = "resq.reap"
DELIVER_WEBHOOK = "resq.deliver_webhook"
SWEEP_WEBHOOKS = "resq.sweep_webhooks"
SAMPLE_QUEUE = "resq.sample_queue"
SAMPLE_SECONDS = 5.0


def make_celery(settings: Settings) -> Celery:
    app = Celery("resq", broker=settings.redis_url, set_as_current=False)
    concurrency = max(settings.worker_concurrency, 10)
    app.conf.update(
        # kombu's Redis transport, with acks that survive a Redis outage (shared/broker.py).
        broker_transport=broker.TRANSPORT,
        task_default_queue=keys.QUEUE,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # After a broker reconnect Celery would cut the prefetch count by the jobs still
        # running and earn it back one new ack at a time, so a worker whose jobs ran through a
        # Redis restart takes one job at a time for a while. Its slots are gevent greenlets,
        # not processes: keep them all.
        worker_enable_prefetch_count_reduction=False,
        task_ignore_result=True,
        result_backend=None,
        broker_connection_retry_on_startup=True,
        broker_pool_limit=concurrency,
        broker_transport_options={
            # Longer than the longest job, so a running job is not redelivered while alive.
            "visibility_timeout": 6 * 3600,
            "max_connections": concurrency * 2 + 20,
        },
        worker_hijack_root_logger=False,
        # The reaper, scheduled by `celery beat` (ops.launcher.beat_command); a duplicate
        # beat is harmless (every reaper step is a conditional update).
        beat_schedule={
            "resq-reap": {
                "task": REAP,
                "schedule": settings.reaper_interval_seconds,
                # On the short-task queue: a job backlog, or a paused job queue, never holds
                # up the search for lost jobs.
                "options": {
                    "queue": keys.WEBHOOK_QUEUE,
                    "expires": settings.reaper_interval_seconds,
                },
            },
            # Sends webhook deliveries that are due (retries, and sends whose message was lost).
            "resq-sweep-webhooks": {
                "task": SWEEP_WEBHOOKS,
                "schedule": settings.webhook_sweep_seconds,
                "options": {
                    "queue": keys.WEBHOOK_QUEUE,
                    "expires": settings.webhook_sweep_seconds,
                },
            },
            # One sample of the queue for the dashboard's charts (GET /v1/admin/queue/history).
            "resq-sample-queue": {
                "task": SAMPLE_QUEUE,
                "schedule": SAMPLE_SECONDS,
                "options": {"queue": keys.WEBHOOK_QUEUE, "expires": SAMPLE_SECONDS},
            },
        },
        worker_send_task_events=False,
    )
    return app


def enqueue_response(app: Celery, response_id: str, queue: str = keys.QUEUE) -> None:
    """Queue ``run_response``; the task id is the response id (redelivery-safe)."""
    app.send_task(RUN_RESPONSE, args=[response_id], task_id=response_id, queue=queue)


def queue_for(service_tier: str | None) -> str:
    """``service_tier: "priority"`` runs on the high queue, ``"flex"`` on the low one."""
    return {"priority": keys.HIGH_QUEUE, "flex": keys.LOW_QUEUE}.get(service_tier or "", keys.QUEUE)


def queue_depth(client: Redis) -> int:
    """Messages waiting in resq's job queues (the Redis lists kombu keeps them in)."""
    return sum(queue_depths(client, keys.JOB_QUEUES).values())


def queue_depths(client: Redis, queues: tuple[str, ...] = keys.ALL_QUEUES) -> dict[str, int]:
    """Messages waiting in each of ``queues`` (default: all of resq's), in one round trip."""
    pipe = client.pipeline(transaction=False)
    for queue in queues:
        pipe.llen(queue)
    return dict(zip(queues, (int(n) for n in pipe.execute()), strict=True))


def paused_queues(client: Redis) -> dict[str, bool]:
    """Whether each of resq's queues is paused."""
    pipe = client.pipeline(transaction=False)
    for queue in keys.ALL_QUEUES:
        pipe.exists(keys.paused(queue))
    return dict(zip(keys.ALL_QUEUES, (bool(n) for n in pipe.execute()), strict=True))


def queue_states(client: Redis) -> list[dict[str, str | int | bool]]:
    """Each queue's name, depth and pause, in ``keys.ALL_QUEUES`` order."""
    depths = queue_depths(client)
    paused = paused_queues(client)
    return [{"name": q, "depth": depths[q], "paused": paused[q]} for q in keys.ALL_QUEUES]


def is_paused(client: Redis, queue: str) -> bool:
    return bool(client.exists(keys.paused(queue)))


def pause(app: Celery, client: Redis, queue: str, *, timeout: float) -> None:
    """Workers stop taking messages from ``queue``: a flag in Redis, which workers starting
    later read (``worker/celery_app.py``), then a broadcast to the live ones, waiting up to
    ``timeout`` for them to confirm. A message a worker took in the meantime goes back to the
    queue when the worker sees the flag (``worker/tasks.py``). Messages already taken run to
    their end; nothing queued is lost."""
    client.set(keys.paused(queue), b"1")
    app.control.cancel_consumer(queue, reply=True, timeout=timeout)


def resume(app: Celery, client: Redis, queue: str, *, timeout: float) -> None:
    """Workers take messages from ``queue`` again (the flag goes, then a broadcast)."""
    client.delete(keys.paused(queue))
    app.control.add_consumer(queue, reply=True, timeout=timeout)


def enqueue_delivery(app: Celery, delivery_id: str, attempts: int) -> None:
    """Queue one attempt of a webhook delivery; ``attempts`` is its count of attempts so far
    (a duplicate message from before an attempt then does nothing)."""
    app.send_task(DELIVER_WEBHOOK, args=[delivery_id, attempts], queue=keys.WEBHOOK_QUEUE)


def enqueue_deliveries(app: Celery, delivery_ids: list[str]) -> None:
    """Queue the first attempt of new deliveries (``Store``'s ``on_deliveries`` hook)."""
    for delivery_id in delivery_ids:
        enqueue_delivery(app, delivery_id, 0)
