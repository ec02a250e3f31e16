"""resq API: a thin Flask app. ``create_app`` (``api.app``) builds it; nothing happens at import.

This package's own import stays light on purpose: gunicorn's master process imports
``api.gunicorn_worker`` (the worker class) and with it this module, but only its worker
processes load the app (``api.wsgi``). Importing the factory here put Flask, Celery,
SQLAlchemy, pydantic and the whole API into the master too (~70 MB of its ~100 MB RSS,
``bench.run --only launcher``). ``from api import create_app`` still works: the factory's
module is imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from api.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from api.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
