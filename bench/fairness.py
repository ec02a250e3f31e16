"""Fairness between tenants (issue 20): ``python -m bench.fairness [--quick] [--fair off|on|both]``.

"Tenant A submits 5,000 background jobs (50 tokens x 20 ms), then tenant B submits 20. Report
B's queue wait p50/p99 and A's throughput, before and after. Target: B's p99 wait <= 2 s while
A's backlog drains at the same jobs/s as without B (within 10 %). Also the create overhead of
the limit check (p50 added <= 0.5 ms)."

For each fair-queue setting (``RESQ_FAIR_QUEUES`` false = before, true = after) a fresh
``bench.stack.Stack`` (private Redis, migrated SQLite or a throwaway Postgres database, the fake
upstream answering 50 tokens 20 ms apart, ONE API process, ``--workers`` Celery workers), its
API and workers restarted with three tenant keys and an admin key; then:

- ``alone``: A submits ``--jobs`` background jobs at c=32; A's drain rate = A's jobs / (last
  end - first start), from each response's ``enqueued_at`` and ``timings`` in the store.
- ``with_b``: the same, then (once A's creates are all answered) B submits ``--b-jobs`` at once;
  B's queue waits from the admin API (``timings.queue_wait``), A's drain rate as above.
- ``overhead`` (on the last stack only, workers stopped): sequential background creates, a
  tenant without limits and one with limits too high to refuse anything taking turns, p50 of
  each; then ``Limiter.admit`` in this process against the stack's Redis, p50 per call.

Prints a table and writes ``bench/results/fairness-<timestamp>.json``. Exit 0; 1 if a create
failed, a job did not end ``completed``, a phase ran past its time limit or a resq process
exited (``PROBLEM:`` lines); 130 interrupted. Everything it starts is stopped on every path.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import redis
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from bench.run import (
    QUEUED,
    Check,
    Failed,
    Load,
    Store,
    _no_interrupts,
    closed_loop,
    create_body,
    scratch_database,
    timed,
)
from bench.stack import HOST, RESULTS, Connection, Stack, meta, pct, request_bytes, set_upstream
from ops.launcher import api_command, spawn, stop_all, wait_healthy
from shared import keys
from shared.settings import Settings
from shared.tenancy import Limiter, TenantLimits, TenantPolicy

A, B, LIMITED = "tenant-a", "tenant-b", "tenant-limited"
API_KEYS = {A: "sk-bench-a", B: "sk-bench-b", LIMITED: "sk-bench-limited"}
ADMIN_KEY = "sk-bench-admin"
# High enough that nothing is ever refused: the check runs, its answer is always yes.
HIGH_LIMITS = TenantLimits(requests_per_minute=10**9, tokens_per_minute=10**12)
TOKENS, DELAY_MS = 50, 20.0  # the jobs: ideal 1 s each
# 100 slots of 1-s jobs drain at most 100 jobs/s (one worker process on 2 cores manages less),
# so 5000 jobs are a backlog of a minute or more that B arrives behind.
DEFAULT_CONCURRENCY = 100
B_WAIT_P99_S = 2.0
A_RATE_KEPT = 0.9  # with B, A drains at >= 90 % of its rate alone
OVERHEAD_P50_MS = 0.5
POLL_S = 0.2
READY_S = 60.0
WARMUP = 10
BACKLOG = 200  # queued jobs from which the workers' intake is sampled


@dataclass(frozen=True)
class Sizes:
    jobs: int  # A's background jobs
    b_jobs: int  # B's, after A's
    creates: int  # sequential creates per tenant in ``overhead``
    admits: int  # in-process ``Limiter.admit`` calls per tenant
    timeout_s: float  # per phase


FULL = Sizes(5000, 20, 500, 2000, 900.0)
QUICK = Sizes(300, 5, 50, 200, 120.0)


# --------------------------------------------------------------------------- the stack


def tenants_toml() -> str:
    return f"[tenants.{LIMITED}]\n" + "".join(
        f"{name} = {value}\n" for name, value in asdict(HIGH_LIMITS).items() if value
    )


def configure(stack: Stack, *, fair: bool) -> None:
    """Restart the API and the workers with the tenants' keys, the admin key, ``LIMITED``'s
    limits and fair queues on or off (``Stack`` starts them in open mode); wait until the API
    answers and every worker beats."""
    tenants = stack.root / "tenants.toml"
    tenants.write_text(tenants_toml())
    stack.stop_workers()
    stop_all([stack.processes.pop("api")])
    stack.env |= {
        "RESQ_API_KEYS": ",".join(f"{key}:{tenant}" for tenant, key in API_KEYS.items()),
        "RESQ_ADMIN_KEYS": ADMIN_KEY,
        "RESQ_TENANTS_FILE": str(tenants),
        "RESQ_FAIR_QUEUES": "true" if fair else "false",
    }
    since = time.time()
    log = (stack.root / "api.log").open("ab")
    stack.logs.append(log)
    api = spawn(
        api_command(Settings.from_env(stack.env)), stack.env, stdout=log, stderr=subprocess.STDOUT
    )
    stack.processes["api"] = api
    stack.start_workers()
    wait_healthy(f"http://{HOST}:{stack.api_port}", READY_S, list(stack.processes.values()))
    wait_workers(stack, since)


def wait_workers(stack: Stack, since: float) -> None:
    """Until every worker started after ``since`` has beaten (its consumer runs)."""
    deadline = time.monotonic() + READY_S
    with closing(redis.Redis.from_url(stack.redis.url)) as client:
        while len(client.zrangebyscore(keys.WORKERS, since, "+inf")) < stack.workers:
            if stack.exited() or time.monotonic() > deadline:
                raise RuntimeError(f"workers not beating within {READY_S:g} s: {stack.exited()}")
            time.sleep(POLL_S)


# --------------------------------------------------------------------------- requests


def auth(tenant: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEYS[tenant]}"}


def create_request(stack: Stack, tenant: str) -> bytes:
    body = create_body(background=True)
    return request_bytes(
        stack.api_port, "POST", "/v1/responses", body, auth(tenant), keep_alive=True
    )


def collecting(ids: list[str]) -> Check:
    """``QUEUED``, keeping each accepted response's id."""

    def check(status: int, body: bytes) -> str | None:
        reason = QUEUED(status, body)
        if reason is None:
            ids.append(json.loads(body)["id"])
        return reason

    return check


