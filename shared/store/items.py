"""A response's items: reading them, the context a ``previous_response_id`` chain inherits,
paging the input items, and writing output items as a run produces them."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import Connection, bindparam, literal
from sqlmodel import Session, col, select
from sqlmodel.sql.expression import SelectOfScalar

from shared.errors import InvalidRequest
from shared.store.engine import Queries
from shared.store.paging import Page
from shared.store.tables import INPUT, OUTPUT, ItemRow, ResponseRow

# The statements every run uses, built once: Core on the tables, not the ORM (its unit of
# work and statement building were a large part of a worker's CPU per job; ``bench.profile``).
_ITEMS = ItemRow.__table__  # type: ignore[attr-defined]
_RESPONSES = ResponseRow.__table__  # type: ignore[attr-defined]
_RESPONSE_EXISTS = select(_RESPONSES.c.id).where(_RESPONSES.c.id == bindparam("response_id"))
_OUTPUTS_OF = (_ITEMS.c.response_id == bindparam("response_id"), _ITEMS.c.kind == OUTPUT)
_DELETE_OUTPUTS_AT = _ITEMS.delete().where(
    *_OUTPUTS_OF, _ITEMS.c.position.in_(bindparam("positions", expanding=True))
)
_DELETE_OUTPUTS_EXCEPT = _ITEMS.delete().where(
    *_OUTPUTS_OF, _ITEMS.c.position.not_in(bindparam("keep", expanding=True))
)
_INSERT_ITEMS = _ITEMS.insert()
_ITEMS_OF = (
    select(_ITEMS.c.data)
    .where(_ITEMS.c.response_id == bindparam("response_id"), _ITEMS.c.kind == bindparam("kind"))
    .order_by(_ITEMS.c.position)
)


class ChainBroken(Exception):
    """A response in a ``previous_response_id`` chain is gone (deleted, or never stored)."""

    def __init__(self, missing_id: str) -> None:
        super().__init__(missing_id)
        self.missing_id = missing_id


class ItemStore(Queries):
    """A response's input and output items (``ItemRow``), by position."""

    def items(self, *, response_id: str, kind: str) -> list[dict[str, Any]]:
        """A response's input or output items, in order (every run reads its input)."""
        with self.engine.connect() as conn:
            found = conn.execute(_ITEMS_OF, {"response_id": response_id, "kind": kind})
            return [data for (data,) in found]

    def find_item(self, *, tenant: str, item_id: str) -> dict[str, Any] | None:
        """The newest stored item with this id among the tenant's responses."""
        with self.session() as s:
            found = s.exec(
                select(ItemRow)
                .join(ResponseRow, col(ResponseRow.id) == col(ItemRow.response_id))
                .where(ItemRow.item_id == item_id, ResponseRow.tenant == tenant)
                .order_by(col(ItemRow.pk).desc())
                .limit(1)
            ).first()
        return found.data if found else None

    def chain_items(self, *, response_id: str) -> list[dict[str, Any]]:
        """The context a response continuing ``response_id`` inherits: every response of the
        chain ending there, oldest first, each one's input items then its output items.

        Two queries however long the chain: a recursive CTE walks the
        ``previous_response_id`` links by primary key, then one query reads the items of
        every response it found. Raises ``ChainBroken`` when a link points at a response
        that no longer exists (instructions are never part of it: they are not inherited)."""
        table = ResponseRow.__table__  # type: ignore[attr-defined]
        start = (
            select(table.c.id, table.c.previous_response_id, literal(0).label("depth"))
            .where(table.c.id == response_id)
            .cte("chain", recursive=True)
        )
        parent = table.alias("parent")
        chain = start.union_all(
            select(parent.c.id, parent.c.previous_response_id, start.c.depth + 1).where(
                parent.c.id == start.c.previous_response_id
            )
        )
        with self.session() as s:
            links = s.execute(
                select(chain.c.id, chain.c.previous_response_id).order_by(chain.c.depth.desc())
            ).all()
            if not links:
                raise ChainBroken(response_id)
            if links[0].previous_response_id is not None:
                raise ChainBroken(links[0].previous_response_id)
            order = {link.id: i for i, link in enumerate(links)}
            rows = list(
                s.execute(
                    select(ItemRow.response_id, ItemRow.kind, ItemRow.position, ItemRow.data).where(
                        col(ItemRow.response_id).in_(list(order))
                    )
                ).all()
            )
        rows.sort(key=lambda r: (order[r.response_id], r.kind != INPUT, r.position))
        return [r.data for r in rows]

    def list_input_items(
        self,
        *,
        response_id: str,
        limit: int,
        order: str = "desc",
        after: str | None = None,
        before: str | None = None,
    ) -> Page:
        """One page of a response's input items; ``after``/``before`` are item ids."""
        position = col(ItemRow.position)
        with self.session() as s:
            base = select(ItemRow).where(ItemRow.response_id == response_id, ItemRow.kind == INPUT)
            query = base
            for cursor, name, forward in ((after, "after", True), (before, "before", False)):
                if cursor is None:
                    continue
                anchor = _input_anchor(s, base, response_id, cursor, name)
                later = (order == "asc") == forward
                query = query.where(
                    position > anchor.position if later else position < anchor.position
                )
            if before is not None and after is None:
                # Walk backwards from the cursor, then restore the requested order.
                reverse = position.desc() if order == "asc" else position.asc()
                rows = list(s.exec(query.order_by(reverse).limit(limit + 1)).all())
                has_more = len(rows) > limit
                rows = list(reversed(rows[:limit]))
            else:
                ordering = position.asc() if order == "asc" else position.desc()
                rows = list(s.exec(query.order_by(ordering).limit(limit + 1)).all())
                has_more = len(rows) > limit
                rows = rows[:limit]
        return Page(items=[r.data for r in rows], has_more=has_more)

    def save_output_item(self, *, response_id: str, position: int, item: dict[str, Any]) -> None:
        """Insert or replace the output item at ``position`` (no-op once the response is
        deleted)."""
        with self.engine.begin() as conn:
            if conn.execute(_RESPONSE_EXISTS, {"response_id": response_id}).first() is None:
                return
            replace_outputs(conn, response_id, {position: item})


