"""A response's parameters as one typed object: what the Response echoes, and what the worker
runs the job with.

``shared.schema.response.echo_params`` builds a ``JobSpec`` from the create request (OpenAI's
defaults filled in) and stores its dump as the row's ``params``; the worker loads it back once
per run (``JobSpec.model_validate(row.params)``) and reads fields, never string keys. Fields are
declared in the order the Response lists them, so the dump is the echo as it always was.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.schema.tools import Tool

DEFAULT_TEXT = {"format": {"type": "text"}, "verbosity": "medium"}
ENCRYPTED_REASONING = "reasoning.encrypted_content"
# Kept with the job, not echoed on the Response (``shared.schema.response.response_object``).
UNECHOED = ("include", "validation", "charged_tokens")


class ConversationRef(BaseModel):
    id: str


class ReasoningSpec(BaseModel):
    effort: str | None = None
    summary: str | None = None


class JobSpec(BaseModel):
    # Unknown keys of an older or newer row survive a load and dump unchanged.
    model_config = ConfigDict(extra="allow", protected_namespaces=())

    model: str
    # A string, or the input items a prompt rendered (``api.prompt_expansion``).
    instructions: str | list[dict[str, Any]] | None = None
    background: bool = False
    store: bool = True
    conversation: ConversationRef | None = None
    max_output_tokens: int | None = None
    max_tool_calls: int | None = None
    parallel_tool_calls: bool = True
    previous_response_id: str | None = None
    prompt: dict[str, Any] | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    reasoning: ReasoningSpec = Field(default_factory=ReasoningSpec)
    safety_identifier: str | None = None
    service_tier: str = "auto"
    temperature: float = 1.0
    top_p: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    top_logprobs: int = 0
    text: dict[str, Any] = Field(default_factory=lambda: dict(DEFAULT_TEXT))
    tool_choice: str | dict[str, Any] = "auto"
    tools: list[Tool] = Field(default_factory=list)
    truncation: str = "disabled"
    user: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    include: list[str] = Field(default_factory=list)  # the create's ``include`` (not echoed)
    # A prompt version's structured-output settings (``validate_json``, ``json_retries``);
    # None: the route's. Not echoed.
    validation: dict[str, Any] | None = None
    # Tokens the tenant's tokens-per-minute bucket was charged at create (``shared.tenancy``);
    # the run settles them with the real usage. Not echoed.
    charged_tokens: int = 0

    @property
    def conversation_id(self) -> str | None:
        return self.conversation.id if self.conversation is not None else None

    def tool_dicts(self) -> list[dict[str, Any]]:
        """The tools as the Response echoes them (what context fitting counts)."""
        return [tool.model_dump() for tool in self.tools]
