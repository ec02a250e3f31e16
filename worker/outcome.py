"""How a run ends: its ``Outcome``, the reasons a run stops early, and the one function that
turns any failure into the Response's ``error`` object.

    Exception
    ├── Stop                 the run must end now (raised by ``worker.run``)
    │   ├── Cancelled        a cancel arrived → cancelled
    │   ├── HandBack         shutting down, or Redis away, nothing streamed yet → queued again
    │   ├── ShutDown         shutting down after output had started → failed
    │   ├── EarlierOutput    an earlier attempt's output is on the log → failed
    │   └── OverTime         over the job time limit → failed
    ├── ProviderError        the upstream failed → failed, its code and message
    ├── OutputInvalid        the answers kept failing validation → failed, the first problem
    ├── ResqError            the job cannot be prepared (chain, context, credentials) → failed
    └── anything else        a resq bug → failed, server_error
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from shared.errors import ResqError
from shared.schema.response import Status
from worker.providers.base import ProviderError
from worker.structured import OutputInvalid

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    status: Status
    error: dict[str, Any] | None = None
    incomplete_details: dict[str, Any] | None = None


class Stop(Exception):
    """The run must end now, whatever it was doing."""


class Cancelled(Stop):
    pass


class HandBack(Stop):
    """Nothing but the lifecycle events went out, and the run cannot go on here: the worker is
    shutting down (``worker.drain``), or Redis stopped answering (it is being restarted). The
    job goes back to the queue, untouched, and runs again from the start."""

    def __init__(self, reason: str = "the worker is shutting down") -> None:
        super().__init__(reason)
        self.reason = reason


class ShutDown(Stop):
    pass


class EarlierOutput(Stop):
    """A claimed job whose log already holds output of an earlier attempt (a hand-back whose
    last publish reached Redis after all): running it again would stream a second answer."""


class OverTime(Stop):
    def __init__(self, limit: float) -> None:
        super().__init__(limit)
        self.limit = limit


def ended_by(exc: Exception, response_id: str) -> Outcome:
    """How a run that raised ``exc`` ends (logged here, once)."""
    if isinstance(exc, Cancelled):
        return Outcome(Status.CANCELLED)
    if isinstance(exc, HandBack):
        return Outcome(Status.QUEUED)
    if isinstance(exc, ProviderError):
        log.warning("response %s: provider failed: %s", response_id, exc.message)
        error = {"code": exc.code, "message": exc.message}
    elif isinstance(exc, OutputInvalid):
        log.warning("response %s: %s", response_id, exc.message)
        error = {"code": "server_error", "message": exc.message}
    elif isinstance(exc, ResqError):  # the chain or the context changed since the create
        log.warning("response %s: cannot prepare the run: %s", response_id, exc.message)
        error = {"code": "invalid_prompt", "message": exc.message}
    elif isinstance(exc, OverTime):
        log.warning("response %s: over the job time limit (%g s)", response_id, exc.limit)
        error = {
            "code": "server_error",
            "message": "The response ran longer than the job time limit of "
            f"{exc.limit:g} s (RESQ_JOB_TIME_LIMIT_SECONDS) and was stopped.",
        }
    elif isinstance(exc, EarlierOutput):
        log.warning("response %s: an earlier attempt's output is on its log", response_id)
        error = {
            "code": "server_error",
            "message": "The worker running this response stopped after output had started "
            "streaming, so it was not re-run.",
        }
    elif isinstance(exc, ShutDown):
        log.warning("response %s: the worker is shutting down; failing the run", response_id)
        error = {
            "code": "server_error",
            "message": "The worker running this response shut down after output had "
            "started streaming (RESQ_SHUTDOWN_GRACE_SECONDS ran out), so it was not re-run.",
        }
    else:
        log.error("response %s: unexpected error in the run", response_id, exc_info=exc)
        error = {"code": "server_error", "message": "resq worker error while running the response"}
    return Outcome(Status.FAILED, error=error)
