"""``resq``: the operator's command line, a client of a running resq's admin API over HTTP.

    resq queue [--watch [SECONDS]]           depths, totals, 1m/5m/15m rates and latencies
    resq workers                             workers and the jobs they are running
    resq responses list|show|cancel|requeue  find and act on responses
    resq queues pause|resume NAME            stop or restart a queue's consumption

The API's URL comes from ``--url`` or ``RESQ_URL``, else from ``RESQ_HOST``/``RESQ_PORT`` as
the server reads them (default ``http://127.0.0.1:8080``); the admin key from ``--key`` or
``RESQ_ADMIN_KEY``. ``--json`` prints the API's JSON as it came.
Times are shown in UTC.

Exit status: 0 done; 1 the API answered with an error (its message goes to stderr); 2 the API
could not be reached, or the command line was wrong. Never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO
from urllib.parse import quote

import httpx

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_TIMEOUT_SECONDS = 30.0
DEFAULT_WATCH_SECONDS = 2.0
EXIT_API_ERROR = 1
EXIT_UNREACHABLE = 2
CLEAR_SCREEN = "\x1b[H\x1b[2J"  # cursor home, erase the screen
WINDOWS = ("1m", "5m", "15m")
OUTCOMES = ("completed", "failed", "cancelled", "incomplete")

Json = dict[str, Any]


class CliError(Exception):
    """Ends the command: ``message`` goes to stderr and ``exit_code`` is the exit status."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


