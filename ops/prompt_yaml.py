"""The prompt file format of ``resq prompts pull|push`` (``ops.prompt_files``): one YAML file
per prompt, read and checked (every version with the server's own model,
``shared.schema.prompts.PromptVersionBody``), written with a stable key order and literal
blocks for multi-line strings, and compared with the server's versions as the server stores
them. The format itself is described in ``ops.prompt_files``.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ops.admin_client import CliError, Json
from shared.errors import ResqError
from shared.schema.prompts import SETTINGS, PromptVersionBody
from shared.schema.validation import parse_body

EXIT_BAD_FILES = 1  # a file is malformed, or at odds with the server
EXIT_USAGE = 2  # as argparse's: the command line names no directory
PATTERNS = ("*.yaml", "*.yml")
FILE_KEYS = ("name", "description", "metadata", "default_version", "versions")
VERSION_FIELDS = ("id", "object", "version", "created_at")  # the server's, not the body's
# Key order in written files: a version's keys as a reader expects them, then any other in
# alphabetical order; inside nested objects (schemas, tools, messages) these come first.
VERSION_ORDER = tuple(
    dict.fromkeys(("model", "instructions", "messages", "variables", "validation", *SETTINGS))
)
NESTED_ORDER = ("type", "name", "role", "content")
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
# What the server stores for a version that does not say: not written into files.
VERSION_DEFAULTS: Json = {"messages": []}
YAML_WIDTH = 10_000  # never fold a long line: a folded string reads badly in a diff


def file_error(path: Path, key: str, problem: str) -> CliError:
    where = f"{path}: {key}: " if key else f"{path}: "
    return CliError(where + problem, EXIT_BAD_FILES)


# ---- the file format -------------------------------------------------------------------------


@dataclass(frozen=True)
class PromptFile:
    """A prompt file as read and checked; ``versions`` are the bodies as the server stores them."""

    path: Path
    name: str
    description: str | None
    metadata: dict[str, str]
    default_version: int  # the latest when the file does not say
    versions: list[Json]


def _json_problem(value: Any, at: str) -> tuple[str, str] | None:
    """Where and why ``value`` is not JSON (YAML also reads dates, odd keys and ``.nan``)."""
    if value is None or isinstance(value, str | bool | int):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else (at, "not a finite number")
    if isinstance(value, list):
        found = (_json_problem(item, f"{at}[{i}]") for i, item in enumerate(value))
        return next((p for p in found if p), None)
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return at, f"the key {key!r} is not a string (quote it)"
            problem = _json_problem(item, f"{at}.{key}")
            if problem:
                return problem
        return None
    return at, f"a {type(value).__name__} is not a JSON value (quote it)"


def _check_version(path: Path, index: int, raw: Any) -> Json:
    at = f"versions[{index}]"
    if not isinstance(raw, dict):
        raise file_error(path, at, "expected a mapping (a version's model, instructions, …)")
    problem = _json_problem(raw, at)
    if problem:
        raise file_error(path, *problem)
    try:
        return parse_body(PromptVersionBody, raw).dump()
    except ResqError as exc:
        raise file_error(path, f"{at}.{exc.param}" if exc.param else at, str(exc)) from None


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise file_error(path, "", f"not valid YAML: {exc.problem or exc.context}{line}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise file_error(path, "", f"not valid YAML: {exc}".splitlines()[0]) from None
    except OSError as exc:
        raise file_error(path, "", f"cannot read it: {exc.strerror}") from None


def load_file(path: Path) -> PromptFile:
    """Read and check one prompt file; a :class:`CliError` (exit 1) naming the file and the
    key on anything wrong."""
    data = _read_yaml(path)
    if not isinstance(data, dict):
        raise file_error(path, "", "expected a mapping with 'name' and 'versions'")
    unknown = sorted(str(k) for k in data if k not in FILE_KEYS)
    if unknown:
        raise file_error(path, unknown[0], f"unknown key (expected one of {', '.join(FILE_KEYS)})")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise file_error(path, "name", "missing, or not a non-empty string")
    description = data.get("description")
    if description is not None and not isinstance(description, str):
        raise file_error(path, "description", "expected a string")
    metadata = {} if data.get("metadata") is None else data["metadata"]
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise file_error(path, "metadata", "expected a mapping of strings to strings")
    versions = data.get("versions")
    if not isinstance(versions, list) or not versions:
        raise file_error(path, "versions", "expected a non-empty list of versions")
    default = data.get("default_version", len(versions))
    if type(default) is not int or not 1 <= default <= len(versions):
        raise file_error(path, "default_version", f"expected a number from 1 to {len(versions)}")
    bodies = [_check_version(path, i, raw) for i, raw in enumerate(versions)]
    return PromptFile(path, name, description, metadata, default, bodies)


def load_dir(directory: Path) -> list[PromptFile]:
    """Every prompt file in ``directory``, all checked before any is used."""
    if not directory.is_dir():
        raise CliError(f"{directory}: no such directory", EXIT_USAGE)
    files = [load_file(path) for path in _prompt_paths(directory)]
    seen: dict[str, Path] = {}
    for prompt in files:
        if prompt.name in seen:
            raise file_error(
                prompt.path, "name", f"'{prompt.name}' is also the name in {seen[prompt.name]}"
            )
        seen[prompt.name] = prompt.path
    return files


def _prompt_paths(directory: Path) -> list[Path]:
    return sorted({p for pattern in PATTERNS for p in directory.glob(pattern) if p.is_file()})


def _ordered(value: Any, first: tuple[str, ...] = NESTED_ORDER) -> Any:
    if isinstance(value, list):
        return [_ordered(item) for item in value]
    if not isinstance(value, dict):
        return value
    rank = {key: i for i, key in enumerate(first)}
    keys = sorted(value, key=lambda k: (rank.get(k, len(first)), k))
    return {k: _ordered(value[k]) for k in keys}


class _Dumper(yaml.SafeDumper):
    """``safe_dump`` with multi-line strings as literal blocks and list items indented under
    their key, as people write YAML."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _represent_str(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(str, _represent_str)


