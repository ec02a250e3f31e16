"""Prompts kept in git: ``resq prompts pull DIR`` writes a tenant's prompts as YAML files,
``resq prompts push DIR [--dry-run]`` brings the server in line with them.

One file per prompt (``<name>.yaml``; a name that is not a safe file name is slugged, and the
``name`` key inside is what counts), holding the prompt and every version, oldest first::

    name: support
    description: Answers order questions   # optional (absent: none)
    metadata: {team: care}                 # optional (absent: none)
    default_version: 2                     # optional (absent: the latest)
    versions:                              # the first is version 1, the second version 2, …
      - model: resq-builtin
        instructions: |
          You help {{ customer }}.

A version is what ``POST /v1/prompts/{id}/versions`` takes, checked here with the server's own
model (``shared.schema.prompts.PromptVersionBody``) and compared as the server stores it.

Push reads and checks every file, reads the server's prompts and plans every change before it
changes anything: a bad file, two files with one name, or a file at odds with the server
(a saved version edited, versions the file lacks) ends the command with exit 1 and nothing
pushed. Only the server's own checks of a version (its model routed, its templates compiled)
can still refuse one mid-push; what was done before stays done, and pushing again after the
fix carries on from there, since a push only ever does what is still missing. Push never
deletes a prompt; pull never deletes a file.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ops.admin_client import AdminApi, CliError, Json
from ops.prompt_yaml import (
    EXIT_BAD_FILES,
    PromptFile,
    file_error,
    file_names,
    file_text,
    load_dir,
    names_in,
    same_body,
    stored_body,
    version_yaml,
)

PROMPTS_PATH = "/v1/prompts"
PAGE_SIZE = "100"  # the API's largest page

Say = Callable[[str], None]


# ---- the server ------------------------------------------------------------------------------


def _every(api: AdminApi, path: str, cursor: Callable[[Json], str]) -> list[Json]:
    """Every item of a list endpoint, oldest first, page after page."""
    items: list[Json] = []
    params = {"limit": PAGE_SIZE, "order": "asc"}
    while True:
        page = api.get(path, params)
        data = page.get("data") or []
        items.extend(data)
        if not page.get("has_more") or not data:
            return items
        params = {**params, "after": cursor(data[-1])}


def server_prompts(api: AdminApi) -> list[Json]:
    return _every(api, PROMPTS_PATH, lambda p: str(p["id"]))


def server_versions(api: AdminApi, prompt_id: str) -> list[Json]:
    return _every(api, f"{PROMPTS_PATH}/{prompt_id}/versions", lambda v: str(v["version"]))


def pull(api: AdminApi, directory: Path, say: Say) -> list[Json]:
    """Write every prompt of the tenant into ``directory``; one summary per file written."""
    prompts = server_prompts(api)
    _write(directory, None)
    if not prompts:
        say("no prompts on the server: nothing written")
    paths = file_names([p["name"] for p in prompts], names_in(directory), directory)
    written = []
    for prompt in sorted(prompts, key=lambda p: str(p["name"])):
        versions = server_versions(api, prompt["id"])
        path = paths[prompt["name"]]
        _write(path, file_text(prompt, versions))
        say(f"wrote {path} ({prompt['name']}, {_count(len(versions), 'version')})")
        written.append({"name": prompt["name"], "file": str(path), "versions": len(versions)})
    return written


def _write(path: Path, text: str | None) -> None:
    """Write a file, or make a directory when ``text`` is None."""
    try:
        if text is None:
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise CliError(f"{path}: cannot write it: {exc.strerror or exc}", EXIT_BAD_FILES) from None


# ---- push: a plan, then its application ------------------------------------------------------


@dataclass
class Plan:
    """What a push does to one prompt: create it (``prompt_id`` None) or not, save the file's
    versions from number ``first`` on, and update ``changes`` (field: (old value, new value))."""

    file: PromptFile
    prompt_id: str | None
    first: int
    changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    @property
    def added(self) -> list[tuple[int, Json]]:
        return list(enumerate(self.file.versions, 1))[self.first - 1 :]

    @property
    def idle(self) -> bool:
        return self.prompt_id is not None and not self.added and not self.changes


def _check_versions(file: PromptFile, versions: list[Json]) -> None:
    """The server's versions must be the file's first ones, unchanged."""
    if len(versions) > len(file.versions):
        raise file_error(
            file.path,
            "versions",
            f"'{file.name}' has {len(versions)} versions on the server and "
            f"{len(file.versions)} here; pull first",
        )
    for number, (ours, theirs) in enumerate(zip(file.versions, versions, strict=False), 1):
        if not same_body(ours, stored_body(theirs)):
            raise file_error(
                file.path,
                f"versions[{number - 1}]",
                f"version {number} of '{file.name}' differs from the server's; versions are "
                "immutable: add a new version instead",
            )


def plan(file: PromptFile, prompt: Json | None, versions: list[Json]) -> Plan:
    """The push of ``file`` against the server's ``prompt`` and its ``versions`` (None and []
    when the server has no such prompt); a :class:`CliError` when they cannot be reconciled."""
    _check_versions(file, versions)
    if prompt is None:  # created with the file's description and metadata, version 1 default
        current: Json = {
            "description": file.description,
            "metadata": file.metadata,
            "default_version": 1,
        }
        result = Plan(file, None, 1)
    else:
        current = {
            "description": prompt.get("description"),
            "metadata": prompt.get("metadata") or {},
            "default_version": int(prompt["default_version"]),
        }
        result = Plan(file, str(prompt["id"]), len(versions) + 1)
    wanted = {
        "description": file.description,
        "metadata": file.metadata,
        "default_version": file.default_version,
    }
    result.changes = {k: (current[k], v) for k, v in wanted.items() if current[k] != v}
    return result


def plan_push(api: AdminApi, files: list[PromptFile]) -> list[Plan]:
    """Plans for every file, from the server's state; nothing is changed."""
    by_name = {p["name"]: p for p in server_prompts(api)}
    plans = []
    for file in files:
        prompt = by_name.get(file.name)
        versions = server_versions(api, prompt["id"]) if prompt else []
        plans.append(plan(file, prompt, versions))
    return plans


