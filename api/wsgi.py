"""API entrypoint for gunicorn: ``gunicorn -k api.gunicorn_worker.Worker api.wsgi:app``."""

from __future__ import annotations

import signal
from types import FrameType

from api.app import create_app
from shared import logs
from shared.settings import Settings

settings = Settings.from_env()
logs.configure(settings.log_level, settings.log_format)
app = create_app(settings)


def _stop_streams_on_sigterm() -> None:
    """Chain onto gunicorn's SIGTERM handler: besides the graceful stop, end open SSE streams
    at their next read slice (clean end of body, no terminal event) so clients can resume
    elsewhere instead of being cut off when the graceful timeout runs out."""
    previous = signal.getsignal(signal.SIGTERM)
    stopping = app.extensions["resq"].stopping

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        stopping.set()
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)


_stop_streams_on_sigterm()
