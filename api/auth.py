"""Bearer-key authentication. Each key maps to a tenant; every response belongs to one."""

from __future__ import annotations

import hashlib
import hmac

from flask import Request

from shared.errors import AuthenticationFailed

OPEN_TENANT = "default"


ADMIN_TENANT = "admin"  # the tenant an admin key acts as on the tenant endpoints


class Authenticator:
    def __init__(self, api_keys: dict[str, str], admin_keys: tuple[str, ...] = ()) -> None:
        self._by_digest = {self._digest(k): t for k, t in api_keys.items()}
        self._admin = [self._digest(k) for k in admin_keys]

    @staticmethod
    def _digest(key: str) -> bytes:
        return hashlib.sha256(key.encode()).digest()

    @property
    def open_mode(self) -> bool:
        return not self._by_digest

    def is_admin(self, request: Request) -> bool:
        """An admin key was presented; with no admin keys configured, an open-mode server
        treats everyone as admin (a development setup) and any other server no one."""
        if not self._admin:
            return self.open_mode
        key = _bearer(request)
        digest = self._digest(key) if key else b""
        return any(hmac.compare_digest(known, digest) for known in self._admin)

    def tenant(self, request: Request) -> str:
        if self.open_mode:
            return OPEN_TENANT
        key = _bearer(request)
        if key and self.is_admin(request):
            return ADMIN_TENANT
        if not key:
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


def _bearer(request: Request) -> str:
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    return key.strip() if scheme.lower() == "bearer" else ""
