"""SQL tables (SQLModel). Wire shapes live in ``shared.schema``; these are storage only."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Column, Dialect, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

from shared.schema.items import ITEM_ID_MAX_LENGTH
from shared.schema.requests import MODEL_MAX_LENGTH
from shared.schema.response import Status

# Plain JSON (not JSONB) on Postgres too: it keeps key order, so a Response reads back with
# its fields in the order they were written, on every backend. None is SQL NULL.
JSONType = JSON(none_as_null=True)


def _json(nullable: bool = True) -> Any:
    return Field(default=None, sa_column=Column(JSONType, nullable=nullable))


class StatusType(TypeDecorator[Status]):
    """A response's status: stored as its string in ``VARCHAR(16)`` (the column the migrations
    created), read back as a ``Status``."""

    impl = String(16)
    cache_ok = True

    def process_bind_param(self, value: Status | str | None, dialect: Dialect) -> str | None:
        return None if value is None else str(Status(value))

    def process_result_value(self, value: str | None, dialect: Dialect) -> Status | None:
        return None if value is None else Status(value)


class ResponseRow(SQLModel, table=True):
    __tablename__ = "responses"
    __table_args__ = (
        Index("ix_responses_tenant_created", "tenant", "created_at"),
        Index("ix_responses_status_created", "status", "created_at"),
        Index("ix_responses_ended_at", "ended_at"),
        Index("ix_responses_model_created", "model", "created_at"),
    )

    id: str = Field(primary_key=True, max_length=64)
    tenant: str = Field(max_length=128)
    status: Status = Field(sa_column=Column(StatusType(), nullable=False))
    model: str = Field(max_length=MODEL_MAX_LENGTH)
    background: bool = False
    store: bool = True
    stream: bool = False
    created_at: int
    started_at: int | None = None
    ended_at: int | None = None
    completed_at: int | None = None
    attempts: int = 0
    # The response this one continues (``previous_response_id``); the chain is walked by
    # primary key, child to parent, so it needs no index of its own.
    previous_response_id: str | None = Field(default=None, max_length=64)
    params: dict[str, Any] = Field(sa_column=Column(JSONType, nullable=False))
    error: dict[str, Any] | None = _json()
    incomplete_details: dict[str, Any] | None = _json()
    usage: dict[str, Any] | None = _json()
    # What ``truncation: "auto"`` dropped from the context to make it fit (None: nothing).
    truncation_details: dict[str, Any] | None = _json()
    enqueued_at: float | None = None  # when it was queued, to the microsecond
    # Seconds: ``queue_wait``, ``run``, ``first_token`` (after the start; None without output).
    timings: dict[str, Any] | None = _json()
    # MCP credentials for this run, sealed (``shared.secrets``); erased when it ends.
    tool_secrets: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class ItemRow(SQLModel, table=True):
    __tablename__ = "response_items"
    __table_args__ = (
        UniqueConstraint("response_id", "kind", "position", name="uq_response_items_position"),
        Index("ix_response_items_item_id", "item_id"),
    )

    pk: int | None = Field(default=None, primary_key=True)
    response_id: str = Field(
        sa_column=Column(String(64), ForeignKey("responses.id", ondelete="CASCADE"), nullable=False)
    )
    kind: str = Field(max_length=8)  # "input" or "output"
    position: int
    item_id: str = Field(max_length=ITEM_ID_MAX_LENGTH)
    type: str = Field(max_length=64)
    data: dict[str, Any] = Field(sa_column=Column(JSONType, nullable=False))


class IdempotencyKeyRow(SQLModel, table=True):
    """An ``Idempotency-Key`` a tenant sent with ``POST /v1/responses``, bound to the response
    it created. Inserted in the same transaction as that response; deleting the response
    deletes the key (the key is then free again). Rows older than the TTL are dead and are
    replaced by the next request that uses the key."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (Index("ix_idempotency_keys_response_id", "response_id"),)

    tenant: str = Field(primary_key=True, max_length=128)
    key: str = Field(primary_key=True, max_length=255)
    body_hash: str = Field(max_length=64)  # hex SHA-256 of the canonical JSON body
    response_id: str = Field(
        sa_column=Column(String(64), ForeignKey("responses.id", ondelete="CASCADE"), nullable=False)
    )
    created_at: int


class WebhookEndpointRow(SQLModel, table=True):
    """A tenant's webhook receiver. ``secret`` signs every delivery; after a rotation that
    keeps the old secret, deliveries are signed with both until ``old_secret_until``."""

    __tablename__ = "webhook_endpoints"
    __table_args__ = (Index("ix_webhook_endpoints_tenant_created", "tenant", "created_at"),)

    id: str = Field(primary_key=True, max_length=64)
    tenant: str = Field(max_length=128)
    name: str = Field(max_length=256)
    url: str = Field(max_length=2048)
    event_types: list[str] = Field(sa_column=Column(JSONType, nullable=False))
    secret: str = Field(max_length=128)
    old_secret: str | None = Field(default=None, max_length=128)
    old_secret_until: int | None = None
    created_at: int
    updated_at: int


