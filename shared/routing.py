"""Model routing: which provider serves a model name (``RESQ_MODELS_FILE``, TOML).

    [[route]]
    match = "gpt-4o*"              # an exact model name or a glob
    provider = "openai"            # "builtin", or any OpenAI-compatible Chat Completions server
    base_url = "https://api.openai.com/v1"
    api_key_env = "OPENAI_API_KEY" # the key is read from this variable by the worker
    upstream_model = "gpt-4o"      # optional: the name sent upstream (default: as requested)
    context_window = 128000
    timeout_seconds = 60
    list = ["gpt-4o", "gpt-4o-mini"]   # optional: names models.list() shows for a glob
    tokenize_url = "http://vllm:8000/tokenize"  # optional: a vLLM-style tokenizer endpoint

Routes are tried in file order; the first match wins.
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
PROVIDER_ALIASES = {
    "builtin": BUILTIN,
    "openai": CHAT_COMPLETIONS,
    "chat_completions": CHAT_COMPLETIONS,
    "vllm": CHAT_COMPLETIONS,
    "ollama": CHAT_COMPLETIONS,
    "llama.cpp": CHAT_COMPLETIONS,
}
DEFAULT_CONTEXT_WINDOW = 128_000
BUILTIN_MODEL = "resq-builtin"


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
    if provider == CHAT_COMPLETIONS and not raw.get("base_url"):
        raise SettingsError(f"{where}: provider {raw['provider']!r} needs a 'base_url'")
    return Route(
        match=match,
        provider=provider,
        base_url=raw.get("base_url"),
        api_key_env=raw.get("api_key_env"),
        upstream_model=raw.get("upstream_model"),
        context_window=int(raw.get("context_window", DEFAULT_CONTEXT_WINDOW)),
        timeout_seconds=raw.get("timeout_seconds"),
        listed=tuple(raw.get("list", ())),
        tokenize_url=raw.get("tokenize_url"),
    )


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
