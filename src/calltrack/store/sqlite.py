"""SQLite backend: the embedded default, one file, WAL so readers never wait for a writer."""

from __future__ import annotations

import math
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import cast

from calltrack.config import ConfigError, Settings
from calltrack.errors import StoreUnavailable
from calltrack.store.base import SqlStore
from calltrack.store.core import Connection

MIN_SQLITE = (3, 35, 0)  # RETURNING


def sqlite_path(url: str) -> Path:
    """``sqlite:///relative.db`` or ``sqlite:////absolute.db`` -> the file's path."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise ConfigError(f"CALLTRACK_DATABASE_URL: expected sqlite:///PATH, got {url!r}")
    return Path(url[len(prefix) :])


class _Connection(sqlite3.Connection):
    """A connection that can be weakly referenced (the base class cannot)."""


class SqliteStore(SqlStore):
    dialect = "sqlite"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            raise ConfigError(
                f"SQLite {sqlite3.sqlite_version} is too old; calltrack needs 3.35 or newer"
            )
        self.path = sqlite_path(settings.database_url)
        self._local = threading.local()
        # Weak, so a connection closes with the worker thread that owned it (thread pools
        # retire idle threads) instead of lingering until the store closes.
        self._all: weakref.WeakSet[sqlite3.Connection] = weakref.WeakSet()
        self._lock = threading.Lock()
        # The first connection of a process may create the file; later reconnects must not,
        # so a database file removed under a running service answers 503, not empty pages.
        self._may_create = True

    def _open(self) -> sqlite3.Connection:
        mode = "rwc" if self._may_create else "rw"
        uri = f"file:{self.path.resolve().as_posix()}?mode={mode}"
        conn = sqlite3.connect(
            uri,
            uri=True,
            timeout=self.settings.db_timeout,
            isolation_level=None,  # autocommit; transactions are explicit
            check_same_thread=False,
            factory=_Connection,
        )
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        # Memory per connection, bounded so a worker stays well under 200 MB however large
        # the file: a 16 MiB page cache, and at most 64 MiB of the file mapped (mapped pages
        # count in RSS, though the kernel shares and reclaims them).
        conn.execute("PRAGMA cache_size = -16384")
        conn.execute("PRAGMA mmap_size = 67108864")
        # SQLite has no statement timeout: abort a read that runs past its deadline.
        conn.set_progress_handler(self._past_deadline, 10_000)
        self._may_create = False
        with self._lock:
            self._all.add(conn)
        return conn

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._open()
            self._local.conn = conn
        return conn

    def _drop(self) -> None:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with self._lock:
                self._all.discard(conn)
            conn.close()

    def _past_deadline(self) -> bool:
        deadline: float = getattr(self._local, "deadline", math.inf)
        return time.monotonic() > deadline

    @contextmanager
    def _connect(self) -> Iterator[Connection]:
        self._local.deadline = time.monotonic() + self.settings.db_timeout
        try:
            yield cast(Connection, self._conn())
        except sqlite3.OperationalError as exc:
            self._drop()
            raise StoreUnavailable(f"sqlite: {exc}") from exc
        finally:
            self._local.deadline = math.inf

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        try:
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            self._drop()
            raise StoreUnavailable(f"sqlite: {exc}") from exc
        try:
            yield cast(Connection, conn)
        except sqlite3.OperationalError as exc:
            conn.execute("ROLLBACK")
            raise StoreUnavailable(f"sqlite: {exc}") from exc
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        else:
            conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            conns = list(self._all)
            self._all = weakref.WeakSet()
        for conn in conns:
            conn.close()
        self._local = threading.local()