async def submit(stack: Stack, tenant: str, n: int) -> tuple[Load, list[str]]:
    """``n`` background creates by 32 keep-alive clients (all at once when fewer)."""
    ids: list[str] = []
    load = await closed_loop(
        stack.api_port, create_request(stack, tenant), collecting(ids), count=n
    )
    return load, ids


@dataclass
class Job:
    id: str
    status: str
    queued_at: float
    wait: float | None
    run: float | None

    @property
    def start(self) -> float | None:
        return None if self.wait is None else self.queued_at + self.wait

    @property
    def end(self) -> float | None:
        start = self.start
        return None if start is None or self.run is None else start + self.run


def jobs_of(store: Store, tenant: str, ids: list[str]) -> list[Job]:
    """The store's record of ``ids``: status, when queued, queue wait and run time."""
    query = text(
        "SELECT id, status, enqueued_at, created_at, timings FROM responses WHERE tenant = :t"
    )
    with store.engine.connect() as conn:
        rows = conn.execute(query, {"t": tenant}).all()
    wanted = set(ids)
    out = []
    for id_, status, enqueued_at, created_at, raw in rows:
        if id_ in wanted:
            timings = (json.loads(raw) if isinstance(raw, str) else raw) or {}
            queued = float(enqueued_at or created_at)
            out.append(Job(id_, status, queued, timings.get("queue_wait"), timings.get("run")))
    return out


async def wait_done(stack: Stack, store: Store) -> dict[str, Any]:
    """Until nothing is queued or running: how long it took and, while a backlog waited
    (``BACKLOG`` or more queued), how many jobs ran and how many messages were in Celery's
    job queues (with fair queues on the dispatcher should keep the buffer there)."""
    start = time.perf_counter()
    running, depths = [], []
    with closing(redis.Redis.from_url(stack.redis.url)) as client:
        while True:
            counts = store.counts()
            queued, in_progress = counts.get("queued", 0), counts.get("in_progress", 0)
            if not queued + in_progress:
                break
            if queued >= BACKLOG:
                running.append(in_progress)
                depths.append(sum(int(client.llen(q)) for q in keys.JOB_QUEUES))
            await asyncio.sleep(POLL_S)
    return {
        "drained_after_creates_s": round(time.perf_counter() - start, 2),
        "backlog_samples": len(depths),
        "running_p50": pct([float(n) for n in running], 0.5),
        "celery_depth_p50": pct([float(n) for n in depths], 0.5),
        "celery_empty_share": round(depths.count(0) / len(depths), 3) if depths else None,
    }


