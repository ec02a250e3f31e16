"""Bearer-key authentication. Each key maps to a tenant; every response belongs to one."""

from __future__ import annotations

import hashlib
import hmac

from flask import Request

from shared.errors import AuthenticationFailed

OPEN_TENANT = "default"


class Authenticator:
    def __init__(self, api_keys: dict[str, str]) -> None:
        self._by_digest = {self._digest(k): t for k, t in api_keys.items()}

    @staticmethod
    def _digest(key: str) -> bytes:
        return hashlib.sha256(key.encode()).digest()

    @property
    def open_mode(self) -> bool:
        return not self._by_digest

    def tenant(self, request: Request) -> str:
        if self.open_mode:
            return OPEN_TENANT
        header = request.headers.get("Authorization", "")
        scheme, _, key = header.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise AuthenticationFailed(
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                code="missing_api_key",
            )
        digest = self._digest(key)
        for known, tenant in self._by_digest.items():
            if hmac.compare_digest(known, digest):
                return tenant
        shown = f"{key[:3]}***{key[-4:]}" if len(key) > 8 else "***"
        raise AuthenticationFailed(f"Incorrect API key provided: {shown}.")
