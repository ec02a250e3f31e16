"""Every SQL query resq runs. Keyword-only methods; rows in, wire data out."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, create_engine, event, func, literal, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, delete, select

from shared.errors import InvalidRequest
from shared.schema.response import TERMINAL_STATUSES, Status, response_object
from shared.store.conversations import append_response_items
from shared.store.outbox import record_terminal_event
from shared.store.paging import Page
from shared.store.tables import INPUT, OUTPUT, IdempotencyKeyRow, ItemRow, ResponseRow

ACTIVE_STATUSES = (Status.QUEUED.value, Status.IN_PROGRESS.value)
# A response that ends in one of these adds its items to its conversation; a failed or
# cancelled one leaves the conversation as it was, so a retry starts from the same place.
CONVERSATION_STATUSES = (Status.COMPLETED.value, Status.INCOMPLETE.value)
# How often create_response retries after a unique-key conflict whose holder vanished (it
# expired, or its response was deleted, between the conflict and the re-read).
IDEMPOTENCY_INSERT_ATTEMPTS = 3


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """Once per pooled connection (WAL itself is a property of the file, kept across opens)."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


CONNECT_TIMEOUT_SECONDS = 10


def make_engine(url: str, *, pool_size: int = 10) -> Engine:
    """An engine for SQLite (WAL, foreign keys on) or Postgres (psycopg 3)."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=pool_size,
            max_overflow=pool_size * 4,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size * 4,
        pool_pre_ping=True,
        # A database host that does not answer fails a connect in seconds, not never.
        connect_args={"connect_timeout": CONNECT_TIMEOUT_SECONDS},
    )


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


class ChainBroken(Exception):
    """A response in a ``previous_response_id`` chain is gone (deleted, or never stored)."""

    def __init__(self, missing_id: str) -> None:
        super().__init__(missing_id)
        self.missing_id = missing_id


log = logging.getLogger(__name__)


class Store:
    def __init__(
        self, engine: Engine, *, on_deliveries: Callable[[list[str]], None] | None = None
    ) -> None:
        """``on_deliveries`` is called with the ids of new webhook deliveries after the
        transaction that wrote them committed (to send them now; the sweep sends them anyway
        if this fails or is not given)."""
        self.engine = engine
        self.on_deliveries = on_deliveries

    def _announce(self, delivery_ids: list[str]) -> None:
        if not delivery_ids or self.on_deliveries is None:
            return
        try:
            self.on_deliveries(delivery_ids)
        except Exception:  # the sweep sends them later; the commit stands
            log.warning("could not queue webhook deliveries %s now", delivery_ids, exc_info=True)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as session:
            yield session

    def ping(self) -> None:
        """One round trip to the database; raises if it does not answer."""
        with self.engine.connect() as connection:
            connection.execute(select(literal(1)))

    # ---- create and read ---------------------------------------------------------------

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
        with self.session() as s, _rolled_back_on_conflict(s):
            if idempotency is not None:
                s.execute(
                    delete(IdempotencyKeyRow).where(
                        col(IdempotencyKeyRow.tenant) == row.tenant,
                        col(IdempotencyKeyRow.key) == idempotency.key,
                        col(IdempotencyKeyRow.created_at) < idempotency.live_since,
                    )
                )
            s.add(row)
            s.flush()
            if idempotency is not None:
                s.add(
                    IdempotencyKeyRow(
                        tenant=row.tenant,
                        key=idempotency.key,
                        body_hash=idempotency.body_hash,
                        response_id=row.id,
                        created_at=idempotency.now,
                    )
                )
                s.flush()
            s.add_all(_item_rows(row.id, INPUT, items))
            s.commit()

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

    def items(self, *, response_id: str, kind: str) -> list[dict[str, Any]]:
        with self.session() as s:
            rows = s.exec(
                select(ItemRow)
                .where(ItemRow.response_id == response_id, ItemRow.kind == kind)
                .order_by(col(ItemRow.position))
            ).all()
        return [r.data for r in rows]

    def render(
        self,
        row: ResponseRow,
        output: list[dict[str, Any]] | None = None,
        status: str | None = None,
    ) -> dict[str, Any]:
        """The Response object for a row (reads its output items unless given; ``status``
        overrides the stored one, for lifecycle snapshots)."""
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
        )

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
        with self.session() as s:
            base = select(ItemRow).where(ItemRow.response_id == response_id, ItemRow.kind == INPUT)
            query = base
            for cursor, name, forward in ((after, "after", True), (before, "before", False)):
                if cursor is None:
                    continue
                anchor = s.exec(base.where(ItemRow.item_id == cursor)).first()
                if anchor is None:
                    raise InvalidRequest(
                        f"No input item with id '{cursor}' in response '{response_id}'.",
                        param=name,
                        code="invalid_value",
                    )
                later = (order == "asc") == forward
                query = query.where(
                    col(ItemRow.position) > anchor.position
                    if later
                    else col(ItemRow.position) < anchor.position
                )
            ordering = (
                col(ItemRow.position).asc() if order == "asc" else col(ItemRow.position).desc()
            )
            if before is not None and after is None:
                # Walk backwards from the cursor, then restore the requested order.
                reverse = (
                    col(ItemRow.position).desc() if order == "asc" else col(ItemRow.position).asc()
                )
                rows = list(s.exec(query.order_by(reverse).limit(limit + 1)).all())
                has_more = len(rows) > limit
                rows = list(reversed(rows[:limit]))
            else:
                rows = list(s.exec(query.order_by(ordering).limit(limit + 1)).all())
                has_more = len(rows) > limit
                rows = rows[:limit]
        return Page(items=[r.data for r in rows], has_more=has_more)

    # ---- lifecycle ---------------------------------------------------------------------

    def claim(self, *, response_id: str, now: int) -> ResponseRow | None:
        """Atomically take a job that has not started yet; None if it is terminal or taken.
        One statement (UPDATE … RETURNING)."""
        with self.session() as s:
            row = s.scalars(
                update(ResponseRow)
                .where(
                    col(ResponseRow.id) == response_id,
                    col(ResponseRow.status).in_(ACTIVE_STATUSES),
                    col(ResponseRow.started_at).is_(None),
                )
                .values(
                    status=Status.IN_PROGRESS.value,
                    started_at=now,
                    attempts=ResponseRow.attempts + 1,
                )
                .returning(ResponseRow)
            ).one_or_none()
            s.commit()
            return row

    def save_output_item(self, *, response_id: str, position: int, item: dict[str, Any]) -> None:
        """Insert or replace the output item at ``position`` (no-op once the response is
        deleted)."""
        with self.session() as s:
            if s.get(ResponseRow, response_id) is None:
                return
            _replace_outputs(s, response_id, {position: item})
            s.commit()

    def finish(
        self,
        *,
        response_id: str,
        status: Status,
        now: int,
        output: list[dict[str, Any]],
        error: dict[str, Any] | None = None,
        incomplete_details: dict[str, Any] | None = None,
        usage: dict[str, Any] | None = None,
        truncation_details: dict[str, Any] | None = None,
        timings: dict[str, Any] | None = None,
        from_statuses: tuple[str, ...] = (Status.IN_PROGRESS.value,),
    ) -> ResponseRow | None:
        """Write the outcome of a run. The output is always kept; the status only changes
        from one of ``from_statuses`` (a cancel that landed first is never overwritten).
        Returns the row as stored afterwards, or None if the response was deleted.

        In the same transaction: a status change of a background response writes its
        webhook event (the outbox); a response that ends ``completed`` or ``incomplete`` in
        a conversation appends its input and output items to it; and a ``store: false``
        response is deleted with its items (the returned row is its last state)."""
        assert status in TERMINAL_STATUSES
        with self.session() as s:
            found = s.execute(
                select(ResponseRow.id, ResponseRow.store).where(col(ResponseRow.id) == response_id)
            ).first()
            if found is None:
                return None
            stored = found.store
            if stored:
                _replace_outputs(s, response_id, dict(enumerate(output)), truncate=True)
            values = {
                "status": status.value,
                "ended_at": now,
                "completed_at": now if status == Status.COMPLETED else None,
                "error": error,
                "incomplete_details": incomplete_details,
                "usage": usage,
                "truncation_details": truncation_details,
                "timings": timings,
                "tool_secrets": None,  # credentials live only as long as the run
            }

            def write(statuses: tuple[str, ...]) -> ResponseRow | None:
                """The row as written (UPDATE … RETURNING), or None if its status was not
                one of ``statuses``."""
                return s.scalars(
                    update(ResponseRow)
                    .where(
                        col(ResponseRow.id) == response_id, col(ResponseRow.status).in_(statuses)
                    )
                    .values(**values)
                    .returning(ResponseRow)
                    .execution_options(synchronize_session=False, populate_existing=True)
                ).one_or_none()

            # A status change announces itself (webhook); re-writing the same status (a
            # cancelled run storing what it had produced) does not.
            row = write(tuple(f for f in from_statuses if f != status.value))
            changed = row is not None
            if row is None and status.value in from_statuses:
                row = write((status.value,))
            if row is None:  # the status had moved on (a cancel landed first): outputs only
                row = s.get(ResponseRow, response_id)
            assert row is not None
            deliveries = record_terminal_event(s, row=row, now=now) if changed else []
            conversation = (row.params.get("conversation") or {}).get("id")
            if changed and conversation and row.status in CONVERSATION_STATUSES:
                inputs = [
                    r.data
                    for r in s.exec(
                        select(ItemRow)
                        .where(ItemRow.response_id == response_id, ItemRow.kind == INPUT)
                        .order_by(col(ItemRow.position))
                    )
                ]
                append_response_items(
                    s, conversation, response_id=response_id, items=inputs + output, now=now
                )
            if not stored:
                _delete_response(s, response_id)
            s.commit()
        self._announce(deliveries)
        return row

    def cancel(self, *, response_id: str, now: int) -> str | None:
        """Mark a job cancelled if it has not ended. Returns the status it had, or None if
        it was already terminal (or is gone)."""
        with self.session() as s:
            row = s.get(ResponseRow, response_id)
            if row is None or row.status not in ACTIVE_STATUSES:
                return None
            previous = row.status
            result = s.execute(
                update(ResponseRow)
                .where(col(ResponseRow.id) == response_id, col(ResponseRow.status) == previous)
                .values(status=Status.CANCELLED.value, ended_at=now, tool_secrets=None)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                s.rollback()
                return None
            deliveries = record_terminal_event(s, row=row, now=now)
            s.commit()
        self._announce(deliveries)
        return previous

    def delete_response(self, *, response_id: str, tenant: str) -> bool:
        with self.session() as s:
            row = s.get(ResponseRow, response_id)
            if row is None or row.tenant != tenant:
                return False
            _delete_response(s, response_id)
            s.commit()
            return True

    def count_responses(self) -> int:
        with self.session() as s:
            return int(s.exec(select(func.count()).select_from(ResponseRow)).one())


def _delete_response(s: Session, response_id: str) -> None:
    s.execute(delete(ItemRow).where(col(ItemRow.response_id) == response_id))
    # ON DELETE CASCADE does this too; explicit, like the items, so the key is released
    # even on a connection without SQLite's foreign_keys pragma.
    s.execute(delete(IdempotencyKeyRow).where(col(IdempotencyKeyRow.response_id) == response_id))
    s.execute(delete(ResponseRow).where(col(ResponseRow.id) == response_id))


@contextmanager
def _rolled_back_on_conflict(s: Session) -> Iterator[None]:
    """Roll back explicitly on a constraint violation: that makes the rows added in the
    transaction transient again (closing the session would leave them detached, as if
    stored), so a retry can insert the same objects."""
    try:
        yield
    except IntegrityError:
        s.rollback()
        raise


def _item_row(response_id: str, kind: str, position: int, item: dict[str, Any]) -> ItemRow:
    return ItemRow(
        response_id=response_id,
        kind=kind,
        position=position,
        item_id=item["id"],
        type=item["type"],
        data=item,
    )


def _item_rows(response_id: str, kind: str, items: Iterable[dict[str, Any]]) -> list[ItemRow]:
    return [_item_row(response_id, kind, i, item) for i, item in enumerate(items)]


def _replace_outputs(
    s: Session, response_id: str, items: dict[int, dict[str, Any]], truncate: bool = False
) -> None:
    where = [col(ItemRow.response_id) == response_id, col(ItemRow.kind) == OUTPUT]
    if truncate:
        s.execute(delete(ItemRow).where(*where))
    elif items:
        s.execute(delete(ItemRow).where(*where, col(ItemRow.position).in_(list(items))))
    s.add_all(_item_row(response_id, OUTPUT, pos, item) for pos, item in items.items())