async def admin_get(stack: Stack, paths: list[str]) -> list[tuple[int, Any]]:
    """``GET`` each admin path in turn on one keep-alive connection: (status, JSON body)."""
    conn = Connection(stack.api_port)
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    out = []
    try:
        for path in paths:
            req = request_bytes(stack.api_port, "GET", path, None, headers, keep_alive=True)
            status, body = await conn.exchange(req)
            try:
                out.append((status, json.loads(body)))
            except ValueError:
                out.append((status, body[:300].decode(errors="replace")))
    finally:
        conn.close()
    return out


async def admin_waits(stack: Stack, ids: list[str]) -> tuple[list[float], list[str]]:
    """Each response's ``timings.queue_wait`` from ``GET /v1/admin/responses/{id}``; the
    answers that were not a completed response with one."""
    answers = await admin_get(stack, [f"/v1/admin/responses/{id_}" for id_ in ids])
    waits, bad = [], []
    for id_, (status, got) in zip(ids, answers, strict=True):
        fine = status == 200 and isinstance(got, dict) and got.get("status") == "completed"
        wait = (got.get("timings") or {}).get("queue_wait") if fine else None
        if wait is None:
            bad.append(f"{id_}: HTTP {status} {str(got)[:200]}")
        else:
            waits.append(float(wait))
    return waits, bad


# --------------------------------------------------------------------------- phases


def seconds(values: list[float], scale: float = 1.0, digits: int = 3) -> dict[str, float | None]:
    """p50, p99 and max of ``values`` (seconds) times ``scale``, rounded to ``digits``."""

    def r(v: float | None) -> float | None:
        return None if v is None else round(v * scale, digits)

    return {
        "p50": r(pct(values, 0.5)),
        "p99": r(pct(values, 0.99)),
        "max": r(max(values, default=None)),
    }


def drain(jobs: list[Job]) -> dict[str, Any]:
    """A's drain: its jobs / (last end - first start), and its queue waits."""
    starts = [j.start for j in jobs if j.start is not None]
    ends = [j.end for j in jobs if j.end is not None]
    window = max(ends) - min(starts) if starts and ends else 0.0
    return {
        "jobs": len(jobs),
        "window_s": round(window, 2),
        "jobs_per_s": round(len(ends) / window, 2) if window > 0 else None,
        "queue_wait_s": seconds([j.wait for j in jobs if j.wait is not None]),
        "run_s": seconds([j.run for j in jobs if j.run is not None]),
        "first_start": min(starts, default=None),
        "last_end": max(ends, default=None),
    }


@dataclass
class Phase:
    details: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def created(self, what: str, load: Load) -> None:
        self.details[f"{what}_creates"] = load.summary()
        if load.failures:
            self.problems.append(f"{what}: {len(load.failures)} creates failed: {load.failures[0]}")

    def ended(self, what: str, jobs: list[Job], expected: int) -> None:
        bad = [f"{j.id} {j.status}" for j in jobs if j.status != "completed"]
        if bad or len(jobs) != expected:
            self.problems.append(
                f"{what}: {len(jobs) - len(bad)} of {expected} jobs completed, e.g. {bad[:3]}"
            )


async def phase_alone(stack: Stack, store: Store, sizes: Sizes) -> Phase:
    phase = Phase()
    load, ids = await submit(stack, A, sizes.jobs)
    phase.created("A", load)
    phase.details["drain"] = await wait_done(stack, store)
    jobs = jobs_of(store, A, ids)
    phase.ended("A", jobs, load.ok)
    phase.details["A"] = drain(jobs)
    return phase


