"""The ``resq`` command line against a fake admin API: a real HTTP server on 127.0.0.1 that
answers canned JSON of the admin API's shapes and records every request it gets."""

from __future__ import annotations

import io
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from ops import admin_client, cli, render
from ops.embedded_redis import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
KEY = "admin-test-key"
T0 = 1_767_225_600.0  # 2026-01-01 00:00:00 UTC

WINDOW_1M = {
    "completed": 120,
    "failed": 2,
    "cancelled": 0,
    "incomplete": 1,
    "throughput_per_second": 2.05,
    "queue_wait_seconds": {"p50": 0.12, "p95": 1.4},
    "run_seconds": {"p50": 3.2, "p95": 75.0},
}
EMPTY_WINDOW = {
    "completed": 0,
    "failed": 0,
    "cancelled": 0,
    "incomplete": 0,
    "throughput_per_second": 0.0,
    "queue_wait_seconds": {"p50": None, "p95": None},
    "run_seconds": {"p50": None, "p95": None},
}
QUEUE = {
    "object": "admin.queue",
    "generated_at": T0,
    "queues": [
        {"name": "resq", "depth": 12, "paused": False},
        {"name": "resq.low", "depth": 340, "paused": True},
    ],
    "totals": {"queued": 352, "in_progress": 17, "oldest_queued_age_seconds": 252.0},
    "windows": {"1m": WINDOW_1M, "5m": EMPTY_WINDOW, "15m": EMPTY_WINDOW},
    "by_model": [
        {
            "model": "resq-builtin",
            "queued": 350,
            "in_progress": 17,
            "completed": 118,
            "failed": 2,
            "cancelled": 0,
            "incomplete": 1,
        }
    ],
    "by_tenant": [],
}
WORKERS = {
    "object": "list",
    "data": [
        {
            "name": "celery@w1",
            "concurrency": 200,
            "queues": ["resq", "resq.webhooks"],
            "active": [
                {"response_id": "resp_short", "runtime_seconds": 2.5},
                {"response_id": "resp_long", "runtime_seconds": 4000.0},
            ],
        },
        {"name": "celery@w2", "concurrency": None, "queues": ["resq"], "active": []},
    ],
    "error": None,
}
RESPONSE = {
    "id": "resp_1",
    "object": "admin.response",
    "tenant": "team-a",
    "model": "resq-builtin",
    "status": "failed",
    "background": True,
    "created_at": T0,
    "started_at": T0 + 1.5,
    "ended_at": T0 + 65.0,
    "attempts": 2,
    "error": {"code": "server_error", "message": "model crashed"},
}
QUEUED = {
    **RESPONSE,
    "id": "resp_2",
    "status": "queued",
    "started_at": None,
    "ended_at": None,
    "attempts": 0,
    "error": None,
}
DETAIL = {
    **RESPONSE,
    "timeline": [{"event": "created", "at": T0}, {"event": "started", "at": T0 + 1.5}],
    "webhook_attempts": [
        {
            "delivery_id": "whd_1",
            "endpoint_id": "whe_1",
            "number": 1,
            "status_code": 503,
            "ok": False,
            "latency_ms": 42.0,
            "error": "receiver said 503",
            "at": T0 + 66.0,
        }
    ],
}
NOT_FOUND = {
    "error": {
        "message": "No response with id 'resp_x'.",
        "type": "invalid_request_error",
        "param": None,
        "code": "not_found",
    }
}


# ---- the fake admin API ------------------------------------------------------------------


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    authorization: str | None


