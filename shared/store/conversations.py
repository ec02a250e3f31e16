"""Conversation queries: conversations, their items, and what a response adds to one.

A conversation is an ordered list of items (``pk`` order: items are only appended or
removed, never moved). Responses created with ``conversation`` read every item as context
and, when they end ``completed`` or ``incomplete``, append their input and output items in
the transaction that records the end (``append_response_items``, called by
``Store.finish``; a step of that transaction, so it takes its session).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlmodel import Session, col, delete, select

from shared.store.engine import Queries
from shared.store.paging import Page
from shared.store.tables import ConversationItemRow, ConversationRow


def _rows(
    conversation_id: str, items: Iterable[dict[str, Any]], now: int, response_id: str | None
) -> list[ConversationItemRow]:
    return [
        ConversationItemRow(
            conversation_id=conversation_id,
            item_id=item["id"],
            type=item["type"],
            data=item,
            response_id=response_id,
            created_at=now,
        )
        for item in items
    ]


def append_response_items(
    s: Session, conversation_id: str, *, response_id: str, items: list[dict[str, Any]], now: int
) -> None:
    """Append a finished response's items, skipping any the conversation already holds (a
    client may replay earlier items as input). Nothing happens if the conversation was
    deleted meanwhile."""
    if s.get(ConversationRow, conversation_id) is None:
        return
    ids = [item["id"] for item in items]
    present = set(
        s.exec(
            select(ConversationItemRow.item_id).where(
                ConversationItemRow.conversation_id == conversation_id,
                col(ConversationItemRow.item_id).in_(ids),
            )
        ).all()
    )
    fresh = [item for item in items if item["id"] not in present]
    s.add_all(_rows(conversation_id, fresh, now, response_id))


class ConversationStore(Queries):
    def create(self, row: ConversationRow, items: list[dict[str, Any]]) -> ConversationRow:
        with self.session() as s:
            s.add(row)
            s.flush()
            s.add_all(_rows(row.id, items, row.created_at, None))
            s.commit()
        return row

    def get(self, *, tenant: str, conversation_id: str) -> ConversationRow | None:
        """The tenant's conversation; another tenant's is not found."""
        with self.session() as s:
            row = s.get(ConversationRow, conversation_id)
        return row if row is not None and row.tenant == tenant else None

    def update_metadata(
        self, *, tenant: str, conversation_id: str, metadata: dict[str, str]
    ) -> ConversationRow | None:
        with self.session() as s:
            row = s.get(ConversationRow, conversation_id)
            if row is None or row.tenant != tenant:
                return None
            row.meta = metadata
            s.add(row)
            s.commit()
            return row

    def delete(self, *, tenant: str, conversation_id: str) -> bool:
        """Delete a conversation and its item list (responses keep their own items)."""
        with self.session() as s:
            row = s.get(ConversationRow, conversation_id)
            if row is None or row.tenant != tenant:
                return False
            s.execute(
                delete(ConversationItemRow).where(
                    col(ConversationItemRow.conversation_id) == conversation_id
                )
            )
            s.delete(row)
            s.commit()
            return True

    def add_items(
        self, *, conversation_id: str, items: list[dict[str, Any]], now: int
    ) -> list[dict[str, Any]]:
        with self.session() as s:
            s.add_all(_rows(conversation_id, items, now, None))
            s.commit()
        return items

    def all_items(self, *, conversation_id: str) -> list[dict[str, Any]]:
        """Every item, oldest first, in one query (a response's context)."""
        with self.session() as s:
            rows = s.exec(
                select(ConversationItemRow.data)
                .where(ConversationItemRow.conversation_id == conversation_id)
                .order_by(col(ConversationItemRow.pk))
            ).all()
        return [dict(data) for data in rows]

    def _find(self, s: Session, conversation_id: str, item_id: str) -> ConversationItemRow | None:
        return s.exec(
            select(ConversationItemRow)
            .where(
                ConversationItemRow.conversation_id == conversation_id,
                ConversationItemRow.item_id == item_id,
            )
            .order_by(col(ConversationItemRow.pk))
            .limit(1)
        ).first()

    def get_item(self, *, conversation_id: str, item_id: str) -> dict[str, Any] | None:
        with self.session() as s:
            found = self._find(s, conversation_id, item_id)
        return found.data if found else None

    def delete_item(self, *, conversation_id: str, item_id: str) -> bool:
        with self.session() as s:
            found = self._find(s, conversation_id, item_id)
            if found is None:
                return False
            s.delete(found)
            s.commit()
            return True

    def list_items(
        self, *, conversation_id: str, limit: int, order: str = "desc", after: str | None = None
    ) -> Page | None:
        """One page of items; ``after`` is an item id (None if it is not in the list)."""
        newest_first = order != "asc"
        with self.session() as s:
            query = select(ConversationItemRow).where(
                ConversationItemRow.conversation_id == conversation_id
            )
            if after is not None:
                anchor = self._find(s, conversation_id, after)
                if anchor is None:
                    return None
                pk = col(ConversationItemRow.pk)
                query = query.where(pk < anchor.pk if newest_first else pk > anchor.pk)
            ordering = col(ConversationItemRow.pk)
            rows = list(
                s.exec(
                    query.order_by(ordering.desc() if newest_first else ordering).limit(limit + 1)
                ).all()
            )
        return Page(items=[r.data for r in rows[:limit]], has_more=len(rows) > limit)