async def phase_with_b(stack: Stack, store: Store, sizes: Sizes) -> Phase:
    phase = Phase()
    load_a, ids_a = await submit(stack, A, sizes.jobs)
    phase.created("A", load_a)
    b_sent = time.time()
    load_b, ids_b = await submit(stack, B, sizes.b_jobs)
    phase.created("B", load_b)
    # by_tenant and Celery's depths as B's last create is answered
    phase.details["queue_after_b"] = (await admin_get(stack, ["/v1/admin/queue"]))[0][1]
    phase.details["drain"] = await wait_done(stack, store)
    jobs_a, jobs_b = jobs_of(store, A, ids_a), jobs_of(store, B, ids_b)
    phase.ended("A", jobs_a, load_a.ok)
    phase.ended("B", jobs_b, load_b.ok)
    waits, bad = await admin_waits(stack, ids_b)
    phase.problems += [f"B admin: {line}" for line in bad[:5]]
    a_ahead = [j for j in jobs_a if j.start is None or j.start > b_sent]
    b_starts = [j.start for j in jobs_b if j.start is not None]
    phase.details |= {
        "A": drain(jobs_a),
        "B": {
            "jobs": len(jobs_b),
            "queue_wait_s": seconds(waits),
            "store_queue_wait_s": seconds([j.wait for j in jobs_b if j.wait is not None]),
            "last_start_after_first_create_s": round(max(b_starts) - b_sent, 3)
            if b_starts
            else None,
        },
        # What B would wait behind in one FIFO queue: A's jobs not yet started when it came.
        "A_not_started_when_B_came": len(a_ahead),
        "A_started_after_B_last_started": sum(
            1 for j in jobs_a if j.start and b_starts and j.start > max(b_starts)
        ),
    }
    return phase


async def phase_overhead(stack: Stack, store: Store, sizes: Sizes) -> Phase:
    """Sequential background creates with the workers stopped (so they compete for no CPU):
    ``A`` (no limits) and ``LIMITED`` taking turns; then the workers drain them (upstream at
    0 ms per token) and ``Limiter.admit`` is timed in this process."""
    phase = Phase()
    stack.stop_workers()
    tenants = (A, LIMITED)
    latencies: dict[str, list[float]] = {t: [] for t in tenants}
    ids: dict[str, list[str]] = {t: [] for t in tenants}
    conns = {t: Connection(stack.api_port) for t in tenants}
    try:
        for i in range(WARMUP + sizes.creates):
            for tenant in tenants:
                check = collecting(ids[tenant])
                try:
                    value = await timed(conns[tenant], create_request(stack, tenant), check)
                except Failed as exc:
                    phase.problems.append(f"overhead {tenant}: create {i} failed: {exc}")
                    continue
                if i >= WARMUP:
                    latencies[tenant].append(value)
    finally:
        for conn in conns.values():
            conn.close()
    since = time.time()
    stack.start_workers()
    wait_workers(stack, since)
    await set_upstream(stack, TOKENS, 0)
    await wait_done(stack, store)
    for tenant in tenants:
        phase.ended(f"overhead {tenant}", jobs_of(store, tenant, ids[tenant]), len(ids[tenant]))
    p50_open, p50_limited = pct(latencies[A], 0.5), pct(latencies[LIMITED], 0.5)
    added = None
    if p50_open is not None and p50_limited is not None:
        added = round((p50_limited - p50_open) * 1000, 3)
    phase.details = {
        "creates_per_tenant": sizes.creates,
        "create_ms": {t: seconds(latencies[t], 1000) for t in tenants},
        "p50_added_ms": added,
        "limiter_admit_us": admit_micro(stack, sizes.admits),
    }
    return phase


def admit_micro(stack: Stack, n: int) -> dict[str, dict[str, float | None]]:
    """``Limiter.admit`` against the stack's Redis, a tenant without limits and one with
    ``HIGH_LIMITS`` taking turns: p50/p99 per call in µs (a create pays one)."""
    tenants = {"bench-micro-open": 0, "bench-micro-limited": 1}  # tenant -> tokens charged
    policy = TenantPolicy(tenants={"bench-micro-limited": HIGH_LIMITS})
    times: dict[str, list[float]] = {t: [] for t in tenants}
    with closing(redis.Redis.from_url(stack.redis.url)) as client:
        limiter = Limiter(client, policy)
        for _ in range(WARMUP + n):
            for tenant, tokens in tenants.items():
                start = time.perf_counter()
                limiter.admit(tenant, tokens=tokens, background=True, now=time.time())
                times[tenant].append(time.perf_counter() - start)
        client.delete(*(k(t) for t in tenants for k in (keys.tenant_buckets, keys.tenant_counts)))
    return {t: seconds(v[WARMUP:], 1e6, 1) for t, v in times.items()}


# --------------------------------------------------------------------------- the run

PHASES = {"alone": phase_alone, "with_b": phase_with_b, "overhead": phase_overhead}


