"""``/healthz`` (liveness) and ``/readyz`` (readiness), both public.

``/healthz`` answers while the process serves HTTP: restart it if this fails. ``/readyz``
answers 200 only when the parts a request needs answer: Redis, the database, and at least one
worker with a fresh heartbeat (``shared.presence``); otherwise 503, naming what is down, in
the OpenAI error envelope plus a ``checks`` object. Send traffic only while it is 200.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
import sqlalchemy.exc
from flask import Blueprint, Response, jsonify

from api.deps import deps
from shared.errors import ServiceUnavailable
from shared.presence import fresh_workers

log = logging.getLogger(__name__)

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


def _checks() -> dict[str, dict[str, Any]]:
    d = deps()
    checks: dict[str, dict[str, Any]] = {}
    try:
        d.bus.redis.ping()
        workers = fresh_workers(d.bus.redis)
        checks["redis"] = {"ok": True}
        checks["workers"] = {"ok": bool(workers), "fresh": len(workers)}
        if not workers:
            checks["workers"]["error"] = "no worker has sent a heartbeat recently"
    except redis.RedisError as exc:
        checks["redis"] = {"ok": False, "error": f"Redis does not answer: {exc}"}
        checks["workers"] = {"ok": False, "error": "unknown while Redis is down"}
    try:
        d.store.ping()
        checks["database"] = {"ok": True}
    except sqlalchemy.exc.SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        checks["database"] = {"ok": False, "error": f"the database does not answer: {reason}"}
    return checks


@bp.get("/readyz")
def readyz() -> Response:
    checks = _checks()
    down = [name for name, check in checks.items() if not check["ok"]]
    if not down:
        return jsonify({"status": "ready", "checks": checks})
    error = ServiceUnavailable(f"resq is not ready: {', '.join(down)} down.")
    response = jsonify({**error.body(), "status": "unavailable", "checks": checks})
    response.status_code = error.status
    return response
