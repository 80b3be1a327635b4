"""SQLite backend: the embedded default, one file, WAL so readers never wait for a writer."""

from __future__ import annotations

import contextlib
import math
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import cast

from calltrack.config import ConfigError, Settings
from calltrack.errors import StoreUnavailable
from calltrack.store import migrations
from calltrack.store.base import SqlStore
from calltrack.store.core import Connection

try:
    import fcntl
except ImportError:  # Windows: writers of several processes wait in SQLite's busy handler
    fcntl = None  # type: ignore[assignment]

MIN_SQLITE = (3, 35, 0)  # RETURNING
PAGE_SIZE = 16384
CACHE_KIB = 16 * 1024  # page cache of every connection
# During an import: the calls it writes land all over the clustered B-tree, and a cache that
# keeps the dirty pages until the commit writes each once instead of spilling it again and
# again (100k calls: 25k calls/s instead of 19k).
BULK_CACHE_KIB = 256 * 1024


def sqlite_path(url: str) -> Path:
    """``sqlite:///relative.db`` or ``sqlite:////absolute.db`` -> the file's path."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise ConfigError(f"CALLTRACK_DATABASE_URL: expected sqlite:///PATH, got {url!r}")
    return Path(url[len(prefix) :])


class _Connection(sqlite3.Connection):
    """A connection that can be weakly referenced (the base class cannot), and that knows
    which file it opened."""

    file_id: tuple[int, int] = (0, 0)


class _CloseWithThread:
    """Kept in a thread's locals: when the thread ends its locals go, and this closes the
    thread's connection at once, without waiting for the garbage collector."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __del__(self) -> None:
        self.conn.close()


