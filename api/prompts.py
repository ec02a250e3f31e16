"""``/v1/prompts``: a tenant's prompts and their immutable versions (resq's own API, in
OpenAI's style: ``pmpt_…`` ids, cursor lists, the usual error body).

    POST   /v1/prompts                          create, with version 1
    GET    /v1/prompts                          list
    GET    /v1/prompts/{id}                     retrieve
    POST   /v1/prompts/{id}                     update name, description, metadata, default_version
    DELETE /v1/prompts/{id}                     delete, with every version
    POST   /v1/prompts/{id}/versions            save the next version
    GET    /v1/prompts/{id}/versions            list versions
    GET    /v1/prompts/{id}/versions/{version}  retrieve one

A version is checked in full before it is saved (``check_version``): its settings by the
create request's own rules, its model against the routes, its templates compiled in the
sandbox, its variables schema and its ``text.format`` schema as JSON Schemas.
"""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, Response, g, jsonify, request

from api.body import json_body
from api.capabilities import check_json_schema, check_schema
from api.deps import Deps, deps
from api.query import list_page, list_params
from shared import ids
from shared.errors import InvalidRequest, NotFound, ResqError
from shared.prompts.render import check_template
from shared.schema.prompts import CreatePrompt, PromptVersionBody, UpdatePrompt
from shared.schema.requests import parse_create_request
from shared.schema.validation import parse_body
from shared.store.prompts import NameTaken, PromptStore
from shared.store.tables import PromptRow

bp = Blueprint("prompts", __name__, url_prefix="/v1/prompts")


def prompt_object(row: PromptRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "prompt",
        "name": row.name,
        "description": row.description,
        "default_version": str(row.default_version),
        "latest_version": str(row.latest_version),
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "metadata": row.meta or {},
    }


def version_object(
    prompt_id: str, version: int, created_at: int, body: dict[str, Any]
) -> dict[str, Any]:
    return {
        "id": prompt_id,
        "object": "prompt.version",
        "version": str(version),
        "created_at": created_at,
        **body,
    }


def _store() -> PromptStore:
    return PromptStore(deps().store)


def find_prompt(
    store: PromptStore, tenant: str, prompt_id: str, param: str = "prompt_id"
) -> PromptRow:
    row = store.get(tenant=tenant, prompt_id=prompt_id)
    if row is None:
        raise NotFound(f"Prompt with id '{prompt_id}' not found.", param=param)
    return row


def version_number(raw: str, param: str) -> int:
    if not raw.isdigit() or int(raw) < 1:
        raise InvalidRequest(
            f'Invalid version \'{raw}\': expected a version number ("1", "2", ...).',
            param=param,
            code="invalid_value",
        )
    return int(raw)


