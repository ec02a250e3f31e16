"""The admin API over HTTP, as the ``resq`` command line talks to it: where the API is, the
key it is called with, and every way a call fails turned into one :class:`CliError`. The
``prompts`` commands use the same client with a tenant's API key instead of the admin key."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_TIMEOUT_SECONDS = 30.0
EXIT_API_ERROR = 1
EXIT_UNREACHABLE = 2
ADMIN_KEY_ENV = "RESQ_ADMIN_KEY"
API_KEY_ENV = "RESQ_API_KEY"  # a tenant's key, for the commands that act as a tenant
_KEY_NAMES = {ADMIN_KEY_ENV: "the admin key", API_KEY_ENV: "a tenant's API key"}

Json = dict[str, Any]  # the admin API's answers, read as they came


class CliError(Exception):
    """Ends the command: ``message`` goes to stderr and ``exit_code`` is the exit status."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def normalize_url(url: str) -> str:
    """The server's root: accepts ``http://host:8080``, ``…/`` and the SDK-style ``…/v1``."""
    url = url.strip().rstrip("/")
    return url.removesuffix("/v1")


def error_message(response: httpx.Response, key_env: str = ADMIN_KEY_ENV) -> str:
    """The API's ``{"error": {"message"}}``, or what the status says when there is none; a 401
    says how to pass the key read from ``key_env``."""
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    hint = ""
    if response.status_code == 401:
        hint = f"; pass {_KEY_NAMES.get(key_env, 'the key')} with --key or set {key_env}"
    if isinstance(error, dict) and error.get("message"):
        return f"{error['message']} (HTTP {response.status_code}){hint}"
    status = f"the API answered HTTP {response.status_code} {response.reason_phrase}".rstrip()
    return status + hint


def default_url(env: Mapping[str, str]) -> str:
    """``RESQ_URL``, else the address a server started with the same ``RESQ_HOST`` and
    ``RESQ_PORT`` listens on (a wildcard host is reached on loopback)."""
    if env.get("RESQ_URL"):
        return env["RESQ_URL"]
    host = env.get("RESQ_HOST") or "127.0.0.1"
    if host in ("0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{env.get('RESQ_PORT') or '8080'}"


class AdminApi:
    def __init__(
        self,
        url: str,
        key: str | None,
        *,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        transport: httpx.BaseTransport | None = None,
        key_env: str = ADMIN_KEY_ENV,
    ) -> None:
        self.url = normalize_url(url)
        self.key_env = key_env
        headers = {"user-agent": "resq-cli"}
        if key:
            headers["authorization"] = f"Bearer {key}"
        self.http = httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout, transport=transport
        )

    def __enter__(self) -> AdminApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def get(self, path: str, params: dict[str, str] | None = None) -> Json:
        return self.request("GET", path, params)

    def post(self, path: str, body: Json | None = None) -> Json:
        return self.request("POST", path, body=body)

    def request(
        self,
        method: str,
        path: str,
        params: dict[str, str] | None = None,
        *,
        body: Json | None = None,
    ) -> Json:
        try:
            response = self.http.request(method, path, params=params, json=body)
        except httpx.ConnectError as exc:
            reason = "connection refused" if "refused" in str(exc).lower() else str(exc)
            raise CliError(
                f"cannot reach the resq API at {self.url}: {reason} "
                "(is it running? set --url or RESQ_URL)",
                EXIT_UNREACHABLE,
            ) from None
        except httpx.TimeoutException:
            message = f"the resq API at {self.url} did not answer in time"
            raise CliError(message, EXIT_UNREACHABLE) from None
        except httpx.HTTPError as exc:
            message = f"cannot talk to the resq API at {self.url}: {exc}"
            raise CliError(message, EXIT_UNREACHABLE) from None
        if response.is_error:
            raise CliError(error_message(response, self.key_env), EXIT_API_ERROR)
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise CliError(f"{method} {path} answered something that is not a JSON object", 1)
        return body