class WebhookEventRow(SQLModel, table=True):
    """An event to announce (the outbox): written in the same transaction as the response's
    terminal status, so it exists exactly when that status does. ``body`` is the exact JSON
    every delivery of it sends."""

    __tablename__ = "webhook_events"
    __table_args__ = (Index("ix_webhook_events_response", "response_id"),)

    id: str = Field(primary_key=True, max_length=64)
    tenant: str = Field(max_length=128)
    type: str = Field(max_length=64)
    response_id: str = Field(max_length=64)
    created_at: int
    body: str = Field(sa_column=Column(Text, nullable=False))


class WebhookDeliveryRow(SQLModel, table=True):
    """One event to one endpoint. Its id is the ``webhook-id`` header, the same on every
    attempt. ``status``: pending, delivered or failed (attempts or retry window used up)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_endpoint_created", "endpoint_id", "created_at"),
        Index("ix_webhook_deliveries_status_next", "status", "next_attempt_at"),
    )

    id: str = Field(primary_key=True, max_length=64)
    event_id: str = Field(
        sa_column=Column(String(64), ForeignKey("webhook_events.id"), nullable=False)
    )
    endpoint_id: str = Field(
        sa_column=Column(
            String(64), ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), nullable=False
        )
    )
    tenant: str = Field(max_length=128)
    status: str = Field(max_length=16)
    attempts: int = 0
    created_at: int
    next_attempt_at: float | None = None
    lease_until: float | None = None  # an attempt (or a queued send) holds it until then
    delivered_at: int | None = None


class WebhookAttemptRow(SQLModel, table=True):
    """One HTTP attempt of a delivery, kept for the delivery log."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (Index("ix_webhook_attempts_delivery", "delivery_id", "number"),)

    pk: int | None = Field(default=None, primary_key=True)
    delivery_id: str = Field(
        sa_column=Column(
            String(64), ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), nullable=False
        )
    )
    number: int
    started_at: float
    latency_ms: int
    status_code: int | None = None
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    ok: bool = False


class ConversationRow(SQLModel, table=True):
    __tablename__ = "conversations"

    id: str = Field(primary_key=True, max_length=64)
    tenant: str = Field(max_length=128)
    created_at: int
    # ``metadata`` is taken by SQLAlchemy's declarative base; the column keeps the wire name.
    meta: dict[str, Any] = Field(sa_column=Column("metadata", JSONType, nullable=False))


class ConversationItemRow(SQLModel, table=True):
    """One item of a conversation; ``pk`` is its position (items only ever get appended)."""

    __tablename__ = "conversation_items"
    __table_args__ = (
        Index("ix_conversation_items_conversation", "conversation_id", "pk"),
        Index("ix_conversation_items_item", "conversation_id", "item_id"),
    )

    pk: int | None = Field(default=None, primary_key=True)
    conversation_id: str = Field(
        sa_column=Column(
            String(64), ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False
        )
    )
    item_id: str = Field(max_length=ITEM_ID_MAX_LENGTH)
    type: str = Field(max_length=64)
    data: dict[str, Any] = Field(sa_column=Column(JSONType, nullable=False))
    response_id: str | None = Field(default=None, max_length=64)  # the response that added it
    created_at: int


INPUT = "input"
OUTPUT = "output"


class PromptRow(SQLModel, table=True):
    """A tenant's prompt: its name (unique per tenant, what ``resq prompts push`` matches on)
    and which version runs when a request names none."""

    __tablename__ = "prompts"
    __table_args__ = (
        UniqueConstraint("tenant", "name", name="uq_prompts_tenant_name"),
        Index("ix_prompts_tenant_created", "tenant", "created_at"),
    )

    id: str = Field(primary_key=True, max_length=64)
    tenant: str = Field(max_length=128)
    name: str = Field(max_length=256)
    description: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    meta: dict[str, Any] = Field(sa_column=Column("metadata", JSONType, nullable=False))
    default_version: int
    latest_version: int
    created_at: int
    updated_at: int


class PromptVersionRow(SQLModel, table=True):
    """One version of a prompt, immutable once written: ``body`` is its definition
    (``shared.schema.prompts.PromptVersionBody``)."""

    __tablename__ = "prompt_versions"

    prompt_id: str = Field(
        sa_column=Column(
            String(64),
            ForeignKey("prompts.id", ondelete="CASCADE"),
            primary_key=True,
            nullable=False,
        )
    )
    version: int = Field(primary_key=True)
    created_at: int
    body: dict[str, Any] = Field(sa_column=Column(JSONType, nullable=False))
