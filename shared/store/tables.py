"""SQL tables (SQLModel). Wire shapes live in ``shared.schema``; these are storage only."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Column, ForeignKey, Index, String, UniqueConstraint
from sqlmodel import Field, SQLModel

# Plain JSON (not JSONB) on Postgres too: it keeps key order, so a Response reads back with
# its fields in the order they were written, on every backend. None is SQL NULL.
JSONType = JSON(none_as_null=True)


def _json(nullable: bool = True) -> Any:
    return Field(default=None, sa_column=Column(JSONType, nullable=nullable))


class ResponseRow(SQLModel, table=True):
    __tablename__ = "responses"
    __table_args__ = (
        Index("ix_responses_tenant_created", "tenant", "created_at"),
        Index("ix_responses_status_created", "status", "created_at"),
        Index("ix_responses_ended_at", "ended_at"),
    )

    id: str = Field(primary_key=True, max_length=64)
    tenant: str = Field(max_length=128)
    status: str = Field(max_length=16)
    model: str = Field(max_length=256)
    background: bool = False
    store: bool = True
    stream: bool = False
    created_at: int
    started_at: int | None = None
    ended_at: int | None = None
    completed_at: int | None = None
    attempts: int = 0
    params: dict[str, Any] = Field(sa_column=Column(JSONType, nullable=False))
    error: dict[str, Any] | None = _json()
    incomplete_details: dict[str, Any] | None = _json()
    usage: dict[str, Any] | None = _json()


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
    item_id: str = Field(max_length=128)
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


INPUT = "input"
OUTPUT = "output"
