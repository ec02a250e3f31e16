"""The operator dashboard (``/admin``) in headless Chromium against a real stack with live data.

Chromium runs as a plain subprocess: ``--dump-dom`` gives the DOM after the page's scripts ran
(``--virtual-time-budget`` lets its refresh loop run), ``--screenshot`` saves what an operator
sees to ``$RESQ_TEST_ARTIFACTS/dashboard.png``. Without Chromium the tests skip, or fail under
``CI=true`` (``make test`` installs it).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.e2e.durable import MiniStack, running
from tests.e2e.helpers import TERMINAL, script, wait_status

pytestmark = pytest.mark.e2e

TENANT = "dash-tenant"
TENANT_KEY = "sk-dash-tenant-0123456789"
ADMIN_KEY = "sk-dash-admin-9876543210"
MODEL = "resq-builtin"
COMPLETED = 4  # sync responses that complete
BACKGROUND = 6  # slow background ones, queued behind each other (4 worker slots in all)
CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'"
)
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--window-size=1366,900",
]
VIRTUAL_TIME_MS = 5000  # the page refreshes every 2 s: two or three rounds
READY_TIMEOUT_SECONDS = 40
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# ---- a small DOM: the tree html.parser sees in Chromium's --dump-dom --------------------------

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list[Node | str] = field(default_factory=list)

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def walk(self) -> Iterator[Node]:
        yield self
        for child in self.children:
            if isinstance(child, Node):
                yield from child.walk()

    def all(self, tag: str | None = None, **attrs: str) -> list[Node]:
        """Descendants with this tag and attributes (``data_testid`` means ``data-testid``)."""
        wanted = {k.replace("_", "-"): v for k, v in attrs.items()}
        return [
            n
            for n in self.walk()
            if (tag is None or n.tag == tag) and all(n.attrs.get(k) == v for k, v in wanted.items())
        ]

    def one(self, tag: str | None = None, **attrs: str) -> Node:
        found = self.all(tag, **attrs)
        assert len(found) == 1, f"{len(found)} <{tag or '*'} {attrs}> in the page"
        return found[0]

    def rows(self) -> list[Node]:
        return self.one("tbody").all("tr")


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.root = Node("#document", {})
        self.open = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.open[-1].children.append(node)
        if tag not in VOID:
            self.open.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.open[-1].children.append(Node(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self.open) - 1, 0, -1):
            if self.open[depth].tag == tag:
                del self.open[depth:]
                return

    def handle_data(self, data: str) -> None:
        self.open[-1].children.append(data)


def parse(html: str) -> Node:
    builder = _TreeBuilder()
    builder.feed(html)
    builder.close()
    return builder.root


# ---- Chromium --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    message = (
        "headless Chromium is not installed (Debian package 'chromium', /usr/bin/chromium); "
        "`make test` installs it with apt-get"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def chromium(browser: str, url: str, *args: str, timeout: float = 60) -> str:
    """Run headless Chromium once on ``url`` with a new empty profile; its stdout."""
    with tempfile.TemporaryDirectory(prefix="resq-chromium-", ignore_cleanup_errors=True) as prof:
        command = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={prof}", *args, url]
        proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
        )
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # its own process group only
            proc.communicate()
            raise AssertionError(f"chromium did not finish within {timeout}s on {url}") from None
    assert proc.returncode == 0, err.decode(errors="replace")[-4000:]
    return out.decode()


def dump(browser: str, url: str) -> Node:
    return parse(chromium(browser, url, "--dump-dom", f"--virtual-time-budget={VIRTUAL_TIME_MS}"))


def ready_page(browser: str, url: str) -> Node:
    """The DOM once the page says its first refresh rendered everything."""
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while True:
        page = dump(browser, url)
        if page.one("body").attrs.get("data-ready") == "1":
            return page
        shown = [n.text() for n in page.all(role="alert")] + [page.one(id="banner").text()]
        assert time.monotonic() < deadline, f"the dashboard never got ready; it shows {shown}"
        time.sleep(0.5)


def js_iso(unix: float) -> str:
    """What ``new Date(unix * 1000).toISOString()`` gives: whole milliseconds, UTC."""
    moment = EPOCH + timedelta(milliseconds=int(unix * 1000))
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ---- the stack and its data ------------------------------------------------------------------


@dataclass
class Live:
    stack: MiniStack
    client: openai.OpenAI
    completed: list[str]
    failed: str

    def page_url(self, fragment: str) -> str:
        return f"{self.stack.root_url}/admin#{fragment}"

    def admin_get(self, path: str) -> Any:
        got = self.stack.http.get(
            f"{self.stack.root_url}/v1/admin{path}",
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        )
        assert got.status_code == 200, got.text
        return got.json()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    env = {
        "RESQ_API_KEYS": f"{TENANT_KEY}:{TENANT}",
        "RESQ_ADMIN_KEYS": ADMIN_KEY,
        "RESQ_WORKER_CONCURRENCY": "2",
    }
    with running(tmp_path_factory.mktemp("dashboard"), env) as stack:
        client = openai.OpenAI(
            base_url=f"{stack.root_url}/v1",
            api_key=TENANT_KEY,
            max_retries=0,
            http_client=stack.http,
        )
        background = [
            client.responses.create(
                model=MODEL, background=True, input=script(words=40, delay_ms=50)
            ).id
            for _ in range(BACKGROUND)
        ]
        completed = []
        for i in range(COMPLETED):
            done = client.responses.create(model=MODEL, input=f"hello {i}")
            assert done.status == "completed", done.error
            completed.append(done.id)
        failed = client.responses.create(model=MODEL, input=script(error={"message": "boom"}))
        assert failed.status == "failed" and failed.error is not None
        assert failed.error.message == "boom"
        for rid in background:
            assert wait_status(client, rid, TERMINAL, timeout=30)["status"] == "completed"
        live = Live(stack, client, completed + background, failed.id)
        deadline = time.monotonic() + 30
        while len(live.admin_get("/queue/history?minutes=15")["data"]) < 2:
            assert time.monotonic() < deadline, "no queue history samples after 30 s"
            time.sleep(0.5)
        yield live


# ---- the tests -------------------------------------------------------------------------------


def test_page_is_public_html_under_a_strict_csp(live: Live) -> None:
    for path in ("/admin", "/admin/"):
        got = live.stack.http.get(f"{live.stack.root_url}{path}")
        assert got.status_code == 200, got.text
        assert got.headers["content-type"] == "text/html; charset=utf-8"
        assert got.headers["content-security-policy"] == CSP
        assert 'data-testid="chart-depth"' in got.text
        # self-contained: nothing loaded from another origin
        assert "http://" not in got.text.replace("http://www.w3.org/2000/svg", "")
        assert "https://" not in got.text
    # the data behind it is not public
    data = live.stack.http.get(f"{live.stack.root_url}/v1/admin/queue")
    assert data.status_code == 401, data.text


def test_without_a_key_the_page_asks_for_one(browser: str, live: Live) -> None:
    page = dump(browser, f"{live.stack.root_url}/admin")
    assert "data-ready" not in page.one("body").attrs
    assert "hidden" not in page.one(id="keygate").attrs
    assert "hidden" in page.one(id="main").attrs
    assert page.one(id="status-dot").attrs["data-state"] == "err"
    assert page.one(id="updated").text() == "needs an admin key"


def test_a_tenant_key_is_refused_with_the_servers_reason(browser: str, live: Live) -> None:
    page = dump(browser, live.page_url(f"key={TENANT_KEY}"))
    assert "data-ready" not in page.one("body").attrs
    assert "hidden" not in page.one(id="keygate").attrs
    message = page.one(id="key-msg").text()
    assert message.startswith("This key is not an admin key."), message
    assert "RESQ_ADMIN_KEYS" in message  # the API's own error message, shown inline


def test_dashboard_shows_live_data(browser: str, live: Live) -> None:
    page = ready_page(browser, live.page_url(f"key={ADMIN_KEY}"))
    assert page.all(role="alert") == [], [n.text() for n in page.all(role="alert")]

    for chart in ("chart-depth", "chart-throughput"):
        svg = page.one("svg", data_testid=chart)
        assert int(svg.attrs["data-points"]) >= 1, chart
        assert svg.all("circle"), f"{chart} draws no point"

    cards = page.one(data_testid="cards")
    completed = cards.one(data_testid="card-completed")
    assert int(completed.attrs["data-value"]) >= COMPLETED + BACKGROUND
    assert completed.one(**{"class": "value"}).text() == f"{int(completed.attrs['data-value']):,}"
    assert int(cards.one(data_testid="card-failed").attrs["data-value"]) >= 1

    workers = page.one("table", data_testid="table-workers").rows()
    assert len(workers) == len(live.stack.workers)
    assert all("data-worker" in row.attrs for row in workers)

    failures = page.one("table", data_testid="table-failures")
    row = failures.one("tr", data_response=live.failed)
    cells = [td.text() for td in row.all("td")]
    assert cells[:3] == [live.failed, MODEL, TENANT]
    assert "boom" in cells[3]
    assert cells[4].endswith("ago")

    # while a few slow jobs run, take the picture an operator would see
    running = [
        live.client.responses.create(
            model=MODEL, background=True, input=script(words=60, delay_ms=50)
        ).id
        for _ in range(6)
    ]
    wait_status(live.client, running[0], {"in_progress"}, timeout=10)
    artifacts = Path(os.environ.get("RESQ_TEST_ARTIFACTS", "test-artifacts")).resolve()
    artifacts.mkdir(parents=True, exist_ok=True)
    shot = artifacts / "dashboard.png"
    shot.unlink(missing_ok=True)
    chromium(
        browser,
        live.page_url(f"key={ADMIN_KEY}"),
        f"--screenshot={shot}",
        f"--virtual-time-budget={VIRTUAL_TIME_MS}",
    )
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 10_000, shot.stat().st_size
    print(f"dashboard screenshot: {shot}")
    for rid in running:
        wait_status(live.client, rid, TERMINAL, timeout=30)


def test_timeline_of_one_response(browser: str, live: Live) -> None:
    rid = live.completed[0]
    page = ready_page(browser, live.page_url(f"key={ADMIN_KEY}&response={rid}"))
    detail = page.one(id="detail")
    assert "hidden" not in detail.attrs
    assert detail.one(data_testid="detail-status").text() == "completed"
    timeline = page.one("ol", data_testid="timeline")
    events = [li.attrs.get("data-event") for li in timeline.all("li")]
    assert events == ["queued", "started", "first_token", "finished"]
    # each entry shows the admin API's own instant (to the millisecond, as JS Dates keep it)
    admin = live.admin_get(f"/responses/{rid}")
    shown = [li.one(**{"class": "at"}).attrs["title"] for li in timeline.all("li")]
    assert shown == [js_iso(event["at"]) for event in admin["timeline"]]
    assert "No webhook attempts" in detail.one(id="webhooks").text()


def test_timeline_of_an_unknown_id_says_so(browser: str, live: Live) -> None:
    page = ready_page(browser, live.page_url(f"key={ADMIN_KEY}&response=resp_nope"))
    assert "No response with the id resp_nope." in page.one(id="detail-err").text()
    assert "hidden" in page.one(id="detail-body").attrs