# ---- formatting helpers (pure) -----------------------------------------------------------


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
    fields = [(k, r.get(k)) for k in ("id", "status", "model", "tenant", "background")] + [
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


# ---- the admin API over HTTP --------------------------------------------------------------


def normalize_url(url: str) -> str:
    """The server's root: accepts ``http://host:8080``, ``…/`` and the SDK-style ``…/v1``."""
    url = url.strip().rstrip("/")
    return url.removesuffix("/v1")


def error_message(response: httpx.Response) -> str:
    """The API's ``{"error": {"message"}}``, or what the status says when there is none."""
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    hint = ""
    if response.status_code == 401:
        hint = "; pass the admin key with --key or set RESQ_ADMIN_KEY"
    if isinstance(error, dict) and error.get("message"):
        return f"{error['message']} (HTTP {response.status_code}){hint}"
    status = f"the API answered HTTP {response.status_code} {response.reason_phrase}".rstrip()
    return status + hint


def default_url(env: Mapping[str, str]) -> str:
    """``RESQ_URL``, else the address a server started with the same ``RESQ_HOST`` and
    ``RESQ_PORT`` listens on (a wildcard host is reached on loopback)."""
    if env.get("RESQ_URL"):
        return env["RESQ_URL"]
    host = env.get("RESQ_HOST") or "127.0.0.1"
    if host in ("0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{env.get('RESQ_PORT') or '8080'}"


class AdminApi:
    def __init__(
        self,
        url: str,
        key: str | None,
        *,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = normalize_url(url)
        headers = {"user-agent": "resq-cli"}
        if key:
            headers["authorization"] = f"Bearer {key}"
        self.http = httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout, transport=transport
        )

    def __enter__(self) -> AdminApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def get(self, path: str, params: dict[str, str] | None = None) -> Json:
        return self.request("GET", path, params)

    def post(self, path: str) -> Json:
        return self.request("POST", path)

    def request(self, method: str, path: str, params: dict[str, str] | None = None) -> Json:
        try:
            response = self.http.request(method, path, params=params)
        except httpx.ConnectError as exc:
            reason = "connection refused" if "refused" in str(exc).lower() else str(exc)
            raise CliError(
                f"cannot reach the resq API at {self.url}: {reason} "
                "(is it running? set --url or RESQ_URL)",
                EXIT_UNREACHABLE,
            ) from None
        except httpx.TimeoutException:
            message = f"the resq API at {self.url} did not answer in time"
            raise CliError(message, EXIT_UNREACHABLE) from None
        except httpx.HTTPError as exc:
            message = f"cannot talk to the resq API at {self.url}: {exc}"
            raise CliError(message, EXIT_UNREACHABLE) from None
        if response.is_error:
            raise CliError(error_message(response), EXIT_API_ERROR)
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise CliError(f"{method} {path} answered something that is not a JSON object", 1)
        return body


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() else str(value)


def _segment(value: str) -> str:
    return quote(value, safe="")


# ---- commands ------------------------------------------------------------------------------

QUEUE_PATH = "/v1/admin/queue"


def _emit(args: argparse.Namespace, data: Json, text: str) -> int:
    print(json.dumps(data, indent=2) if args.json else text)
    return 0


def cmd_queue(api: AdminApi, args: argparse.Namespace) -> int:
    if args.watch is None:
        data = api.get(QUEUE_PATH)
        return _emit(args, data, render_queue(data, api.url))
    return watch_queue(api, interval=args.watch, as_json=args.json, out=sys.stdout)


def watch_queue(
    api: AdminApi,
    *,
    interval: float,
    as_json: bool,
    out: TextIO,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Redraw the queue view every ``interval`` seconds until Ctrl-C (exit 0). The screen is
    cleared only on a terminal; elsewhere frames follow each other. A failure on the first
    fetch ends the command as usual; a later one is shown in place and retried."""
    clear = out.isatty()
    note = f"every {interval:g}s, Ctrl-C stops"
    first = True
    try:
        while True:
            try:
                data = api.get(QUEUE_PATH)
                frame = json.dumps(data, indent=2) if as_json else render_queue(data, api.url, note)
            except CliError as exc:
                if first:
                    raise
                frame = f"resq queue  {api.url}  ({note})\n\n{exc.message}"
            first = False
            out.write((CLEAR_SCREEN if clear else "") + frame + ("\n" if clear else "\n\n"))
            out.flush()
            sleep(interval)
    except KeyboardInterrupt:
        return 0


def cmd_workers(api: AdminApi, args: argparse.Namespace) -> int:
    data = api.get("/v1/admin/workers")
    return _emit(args, data, render_workers(data))


def cmd_responses_list(api: AdminApi, args: argparse.Namespace) -> int:
    filters = {
        "status": args.status,
        "model": args.model,
        "tenant": args.tenant,
        "older_than": None if args.older_than is None else _number(args.older_than),
        "limit": None if args.limit is None else str(args.limit),
        "after": args.after,
    }
    params = {k: v for k, v in filters.items() if v is not None}
    data = api.get("/v1/admin/responses", params)
    return _emit(args, data, render_responses(data, time.time()))


def cmd_responses_show(api: AdminApi, args: argparse.Namespace) -> int:
    data = api.get(f"/v1/admin/responses/{_segment(args.id)}")
    return _emit(args, data, render_response(data, time.time()))


def cmd_responses_act(api: AdminApi, args: argparse.Namespace) -> int:
    data = api.post(f"/v1/admin/responses/{_segment(args.id)}/{args.action}")
    return _emit(args, data, render_response(data, time.time()))


def cmd_queues_act(api: AdminApi, args: argparse.Namespace) -> int:
    data = api.post(f"/v1/admin/queues/{_segment(args.name)}/{args.action}")
    state = "paused" if data.get("paused") else "running"
    return _emit(args, data, f"queue {data.get('name', args.name)}: {state}")


# ---- command line ----------------------------------------------------------------------------


def _positive(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {raw!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0: {raw!r}")
    return value


def _common() -> argparse.ArgumentParser:
    """Options every command takes, before or after its name (``resq --json queue`` and
    ``resq queue --json``); defaults are set once, on the top-level parser."""
    common = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    common.add_argument(
        "--url",
        help=f"the resq API (env RESQ_URL, else RESQ_HOST/RESQ_PORT; default {DEFAULT_URL})",
    )
    common.add_argument("--key", help="the admin key (env RESQ_ADMIN_KEY)")
    common.add_argument("--json", action="store_true", help="print the API's JSON")
    common.add_argument(
        "--timeout", type=_positive, metavar="SECONDS", help="seconds per request (default 30)"
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(
        prog="resq",
        description="Operate a running resq through its admin API.",
        epilog="Exit status: 0 done, 1 the API answered with an error, 2 unreachable or usage.",
        parents=[_common()],  # its own copy: set_defaults changes the actions it holds
    )
    parser.set_defaults(url=None, key=None, json=False, timeout=DEFAULT_TIMEOUT_SECONDS)
    commands = parser.add_subparsers(metavar="COMMAND", required=True)

    queue = commands.add_parser("queue", parents=[common], help="queue depths, rates, latencies")
    queue.add_argument(
        "--watch",
        nargs="?",
        type=_positive,
        const=DEFAULT_WATCH_SECONDS,
        metavar="SECONDS",
        help=f"redraw every SECONDS (default {DEFAULT_WATCH_SECONDS:g}) until Ctrl-C",
    )
    queue.set_defaults(run=cmd_queue)
    workers = commands.add_parser("workers", parents=[common], help="workers and their jobs")
    workers.set_defaults(run=cmd_workers)

    responses = commands.add_parser("responses", help="list, show, cancel, requeue responses")
    actions = responses.add_subparsers(metavar="ACTION", required=True)
    listing = actions.add_parser("list", parents=[common], help="responses, newest first")
    listing.add_argument("--status", help="queued, in_progress, completed, failed, …")
    listing.add_argument("--model")
    listing.add_argument("--tenant")
    listing.add_argument("--older-than", type=float, metavar="SECONDS", help="created before")
    listing.add_argument("--limit", type=int, metavar="N")
    listing.add_argument("--after", metavar="ID", help="the page after this id")
    listing.set_defaults(run=cmd_responses_list)
    show = actions.add_parser("show", parents=[common], help="one response, timeline, webhooks")
    show.add_argument("id")
    show.set_defaults(run=cmd_responses_show)
    for action, text in (("cancel", "cancel a response"), ("requeue", "run a response again")):
        act = actions.add_parser(action, parents=[common], help=text)
        act.add_argument("id")
        act.set_defaults(run=cmd_responses_act, action=action)

    queues = commands.add_parser("queues", help="pause or resume a queue")
    queue_actions = queues.add_subparsers(metavar="ACTION", required=True)
    for action, text in (("pause", "stop taking jobs from"), ("resume", "take jobs again from")):
        act = queue_actions.add_parser(action, parents=[common], help=f"{text} queue NAME")
        act.add_argument("name", metavar="NAME")
        act.set_defaults(run=cmd_queues_act, action=action)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error (argparse has printed it)
        return exc.code if isinstance(exc.code, int) else 0
    url = args.url or default_url(os.environ)
    key = args.key or os.environ.get("RESQ_ADMIN_KEY")
    try:
        with AdminApi(url, key, timeout=args.timeout) as api:
            return int(args.run(api, args))
    except CliError as exc:
        print(f"resq: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `resq responses list | head`: the reader left; so do we
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
