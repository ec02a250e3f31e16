"""Where a job's CPU goes, in one process: ``python -m bench.profile [--jobs N] [--db ...]``.

Two phases over the real pieces: a private Redis server (broker and event bus) and a migrated
SQLite file (or a throwaway Postgres database):

1. ``create``: N background creates through the Flask app (``api.create_app`` as gunicorn
   serves it, called through its test client), each enqueued by the real Celery producer.
2. ``run``: each of those jobs run by ``worker.execute`` with the worker's own runtime, on the
   built-in model (``--words`` tokens, no delays): resq's own cost per job, without an
   upstream's HTTP and without Celery's per-task work (which the ``drain`` row of
   ``bench.run`` includes).

For each phase: CPU per item (``time.process_time``), then cProfile's top functions by own
time and by cumulative time. Numbers are for comparing one change with the next on the same
machine; the bench table (``bench.run``) is the user-visible figure.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.run import scratch_database
from ops.embedded_redis import EmbeddedRedis, free_port
from shared.store import migrate


def _profile(name: str, count: int, step: Callable[[int], None], top: int) -> float:
    profiler = cProfile.Profile()
    started = time.process_time()
    profiler.enable()
    for i in range(count):
        step(i)
    profiler.disable()
    per_item_ms = (time.process_time() - started) / count * 1000
    print(f"\n== {name}: {count} in {per_item_ms:.2f} ms of CPU each (profiler on)")
    for order in ("tottime", "cumulative"):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats(order).print_stats(top)
        lines = out.getvalue().splitlines()
        start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls"))
        print(f"-- by {order}")
        print("\n".join(lines[start : start + top + 1]))
    return per_item_ms


def _timed(count: int, step: Callable[[int], None]) -> float:
    started = time.process_time()
    for i in range(count):
        step(i)
    return (time.process_time() - started) / count * 1000


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=300, help="creates (and runs) per phase")
    p.add_argument("--words", type=int, default=50, help="tokens the built-in model answers")
    p.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    p.add_argument("--top", type=int, default=25, help="functions listed per ordering")
    p.add_argument("--rounds", type=int, default=3, help="unprofiled rounds; the best counts")
    args = p.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="resq-profile-"))
    redis_server = EmbeddedRedis(root / "redis", port=free_port(), persist=False).start()
    try:
        with scratch_database(args.db) as database_url:
            url = database_url or f"sqlite:///{root / 'resq.db'}"
            migrate.upgrade(url)
            os.environ.update(
                DATABASE_URL=url,
                REDIS_URL=redis_server.url,
                RESQ_VAR_DIR=str(root / "var"),
                RESQ_LOG_LEVEL="WARNING",
            )
            os.environ.pop("RESQ_API_KEYS", None)
            return _phases(args)
    finally:
        redis_server.stop()


def _phases(args: argparse.Namespace) -> int:
    import logging

    from api import create_app
    from worker.drain import Drain
    from worker.execute import execute
    from worker.runtime import runtime

    logging.disable(logging.WARNING)
    client = create_app().test_client()
    body = json.dumps(
        {
            "model": "resq-builtin",
            "input": "#resq " + json.dumps({"words": args.words, "delay_ms": 0}),
            "background": True,
        }
    )
    ids: list[str] = []

    def create(_i: int) -> None:
        answer = client.post("/v1/responses", data=body, content_type="application/json")
        assert answer.status_code == 200, answer.get_data(as_text=True)
        ids.append(answer.get_json()["id"])

    warm = max(5, args.jobs // 20)
    _timed(warm, create)
    plain_create = min(_timed(args.jobs, create) for _ in range(args.rounds))
    _profile("create", args.jobs, create, args.top)
    deps = runtime().run_deps(Drain())
    done = 0

    def run(_i: int) -> None:
        nonlocal done
        execute(ids[done], deps)
        done += 1

    _timed(warm, run)
    plain_run = min(_timed(args.jobs, run) for _ in range(args.rounds))
    _profile("run", args.jobs, run, args.top)
    print(
        f"\nCPU per item without the profiler (best of {args.rounds} rounds of {args.jobs}): "
        f"create {plain_create:.2f} ms, run {plain_run:.2f} ms ({args.words} tokens, {args.db})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
