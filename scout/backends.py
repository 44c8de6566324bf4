"""Which store serves SCOUT_DB: the one place the backend is chosen.

A postgresql:// URL is PostgreSQL (scout/store_pg.py, imported only then, so an SQLite
Scout never loads psycopg); anything else is an SQLite file path (scout/store.py). Both
implement scout.store.EventLog.
"""
from __future__ import annotations

from typing import Any

from .config import is_postgres_url
from .store import EventLog, Store


def open_store(db: str, **options: Any) -> EventLog:
    """The store for SCOUT_DB, with the options that backend takes (pool_size: PostgreSQL's
    connections per process; busy_timeout: SQLite's lock wait)."""
    if is_postgres_url(db):
        from .store_pg import PgStore
        options.pop("busy_timeout", None)
        return PgStore(db, **options)
    options.pop("pool_size", None)
    return Store(db, **options)
