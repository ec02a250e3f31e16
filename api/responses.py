"""``/v1/responses``: create, retrieve, cancel, delete, input items."""

from __future__ import annotations

from flask import Blueprint, Response, g, jsonify, request

from api import creation, inputs, service
from api.body import json_body
from api.deps import Deps, deps
from api.query import list_page, list_params, query_bool, query_int
from api.sse import relay, sse_response
from shared.errors import InvalidRequest

bp = Blueprint("responses", __name__, url_prefix="/v1/responses")

IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_IDEMPOTENCY_KEY_LENGTH = 255
REPLAYED_HEADER = "idempotent-replayed"


def idempotency_key() -> str | None:
    """The ``Idempotency-Key`` header: absent, or 1 to 255 characters."""
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return None
    if not 0 < len(key) <= MAX_IDEMPOTENCY_KEY_LENGTH:
        raise InvalidRequest(
            f"Invalid '{IDEMPOTENCY_HEADER}' header: expected 1 to "
            f"{MAX_IDEMPOTENCY_KEY_LENGTH} characters, got {len(key)}.",
            param=IDEMPOTENCY_HEADER,
            code="invalid_value",
        )
    return key


@bp.post("")
def create() -> Response:
    """A new response, or, for a repeated ``Idempotency-Key``, the original one in the
    shape this request asks for (see ``creation.create``), marked ``idempotent-replayed``."""
    d = deps()
    created = creation.create(d, json_body(), tenant=g.tenant, idempotency_key=idempotency_key())
    g.enqueued = True
    answer = _answer(d, created)
    if created.replayed:
        answer.headers[REPLAYED_HEADER] = "true"
    return answer


def _answer(d: Deps, created: creation.Created) -> Response:
    row, replayed = created.row, created.replayed
    if created.req.stream:
        if replayed:
            service.check_replayable(d, row)
        return sse_response(
            relay(
                d,
                row.id,
                after=-1,
                # A replay only watches: the request that started the job decides its fate.
                cancel_on_disconnect=not row.background and not replayed,
                client_socket=request.environ.get("gunicorn.socket"),
            )
        )
    if row.background:
        # A replay shows the response as it is now; a new one has no output yet.
        return jsonify(d.store.render(row, output=None if replayed else []))
    return Response(service.wait_for_end(d, row), mimetype="application/json")


@bp.post("/input_tokens")
def input_tokens() -> Response:
    return jsonify(inputs.count_input_tokens(deps(), json_body(), tenant=g.tenant))


@bp.post("/compact")
def compact() -> Response:
    d = deps()
    g.enqueued = True
    return jsonify(inputs.compact(d, json_body(), tenant=g.tenant))


@bp.get("/<response_id>")
def retrieve(response_id: str) -> Response:
    d = deps()
    row = service.get_row(d, response_id, tenant=g.tenant)
    if query_bool("stream"):
        if not row.background:
            raise InvalidRequest(
                "Streaming is not enabled for this response: only background responses can "
                "be streamed with GET.",
                param="stream",
                code="invalid_request",
            )
        after = query_int("starting_after", -1, -1)
        assert after is not None
        service.check_replayable(d, row)
        return sse_response(
            relay(
                d,
                row.id,
                after=after,
                cancel_on_disconnect=False,
                client_socket=request.environ.get("gunicorn.socket"),
            )
        )
    # ``include[]`` on a retrieve says what this read shows (as on create; default: the create's).
    include = request.args.getlist("include[]") or request.args.getlist("include") or None
    return jsonify(d.store.render(row, include=include))


@bp.delete("/<response_id>")
def delete(response_id: str) -> Response:
    return jsonify(service.delete(deps(), response_id, tenant=g.tenant))


@bp.post("/<response_id>/cancel")
def cancel(response_id: str) -> Response:
    return jsonify(service.cancel(deps(), response_id, tenant=g.tenant))


@bp.get("/<response_id>/input_items")
def input_items(response_id: str) -> Response:
    d = deps()
    row = service.get_row(d, response_id, tenant=g.tenant)
    limit, order = list_params()
    page = d.store.list_input_items(
        response_id=row.id,
        limit=limit,
        order=order,
        after=request.args.get("after"),
        before=request.args.get("before"),
    )
    return list_page(page.items, page.has_more)
