"""``resq prompts pull|push`` against the real API: the Flask app of ``tests.api.factory``
served over HTTP on 127.0.0.1 (SQLite file, fakeredis), reached with ``--url`` and a tenant's
key as a user would; every request the app gets is recorded, so "changes nothing" is checked
as "sent no POST"."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from flask import Flask
from werkzeug.serving import make_server

from ops import cli, prompt_files
from tests.api.factory import build_app, store_of

KEY = "tenant-key"
SUPPORT_V1 = {
    "model": "resq-builtin",
    "instructions": "You help {{ customer }}.\nBe brief.\n",
    "messages": [{"role": "user", "content": "My order is {{ order_id }}."}],
    "variables": {
        "type": "object",
        "properties": {"customer": {"type": "string"}, "order_id": {"type": "string"}},
        "required": ["customer", "order_id"],
    },
}
SUPPORT_V2 = {**SUPPORT_V1, "temperature": 0.2}
SUPPORT: dict[str, Any] = {
    "name": "support",
    "default_version": 1,
    "versions": [SUPPORT_V1, SUPPORT_V2],
}
BILLING: dict[str, Any] = {
    "name": "billing",
    "description": "Invoices",
    "metadata": {"team": "finance"},
    "versions": [{"model": "resq-builtin", "instructions": "Talk about invoices."}],
}


def stored(*versions: dict[str, Any]) -> list[dict[str, Any]]:
    """Versions as the server keeps them: ``messages`` is always there."""
    return [{"messages": [], **version} for version in versions]


class Server:
    """The app on a real port, with the (method, path) of every request it answers."""

    def __init__(self, app: Flask) -> None:
        self.requests: list[tuple[str, str]] = []

        def recorded(environ: dict[str, Any], start_response: Any) -> Any:
            self.requests.append((environ["REQUEST_METHOD"], environ["PATH_INFO"]))
            return app.wsgi_app(environ, start_response)

        self.http = make_server("127.0.0.1", 0, recorded, threaded=True)
        self.url = f"http://127.0.0.1:{self.http.server_port}"
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.client = httpx.Client(base_url=self.url, headers={"authorization": f"Bearer {KEY}"})

    def posts(self) -> list[str]:
        return [path for method, path in self.requests if method != "GET"]

    def get(self, path: str) -> Any:
        response = self.client.get(path, params={"order": "asc", "limit": 100})
        assert response.status_code == 200, response.text
        return response.json()

    def prompts(self) -> dict[str, Any]:
        return {p["name"]: p for p in self.get("/v1/prompts")["data"]}

    def versions(self, prompt_id: str) -> list[dict[str, Any]]:
        data = self.get(f"/v1/prompts/{prompt_id}/versions")["data"]
        strip = ("id", "object", "version", "created_at")
        return [{k: v for k, v in version.items() if k not in strip} for version in data]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    queued: list[str] = []  # nothing here creates a response
    app = build_app(
        tmp_path, env={"RESQ_API_KEYS": f"{KEY}:team-a,other-key:team-b"}, enqueue=queued.append
    )
    running = Server(app)
    running.thread.start()
    try:
        yield running
    finally:
        running.http.shutdown()
        running.thread.join(5)
        running.client.close()
        store_of(app).engine.dispose()


@pytest.fixture(autouse=True)
def no_resq_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RESQ_URL", "RESQ_ADMIN_KEY", "RESQ_API_KEY"):
        monkeypatch.delenv(name, raising=False)


def run(
    capsys: pytest.CaptureFixture[str], server: Server, *args: str, key: str = KEY
) -> tuple[int, str, str]:
    code = cli.main(["prompts", *args, "--url", server.url, "--key", key])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def write(directory: Path, *prompts: dict[str, Any]) -> Path:
    directory.mkdir(exist_ok=True)
    for prompt in prompts:
        (directory / f"{prompt['name']}.yaml").write_text(json.dumps(prompt))  # JSON is YAML
    return directory


def pushed(
    capsys: pytest.CaptureFixture[str], server: Server, directory: Path, *prompts: dict[str, Any]
) -> Path:
    """``directory`` with these prompt files, pushed; the recorded requests cleared."""
    assert run(capsys, server, "push", str(write(directory, *prompts)))[0] == 0
    server.requests.clear()
    return directory


def test_pull_from_an_empty_server_writes_nothing(
    capsys: pytest.CaptureFixture[str], server: Server, tmp_path: Path
) -> None:
    code, out, err = run(capsys, server, "pull", str(tmp_path / "new" / "prompts"))
    assert (code, err) == (0, "")
    assert out == "no prompts on the server: nothing written\n"
    assert list((tmp_path / "new" / "prompts").iterdir()) == []


def test_push_creates_then_a_second_push_changes_nothing(
    capsys: pytest.CaptureFixture[str], server: Server, tmp_path: Path
) -> None:
    directory = write(tmp_path / "p", SUPPORT, BILLING)
    code, out, err = run(capsys, server, "push", str(directory))
    assert (code, err) == (0, "")
    assert out.splitlines() == ["+ create billing (1 version)", "+ create support (2 versions)"]
    prompts = server.prompts()
    assert sorted(prompts) == ["billing", "support"]
    support, billing = prompts["support"], prompts["billing"]
    assert (support["latest_version"], support["default_version"]) == ("2", "1")
    assert server.versions(support["id"]) == [SUPPORT_V1, SUPPORT_V2]
    assert (billing["latest_version"], billing["default_version"]) == ("1", "1")
    assert (billing["description"], billing["metadata"]) == ("Invoices", {"team": "finance"})
    assert server.versions(billing["id"]) == stored(*BILLING["versions"])

    server.requests.clear()
    code, out, err = run(capsys, server, "push", str(directory))
    assert (code, err) == (0, "")
    assert out.splitlines() == ["billing: up to date", "support: up to date"]
    assert server.posts() == []


def test_push_adds_versions_and_updates_fields(
    capsys: pytest.CaptureFixture[str], server: Server, tmp_path: Path
) -> None:
    directory = pushed(capsys, server, tmp_path / "p", SUPPORT)
    v3 = {**SUPPORT_V2, "temperature": 0.5}
    write(
        directory, {"name": "support", "description": "d", "versions": [*SUPPORT["versions"], v3]}
    )
    code, out, err = run(capsys, server, "push", str(directory))
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "+ support: add version 3",
        '~ support: description null -> "d"',
        "~ support: default_version 1 -> 3",
    ]
    support = server.prompts()["support"]
    assert (support["description"], support["default_version"]) == ("d", "3")
    assert server.versions(support["id"])[2] == v3


def test_dry_run_shows_the_new_version_as_a_diff_and_changes_nothing(
    capsys: pytest.CaptureFixture[str], server: Server, tmp_path: Path
) -> None:
    directory = pushed(capsys, server, tmp_path / "p", SUPPORT)
    v3 = {**SUPPORT_V2, "temperature": 0.5}
    write(directory, {**SUPPORT, "versions": [SUPPORT_V1, SUPPORT_V2, v3]})
    code, out, err = run(capsys, server, "push", str(directory), "--dry-run")
    assert (code, err) == (0, "")
    assert server.posts() == []
    assert server.versions(server.prompts()["support"]["id"]) == [SUPPORT_V1, SUPPORT_V2]
    lines = out.splitlines()
    assert lines[0] == "+ support: add version 3"
    assert lines[1:3] == ["--- support version 2", "+++ support version 3"]
    assert [line for line in lines[3:] if line[:1] in "+-"] == [
        "-temperature: 0.2",
        "+temperature: 0.5",
    ]
    assert lines[-1] == "(dry run: nothing was changed)"


def test_dry_run_of_a_new_prompt_shows_it_whole(
    capsys: pytest.CaptureFixture[str], server: Server, tmp_path: Path
) -> None:
    directory = write(tmp_path / "p", BILLING)
    code, out, _ = run(capsys, server, "push", str(directory), "--dry-run")
    assert code == 0
    assert out.splitlines() == [
        "+ create billing (1 version)",
        "--- /dev/null",
        "+++ billing version 1",
        "@@ -0,0 +1,2 @@",
        "+model: resq-builtin",
        "+instructions: Talk about invoices.",
        "(dry run: nothing was changed)",
    ]
    assert server.posts() == []


def test_an_edited_version_is_refused_and_nothing_is_pushed(
    capsys: pytest.CaptureFixture[str], server: Server, tmp_path: Path
) -> None:
    directory = pushed(capsys, server, tmp_path / "p", SUPPORT)
    edited = {**SUPPORT_V1, "instructions": "You help."}
    write(directory, {**SUPPORT, "versions": [edited, SUPPORT_V2]}, BILLING)
    code, out, err = run(capsys, server, "push", str(directory))
    assert (code, out) == (1, "")
    assert err == (
        f"resq: {directory / 'support.yaml'}: versions[0]: version 1 of 'support' differs from "
        "the server's; versions are immutable: add a new version instead\n"
    )
    assert server.posts() == []  # billing, checked before support, was not created either


def test_a_file_with_fewer_versions_than_the_server_says_pull_first(
    capsys: pytest.CaptureFixture[str], server: Server, tmp_path: Path
) -> None:
    directory = pushed(capsys, server, tmp_path / "p", SUPPORT)
    write(directory, {"name": "support", "versions": [SUPPORT_V1]})
    code, _, err = run(capsys, server, "push", str(directory))
    assert code == 1
    assert err == (
        f"resq: {directory / 'support.yaml'}: versions: 'support' has 2 versions on the server "
        "and 1 here; pull first\n"
    )


def test_pull_then_push_is_up_to_date_and_a_second_pull_is_byte_identical(
    capsys: pytest.CaptureFixture[str], server: Server, tmp_path: Path
) -> None:
    pushed(capsys, server, tmp_path / "src", SUPPORT, BILLING)
    # A name that is no file name, an empty version 1 and a default that is not the latest.
    made = server.client.post("/v1/prompts", json={"name": "Order status / EU", "version": {}})
    pid = made.json()["id"]
    for body in [*BILLING["versions"], {"model": "resq-builtin", "top_p": 0.5}]:
        assert server.client.post(f"/v1/prompts/{pid}/versions", json=body).is_success
    assert server.client.post(f"/v1/prompts/{pid}", json={"default_version": "2"}).is_success

    pulled = tmp_path / "pulled"
    code, out, err = run(capsys, server, "pull", str(pulled))
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        f"wrote {pulled / 'Order-status-EU.yaml'} (Order status / EU, 3 versions)",
        f"wrote {pulled / 'billing.yaml'} (billing, 1 version)",
        f"wrote {pulled / 'support.yaml'} (support, 2 versions)",
    ]
    first = {p.name: p.read_bytes() for p in pulled.iterdir()}
    assert run(capsys, server, "pull", str(pulled))[0] == 0
    assert {p.name: p.read_bytes() for p in pulled.iterdir()} == first

    server.requests.clear()
    code, out, _ = run(capsys, server, "push", str(pulled))
    assert code == 0
    assert out.splitlines() == [
        "Order status / EU: up to date",
        "billing: up to date",
        "support: up to date",
    ]
    assert server.posts() == []


def test_a_pulled_file_reads_well(
    capsys: pytest.CaptureFixture[str], server: Server, tmp_path: Path
) -> None:
    pushed(capsys, server, tmp_path / "src", SUPPORT)
    assert run(capsys, server, "pull", str(tmp_path / "out"))[0] == 0
    version = """\
  - model: resq-builtin
    instructions: |
      You help {{ customer }}.
      Be brief.
    messages:
      - role: user
        content: My order is {{ order_id }}.
    variables:
      type: object
      properties:
        customer:
          type: string
        order_id:
          type: string
      required:
        - customer
        - order_id