def to_yaml(data: Any) -> str:
    return yaml.dump(
        data,
        Dumper=_Dumper,
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
        width=YAML_WIDTH,
    )


def version_yaml(body: Json) -> str:
    return to_yaml(_ordered(_without_defaults(body), VERSION_ORDER))


def file_text(prompt: Json, versions: list[Json]) -> str:
    """A prompt file's text for a server's prompt and its versions: keys in a fixed order and
    optional keys written only when they say something, so a second pull is byte-identical."""
    doc: Json = {"name": prompt["name"]}
    if prompt.get("description") is not None:
        doc["description"] = prompt["description"]
    if prompt.get("metadata"):
        doc["metadata"] = _ordered(prompt["metadata"], ())
    if int(prompt["default_version"]) != len(versions):
        doc["default_version"] = int(prompt["default_version"])
    doc["versions"] = [_ordered(_without_defaults(stored_body(v)), VERSION_ORDER) for v in versions]
    return to_yaml(doc)


def _without_defaults(body: Json) -> Json:
    return {k: v for k, v in body.items() if VERSION_DEFAULTS.get(k, ...) != v}


def stored_body(version: Json) -> Json:
    """A version as the server returned it, without the server's fields and nulls."""
    return {k: v for k, v in version.items() if k not in VERSION_FIELDS and v is not None}


def _canonical(value: Any) -> Any:
    """A JSON value for comparison: ``1`` and ``1.0`` are one number, ``true`` is not ``1``."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return (type(value).__name__, value)
    if isinstance(value, int | float):
        return ("number", float(value))
    if isinstance(value, list):
        return [_canonical(item) for item in value]
    return {k: _canonical(v) for k, v in value.items()}


def same_body(a: Json, b: Json) -> bool:
    return bool(_canonical(a) == _canonical(b))


def file_names(names: Iterable[str], taken: dict[str, Path], directory: Path) -> dict[str, Path]:
    """A path for each prompt name: the file already holding it (``taken``), else
    ``<name>.yaml``, else a slug of the name, with a short hash of it when that file is
    another prompt's (compared without case, for case-insensitive file systems)."""
    paths = {name: taken[name] for name in names if name in taken}
    used = {p.name.lower() for p in paths.values()}
    rest = sorted(set(names) - set(paths), key=lambda n: (not SAFE_NAME.fullmatch(n), n))
    for name in rest:
        stem = name if SAFE_NAME.fullmatch(name) else _slug(name)
        if f"{stem}.yaml".lower() in used:
            stem = f"{stem}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
        used.add(f"{stem}.yaml".lower())
        paths[name] = directory / f"{stem}.yaml"
    return paths


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-._")[:80] or "prompt"


def names_in(directory: Path) -> dict[str, Path]:
    """The prompt name each readable file in ``directory`` holds (a pull rewrites that file)."""
    found: dict[str, Path] = {}
    for path in _prompt_paths(directory):
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue
        if isinstance(data, dict) and isinstance(data.get("name"), str):
            found.setdefault(data["name"], path)
    return found
