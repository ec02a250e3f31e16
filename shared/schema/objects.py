"""What resq answers with, as pydantic models: the shapes ``api/openapi.py`` publishes.

The objects themselves are built as JSON-ready dicts where their data is at hand
(``shared.schema.response.response_object``; ``conversation_object`` in
``api.conversations`` and ``endpoint_object``, ``delivery_object`` in
``api.webhook_endpoints``, from the store's rows; the admin views); these models describe
them for the OpenAPI document and are not used to build them. The fuzz test
(tests/api/test_fuzz.py) checks every answer against the document, so a
builder and its model cannot drift apart unnoticed.

Objects that are free-form on the wire (items, tools, metadata, timings) stay ``dict``;
resq's own additions carry ``x-resq: true`` in their schema.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.schema.response import Status

RESQ: dict[str, Any] = {"x-resq": True}  # marks resq's additions to OpenAI's surface


class _Open(BaseModel):
    """An object that may gain fields (clients must ignore unknown keys)."""

    model_config = ConfigDict(extra="allow")


class _ResqOpen(_Open):
    model_config = ConfigDict(extra="allow", json_schema_extra=RESQ)


# ---- errors ---------------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="forbid")
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorBody(BaseModel):
    """Every 4xx and 5xx answer: OpenAI's error envelope and nothing else."""

    model_config = ConfigDict(extra="forbid")
    error: ErrorDetail


# ---- responses ------------------------------------------------------------------------------


class Item(_Open):
    """An input or output item in ResponseItem form (spec digest §3): always typed, with an id."""

    id: str
    type: str


class Usage(_Open):
    input_tokens: int
    input_tokens_details: dict[str, int]
    output_tokens: int
    output_tokens_details: dict[str, int]
    total_tokens: int


class ResponseError(_Open):
    code: str | None
    message: str


class TruncationDetails(BaseModel):
    """What ``truncation: "auto"`` dropped from the context (resq's own field)."""

    model_config = ConfigDict(extra="allow", json_schema_extra=RESQ)
    dropped_items: int
    dropped_input_tokens: int


class ResponseObject(_Open):
    """The Response (spec digest §2): lifecycle fields, then the echoed request parameters."""

    id: str
    object: Literal["response"]
    created_at: int
    status: Status
    completed_at: int | None
    error: ResponseError | None
    incomplete_details: dict[str, Any] | None
    output: list[Item]
    usage: Usage | None
    model: str
    instructions: str | list[Any] | None
    background: bool
    store: bool
    conversation: dict[str, str] | None
    max_output_tokens: int | None
    max_tool_calls: int | None
    parallel_tool_calls: bool
    previous_response_id: str | None
    prompt: dict[str, Any] | None
    prompt_cache_key: str | None
    prompt_cache_retention: str | None
    reasoning: dict[str, Any] | None
    safety_identifier: str | None
    service_tier: str | None
    temperature: float | None
    top_p: float | None
    presence_penalty: float | None
    frequency_penalty: float | None
    top_logprobs: int | None
    text: dict[str, Any]
    tool_choice: str | dict[str, Any]
    tools: list[dict[str, Any]]
    truncation: Literal["auto", "disabled"] | None
    user: str | None
    metadata: dict[str, str] | None
    truncation_details: TruncationDetails | None = Field(
        default=None,
        description="Only when truncation 'auto' dropped items from the context.",
        json_schema_extra=RESQ,
    )


class ResponseDeleted(BaseModel):
    id: str
    object: Literal["response"]
    deleted: Literal[True]


class InputTokens(BaseModel):
    object: Literal["response.input_tokens"]
    input_tokens: int


class Compaction(BaseModel):
    id: str
    object: Literal["response.compaction"]
    created_at: int
    output: list[Item]
    usage: Usage


class _Page(BaseModel):
    """A cursor page, as every OpenAI list endpoint answers."""

    object: Literal["list"]
    first_id: str | None
    last_id: str | None
    has_more: bool


class ItemList(_Page):
    data: list[Item]


# ---- models and conversations ---------------------------------------------------------------


