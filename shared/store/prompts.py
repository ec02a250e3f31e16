"""Prompt queries: a tenant's prompts and their immutable, numbered versions.

A prompt's versions are numbered from 1; ``add_version`` takes the next number in the
transaction that writes it (two concurrent saves: the loser's insert meets the primary key
and it tries again with the number after). Deleting a prompt deletes its versions.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, delete, select

from shared.store.engine import Queries
from shared.store.paging import Page
from shared.store.tables import PromptRow, PromptVersionRow

VERSION_ATTEMPTS = 5


class NameTaken(Exception):
    """Another prompt of the tenant has this name."""


class PromptStore(Queries):
    def create(self, row: PromptRow, body: dict[str, Any]) -> PromptRow:
        """A new prompt with ``body`` as its version 1 (``NameTaken`` if the name is)."""
        with self.session() as s:
            s.add(row)
            try:
                s.flush()
            except IntegrityError:
                raise NameTaken(row.name) from None
            s.add(
                PromptVersionRow(prompt_id=row.id, version=1, created_at=row.created_at, body=body)
            )
            s.commit()
        return row

    def get(self, *, tenant: str, prompt_id: str) -> PromptRow | None:
        with self.session() as s:
            row = s.get(PromptRow, prompt_id)
        return row if row is not None and row.tenant == tenant else None

    def by_name(self, *, tenant: str, name: str) -> PromptRow | None:
        with self.session() as s:
            return s.exec(
                select(PromptRow).where(PromptRow.tenant == tenant, PromptRow.name == name)
            ).first()

    def update(
        self, *, tenant: str, prompt_id: str, changes: dict[str, Any], now: int
    ) -> PromptRow | None:
        """Apply ``changes`` (``name``, ``description``, ``meta``, ``default_version``)."""
        with self.session() as s:
            row = s.get(PromptRow, prompt_id)
            if row is None or row.tenant != tenant:
                return None
            for key, value in changes.items():
                setattr(row, key, value)
            row.updated_at = now
            s.add(row)
            try:
                s.commit()
            except IntegrityError:
                raise NameTaken(str(changes.get("name"))) from None
            return row

    def delete(self, *, tenant: str, prompt_id: str) -> bool:
        with self.session() as s:
            row = s.get(PromptRow, prompt_id)
            if row is None or row.tenant != tenant:
                return False
            s.execute(delete(PromptVersionRow).where(col(PromptVersionRow.prompt_id) == prompt_id))
            s.delete(row)
            s.commit()
            return True

    def list(
        self, *, tenant: str, limit: int, order: str = "desc", after: str | None = None
    ) -> Page | None:
        """One page of the tenant's prompts by creation; ``after`` is a prompt id (None if the
        tenant has no such prompt)."""
        newest_first = order != "asc"
        with self.session() as s:
            query = select(PromptRow).where(PromptRow.tenant == tenant)
            if after is not None:
                anchor = s.get(PromptRow, after)
                if anchor is None or anchor.tenant != tenant:
                    return None
                key = (anchor.created_at, anchor.id)
                created, pid = col(PromptRow.created_at), col(PromptRow.id)
                if newest_first:
                    query = query.where((created < key[0]) | ((created == key[0]) & (pid < key[1])))
                else:
                    query = query.where((created > key[0]) | ((created == key[0]) & (pid > key[1])))
            order_by = (
                (col(PromptRow.created_at).desc(), col(PromptRow.id).desc())
                if newest_first
                else (col(PromptRow.created_at), col(PromptRow.id))
            )
            rows = list(s.exec(query.order_by(*order_by).limit(limit + 1)).all())
        return Page(items=[_plain(r) for r in rows[:limit]], has_more=len(rows) > limit)

    def add_version(
        self, *, tenant: str, prompt_id: str, body: dict[str, Any], now: int
    ) -> PromptVersionRow | None:
        """Save ``body`` as the prompt's next version (None: no such prompt)."""
        for _ in range(VERSION_ATTEMPTS):
            with self.session() as s:
                row = s.get(PromptRow, prompt_id)
                if row is None or row.tenant != tenant:
                    return None
                version = PromptVersionRow(
                    prompt_id=prompt_id, version=row.latest_version + 1, created_at=now, body=body
                )
                row.latest_version = version.version
                row.updated_at = now
                s.add_all([row, version])
                try:
                    s.commit()
                except IntegrityError:
                    continue  # another save took the number first
                return version
        raise RuntimeError(f"could not number a new version of {prompt_id}")

    def version(self, *, prompt_id: str, version: int) -> PromptVersionRow | None:
        with self.session() as s:
            return s.get(PromptVersionRow, (prompt_id, version))

    def versions(
        self, *, prompt_id: str, limit: int, order: str = "desc", after: int | None = None
    ) -> Page:
        newest_first = order != "asc"
        number = col(PromptVersionRow.version)
        with self.session() as s:
            query = select(PromptVersionRow).where(PromptVersionRow.prompt_id == prompt_id)
            if after is not None:
                query = query.where(number < after if newest_first else number > after)
            query = query.order_by(number.desc() if newest_first else number).limit(limit + 1)
            rows = list(s.exec(query).all())
        return Page(items=[_plain(r) for r in rows[:limit]], has_more=len(rows) > limit)


def _plain(row: PromptRow | PromptVersionRow) -> dict[str, Any]:
    """A row as a dict of its columns (``api.prompts`` renders the wire object)."""
    return {key: getattr(row, key) for key in type(row).model_fields}