class SqliteStore(SqlStore):
    dialect = "sqlite"
    reads_in_process = True
    calls_clustered = True

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
        # Writers of this process queue here: one that waited in SQLite's own busy handler
        # would sleep in steps of up to 100 ms however soon the lock came free (16 threads of
        # a worker posting hits or telephony events lost most of their time so).
        self._writer = threading.RLock()
        self._writer_depth = 0  # transactions the holding thread is in (changed under it)
        # ... and the writers of every process using the file queue on a lock of the file
        # ``<database>-writer`` (flock): SQLite's busy handler between processes slept the
        # same steps of up to 100 ms, the p99 of hits served by two workers on two cores.
        self._writers_fd: int | None = None
        # The first connection of a process may create the file; later reconnects must not,
        # so a database file removed under a running service answers 503, not empty pages.
        self._may_create = True
        # How long a read waits for a lock: short, so a locked file answers 503 quickly
        # (in WAL mode readers wait only when another process holds the file exclusively).
        self._read_wait = min(0.5, settings.db_timeout)

    def _open(self) -> _Connection:
        mode = "rwc" if self._may_create else "rw"
        uri = f"file:{self.path.resolve().as_posix()}?mode={mode}"
        conn = sqlite3.connect(
            uri,
            uri=True,
            timeout=self._read_wait,
            isolation_level=None,  # autocommit; transactions are explicit
            check_same_thread=False,
            factory=_Connection,
        )
        # 16 KiB pages hold a stored call (about 1.7 KB) inside the calls B-tree; with the
        # default 4 KiB most bodies would spill to overflow pages. Takes effect only when the
        # file is created (an existing file keeps its page size).
        conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        # Memory per connection, bounded so a worker stays well under 200 MB however large
        # the file: a 16 MiB page cache, and at most 64 MiB of the file mapped (mapped pages
        # count in RSS, though the kernel shares and reclaims them).
        conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        conn.execute("PRAGMA mmap_size = 67108864")
        # SQLite has no statement timeout: abort a read that runs past its deadline.
        conn.set_progress_handler(self._past_deadline, 10_000)
        self._may_create = False
        conn.file_id = self._file_id()
        with self._lock:
            self._all.add(conn)
        return conn

    def _file_id(self) -> tuple[int, int]:
        try:
            found = os.stat(self.path)
        except FileNotFoundError:
            raise sqlite3.OperationalError("the database file is missing") from None
        return found.st_dev, found.st_ino

    def _conn(self) -> _Connection:
        conn: _Connection | None = getattr(self._local, "conn", None)
        # An open connection keeps reading a file that was moved or deleted; check that the
        # path still names the file it opened (one stat, about a microsecond).
        if conn is not None and conn.file_id != self._file_id():
            self._drop()
            conn = None
        if conn is None:
            conn = self._open()
            self._local.conn = conn
            self._local.closer = _CloseWithThread(conn)
        return conn

    def _has_table(self, conn: Connection, name: str) -> bool:
        found = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
        ).fetchone()
        return found is not None

    @contextmanager
    def _bulk_writing(self) -> Iterator[None]:
        # Set before the transaction and reset after its commit: a smaller cache inside the
        # transaction would spill the dirty pages right away.
        with contextlib.suppress(sqlite3.Error):  # the transaction reports a missing file
            self._conn().execute(f"PRAGMA cache_size = -{BULK_CACHE_KIB}")
        try:
            yield
        finally:
            with contextlib.suppress(sqlite3.Error):  # a dropped connection has no cache
                self._conn().execute(f"PRAGMA cache_size = -{CACHE_KIB}")  # memory back

    spills_events = True

    def _side(self) -> sqlite3.Connection:
        """This thread's connection to the side file (``<database>-live``): what must be
        written while an import holds the database's write lock, since an import holds it for
        its whole transaction. Page layouts (a walk fixes its pages meanwhile) and telephony
        events that arrive meanwhile (kept until they can be merged)."""
        side: sqlite3.Connection | None = getattr(self._local, "side", None)
        if side is None:
            side = sqlite3.connect(
                f"{self.path}-live",
                timeout=self._read_wait,
                isolation_level=None,
                check_same_thread=False,
                factory=_Connection,
            )
            side.execute("PRAGMA journal_mode = WAL")
            side.execute("PRAGMA synchronous = NORMAL")
            side.execute(migrations.PAGE_BOUNDS_TABLE)
            side.execute(migrations.PAGE_BOUNDS_INDEX)
            side.execute(migrations.TELEPHONY_INBOX_TABLE)
            self._local.side = side
            self._local.side_closer = _CloseWithThread(side)
            with self._lock:
                self._all.add(side)
        return side

    @contextmanager
    def _page_bounds(self, conn: Connection) -> Iterator[Connection]:
        try:
            yield cast(Connection, self._side())
        except sqlite3.Error:
            self._local.side = None
            self._local.side_closer = None
            raise

    def spill_events(self, account_id: int, provider: str, events: bytes) -> None:
        try:
            self._side().execute(
                "INSERT INTO telephony_inbox (account_id, provider, events, received_at) "
                "VALUES (?, ?, ?, ?)",
                (account_id, provider, events, int(time.time())),
            )
        except sqlite3.Error as exc:
            self._local.side = None
            raise StoreUnavailable(f"sqlite: {exc}") from exc

    def spilled_events(self, limit: int = 100) -> list[tuple[int, int, str, bytes]]:
        try:
            rows = (
                self._side()
                .execute(
                    "SELECT id, account_id, provider, events FROM telephony_inbox ORDER BY id "
                    "LIMIT ?",
                    (limit,),
                )
                .fetchall()
            )
        except sqlite3.Error as exc:
            self._local.side = None
            raise StoreUnavailable(f"sqlite: {exc}") from exc
        return [(int(r[0]), int(r[1]), str(r[2]), bytes(r[3])) for r in rows]

    def drop_spilled(self, ids: list[int]) -> None:
        marks = ", ".join("?" * len(ids))
        self._side().execute(f"DELETE FROM telephony_inbox WHERE id IN ({marks})", ids)

    def _live_transaction(self, quick: bool = False) -> AbstractContextManager[Connection]:
        # Quick: a writer that cannot wait (telephony events) gives up after a read's wait.
        return self._transaction(wait=self._read_wait if quick else None)

    def _drop(self) -> None:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        self._local.conn = None
        self._local.closer = None
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
    def _transaction(self, wait: float | None = None) -> Iterator[Connection]:
        # A writer may wait its full timeout for another writer; readers wait less.
        wait = self.settings.db_timeout if wait is None else wait
        began = time.monotonic()
        if not self._writer.acquire(timeout=wait):
            raise StoreUnavailable(f"sqlite: database is locked (by this process, {wait:g} s)")
        self._writer_depth += 1
        try:
            try:
                if self._writer_depth == 1:
                    self._lock_writers(began + wait)
                conn = self._conn()
                left = max(0.001, wait - (time.monotonic() - began))
                conn.execute(f"PRAGMA busy_timeout = {int(left * 1000)}")
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
            finally:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute(f"PRAGMA busy_timeout = {int(self._read_wait * 1000)}")
        finally:
            self._writer_depth -= 1
            if self._writer_depth == 0:
                self._unlock_writers()
            self._writer.release()

    def _lock_writers(self, deadline: float) -> None:
        """Take the file's writer lock (shared by every process), polling every few
        milliseconds until ``deadline``; without flock (Windows) only SQLite's own lock."""
        if fcntl is None:
            return
        if self._writers_fd is None:
            try:
                self._writers_fd = os.open(f"{self.path}-writer", os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:  # the database's folder gone or read-only: 503, not 500
                raise StoreUnavailable(f"sqlite: {exc}") from exc
        pause = 0.0005
        while True:
            try:
                fcntl.flock(self._writers_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise StoreUnavailable(
                        "sqlite: database is locked (by another process)"
                    ) from None
                time.sleep(pause)
                pause = min(pause * 2, 0.002)

    def _unlock_writers(self) -> None:
        if fcntl is not None and self._writers_fd is not None:
            fcntl.flock(self._writers_fd, fcntl.LOCK_UN)

    def close(self) -> None:
        with self._lock:
            conns = list(self._all)
            self._all = weakref.WeakSet()
        for conn in conns:
            conn.close()
        if self._writers_fd is not None:
            os.close(self._writers_fd)  # an open file's lock goes with it
            self._writers_fd = None
        self._local = threading.local()
