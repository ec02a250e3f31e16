"""The worker's container check: ``python -m worker.healthcheck``.

Exits 0 when a worker node of this host (``<name>@<hostname>``, or the node ``--name``) has
written a fresh heartbeat (``worker.presence``), which it does only while its consumer runs;
1 otherwise, with one line saying why. Reads ``REDIS_URL`` and nothing else.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time

import redis

from shared.presence import fresh_workers
from shared.settings import Settings


def check(client: redis.Redis, *, name: str | None, host: str, now: float) -> str | None:
    """None if healthy, else the reason."""
    names = fresh_workers(client, now=now)
    if name is not None:
        return None if name in names else f"worker {name} has no fresh heartbeat"
    if any(n.rpartition("@")[2] == host for n in names):
        return None
    return f"no worker on host {host} has a fresh heartbeat"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.healthcheck", description=__doc__)
    parser.add_argument("--name", help="the worker node name (default: any on this host)")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=3, socket_connect_timeout=3)
    try:
        problem = check(client, name=args.name, host=socket.gethostname(), now=time.time())
    except redis.RedisError as exc:
        problem = f"Redis at REDIS_URL does not answer: {exc}"
    finally:
        client.close()
    if problem is not None:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
