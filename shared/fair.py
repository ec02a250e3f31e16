"""Fair queues: a job waits in its tenant's own queue in Redis until the dispatcher
(``worker.dispatcher``) admits it to Celery, tenants taking turns by weight.

``park`` (API) puts a new job in its tenant's sorted set for its job queue (by arrival) and
wakes the dispatcher, unless nothing waits anywhere and the job's Celery queue holds fewer than
the dispatch buffer: then the job goes straight to Celery (``DIRECT``), as it would without
fair queues, so an idle server adds no hop. Each Celery queue is kept to the buffer on its
own, so a paused queue filling up holds back only its own tier. ``pop`` (dispatcher) takes a
tenant's next job, highest ``service_tier`` queue first, and forgets the tenant once it has
nothing waiting. ``forget`` (cancel, delete) takes a waiting job out at once.

Durability: the response row (``queued``) is in the store before a job is parked; a job that a
dispatcher popped and died before sending is a queued row with no message, which the reaper
sends again once nothing waits (``waiting_anywhere`` counts as a backlog for it).
"""

from __future__ import annotations

from redis import Redis

from shared import keys
from shared.queue import queue_depths

DIRECT = "direct"
PARKED = "parked"

# KEYS: the tenant's set for the queue, the waiting tenants, the wake list, the job's Celery
# queue. ARGV: response id, arrival score, tenant, dispatch buffer, may go direct (1/0).
_PARK = """
if ARGV[5] == '1' and redis.call('SCARD', KEYS[2]) == 0
   and redis.call('LLEN', KEYS[4]) < tonumber(ARGV[4]) then
  return 'direct'
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('SADD', KEYS[2], ARGV[3])
redis.call('LPUSH', KEYS[3], '1')
redis.call('LTRIM', KEYS[3], 0, 0)
return 'parked'
"""

# KEYS: the waiting tenants, then the tenant's sets in dispatch order. ARGV: tenant, then for
# each set its queue's name and whether that queue has room (1/0). Returns {response id,
# queue}, or {} when nothing may go; a tenant with nothing waiting at all is forgotten.
_POP = """
local left = 0
for i = 2, #KEYS do
  if ARGV[2 * i - 1] == '1' then
    local got = redis.call('ZPOPMIN', KEYS[i])
    if got[1] then return {got[1], ARGV[2 * i - 2]} end
  else
    left = left + redis.call('ZCARD', KEYS[i])
  end
end
if left == 0 then redis.call('SREM', KEYS[1], ARGV[1]) end
return {}
"""


class FairQueues:
    def __init__(self, client: Redis, buffer: int) -> None:
        self.client = client
        self.buffer = buffer
        self._park = client.register_script(_PARK)
        self._pop = client.register_script(_POP)

    def park(
        self, tenant: str, queue: str, response_id: str, *, now: float, direct: bool = True
    ) -> str:
        """``PARKED`` in the tenant's queue, or ``DIRECT``: send it to Celery now.
        ``direct=False`` always parks (a tenant with a ``running`` limit: the dispatcher
        keeps it)."""
        result = self._park(
            keys=[
                keys.tenant_waiting(tenant, queue),
                keys.TENANTS_WAITING,
                keys.DISPATCH_WAKE,
                queue,
            ],
            args=[response_id, now, tenant, self.buffer, int(direct)],
        )
        return (result.decode() if isinstance(result, bytes) else str(result)) or PARKED

    def pop(self, tenant: str, room: set[str] | None = None) -> tuple[str, str] | None:
        """The tenant's next job for a queue in ``room`` (default: every job queue) and its
        queue, or None; a tenant with nothing waiting at all waits no more."""
        allowed = set(keys.JOB_QUEUES) if room is None else room
        args: list[str | int] = [tenant]
        for queue in keys.JOB_QUEUES:
            args += [queue, int(queue in allowed)]
        got = self._pop(
            keys=[
                keys.TENANTS_WAITING,
                *(keys.tenant_waiting(tenant, q) for q in keys.JOB_QUEUES),
            ],
            args=args,
        )
        if not got:
            return None
        response_id, queue = (v.decode() if isinstance(v, bytes) else str(v) for v in got)
        return response_id, queue

    def forget(self, tenant: str, response_id: str) -> bool:
        """Take a waiting job out (cancelled or deleted); True if it was waiting."""
        pipe = self.client.pipeline(transaction=False)
        for queue in keys.JOB_QUEUES:
            pipe.zrem(keys.tenant_waiting(tenant, queue), response_id)
        return any(pipe.execute())

    def tenants(self) -> list[str]:
        members = self.client.smembers(keys.TENANTS_WAITING)
        return sorted(t.decode() if isinstance(t, bytes) else str(t) for t in members)

    def waiting(self, tenant: str) -> int:
        pipe = self.client.pipeline(transaction=False)
        for queue in keys.JOB_QUEUES:
            pipe.zcard(keys.tenant_waiting(tenant, queue))
        return sum(int(n) for n in pipe.execute())

    def celery_depths(self) -> dict[str, int]:
        """Messages waiting in each of Celery's job queues."""
        return queue_depths(self.client, keys.JOB_QUEUES)


def waiting_anywhere(client: Redis) -> int:
    """How many tenants have jobs waiting for dispatch (a backlog, for the reaper)."""
    return int(client.scard(keys.TENANTS_WAITING))
