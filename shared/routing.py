"""Model routing: which provider serves a model name (``RESQ_MODELS_FILE``, TOML).

    [[route]]
    match = "gpt-4o*"              # an exact model name or a glob
    provider = "openai"            # "builtin", "openai" (any Chat Completions server),
                                   # "openai_responses" (a /v1/responses server), "anthropic"
    base_url = "https://api.openai.com/v1"
    api_key_env = "OPENAI_API_KEY" # the key is read from this variable by the worker
    upstream_model = "gpt-4o"      # optional: the name sent upstream (default: as requested)
    context_window = 128000
    timeout_seconds = 60
    list = ["gpt-4o", "gpt-4o-mini"]   # optional: names models.list() shows for a glob
    tokenize_url = "http://vllm:8000/tokenize"  # optional: a vLLM-style tokenizer endpoint
    max_output_tokens = 4096       # sent when a request gives none (Anthropic requires one)
    auth_header = "api-key"        # optional: send the key in this header (Azure), not Bearer
    validate_json = true           # check every json_schema answer, strict or not
    json_retries = 2               # asks again after an answer fails validation
    accepts = { temperature = false, top_p = false, tools = false, images = false,
                files = true, reasoning = true }   # what the model takes (defaults: below)

Routes are tried in file order; the first match wins. ``accepts`` defaults to everything but
``files`` for Chat Completions routes (OpenAI's own Chat Completions takes PDFs; vLLM, Ollama
and llama.cpp do not: say ``files = true`` for OpenAI), and to everything for the others. A
request that asks a route for what it does not accept is a 400 at create.
"""

from __future__ import annotations

import fnmatch
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.errors import ModelNotFound
from shared.settings import SettingsError

BUILTIN = "builtin"
CHAT_COMPLETIONS = "openai"
OPENAI_RESPONSES = "openai_responses"
ANTHROPIC = "anthropic"
PROVIDER_ALIASES = {
    "builtin": BUILTIN,
    "openai": CHAT_COMPLETIONS,
    "chat_completions": CHAT_COMPLETIONS,
    "vllm": CHAT_COMPLETIONS,
    "ollama": CHAT_COMPLETIONS,
    "llama.cpp": CHAT_COMPLETIONS,
    "openai_responses": OPENAI_RESPONSES,
    "responses": OPENAI_RESPONSES,
    "azure_openai": OPENAI_RESPONSES,
    "anthropic": ANTHROPIC,
}
DEFAULT_BASE_URLS = {ANTHROPIC: "https://api.anthropic.com"}
DEFAULT_CONTEXT_WINDOW = 128_000
ANTHROPIC_MAX_TOKENS = 4096  # Anthropic requires max_tokens; a route may say another
DEFAULT_JSON_RETRIES = 2
BUILTIN_MODEL = "resq-builtin"
CAPABILITIES = ("temperature", "top_p", "tools", "images", "files", "reasoning")


@dataclass(frozen=True)
class Accepts:
    """What a route's model takes (``accepts`` in the models file)."""

    temperature: bool = True
    top_p: bool = True
    tools: bool = True
    images: bool = True
    files: bool = True
    reasoning: bool = True


@dataclass(frozen=True)
class Route:
    match: str
    provider: str
    base_url: str | None = None
    api_key_env: str | None = None
    upstream_model: str | None = None
    context_window: int = DEFAULT_CONTEXT_WINDOW
    timeout_seconds: float | None = None
    listed: tuple[str, ...] = field(default_factory=tuple)
    tokenize_url: str | None = None
    max_output_tokens: int | None = None
    auth_header: str | None = None
    validate_json: bool = False
    json_retries: int = DEFAULT_JSON_RETRIES
    accepts: Accepts = field(default_factory=Accepts)

    @property
    def is_glob(self) -> bool:
        return any(ch in self.match for ch in "*?[")

    def matches(self, model: str) -> bool:
        return fnmatch.fnmatchcase(model, self.match) if self.is_glob else model == self.match

    def listed_models(self) -> list[str]:
        if self.listed:
            return list(self.listed)
        return [] if self.is_glob else [self.match]

    def api_key(self) -> str | None:
        """The upstream's API key, or None: the value of the environment variable
        ``api_key_env`` names (the models file names a variable, so it never holds a secret)."""
        return os.environ.get(self.api_key_env) if self.api_key_env else None