async def run_phases(
    stack: Stack, sizes: Sizes, names: list[str], fair: str, report: dict[str, Any]
) -> None:
    store = Store(stack.database_url)
    try:
        await set_upstream(stack, TOKENS, DELAY_MS)
        for name in names:
            try:
                async with asyncio.timeout(sizes.timeout_s):
                    phase = await PHASES[name](stack, store, sizes)
            except TimeoutError:
                raise RuntimeError(f"{name}: no result within {sizes.timeout_s:g} s") from None
            report["phases"].setdefault(fair, {})[name] = phase.details
            report["problems"] += [f"fair {fair}, {name}: {p}" for p in phase.problems]
            if name != "overhead":
                report["rows"].append(table_row(name, fair, phase.details))
                print_rows(report["rows"][-1:])
            if stack.exited():
                raise RuntimeError(f"processes exited during {name}: {stack.exited()}")
    finally:
        store.close()


def run_mode(
    args: argparse.Namespace, sizes: Sizes, fair: str, names: list[str], report: dict[str, Any]
) -> Stack:
    """A fresh stack with fair queues ``fair``, the phases ``names`` on it; the stopped stack."""
    with scratch_database(args.db) as database_url:
        stack = Stack.start(
            concurrency=args.concurrency,
            log_level=args.log_level,
            workers=args.workers,
            database_url=database_url,
        )
        print(f"fair {fair}: API :{stack.api_port}, logs in {stack.root}", flush=True)
        try:
            configure(stack, fair=fair == "on")
            asyncio.run(run_phases(stack, sizes, names, fair, report))
        finally:
            with _no_interrupts():
                stack.stop()  # before the database is dropped
    return stack


# --------------------------------------------------------------------------- the report

COLUMNS = ("scenario", "fair", "A jobs", "A jobs/s", "A wait p99 s", "B wait p50 s",
           "B wait p99 s", "B wait max s", "running p50", "Celery depth p50")  # fmt: skip
WIDTHS = (9, 5, 7, 9, 13, 13, 13, 13, 12, 16)


def table_row(name: str, fair: str, details: dict[str, Any]) -> dict[str, Any]:
    a, drained = details["A"], details["drain"]
    b = details.get("B", {}).get("queue_wait_s", {})
    cells = (
        *(name, fair, a["jobs"], a["jobs_per_s"], a["queue_wait_s"]["p99"]),
        *(b.get("p50"), b.get("p99"), b.get("max")),
        *(drained["running_p50"], drained["celery_depth_p50"]),
    )
    return dict(zip(COLUMNS, cells, strict=True))


def print_rows(rows: list[dict[str, Any]], header: bool = False) -> None:
    lines = [list(COLUMNS)] if header else []
    lines += [["-" if r[c] is None else f"{r[c]:g}" if isinstance(r[c], float) else str(r[c])
               for c in COLUMNS] for r in rows]  # fmt: skip
    for line in lines:
        print("  ".join(v.ljust(w) for v, w in zip(line, WIDTHS, strict=True)).rstrip(), flush=True)


