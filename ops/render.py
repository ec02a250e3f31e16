"""The ``resq`` command line's text views: the admin API's JSON in, plain-text tables out.
Pure functions (the time "now" is passed in), so a test compares their output exactly.
Times are shown in UTC."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from ops.admin_client import Json

WINDOWS = ("1m", "5m", "15m")
OUTCOMES = ("completed", "failed", "cancelled", "incomplete")


# ---- formatting helpers ---------------------------------------------------------------


def fmt_duration(seconds: float | None) -> str:
    """``850ms``, ``12.3s``, ``4m05s``, ``2h03m``, ``3d04h``; ``-`` for unknown."""
    if seconds is None:
        return "-"
    s = max(0.0, float(seconds))
    if s < 0.9995:
        return f"{s * 1000:.0f}ms"
    if s < 59.95:
        return f"{s:.1f}s"
    whole = round(s)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def fmt_time(epoch: float | None) -> str:
    """A Unix time as ``YYYY-MM-DD HH:MM:SS`` (UTC); ``-`` for none."""
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S")


def fmt_cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], align: str = "") -> str:
    """A plain-text table; ``align`` has one ``l``/``r`` per column (missing ones are ``l``).
    Cells go through :func:`fmt_cell`; an empty table shows ``(none)`` under its header."""
    cells = [[fmt_cell(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if align[i : i + 1] == "r" else v.ljust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    lines = [line(headers)] + [line(row) for row in cells]
    return "\n".join(lines if cells else [*lines, "(none)"])


def _elapsed(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None else end - start


# ---- renderers: API JSON in, text out ---------------------------------------------------------


def render_queue(data: Json, url: str, note: str = "") -> str:
    header = f"resq queue  {url}  {fmt_time(data.get('generated_at'))} UTC"
    queues = [[q.get("name"), q.get("depth"), q.get("paused")] for q in data.get("queues") or []]
    totals = data.get("totals") or {}
    oldest = fmt_duration(totals.get("oldest_queued_age_seconds"))
    out = [
        f"{header}  ({note})" if note else header,
        "",
        table(["QUEUE", "DEPTH", "PAUSED"], queues, "lrl"),
        "",
        f"queued {fmt_cell(totals.get('queued'))}   in progress "
        f"{fmt_cell(totals.get('in_progress'))}   oldest queued {oldest}",
        "",
    ]
    windows = data.get("windows") or {}
    rows = []
    for name in (w for w in WINDOWS if w in windows):
        w = windows[name]
        latencies = [w.get("queue_wait_seconds") or {}, w.get("run_seconds") or {}]
        rows.append(
            [name, *(w.get(k) for k in OUTCOMES), f"{w.get('throughput_per_second') or 0:.2f}"]
            + [fmt_duration(d.get(p)) for d in latencies for p in ("p50", "p95")]
        )
    headers = ["WINDOW", *(o.upper() for o in OUTCOMES), "PER SEC"]
    out.append(table([*headers, "WAIT P50", "WAIT P95", "RUN P50", "RUN P95"], rows, "lrrrrrrrrr"))
    for key in ("model", "tenant"):
        out += ["", f"BY {key.upper()}", _counts_table(key, data.get(f"by_{key}") or [])]
    return "\n".join(out)


def _counts_table(key: str, entries: list[Json]) -> str:
    columns = ("queued", "in_progress", *OUTCOMES)
    headers = [key.upper(), *(c.replace("_", " ").upper() for c in columns)]
    rows = [[e.get(key), *(e.get(c) for c in columns)] for e in entries]
    return table(headers, rows, "l" + "r" * len(columns))


def render_workers(data: Json) -> str:
    workers = data.get("data") or []
    rows = [
        [
            w.get("name"),
            w.get("concurrency"),
            ",".join(w.get("queues") or []),
            len(w.get("active") or []),
        ]
        for w in workers
    ]
    out = [table(["WORKER", "CONCURRENCY", "QUEUES", "ACTIVE"], rows, "lrlr")]
    jobs = [(w.get("name"), a) for w in workers for a in w.get("active") or []]
    jobs.sort(key=lambda job: -(job[1].get("runtime_seconds") or 0.0))  # longest first
    if jobs:
        rows = [[n, a.get("response_id"), fmt_duration(a.get("runtime_seconds"))] for n, a in jobs]
        out += ["", "ACTIVE JOBS", table(["WORKER", "RESPONSE", "RUNNING"], rows, "llr")]
    if data.get("error"):
        out += ["", f"warning: {data['error']}"]
    return "\n".join(out)


def _wait_and_run(r: Json, now: float) -> tuple[float | None, float | None]:
    """How long a response waited in the queue and has run (so far, if it has not ended)."""
    created, started, ended = r.get("created_at"), r.get("started_at"), r.get("ended_at")
    return _elapsed(created, started or ended or now), _elapsed(started, ended or now)


def _error_text(error: Json | None) -> str | None:
    if not error:
        return None
    code, message = error.get("code"), error.get("message") or ""
    return f"{code}: {message}" if code else message


def render_responses(data: Json, now: float) -> str:
    rows = []
    for r in data.get("data") or []:
        waited, ran = _wait_and_run(r, now)
        rows.append(
            [r.get(k) for k in ("id", "status", "model", "tenant")]
            + [fmt_time(r.get("created_at")), fmt_duration(waited), fmt_duration(ran)]
            + [r.get("attempts"), (r.get("error") or {}).get("code")]
        )
    headers = ["ID", "STATUS", "MODEL", "TENANT", "CREATED (UTC)", "WAITED", "RAN", "ATTEMPTS"]
    out = [table([*headers, "ERROR"], rows, "lllllrrrl")]
    if data.get("has_more"):
        out.append(f"more: add --after {data.get('last_id')}")
    return "\n".join(out)


def render_response(r: Json, now: float) -> str:
    """One response as ``name value`` lines, then its timeline and webhook attempts when the
    answer has them (``show`` does; ``cancel`` and ``requeue`` answer the response alone)."""
    waited, ran = _wait_and_run(r, now)
    shown = ("id", "status", "model", "prompt", "tenant", "background")
    fields = [(k, r.get(k)) for k in shown if k != "prompt" or r.get(k)] + [
        ("created", fmt_time(r.get("created_at"))),
        ("started", f"{fmt_time(r.get('started_at'))}  (waited {fmt_duration(waited)})"),
        ("ended", f"{fmt_time(r.get('ended_at'))}  (ran {fmt_duration(ran)})"),
        ("attempts", r.get("attempts")),
        ("error", _error_text(r.get("error"))),
    ]
    out = [f"{name:<11} {fmt_cell(value)}" for name, value in fields]
    if "timeline" in r:
        rows = [
            [
                e.get("event"),
                fmt_time(e.get("at")),
                fmt_duration(_elapsed(r.get("created_at"), e.get("at"))),
            ]
            for e in r["timeline"]
        ]
        out += ["", "TIMELINE", table(["EVENT", "AT (UTC)", "AFTER"], rows, "llr")]
    if "webhook_attempts" in r:
        keys = ("delivery_id", "endpoint_id", "number", "status_code", "ok")
        rows = [
            [a.get(k) for k in keys]
            + [_latency(a.get("latency_ms")), fmt_time(a.get("at")), a.get("error")]
            for a in r["webhook_attempts"]
        ]
        headers = ["DELIVERY", "ENDPOINT", "#", "STATUS", "OK", "LATENCY", "AT (UTC)", "ERROR"]
        out += ["", "WEBHOOK ATTEMPTS", table(headers, rows, "llrrlrll")]
    return "\n".join(out)


def _latency(ms: float | None) -> str | None:
    return None if ms is None else fmt_duration(ms / 1000)
