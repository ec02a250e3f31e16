"""API entrypoint for gunicorn: ``gunicorn -k gevent api.wsgi:app``."""

from __future__ import annotations

import logging

from api import create_app
from shared.settings import Settings

settings = Settings.from_env()
logging.basicConfig(
    level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
)
app = create_app(settings)
