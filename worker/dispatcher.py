"""The fair dispatcher: admits waiting jobs from the tenants' queues (``shared.fair``) to
Celery, tenants taking turns by weight, keeping only ``RESQ_DISPATCH_BUFFER`` messages waiting
in each of Celery's job queues (enough that a free worker slot never waits, few enough that a
newcomer's job waits behind no more than these).

Every worker process runs one; a lease in Redis (``keys.DISPATCH_LOCK``, renewed while held)
lets one of them dispatch at a time, and another takes over within ``LEASE_SECONDS`` when it
stops. Turns are stride scheduling: each tenant has a pass value that grows by ``1 / weight``
per job it is sent; the waiting tenant with the lowest pass goes next, and a tenant that starts
waiting joins at the current lowest pass (no credit for time it had nothing waiting). A tenant
at its ``running`` limit is skipped until a job of its ends. Within a tenant, the
``service_tier`` queues go highest first.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable

import redis

from shared import keys
from shared.fair import FairQueues
from shared.tenancy import TenantPolicy

log = logging.getLogger(__name__)

LEASE_SECONDS = 3.0
IDLE_WAIT_SECONDS = 0.5  # nothing waits: block on the wake list this long
FULL_WAIT_SECONDS = 0.01  # Celery's queues are full: look again this soon


class Turns:
    """Stride scheduling over the waiting tenants (pure; the dispatcher's memory)."""

    def __init__(self) -> None:
        self.passes: dict[str, float] = {}

    def next(self, waiting: list[str]) -> str | None:
        if not waiting:
            return None
        floor = min((self.passes[t] for t in waiting if t in self.passes), default=0.0)
        for tenant in waiting:
            self.passes[tenant] = max(self.passes.get(tenant, floor), floor)
        return min(waiting, key=lambda t: (self.passes[t], t))

    def sent(self, tenant: str, weight: int) -> None:
        self.passes[tenant] = self.passes.get(tenant, 0.0) + 1.0 / max(weight, 1)

    def forget(self, tenants: set[str]) -> None:
        for tenant in list(self.passes):
            if tenant not in tenants:
                del self.passes[tenant]


class Dispatcher:
    def __init__(
        self,
        client: redis.Redis,
        send: Callable[[str, str], None],
        policy: TenantPolicy,
        buffer: int,
        *,
        name: str | None = None,
    ) -> None:
        self.client = client
        self.fair = FairQueues(client, buffer)
        self.send = send  # (response id, queue) → a Celery message
        self.policy = policy
        self.buffer = buffer
        self.name = name or uuid.uuid4().hex
        self.turns = Turns()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="resq-dispatcher")

    # ---- one round ------------------------------------------------------------------------

    def dispatch_once(self) -> int:
        """Send jobs until each Celery job queue holds ``buffer`` or nothing may go; how many
        went."""
        room = {q: self.buffer - n for q, n in self.fair.celery_depths().items()}
        waiting = self.fair.tenants()
        self.turns.forget(set(waiting))
        # Running counts move only as workers claim and end jobs: read them once a round,
        # not once a job.
        eligible = [t for t in waiting if not self._at_running_limit(t)]
        sent = 0
        while eligible:
            open_queues = {q for q, n in room.items() if n > 0}
            if not open_queues:
                break
            tenant = self.turns.next(eligible)
            assert tenant is not None
            job = self.fair.pop(tenant, open_queues)
            if job is None:
                eligible.remove(tenant)  # nothing it has may go now
                continue
            response_id, queue = job
            self.send(response_id, queue)
            self.turns.sent(tenant, self.policy.of(tenant).weight)
            room[queue] -= 1
            sent += 1
        return sent

    def _at_running_limit(self, tenant: str) -> bool:
        limit = self.policy.of(tenant).running
        if not limit:
            return False
        running = self.client.hget(keys.tenant_counts(tenant), "running")
        return int(running or 0) >= limit

    # ---- the lease and the loop -----------------------------------------------------------

    def lead(self) -> bool:
        """Hold (or take) the lease; True while this dispatcher is the one."""
        ms = int(LEASE_SECONDS * 1000)
        if self.client.set(keys.DISPATCH_LOCK, self.name, nx=True, px=ms):
            return True
        if self._holding():
            self.client.pexpire(keys.DISPATCH_LOCK, ms)
            return True
        return False

    def _holding(self) -> bool:
        holder = self.client.get(keys.DISPATCH_LOCK)
        if isinstance(holder, bytes):
            holder = holder.decode()
        return holder == self.name

    def _run(self) -> None:
        renewed = 0.0
        leading = False
        while not self._stop.is_set():
            try:
                now = time.monotonic()
                if now - renewed > LEASE_SECONDS / 3:
                    leading, renewed = self.lead(), now
                if not leading:
                    self._stop.wait(LEASE_SECONDS / 3)
                    continue
                sent = self.dispatch_once()
                if sent == 0:
                    self._rest()
            except redis.RedisError as exc:
                log.warning("dispatcher: Redis failed: %s; trying again", exc)
                self._stop.wait(1.0)
            except Exception:
                log.exception("dispatcher: unexpected error; trying again")
                self._stop.wait(1.0)
        self._release()

    def _rest(self) -> None:
        """Wait for work: blocked on the wake list when nothing waits, a short sleep when
        jobs wait for room in Celery's queues."""
        if self.fair.tenants():
            self._stop.wait(FULL_WAIT_SECONDS)
        else:
            self.client.blpop([keys.DISPATCH_WAKE], timeout=IDLE_WAIT_SECONDS)

    def _release(self) -> None:
        with contextlib.suppress(redis.RedisError):  # else the lease expires on its own
            if self._holding():
                self.client.delete(keys.DISPATCH_LOCK)

    def start(self) -> Dispatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