def verdicts(phases: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets, from what ran (fair on is "after")."""

    def rate(fair: str, name: str) -> float | None:
        got = phases.get(fair, {}).get(name)
        return None if got is None else got["A"]["jobs_per_s"]

    out = []
    with_b = phases.get("on", {}).get("with_b")
    if with_b is not None:
        p99 = with_b["B"]["queue_wait_s"]["p99"]
        out.append(_verdict("B queue wait p99 s, fair on", p99, "<=", B_WAIT_P99_S))
    for base in ("on", "off"):
        alone, together = rate(base, "alone"), rate("on", "with_b")
        if alone and together is not None:
            what = f"A jobs/s with B (fair on) / alone (fair {base})"
            out.append(_verdict(what, round(together / alone, 3), ">=", A_RATE_KEPT))
    alone_on, alone_off = rate("on", "alone"), rate("off", "alone")
    if alone_on is not None and alone_off:
        out.append(_verdict("A jobs/s alone, fair on / off", round(alone_on / alone_off, 3)))
    overhead = next((p["overhead"] for p in phases.values() if "overhead" in p), None)
    if overhead is not None:
        added = overhead["p50_added_ms"]
        out.append(_verdict("create p50 added by limits, ms", added, "<=", OVERHEAD_P50_MS))
        for tenant, figures in overhead["limiter_admit_us"].items():
            out.append(_verdict(f"Limiter.admit p50 us ({tenant})", figures["p50"]))
    return out


def _verdict(
    what: str, value: float | None, op: str | None = None, bound: float | None = None
) -> dict[str, Any]:
    met = None
    if op is not None and bound is not None:
        met = value is not None and (value <= bound if op == "<=" else value >= bound)
    target = None if op is None else f"{op} {bound:g}"
    return {"what": what, "value": value, "target": target, "met": met}


def finish(
    report: dict[str, Any], stacks: list[Stack], args: argparse.Namespace, interrupted: bool
) -> int:
    report["meta"]["loadavg_at_end"] = os.getloadavg()
    report["targets"] = verdicts(report["phases"])
    failed = bool(report["problems"])
    if failed and stacks and not interrupted:
        report["log_tails"] = stacks[-1].tails()
    args.results.mkdir(parents=True, exist_ok=True)
    out = args.results / f"fairness-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    info = report["meta"]
    load = ", ".join(f"{x:.2f}" for x in info["loadavg_at_start"])
    end = ", ".join(f"{x:.2f}" for x in info["loadavg_at_end"])
    print(f"\ngit head {info['git_head']}; load average at start {load}, at end {end}")
    print(f"command: {info['command']}", flush=True)
    print_rows(report["rows"], header=True)
    for v in report["targets"]:
        target = "" if v["target"] is None else f"  target {v['target']}"
        met = "" if v["met"] is None else "  met" if v["met"] else "  MISSED"
        print(f"{v['what']}: {v['value']}{target}{met}")
    print(f"results: {out}", flush=True)
    for problem in report["problems"]:
        print(f"PROBLEM: {problem}", flush=True)
    for name, lines in report.get("log_tails", {}).items():
        print(f"--- {name}.log (notable lines, then tail) ---", *lines, sep="\n", flush=True)
    for stack in stacks:
        if failed or args.keep:
            print(f"logs kept in {stack.root}", flush=True)
        else:
            shutil.rmtree(stack.root, ignore_errors=True)
    return 130 if interrupted else 1 if failed else 0


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--fair", choices=("off", "on", "both"), default="both")
    p.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    p.add_argument("--quick", action="store_true", help="small counts: a smoke test")
    p.add_argument("--jobs", type=int, help=f"A's jobs [{FULL.jobs}; --quick {QUICK.jobs}]")
    p.add_argument("--b-jobs", type=int, help=f"B's jobs [{FULL.b_jobs}; --quick {QUICK.b_jobs}]")
    p.add_argument("--creates", type=int, help=f"overhead creates per tenant [{FULL.creates}]")
    p.add_argument("--workers", type=int, default=1, help="Celery worker processes")
    p.add_argument(
        "--concurrency", type=int, default=DEFAULT_CONCURRENCY, help="RESQ_WORKER_CONCURRENCY"
    )
    p.add_argument("--log-level", default="INFO", help="RESQ_LOG_LEVEL of API and workers")
    p.add_argument("--keep", action="store_true", help="keep the temp dirs (logs, db)")
    p.add_argument("--results", type=Path, default=RESULTS, help="where the JSON report goes")
    return p.parse_args(argv)


def sizes_of(args: argparse.Namespace) -> Sizes:
    base = QUICK if args.quick else FULL
    return Sizes(
        jobs=args.jobs or base.jobs,
        b_jobs=args.b_jobs or base.b_jobs,
        creates=args.creates or base.creates,
        admits=base.admits,
        timeout_s=base.timeout_s,
    )


def _interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = sizes_of(args)
    signal.signal(signal.SIGTERM, _interrupt)
    command = " ".join(["python -m bench.fairness", *(sys.argv[1:] if argv is None else argv)])
    report: dict[str, Any] = {
        "meta": meta(args) | {"sizes": asdict(sizes), "command": command},
        "rows": [],
        "phases": {},
        "problems": [],
    }
    modes = ["off", "on"] if args.fair == "both" else [args.fair]
    stacks: list[Stack] = []
    interrupted = False
    print_rows([], header=True)
    try:
        for fair in modes:
            names = ["alone", "with_b"] + (["overhead"] if fair == modes[-1] else [])
            stacks.append(run_mode(args, sizes, fair, names, report))
    except KeyboardInterrupt:
        interrupted = True
        report["problems"].append("interrupted")
    except (
        RuntimeError,
        OSError,
        AssertionError,
        psycopg.Error,
        SQLAlchemyError,
        redis.RedisError,
    ) as exc:
        report["problems"].append(f"{type(exc).__name__}: {exc}")
    return finish(report, stacks, args, interrupted)


if __name__ == "__main__":
    sys.exit(main())
