"""resq under load, in its production shape, on this machine.

``python -m bench.streams [--streams 1000] [--jobs 200] [--only ttft,worker,streams]``

Starts a private Redis (no persistence) and a migrated SQLite in a temp dir, the fast fake
upstream (``bench.upstream``), ONE API process (gunicorn, gevent, 1 worker, 2000 connections)
and ONE Celery worker (gevent pool), then runs:

- ``ttft``: time to the first ``response.output_text.delta`` of ``POST /v1/responses``
  (``stream: true``), sequential, against the same upstream called directly; added ms.
- ``worker-<jobs>``: that many 50-token x 20 ms background jobs created at once; wall time to
  the last completion, completions, failures, the worker's peak RSS and CPU.
- ``streams-<streams>``: long background jobs, each followed by ``--per-job`` SSE streams
  (``GET /v1/responses/{id}?stream=true``) held at once by the ONE API process; streams that
  got ``response.completed``, sequence checks, events relayed, API memory per open stream, CPU.

Results go to ``bench/results/streams-<timestamp>.json``. Everything it starts is stopped on
exit, Ctrl-C or error; the logs of a failed run stay in the temp dir, and their tails print.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import statistics
import sys
import time
from typing import Any

from bench.stack import (
    RESULTS,
    Sampler,
    Stack,
    StreamResult,
    http_json,
    meta,
    ms,
    pct,
    set_upstream,
    sse,
)

# --------------------------------------------------------------------------- scenarios


def _create(background: bool, stream: bool) -> dict[str, Any]:
    return {"model": "bench-up", "input": "x", "background": background, "stream": stream}


def _why(r: StreamResult) -> str:
    return r.error or r.seq_error or f"ended with {r.terminal} (status {r.final_status})"


_LOG = re.compile(
    r"^(\S+ \S+) INFO celery\.\S+: Task resq\.run_response\[(resp_\w+)\] "
    r"(received|succeeded in ([\d.]+)s)"
)


def _worker_log(stack: Stack, ids: list[str]) -> dict[str, Any]:
    """From the worker's INFO log: how fast it took the jobs in, and how long each ran."""
    wanted, received, runs = set(ids), [], []
    path = stack.root / "worker-0.log"
    for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
        m = _LOG.match(line)
        if m and m.group(2) in wanted:
            if m.group(3) == "received":
                stamp = time.strptime(m.group(1).split(",")[0], "%Y-%m-%d %H:%M:%S")
                received.append(time.mktime(stamp) + int(m.group(1).split(",")[1]) / 1000)
            else:
                runs.append(float(m.group(4)))
    if not received:
        return {"note": "no task lines (RESQ_LOG_LEVEL above INFO?)"}
    span = max(received) - min(received)
    return {
        "received": len(received),
        "receive_span_s": round(span, 3),
        "intake_per_s": round((len(received) - 1) / span, 1) if span else None,
        "task_run_s": {
            "p50": pct(runs, 0.5),
            "p99": pct(runs, 0.99),
            "max": max(runs, default=None),
        },
    }


