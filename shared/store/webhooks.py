"""Webhook queries: endpoints, the event outbox, deliveries and their attempts.

Events and their deliveries are written with the terminal status (``shared.store.outbox``).
Sending is the worker's job (``worker.delivery``); a delivery is taken with a
lease (``claim``), so two workers never send the same attempt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, or_, update
from sqlmodel import Session, col, delete, select

from shared.store.engine import Queries
from shared.store.outbox import PENDING, QUEUED_GRACE_SECONDS
from shared.store.tables import (
    WebhookAttemptRow,
    WebhookDeliveryRow,
    WebhookEndpointRow,
    WebhookEventRow,
)


@dataclass(frozen=True)
class Claimed:
    delivery: WebhookDeliveryRow
    event: WebhookEventRow
    endpoint: WebhookEndpointRow


@dataclass(frozen=True)
class DeliveryView:
    delivery: WebhookDeliveryRow
    event: WebhookEventRow
    attempts: list[WebhookAttemptRow]


Listed = WebhookEndpointRow | WebhookDeliveryRow


def _older(model: type[Listed], anchor: Listed) -> ColumnElement[bool]:
    """Rows listed after ``anchor`` in newest-first order (ties broken by id)."""
    return or_(
        col(model.created_at) < anchor.created_at,
        (col(model.created_at) == anchor.created_at) & (col(model.id) < anchor.id),
    )


def _newest_first(query: Any, model: type[Listed], limit: int) -> Any:
    """``query`` (a select of ``model``, maybe joined) newest first, ``limit`` rows."""
    return query.order_by(col(model.created_at).desc(), col(model.id).desc()).limit(limit)


def _endpoint(s: Session, tenant: str, endpoint_id: str) -> WebhookEndpointRow | None:
    """The tenant's endpoint; another tenant's is not found."""
    row = s.get(WebhookEndpointRow, endpoint_id)
    return row if row is not None and row.tenant == tenant else None


def _delivery(
    s: Session, tenant: str, endpoint_id: str, delivery_id: str
) -> WebhookDeliveryRow | None:
    """The tenant's delivery to that endpoint; any other is not found."""
    row = s.get(WebhookDeliveryRow, delivery_id)
    if row is None or row.tenant != tenant or row.endpoint_id != endpoint_id:
        return None
    return row