DEFAULT_ROUTES = (Route(match="resq-*", provider=BUILTIN, listed=(BUILTIN_MODEL,)),)


def _route(raw: dict[str, Any], where: str) -> Route:
    match = raw.get("match")
    if not isinstance(match, str) or not match:
        raise SettingsError(f"{where}: 'match' must be a non-empty string")
    provider = PROVIDER_ALIASES.get(str(raw.get("provider", "")))
    if provider is None:
        raise SettingsError(
            f"{where}: 'provider' must be one of {sorted(PROVIDER_ALIASES)}, "
            f"got {raw.get('provider')!r}"
        )
    base_url = raw.get("base_url") or DEFAULT_BASE_URLS.get(provider)
    if provider != BUILTIN and not base_url:
        raise SettingsError(f"{where}: provider {raw['provider']!r} needs a 'base_url'")
    max_output_tokens = raw.get("max_output_tokens")
    if max_output_tokens is None and provider == ANTHROPIC:
        max_output_tokens = ANTHROPIC_MAX_TOKENS
    return Route(
        match=match,
        provider=provider,
        base_url=base_url,
        api_key_env=raw.get("api_key_env"),
        upstream_model=raw.get("upstream_model"),
        context_window=int(raw.get("context_window", DEFAULT_CONTEXT_WINDOW)),
        timeout_seconds=raw.get("timeout_seconds"),
        listed=tuple(raw.get("list", ())),
        tokenize_url=raw.get("tokenize_url"),
        max_output_tokens=_positive(max_output_tokens, f"{where}: 'max_output_tokens'"),
        auth_header=raw.get("auth_header"),
        validate_json=_flag(raw.get("validate_json", False), f"{where}: 'validate_json'"),
        json_retries=_count(
            raw.get("json_retries", DEFAULT_JSON_RETRIES), f"{where}: 'json_retries'"
        ),
        accepts=_accepts(raw.get("accepts"), provider, where),
    )


def _flag(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise SettingsError(f"{what} must be true or false, got {value!r}")
    return value


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SettingsError(f"{what} must be a whole number 0 or more, got {value!r}")
    return value


def _positive(value: Any, what: str) -> int | None:
    if value is not None and _count(value, what) == 0:
        raise SettingsError(f"{what} must be 1 or more, got 0")
    return value


def _accepts(raw: Any, provider: str, where: str) -> Accepts:
    given = {} if raw is None else raw
    if not isinstance(given, dict):
        raise SettingsError(f"{where}: 'accepts' must be a table of {', '.join(CAPABILITIES)}")
    unknown = sorted(set(given) - set(CAPABILITIES))
    if unknown:
        raise SettingsError(
            f"{where}: 'accepts' has unknown keys {unknown}; known: {', '.join(CAPABILITIES)}"
        )
    defaults = {"files": provider != CHAT_COMPLETIONS}
    values = {**defaults, **{k: _flag(v, f"{where}: 'accepts.{k}'") for k, v in given.items()}}
    return Accepts(**values)


class Router:
    def __init__(self, routes: tuple[Route, ...] | list[Route]) -> None:
        self.routes = tuple(routes)

    @classmethod
    def from_file(cls, path: Path | None) -> Router:
        if path is None:
            return cls(DEFAULT_ROUTES)
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SettingsError(f"cannot read the models file {path}: {exc}") from exc
        raw_routes = data.get("route", [])
        if not isinstance(raw_routes, list) or not raw_routes:
            raise SettingsError(f"{path}: expected at least one [[route]] table")
        return cls([_route(r, f"{path} route {i + 1}") for i, r in enumerate(raw_routes)])

    def resolve(self, model: str) -> Route:
        for route in self.routes:
            if route.matches(model):
                return route
        raise ModelNotFound(
            f"The model '{model}' does not exist or you do not have access to it.",
            param="model",
        )

    def model_names(self) -> list[str]:
        names: list[str] = []
        for route in self.routes:
            names.extend(n for n in route.listed_models() if n not in names)
        return names
