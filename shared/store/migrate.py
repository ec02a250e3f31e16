"""Bring a database to the newest schema: ``python -m shared.store.migrate``."""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config

from shared.settings import Settings

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str) -> None:
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(url), "head")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    upgrade(Settings.from_env().database_url)


if __name__ == "__main__":
    main()