class WebhookStore(Queries):
    # ---- endpoints ---------------------------------------------------------------------

    def create_endpoint(self, endpoint: WebhookEndpointRow) -> WebhookEndpointRow:
        with self.session() as s:
            s.add(endpoint)
            s.commit()
            return endpoint

    def get_endpoint(self, *, tenant: str, endpoint_id: str) -> WebhookEndpointRow | None:
        with self.session() as s:
            return _endpoint(s, tenant, endpoint_id)

    def list_endpoints(
        self, *, tenant: str, after: str | None, limit: int
    ) -> tuple[list[WebhookEndpointRow], bool]:
        """Newest first, ``limit`` at most, starting after the endpoint ``after``."""
        with self.session() as s:
            query = select(WebhookEndpointRow).where(col(WebhookEndpointRow.tenant) == tenant)
            if after is not None:
                anchor = _endpoint(s, tenant, after)
                if anchor is None:
                    return [], False
                query = query.where(_older(WebhookEndpointRow, anchor))
            rows = list(s.exec(_newest_first(query, WebhookEndpointRow, limit + 1)).all())
            return rows[:limit], len(rows) > limit

    def update_endpoint(
        self, *, tenant: str, endpoint_id: str, changes: dict[str, Any], now: int
    ) -> WebhookEndpointRow | None:
        with self.session() as s:
            row = _endpoint(s, tenant, endpoint_id)
            if row is None:
                return None
            changed = {k: v for k, v in changes.items() if getattr(row, k) != v}
            for key, value in changed.items():
                setattr(row, key, value)
            if changed:
                row.updated_at = now
                s.add(row)
                s.commit()
            return row

    def rotate_secret(
        self, *, tenant: str, endpoint_id: str, secret: str, keep_old_until: int | None, now: int
    ) -> WebhookEndpointRow | None:
        with self.session() as s:
            row = _endpoint(s, tenant, endpoint_id)
            if row is None:
                return None
            row.old_secret = row.secret if keep_old_until is not None else None
            row.old_secret_until = keep_old_until
            row.secret = secret
            row.updated_at = now
            s.add(row)
            s.commit()
            return row

    def delete_endpoint(self, *, tenant: str, endpoint_id: str) -> bool:
        with self.session() as s:
            row = _endpoint(s, tenant, endpoint_id)
            if row is None:
                return False
            deliveries = select(WebhookDeliveryRow.id).where(
                col(WebhookDeliveryRow.endpoint_id) == endpoint_id
            )
            # Explicit, like the cascade, for connections without SQLite's foreign_keys.
            s.execute(
                delete(WebhookAttemptRow).where(col(WebhookAttemptRow.delivery_id).in_(deliveries))
            )
            s.execute(
                delete(WebhookDeliveryRow).where(col(WebhookDeliveryRow.endpoint_id) == endpoint_id)
            )
            s.delete(row)
            s.commit()
            return True

    # ---- the delivery log --------------------------------------------------------------

    def list_deliveries(
        self, *, tenant: str, endpoint_id: str, after: str | None, limit: int
    ) -> tuple[list[DeliveryView], bool]:
        """Newest first; ``after`` is a delivery id from the previous page."""
        with self.session() as s:
            query = (
                select(WebhookDeliveryRow, WebhookEventRow)
                .join(WebhookEventRow, col(WebhookEventRow.id) == WebhookDeliveryRow.event_id)
                .where(
                    col(WebhookDeliveryRow.endpoint_id) == endpoint_id,
                    col(WebhookDeliveryRow.tenant) == tenant,
                )
            )
            if after is not None:
                anchor = s.get(WebhookDeliveryRow, after)
                if anchor is None or anchor.endpoint_id != endpoint_id:
                    return [], False
                query = query.where(_older(WebhookDeliveryRow, anchor))
            rows = list(s.exec(_newest_first(query, WebhookDeliveryRow, limit + 1)).all())
            views = [
                DeliveryView(delivery, event, self._attempts(s, delivery.id))
                for delivery, event in rows[:limit]
            ]
            return views, len(rows) > limit

    def get_delivery(
        self, *, tenant: str, endpoint_id: str, delivery_id: str
    ) -> DeliveryView | None:
        with self.session() as s:
            delivery = _delivery(s, tenant, endpoint_id, delivery_id)
            if delivery is None:
                return None
            event = s.get(WebhookEventRow, delivery.event_id)
            assert event is not None
            return DeliveryView(delivery, event, self._attempts(s, delivery_id))

    @staticmethod
    def _attempts(s: Session, delivery_id: str) -> list[WebhookAttemptRow]:
        return list(
            s.exec(
                select(WebhookAttemptRow)
                .where(col(WebhookAttemptRow.delivery_id) == delivery_id)
                .order_by(col(WebhookAttemptRow.number))
            ).all()
        )

    def redeliver(
        self, *, tenant: str, endpoint_id: str, delivery_id: str, now: float
    ) -> DeliveryView | None:
        """Make a delivery due again (delivered or failed ones too). A failed one gets one
        more attempt; a pending one simply goes now."""
        with self.session() as s:
            delivery = _delivery(s, tenant, endpoint_id, delivery_id)
            if delivery is None:
                return None
            s.execute(
                update(WebhookDeliveryRow)
                .where(col(WebhookDeliveryRow.id) == delivery_id)
                .values(status=PENDING, next_attempt_at=now + QUEUED_GRACE_SECONDS)
            )
            s.commit()
        return self.get_delivery(tenant=tenant, endpoint_id=endpoint_id, delivery_id=delivery_id)

    # ---- sending -----------------------------------------------------------------------

    def claim(self, *, delivery_id: str, attempts: int, now: float, lease: float) -> Claimed | None:
        """Take a pending delivery for one attempt. ``attempts`` is the count the sender saw
        when it queued the send: a stale duplicate message finds a different count and
        does nothing."""
        with self.session() as s:
            result = s.execute(
                update(WebhookDeliveryRow)
                .where(
                    col(WebhookDeliveryRow.id) == delivery_id,
                    col(WebhookDeliveryRow.status) == PENDING,
                    col(WebhookDeliveryRow.attempts) == attempts,
                    or_(
                        col(WebhookDeliveryRow.lease_until).is_(None),
                        col(WebhookDeliveryRow.lease_until) < now,
                    ),
                )
                .values(lease_until=now + lease)
            )
            s.commit()
            if result.rowcount != 1:  # type: ignore[attr-defined]
                return None
            delivery = s.get(WebhookDeliveryRow, delivery_id)
            assert delivery is not None
            event = s.get(WebhookEventRow, delivery.event_id)
            endpoint = s.get(WebhookEndpointRow, delivery.endpoint_id)
            if event is None or endpoint is None:
                return None
            return Claimed(delivery, event, endpoint)

    def record_attempt(
        self,
        attempt: WebhookAttemptRow,
        *,
        status: str,
        next_attempt_at: float | None,
        delivered_at: int | None,
    ) -> None:
        """Store one attempt's outcome and release the lease, in one transaction."""
        with self.session() as s:
            s.add(attempt)
            s.execute(
                update(WebhookDeliveryRow)
                .where(col(WebhookDeliveryRow.id) == attempt.delivery_id)
                .values(
                    attempts=attempt.number,
                    status=status,
                    next_attempt_at=next_attempt_at,
                    lease_until=None,
                    delivered_at=delivered_at,
                )
            )
            s.commit()

    def take_due(self, *, now: float, limit: int = 500) -> list[tuple[str, int]]:
        """Pending deliveries whose time has come and that nobody holds, as (id, attempts);
        each is pushed ``QUEUED_GRACE_SECONDS`` ahead so the next sweep skips it while its
        send waits in the queue."""
        with self.session() as s:
            rows = s.exec(
                select(WebhookDeliveryRow.id, WebhookDeliveryRow.attempts)
                .where(
                    col(WebhookDeliveryRow.status) == PENDING,
                    col(WebhookDeliveryRow.next_attempt_at) <= now,
                    or_(
                        col(WebhookDeliveryRow.lease_until).is_(None),
                        col(WebhookDeliveryRow.lease_until) < now,
                    ),
                )
                .order_by(col(WebhookDeliveryRow.next_attempt_at))
                .limit(limit)
            ).all()
            taken: list[tuple[str, int]] = []
            for delivery_id, attempts in rows:
                result = s.execute(
                    update(WebhookDeliveryRow)
                    .where(
                        col(WebhookDeliveryRow.id) == delivery_id,
                        col(WebhookDeliveryRow.status) == PENDING,
                        col(WebhookDeliveryRow.next_attempt_at) <= now,
                    )
                    .values(next_attempt_at=now + QUEUED_GRACE_SECONDS)
                )
                if result.rowcount == 1:  # type: ignore[attr-defined]
                    taken.append((delivery_id, attempts))
            s.commit()
            return taken