class FakeAdminApi:
    """Answers ``routes[(method, path)] = (status, body)``; a bytes body goes out as is."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], tuple[int, Any]] = {}
        self.requests: list[Request] = []
        self.port = free_port()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def answer(self) -> None:
                url = urlsplit(self.path)
                fake.requests.append(
                    Request(
                        self.command,
                        url.path,
                        parse_qs(url.query),
                        self.headers.get("authorization"),
                    )
                )
                status, body = fake.routes.get((self.command, url.path), (404, NOT_FOUND))
                raw = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_POST = answer  # noqa: N815 - http.server's naming

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def on(self, method: str, path: str, body: Any, status: int = 200) -> None:
        self.routes[(method, path)] = (status, body)


@pytest.fixture
def api() -> Iterator[FakeAdminApi]:
    fake = FakeAdminApi()
    fake.thread.start()
    try:
        yield fake
    finally:
        fake.server.shutdown()
        fake.server.server_close()
        fake.thread.join(5)


@pytest.fixture(autouse=True)
def no_resq_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RESQ_URL", raising=False)
    monkeypatch.delenv("RESQ_ADMIN_KEY", raising=False)


def run(capsys: pytest.CaptureFixture[str], api: FakeAdminApi, *args: str) -> tuple[int, str, str]:
    code = cli.main([*args, "--url", api.url, "--key", KEY])
    out, err = capsys.readouterr()
    return code, out, err


def lines(text: str) -> list[str]:
    return text.splitlines()


# ---- formatting helpers ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "-"),
        (0, "0ms"),
        (0.0123, "12ms"),
        (0.9999, "1.0s"),
        (12.34, "12.3s"),
        (59.96, "1m00s"),
        (245, "4m05s"),
        (7380, "2h03m"),
        (3 * 86400 + 4 * 3600 + 59, "3d04h"),
        (-3, "0ms"),  # clock skew never shows a negative duration
    ],
)
def test_fmt_duration(seconds: float | None, text: str) -> None:
    assert render.fmt_duration(seconds) == text


def test_fmt_time_is_utc() -> None:
    assert render.fmt_time(T0 + 3661.9) == "2026-01-01 01:01:01"
    assert render.fmt_time(None) == "-"


def test_table_aligns_and_formats_cells() -> None:
    text = render.table(["NAME", "N", "ON"], [["a", 1, True], ["bbbb", 100, None]], "lrl")
    assert text == "NAME    N  ON\na       1  yes\nbbbb  100  -"


def test_empty_table_says_none() -> None:
    assert render.table(["NAME", "N"], [], "lr") == "NAME  N\n(none)"


@pytest.mark.parametrize(
    ("url", "root"),
    [
        ("http://h:8080", "http://h:8080"),
        ("http://h:8080/", "http://h:8080"),
        ("http://h:8080/v1", "http://h:8080"),
        (" http://h:8080/v1/ ", "http://h:8080"),
    ],
)
def test_normalize_url(url: str, root: str) -> None:
    assert admin_client.normalize_url(url) == root


# ---- commands ------------------------------------------------------------------------------


def test_queue_table(capsys: pytest.CaptureFixture[str], api: FakeAdminApi) -> None:
    api.on("GET", "/v1/admin/queue", QUEUE)
    code, out, err = run(capsys, api, "queue")
    assert (code, err) == (0, "")
    assert [(r.method, r.path, r.authorization) for r in api.requests] == [
        ("GET", "/v1/admin/queue", f"Bearer {KEY}")
    ]
    assert lines(out) == [
        f"resq queue  {api.url}  2026-01-01 00:00:00 UTC",
        "",
        "QUEUE     DEPTH  PAUSED",
        "resq         12  no",
        "resq.low    340  yes",
        "",
        "queued 352   in progress 17   oldest queued 4m12s",
        "",
        "WINDOW  COMPLETED  FAILED  CANCELLED  INCOMPLETE  PER SEC  WAIT P50  WAIT P95  RUN P50"
        "  RUN P95",
        "1m            120       2          0           1     2.05     120ms      1.4s     3.2s"
        "    1m15s",
        "5m              0       0          0           0     0.00         -         -        -"
        "        -",
        "15m             0       0          0           0     0.00         -         -        -"
        "        -",
        "",
        "BY MODEL",
        "MODEL         QUEUED  IN PROGRESS  COMPLETED  FAILED  CANCELLED  INCOMPLETE",
        "resq-builtin     350           17        118       2          0           1",
        "",
        "BY TENANT",
        "TENANT  QUEUED  IN PROGRESS  COMPLETED  FAILED  CANCELLED  INCOMPLETE",
        "(none)",
    ]


@pytest.mark.parametrize(
    "argv",
    [["queue", "--json"], ["--json", "queue"]],
    ids=["after-command", "before-command"],
)
def test_queue_json_is_the_api_body(
    capsys: pytest.CaptureFixture[str], api: FakeAdminApi, argv: list[str]
) -> None:
    api.on("GET", "/v1/admin/queue", QUEUE)
    code, out, _ = run(capsys, api, *argv)
    assert code == 0
    assert json.loads(out) == QUEUE


def test_workers_table(capsys: pytest.CaptureFixture[str], api: FakeAdminApi) -> None:
    api.on("GET", "/v1/admin/workers", WORKERS)
    code, out, _ = run(capsys, api, "workers")
    assert code == 0
    assert lines(out) == [
        "WORKER     CONCURRENCY  QUEUES              ACTIVE",
        "celery@w1          200  resq,resq.webhooks       2",
        "celery@w2            -  resq                     0",
        "",
        "ACTIVE JOBS",
        "WORKER     RESPONSE    RUNNING",
        "celery@w1  resp_long     1h06m",
        "celery@w1  resp_short     2.5s",
    ]


def test_workers_shows_the_inspect_error(
    capsys: pytest.CaptureFixture[str], api: FakeAdminApi
) -> None:
    api.on("GET", "/v1/admin/workers", {"object": "list", "data": [], "error": "no reply"})
    code, out, _ = run(capsys, api, "workers")
    assert code == 0
    assert lines(out) == [
        "WORKER  CONCURRENCY  QUEUES  ACTIVE",
        "(none)",
        "",
        "warning: no reply",
    ]


def test_responses_list_sends_filters_and_shows_a_row_each(
    capsys: pytest.CaptureFixture[str], api: FakeAdminApi
) -> None:
    page = {
        "object": "list",
        "data": [RESPONSE, QUEUED],
        "first_id": "resp_1",
        "last_id": "resp_2",
        "has_more": True,
    }
    api.on("GET", "/v1/admin/responses", page)
    argv = ["--status", "queued", "--model", "m*", "--tenant", "team-a"]
    argv += ["--older-than", "60", "--limit", "2", "--after", "resp_0"]
    code, out, _ = run(capsys, api, "responses", "list", *argv)
    assert code == 0
    assert api.requests[0].query == {
        "status": ["queued"],
        "model": ["m*"],
        "tenant": ["team-a"],
        "older_than": ["60"],
        "limit": ["2"],
        "after": ["resp_0"],
    }
    header, failed, queued, more = lines(out)
    assert header.split() == [
        "ID",
        "STATUS",
        "MODEL",
        "TENANT",
        "CREATED",
        "(UTC)",
        "WAITED",
        "RAN",
        "ATTEMPTS",
        "ERROR",
    ]
    assert failed.split() == [
        "resp_1",
        "failed",
        "resq-builtin",
        "team-a",
        "2026-01-01",
        "00:00:00",
        "1.5s",
        "1m04s",
        "2",
        "server_error",
    ]
    # Still queued: it has waited until now (years, by this test's clock) and not run.
    assert queued.split()[:5] == ["resp_2", "queued", "resq-builtin", "team-a", "2026-01-01"]
    assert queued.split()[-3:] == ["-", "0", "-"]
    assert more == "more: add --after resp_2"


def test_responses_list_without_filters_sends_none(
    capsys: pytest.CaptureFixture[str], api: FakeAdminApi
) -> None:
    page: dict[str, Any] = {
        "object": "list",
        "data": [],
        "first_id": None,
        "last_id": None,
        "has_more": False,
    }
    api.on("GET", "/v1/admin/responses", page)
    code, out, _ = run(capsys, api, "responses", "list")
    assert code == 0
    assert api.requests[0].query == {}
    assert lines(out)[1:] == ["(none)"]


def test_responses_show(capsys: pytest.CaptureFixture[str], api: FakeAdminApi) -> None:
    api.on("GET", "/v1/admin/responses/resp_1", DETAIL)
    code, out, _ = run(capsys, api, "responses", "show", "resp_1")
    assert code == 0
    assert lines(out) == [
        "id          resp_1",
        "status      failed",
        "model       resq-builtin",
        "tenant      team-a",
        "background  yes",
        "created     2026-01-01 00:00:00",
        "started     2026-01-01 00:00:01  (waited 1.5s)",
        "ended       2026-01-01 00:01:05  (ran 1m04s)",
        "attempts    2",
        "error       server_error: model crashed",
        "",
        "TIMELINE",
        "EVENT    AT (UTC)             AFTER",
        "created  2026-01-01 00:00:00    0ms",
        "started  2026-01-01 00:00:01   1.5s",
        "",
        "WEBHOOK ATTEMPTS",
        "DELIVERY  ENDPOINT  #  STATUS  OK  LATENCY  AT (UTC)             ERROR",
        "whd_1     whe_1     1     503  no     42ms  2026-01-01 00:01:06  receiver said 503",
    ]


def test_response_ids_are_one_path_segment(
    capsys: pytest.CaptureFixture[str], api: FakeAdminApi
) -> None:
    code, _, _ = run(capsys, api, "responses", "show", "../queue")
    assert code == 1
    assert api.requests[0].path == "/v1/admin/responses/..%2Fqueue"


@pytest.mark.parametrize("action", ["cancel", "requeue"])
def test_responses_actions_post_and_show_the_response(
    capsys: pytest.CaptureFixture[str], api: FakeAdminApi, action: str
) -> None:
    api.on("POST", f"/v1/admin/responses/resp_2/{action}", QUEUED)
    code, out, _ = run(capsys, api, "responses", action, "resp_2")
    assert code == 0
    assert [(r.method, r.path) for r in api.requests] == [
        ("POST", f"/v1/admin/responses/resp_2/{action}")
    ]
    assert lines(out)[:2] == ["id          resp_2", "status      queued"]
    assert "TIMELINE" not in out


@pytest.mark.parametrize(("action", "paused"), [("pause", True), ("resume", False)])
def test_queues_pause_and_resume(
    capsys: pytest.CaptureFixture[str], api: FakeAdminApi, action: str, paused: bool
) -> None:
    api.on("POST", f"/v1/admin/queues/resq.low/{action}", {"name": "resq.low", "paused": paused})
    code, out, _ = run(capsys, api, "queues", action, "resq.low")
    assert code == 0
    assert [(r.method, r.path) for r in api.requests] == [
        ("POST", f"/v1/admin/queues/resq.low/{action}")
    ]
    assert out == f"queue resq.low: {'paused' if paused else 'running'}\n"


# ---- errors ----------------------------------------------------------------------------------


def test_api_error_prints_its_message_and_exits_1(
    capsys: pytest.CaptureFixture[str], api: FakeAdminApi
) -> None:
    api.on("GET", "/v1/admin/responses/resp_x", NOT_FOUND, status=404)
    code, out, err = run(capsys, api, "responses", "show", "resp_x")
    assert (code, out) == (1, "")
    assert err == "resq: No response with id 'resp_x'. (HTTP 404)\n"


def test_error_without_an_error_body_names_the_status(
    capsys: pytest.CaptureFixture[str], api: FakeAdminApi
) -> None:
    api.on("GET", "/v1/admin/workers", b"<html>bad gateway</html>", status=502)
    code, out, err = run(capsys, api, "workers")
    assert (code, out) == (1, "")
    assert err == "resq: the API answered HTTP 502 Bad Gateway\n"


def test_connection_refused_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    code = cli.main(["queue", "--url", url])
    out, err = capsys.readouterr()
    assert (code, out) == (2, "")
    assert err == (
        f"resq: cannot reach the resq API at {url}: connection refused "
        "(is it running? set --url or RESQ_URL)\n"
    )


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["responses"]) == 2
    assert "usage: resq responses" in capsys.readouterr().err
    assert cli.main(["queue", "--watch", "0"]) == 2


def test_url_and_key_from_the_environment(
    capsys: pytest.CaptureFixture[str], api: FakeAdminApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    api.on("GET", "/v1/admin/workers", WORKERS)
    monkeypatch.setenv("RESQ_URL", api.url + "/v1/")
    monkeypatch.setenv("RESQ_ADMIN_KEY", "from-env")
    assert cli.main(["workers"]) == 0
    assert [(r.path, r.authorization) for r in api.requests] == [
        ("/v1/admin/workers", "Bearer from-env")
    ]


def test_no_key_sends_no_authorization(
    capsys: pytest.CaptureFixture[str], api: FakeAdminApi
) -> None:
    api.on("GET", "/v1/admin/workers", WORKERS)
    assert cli.main(["workers", "--url", api.url]) == 0
    assert api.requests[0].authorization is None


# ---- --watch -----------------------------------------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_watch_clears_the_screen_only_on_a_terminal(api: FakeAdminApi) -> None:
    api.on("GET", "/v1/admin/queue", QUEUE)
    for out, clears in ((Terminal(), True), (io.StringIO(), False)):
        sleeps: list[float] = []

        def sleep(seconds: float, sleeps: list[float] = sleeps) -> None:
            sleeps.append(seconds)
            if len(sleeps) == 2:
                raise KeyboardInterrupt

        with admin_client.AdminApi(api.url, KEY) as admin:
            assert cli.watch_queue(admin, interval=0.5, as_json=False, out=out, sleep=sleep) == 0
        text = out.getvalue()
        assert sleeps == [0.5, 0.5]
        assert text.count(cli.CLEAR_SCREEN) == (2 if clears else 0)
        assert text.count("(every 0.5s, Ctrl-C stops)") == 2


def test_watch_keeps_going_through_a_later_failure(api: FakeAdminApi) -> None:
    api.on("GET", "/v1/admin/queue", QUEUE)
    out = io.StringIO()

    def sleep(seconds: float) -> None:
        if len(api.requests) == 1:
            api.on("GET", "/v1/admin/queue", {"error": {"message": "busy"}}, status=503)
        else:
            raise KeyboardInterrupt

    with admin_client.AdminApi(api.url, KEY) as admin:
        assert cli.watch_queue(admin, interval=1, as_json=False, out=out, sleep=sleep) == 0
    assert out.getvalue().endswith(
        f"resq queue  {api.url}  (every 1s, Ctrl-C stops)\n\nbusy (HTTP 503)\n\n"
    )


def test_watch_in_a_process_redraws_until_sigint(api: FakeAdminApi) -> None:
    api.on("GET", "/v1/admin/queue", QUEUE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESQ_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "ops.cli", "queue", "--watch", "0.2", "--url", api.url],
        cwd=REPO_ROOT,
        env={**env, "RESQ_ADMIN_KEY": KEY},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stderr is not None
    seen: queue.Queue[str] = queue.Queue()
    stdout = process.stdout

    def read_lines() -> None:
        for line in stdout:
            seen.put(line)

    reader = threading.Thread(target=read_lines)
    reader.start()
    try:
        frames, deadline = 0, time.monotonic() + 30
        while frames < 2:
            line = seen.get(timeout=max(0.0, deadline - time.monotonic()))
            assert "\x1b[" not in line, "cleared a screen that is not a terminal"
            frames += line.startswith(f"resq queue  {api.url}")
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        reader.join(5)
        stderr = process.stderr.read()
        process.stdout.close()
        process.stderr.close()
    assert stderr == ""
    assert len(api.requests) >= 2
    assert {r.authorization for r in api.requests} == {f"Bearer {KEY}"}


def test_resq_console_script_is_registered() -> None:
    (entry,) = metadata.entry_points(group="console_scripts", name="resq")
    assert entry.value == "ops.cli:main"


@pytest.mark.parametrize(
    ("env", "url"),
    [
        ({}, "http://127.0.0.1:8080"),
        ({"RESQ_PORT": "9000"}, "http://127.0.0.1:9000"),
        ({"RESQ_HOST": "0.0.0.0", "RESQ_PORT": "9000"}, "http://127.0.0.1:9000"),
        ({"RESQ_HOST": "::1"}, "http://[::1]:8080"),
        ({"RESQ_HOST": "10.0.0.5", "RESQ_URL": "http://lb:80"}, "http://lb:80"),
    ],
)
def test_the_default_url_follows_the_server_settings(env: dict[str, str], url: str) -> None:
    assert admin_client.default_url(env) == url


def test_a_401_says_how_to_pass_the_admin_key() -> None:
    body = {"error": {"message": "Missing bearer token.", "type": "invalid_request_error"}}
    response = httpx.Response(401, json=body)
    assert admin_client.error_message(response) == (
        "Missing bearer token. (HTTP 401); pass the admin key with --key or set RESQ_ADMIN_KEY"
    )
    assert admin_client.error_message(httpx.Response(403, json=body)).endswith("(HTTP 403)")
