"""The resq error tree.

Every error resq reports to a client is one of these. Each carries the four fields of
OpenAI's error body (``message``, ``type``, ``param``, ``code``) and an HTTP status;
``api/errors.py`` renders them, and the worker turns job failures into a Response's
``error`` object.

    ResqError
    ├── InvalidRequest            400 invalid_request_error
    │   └── ModelNotFound         400 model_not_found
    ├── AuthenticationFailed      401
    ├── PermissionDenied          403
    ├── NotFound                  404
    ├── MethodNotAllowed          405
    ├── Conflict                  409
    │   └── IdempotencyKeyReused  409 idempotency_key_reused
    ├── ServerError               500 server_error
    └── ServiceUnavailable        503
"""

from __future__ import annotations


class ResqError(Exception):
    status: int = 500
    type: str = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        should_retry: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.should_retry = should_retry

    def body(self) -> dict[str, dict[str, str | None]]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequest(ResqError):
    status = 400
    type = "invalid_request_error"


class ModelNotFound(InvalidRequest):
    code = "model_not_found"


class AuthenticationFailed(ResqError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(ResqError):
    status = 403
    type = "permission_error"
    code = "permission_denied"


class NotFound(ResqError):
    status = 404
    type = "invalid_request_error"
    code = None


class MethodNotAllowed(ResqError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class Conflict(ResqError):
    status = 409
    type = "invalid_request_error"
    code = "conflict"


class IdempotencyKeyReused(Conflict):
    """An ``Idempotency-Key`` sent again, within its lifetime, with a different body."""

    code = "idempotency_key_reused"


class RateLimited(ResqError):
    """Over a tenant's limit (``shared.tenancy``): OpenAI's 429, with its headers."""

    status = 429
    type = "requests"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, type_: str, headers: dict[str, str]) -> None:
        super().__init__(message)
        self.type = type_
        self.headers = headers


class ServerError(ResqError):
    status = 500
    type = "server_error"
    code = "server_error"


class ServiceUnavailable(ResqError):
    status = 503
    type = "server_error"
    code = "service_unavailable"
