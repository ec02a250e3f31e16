"""CPU per call of the store operations every run makes, on a scratch database:
``python -m bench.store_ops [--db sqlite|postgres] [--calls N] [--rounds R]``.

For each round: N responses created, then each one's input items read, an output item saved,
the response claimed and finished. CPU (process time) per call, best of R rounds. Compare two
commits by alternating runs of each (the spread between runs on this machine is ~±15 %).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.run import scratch_database
from shared.schema.response import Status
from shared.store import migrate
from shared.store.engine import make_engine
from shared.store.repo import Store
from shared.store.tables import ResponseRow

INPUT = {"id": "msg_in", "type": "message", "role": "user",
         "content": [{"type": "input_text", "text": "hello"}]}  # fmt: skip
OUTPUT = {"id": "msg_out", "type": "message", "role": "assistant", "status": "completed",
          "content": [{"type": "output_text", "text": "hi", "annotations": []}]}  # fmt: skip


def _per_call(ids: list[str], call: Callable[[str], Any]) -> float:
    started = time.process_time()
    for rid in ids:
        call(rid)
    return (time.process_time() - started) / len(ids)


def _round(store: Store, prefix: str, calls: int) -> dict[str, float]:
    ids = [f"resp_{prefix}_{i}" for i in range(calls)]
    for rid in ids:
        row = ResponseRow(id=rid, tenant="t", status=Status.QUEUED, model="m", background=True,
                          created_at=1, params={"model": "m"})  # fmt: skip
        store.create_response(row=row, input_items=[INPUT])
    saved = {0: OUTPUT}
    return {
        "items": _per_call(ids, lambda rid: store.items(response_id=rid, kind="input")),
        "save_output_item": _per_call(
            ids, lambda rid: store.save_output_item(response_id=rid, position=0, item=OUTPUT)
        ),
        "claim": _per_call(ids, lambda rid: store.claim(response_id=rid, now=2)),
        "finish": _per_call(
            ids,
            lambda rid: store.finish(
                response_id=rid,
                status=Status.COMPLETED,
                now=3,
                output=[OUTPUT],
                saved=saved,
                usage={"input_tokens": 1},
                timings={"run": 1.0},
            ),  # fmt: skip
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with scratch_database(args.db) as given, tempfile.TemporaryDirectory() as scratch:
        url = given or f"sqlite:///{Path(scratch) / 'store.db'}"
        migrate.upgrade(url)
        store = Store(make_engine(url))
        best: dict[str, float] = {}
        for n in range(args.rounds):
            for name, value in _round(store, str(n), args.calls).items():
                best[name] = min(best.get(name, value), value)
    figures = ", ".join(f"{name} {value * 1e6:.0f} us" for name, value in best.items())
    print(f"CPU per call ({args.db}, best of {args.rounds} rounds of {args.calls}): {figures}")


if __name__ == "__main__":
    main()
