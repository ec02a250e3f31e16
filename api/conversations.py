"""``/v1/conversations``: conversations and their items (spec digest §7.5)."""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, Response, g, jsonify, request

from api.body import json_body
from api.deps import deps
from api.inputs import resolve_items
from api.query import list_page, list_params
from shared import ids
from shared.errors import InvalidRequest, NotFound
from shared.schema.conversations import CreateConversation, CreateItems, UpdateConversation
from shared.schema.items import InputItem
from shared.schema.validation import parse_body
from shared.store.conversations import ConversationStore
from shared.store.tables import ConversationRow

bp = Blueprint("conversations", __name__, url_prefix="/v1/conversations")


def conversation_object(row: ConversationRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "conversation",
        "created_at": row.created_at,
        "metadata": row.meta or {},
    }


def deleted_object(conversation_id: str) -> dict[str, Any]:
    return {"id": conversation_id, "object": "conversation.deleted", "deleted": True}


def _store() -> ConversationStore:
    return ConversationStore(deps().store)


def _conversation(conversation_id: str) -> ConversationRow:
    row = _store().get(tenant=g.tenant, conversation_id=conversation_id)
    if row is None:
        raise NotFound(
            f"Conversation with id '{conversation_id}' not found.", param="conversation_id"
        )
    return row


def _items(items: list[InputItem] | None) -> list[dict[str, Any]]:
    normalized = [item.normalized() for item in items or []]
    return resolve_items(deps(), g.tenant, normalized, name="items")


@bp.post("")
def create() -> Response:
    body = parse_body(CreateConversation, json_body())
    row = ConversationRow(
        id=ids.new_id(ids.CONVERSATION),
        tenant=g.tenant,
        created_at=int(time.time()),
        meta=dict(body.metadata or {}),
    )
    _store().create(row, _items(body.items))
    return jsonify(conversation_object(row))


@bp.get("/<conversation_id>")
def retrieve(conversation_id: str) -> Response:
    return jsonify(conversation_object(_conversation(conversation_id)))


@bp.post("/<conversation_id>")
def update(conversation_id: str) -> Response:
    body = parse_body(UpdateConversation, json_body())
    row = _store().update_metadata(
        tenant=g.tenant, conversation_id=conversation_id, metadata=dict(body.metadata or {})
    )
    if row is None:
        _conversation(conversation_id)  # raises the 404
    assert row is not None
    return jsonify(conversation_object(row))


@bp.delete("/<conversation_id>")
def delete(conversation_id: str) -> Response:
    if not _store().delete(tenant=g.tenant, conversation_id=conversation_id):
        _conversation(conversation_id)  # raises the 404
    return jsonify(deleted_object(conversation_id))


@bp.post("/<conversation_id>/items")
def create_items(conversation_id: str) -> Response:
    row = _conversation(conversation_id)
    body = parse_body(CreateItems, json_body())
    items = _store().add_items(
        conversation_id=row.id, items=_items(body.items), now=int(time.time())
    )
    return list_page(items, has_more=False)


@bp.get("/<conversation_id>/items")
def list_items(conversation_id: str) -> Response:
    row = _conversation(conversation_id)
    limit, order = list_params()
    after = request.args.get("after")
    page = _store().list_items(conversation_id=row.id, limit=limit, order=order, after=after)
    if page is None:
        raise InvalidRequest(
            f"No item with id '{after}' in conversation '{row.id}'.",
            param="after",
            code="invalid_value",
        )
    return list_page(page.items, page.has_more)


@bp.get("/<conversation_id>/items/<item_id>")
def retrieve_item(conversation_id: str, item_id: str) -> Response:
    row = _conversation(conversation_id)
    item = _store().get_item(conversation_id=row.id, item_id=item_id)
    if item is None:
        raise NotFound(
            f"Item with id '{item_id}' not found in conversation '{row.id}'.", param="item_id"
        )
    return jsonify(item)


@bp.delete("/<conversation_id>/items/<item_id>")
def delete_item(conversation_id: str, item_id: str) -> Response:
    row = _conversation(conversation_id)
    if not _store().delete_item(conversation_id=row.id, item_id=item_id):
        raise NotFound(
            f"Item with id '{item_id}' not found in conversation '{row.id}'.", param="item_id"
        )
    return jsonify(conversation_object(row))
