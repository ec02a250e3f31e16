"""Responses: creating one (with its input items and ``Idempotency-Key``), reading, rendering
and deleting it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, func
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, delete, select

from shared.schema.response import response_object
from shared.store.items import ItemStore, insert_items
from shared.store.tables import INPUT, OUTPUT, IdempotencyKeyRow, ItemRow, ResponseRow

_RESPONSES = ResponseRow.__table__  # type: ignore[attr-defined]
_KEYS = IdempotencyKeyRow.__table__  # type: ignore[attr-defined]
_COLUMNS = tuple(column.name for column in _RESPONSES.columns)
_INSERT_RESPONSE = _RESPONSES.insert()
_INSERT_KEY = _KEYS.insert()
_DELETE_DEAD_KEY = _KEYS.delete().where(
    _KEYS.c.tenant == bindparam("tenant"),
    _KEYS.c.key == bindparam("key"),
    _KEYS.c.created_at < bindparam("live_since"),
)

# How often create_response retries after a unique-key conflict whose holder vanished (it
# expired, or its response was deleted, between the conflict and the re-read).
IDEMPOTENCY_INSERT_ATTEMPTS = 3


@dataclass(frozen=True)
class IdempotencyKey:
    """An ``Idempotency-Key`` to bind to a new response. A stored key is live while
    ``now < created_at + ttl_seconds``; a dead one is replaced, never honoured."""

    key: str
    body_hash: str
    now: int
    ttl_seconds: int

    @property
    def live_since(self) -> int:
        """Stored keys created at or after this are still live."""
        return self.now - self.ttl_seconds + 1


class ResponseStore(ItemStore):
    """Responses as a whole. Built on ``ItemStore``: rendering reads the output items."""

    def create_response(
        self,
        *,
        row: ResponseRow,
        input_items: Iterable[dict[str, Any]],
        idempotency: IdempotencyKey | None = None,
    ) -> IdempotencyKeyRow | None:
        """Insert a response and its input items in one transaction.

        With ``idempotency``, the key row ``(row.tenant, key)`` goes in the same transaction
        (a dead one is deleted first). If a live row already holds the key, nothing is
        written and that row is returned; this holds under concurrency too: of two racing
        inserts the primary key lets one commit, and the other returns the winner's row.
        Returns None when the response was created."""
        items = list(input_items)
        for _ in range(IDEMPOTENCY_INSERT_ATTEMPTS):
            if idempotency is not None:
                holder = self.find_idempotency_key(tenant=row.tenant, idempotency=idempotency)
                if holder is not None:
                    return holder
            try:
                self._insert_response(row, items, idempotency)
                return None
            except IntegrityError:
                if idempotency is None:
                    raise
                holder = self.find_idempotency_key(tenant=row.tenant, idempotency=idempotency)
                if holder is not None:
                    return holder
        raise RuntimeError(f"response {row.id}: idempotency key kept conflicting; giving up")

    def _insert_response(
        self, row: ResponseRow, items: list[dict[str, Any]], idempotency: IdempotencyKey | None
    ) -> None:
        """One transaction of prebuilt Core statements (the ORM's unit of work was about a
        third of a create's CPU); ``row`` stays as it was given."""
        with self.engine.begin() as conn:
            if idempotency is not None:
                conn.execute(
                    _DELETE_DEAD_KEY,
                    {
                        "tenant": row.tenant,
                        "key": idempotency.key,
                        "live_since": idempotency.live_since,
                    },
                )
            conn.execute(_INSERT_RESPONSE, {name: getattr(row, name) for name in _COLUMNS})
            if idempotency is not None:
                conn.execute(
                    _INSERT_KEY,
                    {
                        "tenant": row.tenant,
                        "key": idempotency.key,
                        "body_hash": idempotency.body_hash,
                        "response_id": row.id,
                        "created_at": idempotency.now,
                    },
                )
            insert_items(conn, row.id, INPUT, items)

    def find_idempotency_key(
        self, *, tenant: str, idempotency: IdempotencyKey
    ) -> IdempotencyKeyRow | None:
        """The live row holding the tenant's key, or None (never used, dead, or released
        by deleting its response)."""
        with self.session() as s:
            return s.exec(
                select(IdempotencyKeyRow).where(
                    IdempotencyKeyRow.tenant == tenant,
                    IdempotencyKeyRow.key == idempotency.key,
                    col(IdempotencyKeyRow.created_at) >= idempotency.live_since,
                )
            ).first()

    def get_response(self, *, response_id: str, tenant: str | None = None) -> ResponseRow | None:
        with self.session() as s:
            row = s.get(ResponseRow, response_id)
        if row is None or (tenant is not None and row.tenant != tenant):
            return None
        return row

    def render(
        self,
        row: ResponseRow,
        output: list[dict[str, Any]] | None = None,
        status: str | None = None,
        include: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """The Response object for a row (reads its output items unless given; ``status``
        overrides the stored one, for lifecycle snapshots; ``include`` overrides the create's,
        ``shared.schema.response.response_object``)."""
        if output is None:
            output = self.items(response_id=row.id, kind=OUTPUT)
        return response_object(
            response_id=row.id,
            created_at=row.created_at,
            status=status or row.status,
            params=row.params,
            output=output,
            completed_at=row.completed_at,
            error=row.error,
            incomplete_details=row.incomplete_details,
            usage=row.usage,
            truncation_details=row.truncation_details,
            include=include,
        )

    def delete_response(self, *, response_id: str, tenant: str) -> bool:
        with self.session() as s:
            row = s.get(ResponseRow, response_id)
            if row is None or row.tenant != tenant:
                return False
            delete_response_rows(s, response_id)
            s.commit()
            return True

    def count_responses(self) -> int:
        with self.session() as s:
            return int(s.exec(select(func.count()).select_from(ResponseRow)).one())


def delete_response_rows(s: Session, response_id: str) -> None:
    """In the caller's transaction: a response, its items and its idempotency key."""
    s.execute(delete(ItemRow).where(col(ItemRow.response_id) == response_id))
    # ON DELETE CASCADE does this too; explicit, like the items, so the key is released
    # even on a connection without SQLite's foreign_keys pragma.
    s.execute(delete(IdempotencyKeyRow).where(col(IdempotencyKeyRow.response_id) == response_id))
    s.execute(delete(ResponseRow).where(col(ResponseRow.id) == response_id))