"""
    expected = "name: support\ndefault_version: 1\nversions:\n" + version
    expected += version + "    temperature: 0.2\n"
    assert (tmp_path / "out" / "support.yaml").read_text() == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "name: x\nversions: [\n",
            "not valid YAML: expected the node content, but found '<stream end>' (line 3, "
            "column 1)",
        ),
        ("versions: [{model: resq-builtin}]\n", "name: missing, or not a non-empty string"),
        ("name: x\nversions: {model: m}\n", "versions: expected a non-empty list of versions"),
        ("- a\n", "expected a mapping with 'name' and 'versions'"),
        ("name: x\nversion: []\n", "version: unknown key (expected one of name, description, "),
        (
            "name: x\nversions: [{temp: 1}]\n",
            "versions[0].temp: Invalid 'temp': Extra inputs are not permitted.",
        ),
        (
            "name: x\nversions: [{variables: {default: 2024-01-01}}]\n",
            "versions[0].variables.default: a date is not a JSON value (quote it)",
        ),
        (
            "name: x\ndefault_version: 3\nversions: [{}]\n",
            "default_version: expected a number from 1 to 1",
        ),
    ],
)
def test_a_bad_file_is_refused_with_one_line_and_nothing_is_pushed(
    capsys: pytest.CaptureFixture[str],
    server: Server,
    tmp_path: Path,
    text: str,
    message: str,
) -> None:
    directory = write(tmp_path / "p", BILLING)
    (directory / "x.yml").write_text(text)
    code, out, err = run(capsys, server, "push", str(directory))
    assert (code, out) == (1, "")
    assert err.startswith(f"resq: {directory / 'x.yml'}: {message}")
    assert err.count("\n") == 1
    assert server.requests == []


def test_two_files_with_one_name_are_refused(
    capsys: pytest.CaptureFixture[str], server: Server, tmp_path: Path
) -> None:
    directory = write(tmp_path / "p", BILLING)
    (directory / "copy.yaml").write_text(json.dumps(BILLING))
    code, _, err = run(capsys, server, "push", str(directory))
    assert code == 1
    assert err == (
        f"resq: {directory / 'copy.yaml'}: name: 'billing' is also the name in "
        f"{directory / 'billing.yaml'}\n"
    )


def test_a_version_the_server_refuses_names_the_prompt_and_version(
    capsys: pytest.CaptureFixture[str], server: Server, tmp_path: Path
) -> None:
    bad = {"name": "support", "versions": [SUPPORT_V1, {"model": "no-such-model"}]}
    code, out, err = run(capsys, server, "push", str(write(tmp_path / "p", bad)))
    assert (code, out) == (1, "")
    assert err.startswith("resq: support: version 2: ")
    assert err.endswith("(HTTP 400)\n") and err.count("\n") == 1
    # Version 1 stays; pushing again after the fix carries on from there.
    write(tmp_path / "p", SUPPORT)
    code, out, _ = run(capsys, server, "push", str(tmp_path / "p"))
    assert (code, out.splitlines()) == (0, ["+ support: add version 2"])


def test_json_summary(capsys: pytest.CaptureFixture[str], server: Server, tmp_path: Path) -> None:
    directory = write(tmp_path / "p", BILLING)
    code, out, _ = run(capsys, server, "push", str(directory), "--json")
    assert code == 0
    summary = json.loads(out)
    prompt_id = server.prompts()["billing"]["id"]
    assert summary == {
        "dry_run": False,
        "prompts": [
            {
                "name": "billing",
                "file": str(directory / "billing.yaml"),
                "id": prompt_id,
                "action": "create",
                "added_versions": [1],
                "changes": {},
            }
        ],
    }


def test_the_key_comes_from_resq_api_key_and_a_401_says_so(
    capsys: pytest.CaptureFixture[str],
    server: Server,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RESQ_API_KEY", KEY)
    monkeypatch.setenv("RESQ_ADMIN_KEY", "not-this-one")
    directory = write(tmp_path / "p", BILLING)
    assert cli.main(["prompts", "push", str(directory), "--url", server.url]) == 0
    assert "billing" in server.prompts()
    monkeypatch.delenv("RESQ_API_KEY")
    assert cli.main(["prompts", "pull", str(tmp_path / "out"), "--url", server.url]) == 1
    err = capsys.readouterr().err
    assert err.endswith("(HTTP 401); pass a tenant's API key with --key or set RESQ_API_KEY\n")


def test_prompts_belong_to_the_key_s_tenant(
    capsys: pytest.CaptureFixture[str], server: Server, tmp_path: Path
) -> None:
    pushed(capsys, server, tmp_path / "p", BILLING)
    code, out, _ = run(capsys, server, "pull", str(tmp_path / "b"), key="other-key")
    assert (code, out) == (0, "no prompts on the server: nothing written\n")


def test_a_missing_directory_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], server: Server, tmp_path: Path
) -> None:
    code, _, err = run(capsys, server, "push", str(tmp_path / "nope"))
    assert (code, err) == (2, f"resq: {tmp_path / 'nope'}: no such directory\n")


def test_pulling_where_no_directory_can_be_made_is_one_line(
    capsys: pytest.CaptureFixture[str], server: Server, tmp_path: Path
) -> None:
    (tmp_path / "taken").write_text("a file")
    code, _, err = run(capsys, server, "pull", str(tmp_path / "taken"))
    assert (code, err) == (1, f"resq: {tmp_path / 'taken'}: cannot write it: File exists\n")


def test_file_names_never_collide_even_without_case() -> None:
    def tag(name: str) -> str:
        return hashlib.sha256(name.encode()).hexdigest()[:8]

    names = ["a b", "a-b", "Support", "support", "kept"]
    paths = prompt_files.file_names(names, {"kept": Path("d/old.yml")}, Path("d"))
    assert paths == {
        "kept": Path("d/old.yml"),
        "Support": Path("d/Support.yaml"),
        "a-b": Path("d/a-b.yaml"),
        "support": Path(f"d/support-{tag('support')}.yaml"),
        "a b": Path(f"d/a-b-{tag('a b')}.yaml"),
    }