class Model(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[Model]


class Conversation(BaseModel):
    id: str
    object: Literal["conversation"]
    created_at: int
    metadata: dict[str, str]


class ConversationDeleted(BaseModel):
    id: str
    object: Literal["conversation.deleted"]
    deleted: Literal[True]


# ---- prompts (resq's own API) ----------------------------------------------------------------


class Prompt(BaseModel):
    model_config = ConfigDict(json_schema_extra=RESQ)

    id: str
    object: Literal["prompt"]
    name: str
    description: str | None
    default_version: str
    latest_version: str
    created_at: int
    updated_at: int
    metadata: dict[str, str]


class PromptList(_Page):
    model_config = ConfigDict(json_schema_extra=RESQ)

    data: list[Prompt]


class PromptVersion(_ResqOpen):
    """A version: its number and its definition's keys (``PromptVersionBody``)."""

    id: str
    object: Literal["prompt.version"]
    version: str
    created_at: int


class PromptVersionList(_Page):
    model_config = ConfigDict(json_schema_extra=RESQ)

    data: list[PromptVersion]


class PromptDeleted(BaseModel):
    model_config = ConfigDict(json_schema_extra=RESQ)

    id: str
    object: Literal["prompt.deleted"]
    deleted: Literal[True]


# ---- webhooks -------------------------------------------------------------------------------


class WebhookEndpoint(BaseModel):
    id: str
    object: Literal["webhook_endpoint"]
    name: str
    url: str
    event_types: list[str]
    created_at: int
    updated_at: int
    signing_secret_hint: str


class WebhookEndpointWithSecret(WebhookEndpoint):
    """Shown right after creation and rotation only."""

    signing_secret: str


class WebhookEndpointList(_Page):
    data: list[WebhookEndpoint]


class WebhookEndpointDeleted(BaseModel):
    id: str
    object: Literal["webhook_endpoint.deleted"]
    deleted: Literal[True]


class WebhookTest(BaseModel):
    object: Literal["webhook_endpoint.test"]
    webhook_endpoint_id: str
    event_type: str
    status_code: int
    success: bool


class EventTypeList(BaseModel):
    object: Literal["list"]
    data: list[str]


class DeliveryAttempt(BaseModel):
    number: int
    attempted_at: int
    status_code: int | None
    latency_ms: int
    success: bool
    error: str | None


class Delivery(BaseModel):
    """One event sent to one endpoint, with every attempt (resq's delivery log)."""

    model_config = ConfigDict(json_schema_extra=RESQ)
    id: str
    object: Literal["webhook_endpoint.delivery"]
    webhook_endpoint_id: str
    event_id: str
    event_type: str
    response_id: str
    status: Literal["pending", "delivered", "failed"]
    created_at: int
    delivered_at: int | None
    next_attempt_at: int | None
    attempts: list[DeliveryAttempt]


class DeliveryList(_Page):
    model_config = ConfigDict(json_schema_extra=RESQ)
    data: list[Delivery]


# ---- health ---------------------------------------------------------------------------------


class Health(_ResqOpen):
    status: Literal["ok"]


class Check(_Open):
    ok: bool
    error: str | None = None


class Ready(_ResqOpen):
    status: Literal["ready"]
    checks: dict[str, Check]


class NotReady(BaseModel):
    """``/readyz`` when something is down: the error envelope plus what was checked."""

    model_config = ConfigDict(json_schema_extra=RESQ)
    error: ErrorDetail
    status: Literal["unavailable"]
    checks: dict[str, Check]


# ---- the admin API --------------------------------------------------------------------------


class AdminResponse(_ResqOpen):
    id: str
    object: Literal["admin.response"]
    tenant: str
    model: str
    status: Status
    background: bool
    created_at: int
    started_at: int | None
    ended_at: int | None
    attempts: int
    error: dict[str, Any] | None


class AdminResponseDetail(AdminResponse):
    timings: dict[str, Any] | None
    timeline: list[dict[str, Any]]
    webhook_attempts: list[dict[str, Any]]


class AdminResponseList(_Page):
    model_config = ConfigDict(json_schema_extra=RESQ)
    data: list[AdminResponse]


class QueueState(_Open):
    name: str
    depth: int
    paused: bool


class AdminQueue(_ResqOpen):
    object: Literal["admin.queue"]
    generated_at: float
    queues: list[QueueState]
    totals: dict[str, Any]
    windows: dict[str, dict[str, Any]]
    by_model: list[dict[str, Any]]
    by_tenant: list[dict[str, Any]]


class HistorySample(_Open):
    at: float
    depth: int
    in_progress: int
    finished_per_second: float


class AdminQueueHistory(_ResqOpen):
    object: Literal["list"]
    data: list[HistorySample]


class AdminWorkers(_ResqOpen):
    object: Literal["list"]
    data: list[dict[str, Any]]
    error: str | None


class QueuePaused(_ResqOpen):
    name: str
    paused: bool
