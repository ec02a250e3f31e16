"""Retry arithmetic for upstream calls: how long to wait, and how a failed attempt is told.

Pure functions and one exception; the provider that loops over attempts is in
``chat_completions``.
"""

from __future__ import annotations

import email.utils
import math
import random
from datetime import UTC

import httpx

from worker.providers.base import ProviderError

BACKOFF_BASE_SECONDS = 0.5  # the first retry waits up to this long
BACKOFF_CAP_SECONDS = 8.0  # no single backoff wait is longer


def retry_after_seconds(headers: httpx.Headers, now: float) -> float | None:
    """How long the upstream asked us to wait (``retry-after-ms``, else ``retry-after`` in
    seconds or as an HTTP date, relative to the wall-clock ``now``), or None."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            ms = float(raw_ms)
            if math.isfinite(ms):
                return max(ms / 1000, 0.0)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        seconds = float(raw)
        return max(seconds, 0.0) if math.isfinite(seconds) else None
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000": UTC with no zone information
        when = when.replace(tzinfo=UTC)
    return max(when.timestamp() - now, 0.0)


def backoff_seconds(attempt: int, rng: random.Random) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2 ** (attempt - 1))] after failed ``attempt``."""
    ceiling = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** min(attempt - 1, 32))
    return rng.uniform(0, ceiling)


def attempts_text(n: int) -> str:
    return f"{n} attempt" if n == 1 else f"{n} attempts"


class AttemptFailed(Exception):
    """One attempt failed. ``head`` says what the upstream did (``upstream URL answered HTTP
    500``), ``detail`` what it said; the final ``ProviderError`` message is built from both."""

    def __init__(
        self,
        head: str,
        detail: str,
        *,
        code: str = "server_error",
        status: int | None = None,
        retryable: bool = True,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{head}: {detail}")
        self.head = head
        self.detail = detail
        self.code = code
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after

    def given_up(self, attempts: int, why: str = "") -> ProviderError:
        message = f"{self.head} after {attempts_text(attempts)}{why}: {self.detail}"
        return ProviderError(message, code=self.code, status=self.status)

    def midstream(self) -> ProviderError:
        message = (
            f"{self.head}: {self.detail} (failed mid-stream after output had started; not retried)"
        )
        return ProviderError(message, code=self.code, status=self.status)