async def scenario_ttft(stack: Stack, args: argparse.Namespace) -> dict[str, Any]:
    await set_upstream(stack, args.ttft_tokens, args.ttft_delay_ms)
    chat_body = {
        "model": "bench-up",
        "messages": [{"role": "user", "content": "x"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    resq, direct, first_event, failures = [], [], [], []
    for i in range(args.ttft_requests + args.warmup):  # alternate: same conditions for both
        a = await sse(stack.api_port, "POST", "/v1/responses", _create(False, True), timeout=30)
        b = await sse(
            stack.upstream_port, "POST", "/v1/chat/completions", chat_body, chat=True, timeout=30
        )
        for r, where in ((a, "resq"), (b, "upstream")):
            bad = r.error or r.seq_error or r.terminal not in ("response.completed", "[DONE]")
            bad = bad or (where == "resq" and r.final_status != "completed")
            if bad:
                failures.append(f"{where} request {i}: {r.error or r.seq_error or r.terminal}")
        if i >= args.warmup and a.first_delta_s is not None and b.first_delta_s is not None:
            resq.append(a.first_delta_s)
            direct.append(b.first_delta_s)
            first_event.append(a.first_event_s or 0.0)
    creates = []  # what the API alone adds before the job exists: validate, INSERT, enqueue
    for _ in range(20):
        t = time.perf_counter()
        status, _body = await http_json(
            stack.api_port, "POST", "/v1/responses", _create(True, False)
        )
        creates.append(time.perf_counter() - t)
        if status != 200:
            failures.append(f"background create: HTTP {status}")
    p50 = (pct(resq, 0.5) or 0) - (pct(direct, 0.5) or 0)
    p99 = (pct(resq, 0.99) or 0) - (pct(direct, 0.99) or 0)
    return {
        "requests": len(resq),
        "upstream": {"tokens": args.ttft_tokens, "delay_ms": args.ttft_delay_ms},
        "resq_ttft_ms": {
            "p50": ms(pct(resq, 0.5)),
            "p99": ms(pct(resq, 0.99)),
            "mean": ms(statistics.fmean(resq)) if resq else None,
        },
        "direct_ttft_ms": {
            "p50": ms(pct(direct, 0.5)),
            "p99": ms(pct(direct, 0.99)),
            "mean": ms(statistics.fmean(direct)) if direct else None,
        },
        "added_ms": {"p50": ms(p50), "p99": ms(p99)},
        "resq_first_event_ms": {
            "p50": ms(pct(first_event, 0.5)),
            "p99": ms(pct(first_event, 0.99)),
        },
        "background_create_ms": {"p50": ms(pct(creates, 0.5)), "p99": ms(pct(creates, 0.99))},
        "failures": failures[:20],
        "failed": len(failures),
    }


async def _create_jobs(stack: Stack, n: int) -> tuple[list[str], list[str], float]:
    async def one() -> tuple[int, Any]:
        return await http_json(stack.api_port, "POST", "/v1/responses", _create(True, False))

    start = time.perf_counter()
    answers = await asyncio.gather(*(one() for _ in range(n)), return_exceptions=True)
    ids, errors = [], []
    for a in answers:
        if isinstance(a, BaseException):
            errors.append(f"{type(a).__name__}: {a}")
        elif a[0] != 200 or not isinstance(a[1], dict) or a[1].get("status") != "queued":
            errors.append(f"HTTP {a[0]}: {str(a[1])[:300]}")
        else:
            ids.append(a[1]["id"])
    return ids, errors, start


async def _statuses(stack: Stack, ids: list[str]) -> dict[str, int]:
    sem = asyncio.Semaphore(50)
    counts: dict[str, int] = {}

    async def one(rid: str) -> None:
        async with sem:
            status, body = await http_json(stack.api_port, "GET", f"/v1/responses/{rid}")
        key = body.get("status", f"HTTP {status}") if isinstance(body, dict) else f"HTTP {status}"
        counts[key] = counts.get(key, 0) + 1

    await asyncio.gather(*(one(r) for r in ids))
    return counts


async def scenario_worker(stack: Stack, args: argparse.Namespace, s: Sampler) -> dict[str, Any]:
    """``--jobs`` background jobs created at once; each creator then follows its job's stream
    (from sequence 0), so a completion is seen when it happens."""
    await set_upstream(stack, args.worker_tokens, args.worker_delay_ms)
    s.reset()
    cpu = {n: s.cpu_s(n) for n in ("api", "worker", "upstream")}
    ids: list[str] = []
    create_errors: list[str] = []
    created: list[float] = []

    async def job() -> StreamResult | None:
        try:
            status, body = await http_json(
                stack.api_port, "POST", "/v1/responses", _create(True, False)
            )
        except (OSError, ValueError) as exc:
            create_errors.append(f"{type(exc).__name__}: {exc}")
            return None
        created.append(time.perf_counter())
        if status != 200 or not isinstance(body, dict) or body.get("status") != "queued":
            create_errors.append(f"HTTP {status}: {str(body)[:300]}")
            return None
        ids.append(body["id"])
        path = f"/v1/responses/{body['id']}?stream=true"
        return await sse(stack.api_port, "GET", path, timeout=args.timeout)

    start = time.perf_counter()
    tasks = [asyncio.create_task(job()) for _ in range(args.jobs)]
    done, pending = await asyncio.wait(tasks, timeout=args.timeout + 10)
    for t in pending:
        t.cancel()
    results = [r for r in (t.result() for t in done) if r is not None]
    ok = [r for r in results if r.final_status == "completed" and not r.seq_error and not r.error]
    ended = [r.ended_s - start for r in ok]
    statuses = await _statuses(stack, ids)
    up = (await http_json(stack.upstream_port, "GET", "/_bench/stats"))[1]
    return {
        "jobs": args.jobs,
        "ideal_s": round(args.worker_tokens * args.worker_delay_ms / 1000, 2),
        "created": len(ids),
        "create_errors": create_errors[:20],
        "create_phase_s": round(max(created) - start, 3) if created else None,
        "completed": len(ok),
        "wall_s": round(max(ended), 3) if ended else None,
        "completion_after_first_create_s": {
            "p50": round(pct(ended, 0.5) or 0, 3),
            "p99": round(pct(ended, 0.99) or 0, 3),
        },
        "stream_failures": [_why(r) for r in results if r not in ok][:20],
        "not_terminal_at_timeout": len(pending) + sum(1 for r in results if r.terminal is None),
        "final_statuses": statuses,
        "worker_peak_rss_mb": round(s.peak["worker"] / 1024, 1),
        "cpu_s": {n: round(s.cpu_s(n) - c, 2) for n, c in cpu.items()},
        "upstream_peak_concurrent_streams": up.get("peak_active"),
        "worker_log": _worker_log(stack, ids),
    }


async def scenario_streams(stack: Stack, args: argparse.Namespace, s: Sampler) -> dict[str, Any]:
    jobs = -(-args.streams // args.per_job)
    await set_upstream(stack, args.hold_tokens, args.hold_delay_ms)
    ids, create_errors, start = await _create_jobs(stack, jobs)
    await asyncio.sleep(0.5)  # let the creates' garbage settle before the baseline
    s.reset()
    rss_before = s.rss_kb("api")
    cpu = {n: s.cpu_s(n) for n in ("api", "worker", "upstream")}
    bench_cpu = time.process_time()
    state: dict[str, Any] = {"open": 0, "opened": 0, "peak": 0, "all_open_s": None}
    open_times: list[float] = []  # when each stream got its 200, since the first was opened
    total = len(ids) * args.per_job

    def opened() -> None:
        state["open"] += 1
        state["opened"] += 1
        open_times.append(time.perf_counter() - t_open)
        state["peak"] = max(state["peak"], state["open"])
        if state["open"] == total and state["all_open_s"] is None:
            state["all_open_s"] = time.perf_counter() - t_open

    async def follow(rid: str) -> StreamResult:
        try:
            path = f"/v1/responses/{rid}?stream=true"
            return await sse(stack.api_port, "GET", path, on_open=opened, timeout=args.timeout)
        finally:
            state["open"] -= 1

    t_open = time.perf_counter()
    tasks = [asyncio.create_task(follow(rid)) for rid in ids for _ in range(args.per_job)]
    done, pending = (
        await asyncio.wait(tasks, timeout=args.timeout + 10) if tasks else (set(), set())
    )
    for t in pending:
        t.cancel()
    t_end = time.perf_counter()
    results = [t.result() for t in done]
    completed = [
        r for r in results if r.final_status == "completed" and not r.seq_error and not r.error
    ]
    events = sum(r.events for r in results)
    last = max((r.ended_s for r in results), default=t_end)
    peak_kb = s.peak["api"]
    per_job_events = sorted({r.events for r in completed})
    statuses = await _statuses(stack, ids)
    return {
        "jobs": jobs,
        "per_job": args.per_job,
        "upstream": {
            "tokens": args.hold_tokens,
            "delay_ms": args.hold_delay_ms,
            "ideal_job_s": round(args.hold_tokens * args.hold_delay_ms / 1000, 2),
        },
        "create_errors": create_errors[:20],
        "streams_opened": state["opened"],
        "peak_concurrent_open": state["peak"],
        "all_open_after_s": None if state["all_open_s"] is None else round(state["all_open_s"], 3),
        "stream_open_s": {
            q: round(pct(open_times, f) or 0, 3)
            for q, f in (("p50", 0.5), ("p90", 0.9), ("max", 1))
        },
        "completed_streams": len(completed),
        "errors": len(results) - len(completed) + len(pending),
        "error_samples": [_why(r) for r in results if r not in completed][:20],
        "seq_gaps": sum(r.gaps for r in results),
        "events_per_completed_stream": per_job_events[:5],
        "events_relayed": events,
        "relay_window_s": round(last - t_open, 3),
        "events_per_s": round(events / max(last - t_open, 1e-9)),
        "create_to_last_end_s": round(last - start, 3),
        "api_rss_mb": {"before": round(rss_before / 1024, 1), "peak": round(peak_kb / 1024, 1)},
        "api_kb_per_open_stream": round((peak_kb - rss_before) / max(state["peak"], 1), 1),
        "cpu_s": {n: round(s.cpu_s(n) - c, 2) for n, c in cpu.items()},
        "bench_client_cpu_s": round(time.process_time() - bench_cpu, 2),
        "worker_peak_rss_mb": round(s.peak["worker"] / 1024, 1),
        "final_statuses": statuses,
        "worker_log": _worker_log(stack, ids),
    }


# --------------------------------------------------------------------------- main


def _problems(name: str, r: dict[str, Any]) -> list[str]:
    out = []
    if r.get("failed"):
        out.append(f"{name}: {r['failed']} failed requests")
    if r.get("create_errors"):
        out.append(f"{name}: {len(r['create_errors'])}+ creates failed")
    if "completed" in r and r["completed"] < r["jobs"]:
        out.append(f"{name}: only {r['completed']} of {r['jobs']} jobs completed")
    if r.get("not_terminal_at_timeout"):
        out.append(f"{name}: {r['not_terminal_at_timeout']} jobs not terminal at the timeout")
    if r.get("final_statuses") and set(r["final_statuses"]) != {"completed"}:
        out.append(f"{name}: final statuses {r['final_statuses']}")
    if "peak_concurrent_open" in r and r["peak_concurrent_open"] < r["jobs"] * r["per_job"]:
        out.append(
            f"{name}: only {r['peak_concurrent_open']} streams were open at once (jobs ended "
            "before the last streams opened: raise --hold-tokens or --hold-delay-ms)"
        )
    if r.get("errors"):
        out.append(f"{name}: {r['errors']} streams failed or were truncated")
    if r.get("seq_gaps"):
        out.append(f"{name}: {r['seq_gaps']} missing sequence numbers")
    return out


def _line(name: str, r: dict[str, Any]) -> str:
    if name == "ttft":
        return (
            f"ttft: resq p50 {r['resq_ttft_ms']['p50']} ms p99 {r['resq_ttft_ms']['p99']} ms | "
            f"upstream direct p50 {r['direct_ttft_ms']['p50']} ms p99 "
            f"{r['direct_ttft_ms']['p99']} ms | added p50 {r['added_ms']['p50']} ms "
            f"p99 {r['added_ms']['p99']} ms ({r['requests']} requests, {r['failed']} failed)"
        )
    if name.startswith("worker"):
        return (
            f"{name}: {r['completed']}/{r['jobs']} completed in {r['wall_s']} s "
            f"(ideal {r['ideal_s']} s; creates took {r['create_phase_s']} s), "
            f"failures {len(r['stream_failures']) + len(r['create_errors'])}, "
            f"worker peak RSS {r['worker_peak_rss_mb']} MB, CPU {r['cpu_s']}"
        )
    return (
        f"{name}: {r['streams_opened']} opened (peak {r['peak_concurrent_open']} at once), "
        f"{r['completed_streams']} got response.completed, {r['errors']} errors, "
        f"{r['events_relayed']} events in {r['relay_window_s']} s = {r['events_per_s']} ev/s, "
        f"API RSS {r['api_rss_mb']['before']} -> {r['api_rss_mb']['peak']} MB = "
        f"{r['api_kb_per_open_stream']} KB/stream, CPU {r['cpu_s']}"
    )


async def run(stack: Stack, args: argparse.Namespace, results: dict[str, Any]) -> None:
    """Run the chosen scenarios in order, each result into ``results`` as soon as it is in."""
    with Sampler(stack.pids) as sampler:
        # Warm the worker (imports, first connections) so the first measured job is not a cold one.
        warm = await sse(stack.api_port, "POST", "/v1/responses", _create(False, True), timeout=60)
        if warm.terminal != "response.completed":
            raise RuntimeError(f"the warm-up response did not complete: {warm}")
        steps: list[tuple[str, Any]] = []
        if "ttft" in args.only:
            steps.append(("ttft", lambda: scenario_ttft(stack, args)))
        if "worker" in args.only:
            steps.append((f"worker-{args.jobs}", lambda: scenario_worker(stack, args, sampler)))
        if "streams" in args.only:
            steps.append(
                (f"streams-{args.streams}", lambda: scenario_streams(stack, args, sampler))
            )
        for name, step in steps:
            results[name] = r = await step()
            print(_line(name, r), flush=True)
            if stack.exited():
                raise RuntimeError(f"processes exited during the run: {stack.exited()}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default="ttft,worker,streams", help="comma-separated scenarios")
    p.add_argument("--ttft-requests", type=int, default=100)
    p.add_argument("--ttft-tokens", type=int, default=3, help="upstream tokens in ttft")
    p.add_argument("--ttft-delay-ms", type=float, default=20)
    p.add_argument("--warmup", type=int, default=5, help="ttft requests not counted")
    p.add_argument("--jobs", type=int, default=200, help="worker scenario: jobs at once")
    p.add_argument("--worker-tokens", type=int, default=50, help="worker scenario: tokens/job")
    p.add_argument("--worker-delay-ms", type=float, default=20, help="worker scenario: ms/token")
    p.add_argument("--streams", type=int, default=1000, help="streams held at once")
    p.add_argument("--per-job", type=int, default=5, help="streams per background job")
    p.add_argument("--hold-tokens", type=int, default=400)
    p.add_argument("--hold-delay-ms", type=float, default=25)
    p.add_argument("--concurrency", type=int, default=300, help="RESQ_WORKER_CONCURRENCY")
    p.add_argument("--log-level", default="INFO", help="RESQ_LOG_LEVEL of API and worker")
    p.add_argument("--timeout", type=float, default=120, help="per scenario wait, seconds")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, db)")
    args = p.parse_args(argv)
    args.only = {x.strip() for x in args.only.split(",") if x.strip()}
    return args


def _raise_interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    report: dict[str, Any] = {"meta": meta(args), "scenarios": {}, "problems": []}
    stack = None
    failed, interrupted = True, False
    try:
        stack = Stack.start(concurrency=args.concurrency, log_level=args.log_level)
        print(f"resq bench: API :{stack.api_port}, logs in {stack.root}", flush=True)
        asyncio.run(run(stack, args, report["scenarios"]))
        for name, r in report["scenarios"].items():
            report["problems"] += _problems(name, r)
        failed = bool(report["problems"])
    except KeyboardInterrupt:
        interrupted = True
        report["problems"].append("interrupted")
    except (RuntimeError, OSError, AssertionError) as exc:
        report["problems"].append(f"{type(exc).__name__}: {exc}")
    finally:
        if stack is not None:
            if failed and not interrupted:
                report["log_tails"] = stack.tails()
            stack.stop()
        report["meta"]["loadavg_at_end"] = os.getloadavg()
        RESULTS.mkdir(exist_ok=True)
        out = RESULTS / f"streams-{time.strftime('%Y%m%dT%H%M%S')}.json"
        out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"results: {out}", flush=True)
        if failed:
            for problem in report["problems"]:
                print(f"PROBLEM: {problem}", flush=True)
            for name, lines in report.get("log_tails", {}).items():
                print(
                    f"--- {name}.log (notable lines, then tail) ---", *lines, sep="\n", flush=True
                )
            if stack is not None:
                print(f"logs kept in {stack.root}", flush=True)
        elif stack is not None and not args.keep:
            shutil.rmtree(stack.root, ignore_errors=True)
    return 130 if interrupted else 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
