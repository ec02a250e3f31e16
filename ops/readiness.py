"""Whether ``make run``'s stack is ready: a worker beats and ``/readyz`` answers 200 (Redis, the
database and a worker are there).

The worker's heartbeat is read from Redis first, so the API's access log does not fill with
probes while the worker starts. The launcher runs this as ``python -m ops.readiness URL`` (the
Redis URL in ``REDIS_URL``), a process that exits 0 once the stack is ready, and keeps its
children supervised meanwhile: the Redis client this needs (~35 MB of RSS) then never stays in
the launcher, which lives as long as the stack, for a question asked only while it starts.
"""

from __future__ import annotations

import os
import sys
import time
import urllib.request

import redis

from shared.presence import fresh_workers

POLL_SECONDS = 0.1


def ready(url: str, client: redis.Redis) -> bool:
    return _worker_there(client) and _answers(f"{url}/readyz")


def _worker_there(client: redis.Redis) -> bool:
    try:
        return bool(fresh_workers(client))
    except redis.RedisError:
        return False


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return bool(r.status == 200)
    except OSError:  # refused while gunicorn starts, or a 503 (HTTPError)
        return False


def main(url: str) -> int:
    """Ask until the stack is ready (the launcher stops this process if it gives up first)."""
    client = redis.Redis.from_url(
        os.environ["REDIS_URL"], socket_timeout=1, socket_connect_timeout=1
    )
    try:
        while not ready(url, client):
            time.sleep(POLL_SECONDS)
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