def _at(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def prefixed(exc: ResqError, prefix: str) -> ResqError:
    """``exc`` with its param named inside ``prefix`` (``version.temperature``,
    ``prompt.id``)."""
    if prefix:
        exc.param = _at(prefix, exc.param) if exc.param else prefix
    return exc


def check_version(d: Deps, body: PromptVersionBody, prefix: str = "version") -> dict[str, Any]:
    """Check a version in full before it is saved; its definition as stored."""
    settings = body.settings()
    try:
        req = parse_create_request({**settings, "model": body.model or "-", "input": "-"})
        check_json_schema(req)
    except ResqError as exc:
        raise prefixed(exc, prefix) from None
    if body.model is not None:
        try:
            d.router.resolve(body.model)
        except ResqError as exc:
            raise prefixed(exc, prefix) from None
    if body.instructions is not None:
        check_template(body.instructions, _at(prefix, "instructions"))
    for i, message in enumerate(body.messages):
        check_template(message.content, _at(prefix, f"messages[{i}].content"))
    if body.variables is not None:
        check_schema(
            body.variables,
            what="Invalid JSON Schema for the variables",
            param=_at(prefix, "variables"),
        )
    return body.dump()


def _name_taken(name: str) -> InvalidRequest:
    return InvalidRequest(
        f"A prompt named '{name}' already exists.", param="name", code="invalid_value"
    )


@bp.post("")
def create() -> Response:
    d = deps()
    body = parse_body(CreatePrompt, json_body())
    version = check_version(d, body.version)
    now = int(time.time())
    row = PromptRow(
        id=ids.new_id(ids.PROMPT),
        tenant=g.tenant,
        name=body.name,
        description=body.description,
        meta=dict(body.metadata or {}),
        default_version=1,
        latest_version=1,
        created_at=now,
        updated_at=now,
    )
    try:
        _store().create(row, version)
    except NameTaken:
        raise _name_taken(body.name) from None
    return jsonify(prompt_object(row))


@bp.get("")
def list_prompts() -> Response:
    limit, order = list_params()
    after = request.args.get("after")
    page = _store().list(tenant=g.tenant, limit=limit, order=order, after=after)
    if page is None:
        raise InvalidRequest(f"No prompt with id '{after}'.", param="after", code="invalid_value")
    return list_page([prompt_object(PromptRow(**r)) for r in page.items], page.has_more)


@bp.get("/<prompt_id>")
def retrieve(prompt_id: str) -> Response:
    return jsonify(prompt_object(find_prompt(_store(), g.tenant, prompt_id)))


@bp.post("/<prompt_id>")
def update(prompt_id: str) -> Response:
    store = _store()
    row = find_prompt(store, g.tenant, prompt_id)
    body = parse_body(UpdatePrompt, json_body())
    changes: dict[str, Any] = {}
    if body.name is not None:
        changes["name"] = body.name
    if "description" in body.model_fields_set:
        changes["description"] = body.description
    if body.metadata is not None:
        changes["meta"] = dict(body.metadata)
    if body.default_version is not None:
        number = version_number(body.default_version, "default_version")
        if number > row.latest_version:
            raise InvalidRequest(
                f"Prompt '{prompt_id}' has no version '{body.default_version}' "
                f"(latest: '{row.latest_version}').",
                param="default_version",
                code="invalid_value",
            )
        changes["default_version"] = number
    try:
        updated = store.update(
            tenant=g.tenant, prompt_id=prompt_id, changes=changes, now=int(time.time())
        )
    except NameTaken:
        raise _name_taken(str(body.name)) from None
    if updated is None:
        find_prompt(store, g.tenant, prompt_id)  # raises the 404
    assert updated is not None
    return jsonify(prompt_object(updated))


@bp.delete("/<prompt_id>")
def delete(prompt_id: str) -> Response:
    if not _store().delete(tenant=g.tenant, prompt_id=prompt_id):
        find_prompt(_store(), g.tenant, prompt_id)  # raises the 404
    return jsonify({"id": prompt_id, "object": "prompt.deleted", "deleted": True})


@bp.post("/<prompt_id>/versions")
def create_version(prompt_id: str) -> Response:
    d = deps()
    store = _store()
    find_prompt(store, g.tenant, prompt_id)
    body = check_version(d, parse_body(PromptVersionBody, json_body()), prefix="")
    saved = store.add_version(tenant=g.tenant, prompt_id=prompt_id, body=body, now=int(time.time()))
    if saved is None:
        find_prompt(store, g.tenant, prompt_id)  # deleted meanwhile: the 404
    assert saved is not None
    return jsonify(version_object(prompt_id, saved.version, saved.created_at, saved.body))


@bp.get("/<prompt_id>/versions")
def list_versions(prompt_id: str) -> Response:
    store = _store()
    find_prompt(store, g.tenant, prompt_id)
    limit, order = list_params()
    after = request.args.get("after")
    number = version_number(after, "after") if after is not None else None
    page = store.versions(prompt_id=prompt_id, limit=limit, order=order, after=number)
    data = [version_object(prompt_id, r["version"], r["created_at"], r["body"]) for r in page.items]
    return list_page(data, page.has_more)


@bp.get("/<prompt_id>/versions/<version>")
def retrieve_version(prompt_id: str, version: str) -> Response:
    store = _store()
    find_prompt(store, g.tenant, prompt_id)
    found = store.version(prompt_id=prompt_id, version=version_number(version, "version"))
    if found is None:
        raise NotFound(f"Prompt '{prompt_id}' has no version '{version}'.", param="version")
    return jsonify(version_object(prompt_id, found.version, found.created_at, found.body))
