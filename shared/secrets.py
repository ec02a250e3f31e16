"""Credentials a request hands resq for one run (MCP ``headers`` and ``authorization``).

They are needed by the worker, so they travel through the store, encrypted with
``RESQ_SECRET_KEY`` (Fernet: AES-128-CBC with an HMAC), and are erased when the response
ends. They are never echoed in a Response and never logged. API and workers must share the
key; ``make run`` makes one per machine (``.resq/secret.key``).
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from shared.errors import InvalidRequest, ServerError


def _fernet(key: str) -> Fernet:
    # Any string works as the key: its SHA-256 is the Fernet key.
    return Fernet(base64.urlsafe_b64encode(hashlib.sha256(key.encode()).digest()))


def seal(key: str | None, secrets: dict[str, Any]) -> str:
    if key is None:
        raise InvalidRequest(
            "This resq server cannot accept MCP credentials ('headers' or 'authorization'): "
            "its operator has not set RESQ_SECRET_KEY.",
            param="tools",
            code="unsupported_parameter",
        )
    return _fernet(key).encrypt(json.dumps(secrets).encode()).decode()


def unseal(key: str | None, token: str) -> dict[str, Any]:
    if key is None:
        raise ServerError("RESQ_SECRET_KEY is not set on this worker: cannot read credentials.")
    try:
        found: dict[str, Any] = json.loads(_fernet(key).decrypt(token.encode()))
    except InvalidToken:
        raise ServerError(
            "The response's credentials were sealed with another RESQ_SECRET_KEY."
        ) from None
    return found
