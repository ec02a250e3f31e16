"""The SQL store: tables, migrations and every query resq runs."""

from shared.store.repo import Store, make_engine

__all__ = ["Store", "make_engine"]
