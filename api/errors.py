"""Every error leaves the API as OpenAI's error body, with the right status.

resq's own errors, pydantic errors, werkzeug's HTTP errors (404 route, 405 method, bad
JSON) and anything unexpected: never a traceback, never an HTML page.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import kombu.exceptions
import redis
import sqlalchemy.exc
from flask import Flask, Response, current_app, g, jsonify
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound

from shared import errors
from shared.schema.validation import to_invalid_request

log = logging.getLogger(__name__)


def error_response(exc: errors.ResqError) -> Response:
    response = jsonify(exc.body())
    response.status_code = exc.status
    if exc.should_retry is not None:
        response.headers["x-should-retry"] = "true" if exc.should_retry else "false"
    if isinstance(exc, errors.RateLimited):
        response.headers.update(exc.headers)
    return response


def _http(exc: HTTPException) -> Response:
    if isinstance(exc, NotFound):
        resq: errors.ResqError = errors.NotFound(
            "Not found: this route does not exist on the resq API.", code="unknown_url"
        )
    elif isinstance(exc, MethodNotAllowed):
        allowed = ", ".join(sorted(exc.valid_methods or []))
        resq = errors.MethodNotAllowed(
            f"Method not allowed for this route. Allowed: {allowed}.", code="method_not_allowed"
        )
    elif exc.code == 413:
        limit = current_app.config.get("MAX_CONTENT_LENGTH")
        resq = errors.InvalidRequest(
            f"The request body is larger than this server accepts ({limit} bytes; "
            "RESQ_MAX_BODY_BYTES).",
            code="request_too_large",
        )
        resq.status = 413
    elif (exc.code or 500) < 500:
        resq = errors.InvalidRequest(exc.description or exc.name, code="invalid_request")
        resq.status = exc.code or 400
    else:
        resq = errors.ServerError("The server had an error while processing your request.")
    return error_response(resq)


def _unexpected(exc: Exception) -> Response:
    log.exception("unhandled error in request %s", g.get("request_id"))
    return error_response(
        errors.ServerError("The server had an error while processing your request.")
    )


def _unavailable(what: str) -> Callable[[Exception], Response]:
    def handler(exc: Exception) -> Response:
        log.warning("request %s: %s unavailable: %s", g.get("request_id"), what, exc)
        return error_response(
            errors.ServiceUnavailable(
                f"resq's {what} is unavailable right now; retry the request shortly."
            )
        )

    return handler


def register(app: Flask) -> None:
    app.register_error_handler(errors.ResqError, error_response)
    # Redis or the database briefly away: a clear 503 (the SDK retries it), never a hang.
    app.register_error_handler(redis.exceptions.ConnectionError, _unavailable("Redis"))
    app.register_error_handler(redis.exceptions.TimeoutError, _unavailable("Redis"))
    app.register_error_handler(kombu.exceptions.OperationalError, _unavailable("broker"))
    app.register_error_handler(sqlalchemy.exc.OperationalError, _unavailable("database"))
    app.register_error_handler(sqlalchemy.exc.InterfaceError, _unavailable("database"))
    app.register_error_handler(ValidationError, lambda exc: error_response(to_invalid_request(exc)))
    app.register_error_handler(HTTPException, _http)
    app.register_error_handler(Exception, _unexpected)
