"""What each route of resq's API takes and answers, for ``GET /openapi.json`` (``api.openapi``).

``OPERATIONS`` is keyed by Flask endpoint name (``blueprint.function``); a route missing here is
marked undocumented in the document and fails tests/api/test_openapi.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from api.admin import OLDER_THAN_MAX
from api.query import INT64_MAX
from shared.keys import ALL_QUEUES
from shared.schema import objects as o
from shared.schema.conversations import CreateConversation, CreateItems, UpdateConversation
from shared.schema.prompts import CreatePrompt, PromptVersionBody, UpdatePrompt
from shared.schema.requests import CompactRequest, CreateResponseRequest, InputTokensRequest
from shared.schema.response import Status
from shared.schema.webhooks import CreateEndpoint, RotateSecret, TestEndpoint, UpdateEndpoint

REF = "#/components/schemas/{model}"


@dataclass(frozen=True)
class Query:
    name: str
    schema: dict[str, Any]
    description: str


@dataclass(frozen=True)
class Media:
    """A non-JSON answer (``schema`` is a JSON Schema, not a model)."""

    content_type: str
    schema: dict[str, Any]


@dataclass(frozen=True)
class Op:
    summary: str
    ok: type[BaseModel] | Media
    body: type[BaseModel] | None = None
    body_required: bool = True
    query: tuple[Query, ...] = ()
    stream: bool = False  # may answer text/event-stream instead of ``ok``
    conflict: bool = False  # may answer 409
    idempotency: bool = False  # reads the Idempotency-Key header
    resq: bool = False  # a resq addition
    public: bool = False  # no API key needed


LIMIT = Query(
    "limit",
    {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
    "How many objects a page holds.",
)
AFTER = Query("after", {"type": "string"}, "The id of the object the page starts after.")
ORDER = Query(
    "order", {"type": "string", "enum": ["asc", "desc"], "default": "desc"}, "Sort order."
)
BEFORE = Query("before", {"type": "string"}, "The id of the object the page ends before.")
PAGE = (AFTER, LIMIT, ORDER)
INCLUDE = Query(
    "include[]",
    {"type": "array", "items": {"type": "string"}},
    "Extra data to include; accepted as on create.",
)
STREAM = Query(
    "stream",
    {"type": "boolean", "default": False},
    "Replay the event stream of a background response, then follow it live.",
)
STARTING_AFTER = Query(
    "starting_after",
    {"type": "integer", "minimum": -1, "maximum": INT64_MAX},
    "With stream=true: the sequence number to resume after.",
)
# One server-sent event, as OpenAPI 3.2's ``itemSchema`` has it (3.1 has no keyword for the
# items of a stream; tools read ``schema`` as the schema of each event).
SSE = Media(
    "text/event-stream",
    {
        "type": "object",
        "description": "One server-sent event of the stream (`: keep-alive` comments between).",
        "properties": {
            "event": {"type": "string", "description": "The event's type."},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": {"$ref": REF.format(model="StreamEvent")},
            },
        },
        "required": ["event", "data"],
    },
)

OPERATIONS: dict[str, Op] = {
    # /v1/responses
    "responses.create": Op(
        "Create a response",
        o.ResponseObject,
        CreateResponseRequest,
        stream=True,
        conflict=True,
        idempotency=True,
    ),
    "responses.input_tokens": Op("Count input tokens", o.InputTokens, InputTokensRequest),
    "responses.compact": Op("Compact a conversation", o.Compaction, CompactRequest),
    "responses.retrieve": Op(
        "Retrieve a response",
        o.ResponseObject,
        query=(STREAM, STARTING_AFTER, INCLUDE),
        stream=True,
    ),
    "responses.delete": Op("Delete a response", o.ResponseDeleted),
    "responses.cancel": Op("Cancel a background response", o.ResponseObject),
    "responses.input_items": Op(
        "List a response's input items", o.ItemList, query=(*PAGE, BEFORE, INCLUDE)
    ),
    # /v1/models
    "models.list_models": Op("List models", o.ModelList),
    "models.retrieve_model": Op("Retrieve a model", o.Model),
    # /v1/conversations
    "conversations.create": Op(
        "Create a conversation", o.Conversation, CreateConversation, body_required=False
    ),
    "conversations.retrieve": Op("Retrieve a conversation", o.Conversation),
    "conversations.update": Op("Update a conversation", o.Conversation, UpdateConversation),
    "conversations.delete": Op("Delete a conversation", o.ConversationDeleted),
    "conversations.create_items": Op("Add items to a conversation", o.ItemList, CreateItems),
    "conversations.list_items": Op("List a conversation's items", o.ItemList, query=PAGE),
    "conversations.retrieve_item": Op("Retrieve a conversation item", o.Item),
    "conversations.delete_item": Op("Delete a conversation item", o.Conversation),
    # /v1/prompts (resq's own: prompt templates for ``prompt`` on create)
    "prompts.create": Op(
        "Create a prompt with its first version", o.Prompt, CreatePrompt, resq=True
    ),
    "prompts.list_prompts": Op("List prompts", o.PromptList, query=PAGE, resq=True),
    "prompts.retrieve": Op("Retrieve a prompt", o.Prompt, resq=True),
    "prompts.update": Op("Update a prompt", o.Prompt, UpdatePrompt, resq=True),
    "prompts.delete": Op("Delete a prompt and its versions", o.PromptDeleted, resq=True),
    "prompts.create_version": Op(
        "Save a prompt's next version", o.PromptVersion, PromptVersionBody, resq=True
    ),
    "prompts.list_versions": Op(
        "List a prompt's versions", o.PromptVersionList, query=PAGE, resq=True
    ),
    "prompts.retrieve_version": Op("Retrieve a prompt version", o.PromptVersion, resq=True),
    # /v1/webhook_endpoints (the openai SDK's client.webhooks), and resq's delivery log
    "webhooks.event_types": Op("List webhook event types", o.EventTypeList),
    "webhooks.create": Op("Create a webhook endpoint", o.WebhookEndpointWithSecret, CreateEndpoint),
    "webhooks.list_endpoints": Op(
        "List webhook endpoints", o.WebhookEndpointList, query=(AFTER, LIMIT)
    ),
    "webhooks.retrieve": Op("Retrieve a webhook endpoint", o.WebhookEndpoint),
    "webhooks.update": Op("Update a webhook endpoint", o.WebhookEndpoint, UpdateEndpoint),
    "webhooks.delete": Op("Delete a webhook endpoint", o.WebhookEndpointDeleted),
    "webhooks.rotate_secret": Op(
        "Rotate an endpoint's signing secret",
        o.WebhookEndpointWithSecret,
        RotateSecret,
        body_required=False,
    ),
    "webhooks.test": Op("Send a test event", o.WebhookTest, TestEndpoint),
    "webhooks.deliveries": Op(
        "List an endpoint's deliveries", o.DeliveryList, query=(AFTER, LIMIT), resq=True
    ),
    "webhooks.delivery": Op("Retrieve a delivery", o.Delivery, resq=True),
    "webhooks.redeliver": Op("Send a delivery again", o.Delivery, resq=True),
    # the operator API (admin keys only) and dashboard
    "admin.queue": Op("Queue state", o.AdminQueue, resq=True),
    "admin.history": Op(
        "Queue history",
        o.AdminQueueHistory,
        query=(
            Query(
                "minutes",
                {"type": "integer", "minimum": 1, "maximum": 60, "default": 15},
                "How far back.",
            ),
        ),
        resq=True,
    ),
    "admin.workers": Op("Live workers", o.AdminWorkers, resq=True),
    "admin.responses": Op(
        "List responses of every tenant",
        o.AdminResponseList,
        query=(
            AFTER,
            LIMIT,
            Query("status", {"type": "string", "enum": [s.value for s in Status]}, "Filter."),
            Query("model", {"type": "string"}, "Filter."),
            Query("tenant", {"type": "string"}, "Filter."),
            Query(
                "older_than",
                {"type": "integer", "minimum": 0, "maximum": OLDER_THAN_MAX},
                "Created this many s ago.",
            ),
        ),
        resq=True,
    ),
    "admin.response": Op("Inspect a response", o.AdminResponseDetail, resq=True),
    "admin.cancel": Op("Cancel any response", o.AdminResponse, resq=True),
    "admin.requeue": Op("Run a response again", o.AdminResponse, conflict=True, resq=True),
    "admin.pause": Op("Pause a queue", o.QueuePaused, resq=True),
    "admin.resume": Op("Resume a queue", o.QueuePaused, resq=True),
    "dashboard.page": Op(
        "The operator dashboard", Media("text/html", {"type": "string"}), resq=True, public=True
    ),
    # health, metrics and this document
    "health.healthz": Op("Liveness", o.Health, resq=True, public=True),
    "health.readyz": Op("Readiness", o.Ready, resq=True, public=True),
    "metrics_page": Op(
        "Prometheus metrics",
        Media("text/plain", {"type": "string"}),
        resq=True,
        public=True,
    ),
    "openapi.document": Op(
        "This document", Media("application/json", {"type": "object"}), resq=True, public=True
    ),
}

PATH_PARAMS: dict[str, tuple[dict[str, Any], str]] = {
    "response_id": ({"type": "string"}, "A response id (resp_…)."),
    "conversation_id": ({"type": "string"}, "A conversation id (conv_…)."),
    "item_id": ({"type": "string"}, "An item id."),
    "prompt_id": ({"type": "string"}, "A prompt id (pmpt_…)."),
    "version": ({"type": "string", "pattern": "^[1-9][0-9]*$"}, "A version number."),
    "endpoint_id": ({"type": "string"}, "A webhook endpoint id."),
    "delivery_id": ({"type": "string"}, "A delivery id (the webhook-id header a receiver saw)."),
    "model": ({"type": "string"}, "A model name the routing table serves."),
    "name": ({"type": "string", "enum": list(ALL_QUEUES)}, "A queue name."),
}
GENERIC_PATH_PARAM = ({"type": "string"}, "")