def _input_anchor(
    s: Session, base: SelectOfScalar[ItemRow], response_id: str, cursor: str, name: str
) -> ItemRow:
    """The input item a page cursor names; a 400 naming the parameter if there is none."""
    anchor = s.exec(base.where(ItemRow.item_id == cursor)).first()
    if anchor is None:
        raise InvalidRequest(
            f"No input item with id '{cursor}' in response '{response_id}'.",
            param=name,
            code="invalid_value",
        )
    return anchor


def item_values(response_id: str, kind: str, position: int, item: dict[str, Any]) -> dict[str, Any]:
    """An item's column values, for a Core insert."""
    return {
        "response_id": response_id,
        "kind": kind,
        "position": position,
        "item_id": item["id"],
        "type": item["type"],
        "data": item,
    }


def insert_items(
    conn: Connection, response_id: str, kind: str, items: list[dict[str, Any]]
) -> None:
    """In the caller's transaction: ``items`` at positions 0, 1, …"""
    if items:
        conn.execute(
            _INSERT_ITEMS, [item_values(response_id, kind, i, item) for i, item in enumerate(items)]
        )


def replace_outputs(
    conn: Connection,
    response_id: str,
    items: dict[int, dict[str, Any]],
    truncate: bool = False,
    keep: Collection[int] = (),
) -> None:
    """In the caller's transaction: put each item at its position among the output items
    (``truncate``: every other output item goes first, except those at ``keep``)."""
    if truncate:
        conn.execute(_DELETE_OUTPUTS_EXCEPT, {"response_id": response_id, "keep": list(keep)})
    elif items:
        conn.execute(_DELETE_OUTPUTS_AT, {"response_id": response_id, "positions": list(items)})
    if items:
        conn.execute(
            _INSERT_ITEMS,
            [item_values(response_id, OUTPUT, p, item) for p, item in items.items()],
        )
