"""Prompts API bodies (resq's own API in OpenAI's style) and the definition of one version.

A version is immutable once saved and holds: a model and settings (what a create request
takes: ``temperature``, ``max_output_tokens``, ``reasoning``, ``tools``, ``text`` …, checked
with the create request's own rules), ``instructions`` and ``messages`` as Jinja2 templates
(``shared.prompts.render``), a JSON Schema for the variables, and structured-output validation
settings. ``api.prompts`` checks a version before it is saved; ``api.prompt_expansion`` turns
a ``prompt`` on a create into the request the version describes.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.schema.requests import validate_metadata

# The create-request fields a version may set; the request's own value wins when it sets one.
SETTINGS = (
    "model",
    "temperature",
    "top_p",
    "max_output_tokens",
    "max_tool_calls",
    "reasoning",
    "service_tier",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "text",
    "truncation",
)
MAX_MESSAGES = 64
MAX_VERSION_RETRIES = 10


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class PromptMessage(_Body):
    role: Literal["system", "developer", "user", "assistant"]
    content: str  # a Jinja2 template


class PromptValidation(_Body):
    """Structured-output checks for responses of this version, as a route's keys of the same
    names (``shared.routing``); unset: the route's."""

    validate_json: bool | None = None  # validate every json_schema / json_object answer
    json_retries: int | None = Field(default=None, ge=0, le=MAX_VERSION_RETRIES)


class PromptVersionBody(_Body):
    """A version's definition. Settings are kept as sent and checked as a create request's."""

    model: str | None = None
    instructions: str | None = None
    messages: list[PromptMessage] = Field(default_factory=list, max_length=MAX_MESSAGES)
    variables: dict[str, Any] | None = None  # a JSON Schema for the variables
    validation: PromptValidation | None = None
    temperature: Any = None
    top_p: Any = None
    max_output_tokens: Any = None
    max_tool_calls: Any = None
    reasoning: Any = None
    service_tier: Any = None
    tools: Any = None
    tool_choice: Any = None
    parallel_tool_calls: Any = None
    text: Any = None
    truncation: Any = None

    def settings(self) -> dict[str, Any]:
        """The create-request fields this version sets."""
        return {k: getattr(self, k) for k in SETTINGS if getattr(self, k) is not None}

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


class CreatePrompt(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    name: str = Field(min_length=1, max_length=256)
    description: str | None = Field(default=None, max_length=4096)
    metadata: dict[str, str] | None = None
    version: PromptVersionBody

    _check_metadata = field_validator("metadata", mode="before")(validate_metadata)


class UpdatePrompt(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    name: str | None = Field(default=None, min_length=1, max_length=256)
    description: str | None = Field(default=None, max_length=4096)
    metadata: dict[str, str] | None = None
    default_version: str | None = None

    _check_metadata = field_validator("metadata", mode="before")(validate_metadata)


class PromptReference(BaseModel):
    """``prompt`` on a create: which prompt, which version (default: the prompt's default),
    and the template variables."""

    model_config = ConfigDict(strict=True, extra="forbid")

    id: str = Field(min_length=1, max_length=64)
    version: str | None = None
    variables: dict[str, Any] | None = None