def _show(value: Any) -> str:
    return str(value) if isinstance(value, int) else json.dumps(value, ensure_ascii=False)


def _count(n: int, thing: str) -> str:
    return f"{n} {thing}{'' if n == 1 else 's'}"


def _create_line(p: Plan) -> str:
    return f"+ create {p.file.name} ({_count(len(p.file.versions), 'version')})"


def _change_lines(p: Plan) -> list[str]:
    """The updates of an existing prompt (a created one's are part of its creation)."""
    if p.prompt_id is None:
        return []
    return [f"~ {p.file.name}: {k} {_show(a)} -> {_show(b)}" for k, (a, b) in p.changes.items()]


def _diff(p: Plan, number: int, body: Json) -> list[str]:
    """Version ``number``'s YAML as a unified diff against the version before it."""
    before = version_yaml(p.file.versions[number - 2]) if number > 1 else ""
    old = f"{p.file.name} version {number - 1}" if number > 1 else "/dev/null"
    new = f"{p.file.name} version {number}"
    lines = version_yaml(body).splitlines()
    return list(difflib.unified_diff(before.splitlines(), lines, old, new, lineterm=""))


def describe(p: Plan) -> list[str]:
    """What a dry run prints for a plan: its actions, each version to add as a diff."""
    if p.idle:
        return [f"{p.file.name}: up to date"]
    lines = [_create_line(p)] if p.prompt_id is None else []
    for number, body in p.added:
        if p.prompt_id is not None:
            lines.append(f"+ {p.file.name}: add version {number}")
        lines += _diff(p, number, body)
    return lines + _change_lines(p)


def apply(api: AdminApi, p: Plan, say: Say) -> str | None:
    """Carry out one plan, saying each action once it is done; the prompt's id."""
    name, prompt_id = p.file.name, p.prompt_id
    for number, body in p.added:
        step = "create" if prompt_id is None else f"version {number}"
        try:
            if prompt_id is None:
                prompt_id = str(api.post(PROMPTS_PATH, _create_body(p.file, body))["id"])
            else:
                api.post(f"{PROMPTS_PATH}/{prompt_id}/versions", body)
        except CliError as exc:
            raise CliError(f"{name}: {step}: {exc.message}", exc.exit_code) from None
        if p.prompt_id is not None:
            say(f"+ {name}: add version {number}")
    if p.changes:
        update = {k: new for k, (_, new) in p.changes.items()}
        if "default_version" in update:
            update["default_version"] = str(update["default_version"])
        try:
            api.post(f"{PROMPTS_PATH}/{prompt_id}", update)
        except CliError as exc:
            raise CliError(f"{name}: update: {exc.message}", exc.exit_code) from None
    for line in [_create_line(p)] if p.prompt_id is None else _change_lines(p):
        say(line)
    if p.idle:
        say(f"{name}: up to date")
    return prompt_id


def _create_body(file: PromptFile, first: Json) -> Json:
    body: Json = {"name": file.name, "version": first}
    if file.description is not None:
        body["description"] = file.description
    if file.metadata:
        body["metadata"] = file.metadata
    return body


def push(api: AdminApi, directory: Path, say: Say, *, dry_run: bool) -> list[Json]:
    """Check every file and plan every prompt before changing anything; then, unless
    ``dry_run``, apply the plans in file order. A summary per prompt."""
    files = load_dir(directory)
    if not files:
        say(f"no prompt files (*.yaml, *.yml) in {directory}")
    summaries = []
    for p in plan_push(api, files):
        if dry_run:
            for line in describe(p):
                say(line)
        summaries.append(summary(p, p.prompt_id if dry_run else apply(api, p, say)))
    if dry_run and files:
        say("(dry run: nothing was changed)")
    return summaries


def summary(p: Plan, prompt_id: str | None) -> Json:
    action = "none" if p.idle else "create" if p.prompt_id is None else "update"
    return {
        "name": p.file.name,
        "file": str(p.file.path),
        "id": prompt_id,
        "action": action,
        "added_versions": [number for number, _ in p.added],
        "changes": {k: {"from": old, "to": new} for k, (old, new) in p.changes.items()},
    }
