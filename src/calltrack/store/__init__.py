"""The store: where accounts, keys, roles and calls live. ``open_store`` picks the backend."""

from __future__ import annotations

from calltrack.config import ConfigError, Settings
from calltrack.store.base import SqlStore
from calltrack.store.paging import Window
from calltrack.store.records import (
    Account,
    Grant,
    ImportResult,
    KeyInfo,
    ResolvedKey,
    Role,
)

Store = SqlStore

__all__ = [
    "Account",
    "Grant",
    "ImportResult",
    "KeyInfo",
    "ResolvedKey",
    "Role",
    "Store",
    "Window",
    "open_store",
]


def open_store(settings: Settings) -> Store:
    """The backend that ``settings.database_url`` names (nothing is read until first use)."""
    url = settings.database_url
    if url.startswith("sqlite:"):
        from calltrack.store.sqlite import SqliteStore

        return SqliteStore(settings)
    if url.startswith(("postgresql:", "postgres:")):
        from calltrack.store.postgres import PostgresStore

        return PostgresStore(settings)
    raise ConfigError(f"CALLTRACK_DATABASE_URL: unsupported database {url!r}")
