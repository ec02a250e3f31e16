"""``/v1/models``: the models the routing table serves."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from api.deps import deps
from shared.errors import ModelNotFound, NotFound

bp = Blueprint("models", __name__, url_prefix="/v1/models")

CREATED = 1767225600  # 2026-01-01: routes have no creation date; a fixed one keeps output stable


def _model(name: str, owner: str) -> dict[str, object]:
    return {"id": name, "object": "model", "created": CREATED, "owned_by": owner}


@bp.get("")
def list_models() -> Response:
    router = deps().router
    data = [_model(name, router.resolve(name).provider) for name in router.model_names()]
    return jsonify({"object": "list", "data": data})


@bp.get("/<path:model>")
def retrieve_model(model: str) -> Response:
    router = deps().router
    try:
        route = router.resolve(model)
    except ModelNotFound:
        raise NotFound(
            f"The model '{model}' does not exist.", param="model", code="model_not_found"
        ) from None
    return jsonify(_model(model, route.provider))
