"""The part of the store every query group builds on: connections, schema, time.

Backends differ only in how they connect, lock and count; they implement the four abstract
methods (``_connect``, ``_transaction``, ``_has_table``, ``close``). SQL uses ``?``
placeholders everywhere; the PostgreSQL backend translates them.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, ClassVar, Protocol

from calltrack.config import ConfigError, Settings
from calltrack.iters import batched as batched  # the query groups chunk writes with it
from calltrack.model import decode_record, facets_of
from calltrack.store import migrations


class Cursor(Protocol):
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


class Connection(Protocol):
    """The part of a DB-API connection the store uses, with ``?`` placeholders."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor: ...
    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...


class StoreCore(ABC):
    """Connections and schema; the query groups (admin, calls, catalog) subclass it."""

    dialect: ClassVar[str]
    # Reads cost this process's CPU and never wait on a network or another process for long
    # (an embedded database): the API may run them on its event loop.
    reads_in_process: ClassVar[bool] = False
    # Calls are stored clustered in page order (account, time, id), so reading a run of one
    # write's changes in that order is sequential (store.changes): writes record their runs.
    calls_clustered: ClassVar[bool] = False

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._ready = False

    # -- what a backend provides ------------------------------------------------------------

    @abstractmethod
    def _connect(self) -> AbstractContextManager[Connection]:
        """A connection in autocommit mode; maps connection failures to StoreUnavailable."""

    @abstractmethod
    def _transaction(self, wait: float | None = None) -> AbstractContextManager[Connection]:
        """A connection inside one write transaction, committed on success, else rolled back.

        Write transactions are serialized, so ``id`` and ``change_seq`` grow in commit order.
        ``wait``: at most this many seconds for another writer (default: the store's
        timeout), then StoreUnavailable.
        """

    def _live_transaction(self, quick: bool = False) -> AbstractContextManager[Connection]:
        """A transaction for hits, telephony events and webhook deliveries: PostgreSQL runs
        them beside imports (row locks keep them apart); SQLite serializes every write, and
        ``quick`` there gives up soon instead of waiting out an import."""
        return self._transaction()

    row_locks: bool = False  # SELECT ... FOR UPDATE (SKIP LOCKED) exists

    def _insert_many(
        self, conn: Connection, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]
    ) -> None:
        """Insert many rows at once (PostgreSQL overrides it with COPY)."""
        marks = ", ".join("?" * len(columns))
        conn.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)

    def _fetch_each(
        self, conn: Connection, statements: Sequence[tuple[str, Sequence[Any]]]
    ) -> list[list[Any]]:
        """Each statement's rows (PostgreSQL sends them all before it reads an answer: one
        round trip for all)."""
        return [conn.execute(sql, params).fetchall() for sql, params in statements]

    def _pipelined(self, conn: Connection) -> AbstractContextManager[None]:
        """Around statements most of whose rows nobody reads: PostgreSQL sends them without
        waiting for their answers (``_Adapter.pipelined``); SQLite has no round trips."""
        return nullcontext()

    @contextmanager
    def _pipelined_transaction(self, conn: Connection) -> Iterator[None]:
        """A transaction on ``conn``, an autocommit connection of ``_connect``, where rows
        lock (PostgreSQL), in pipeline mode: a write is sent at once and answered with the
        next statement whose rows are read, so writes nobody reads cost no round trip of
        their own. An error is raised at that later read (or at the COMMIT)."""
        try:
            with self._pipelined(conn):
                conn.execute("BEGIN")
                yield
                conn.execute("COMMIT")
        except BaseException:
            # Out of the pipeline, which an error leaves aborted up to its end. Should the
            # COMMIT itself have failed, there is no transaction left: PostgreSQL only warns.
            conn.execute("ROLLBACK")
            raise

    def confirm_writes(self, conn: Connection) -> None:  # noqa: B027 - SQLite needs nothing
        """Raise here the error of any statement sent so far in a pipelined transaction
        (PostgreSQL answers them later); SQLite raised it at its own statement."""

    @contextmanager
    def _bulk_writing(self) -> Iterator[None]:
        """Around a large write transaction: a backend may give it more memory."""
        yield

    def _refresh_statistics(self) -> None:  # noqa: B027 - a hook; SQLite needs nothing
        """After a large import: let the query planner know the new size of the tables."""

    @abstractmethod
    def close(self) -> None:
        """Release every connection."""

    # -- schema -----------------------------------------------------------------------------

    @abstractmethod
    def _has_table(self, conn: Connection, name: str) -> bool:
        """Whether the database has a table of that name."""

    def ensure_ready(self) -> None:
        """Bring the schema up to date and check the stored time zone, once per process."""
        if self._ready:
            return
        if self._schema_is_current():
            # No write lock needed: a server starting during a long import is ready at once
            # (SQLite reads run on the event loop, which must never wait for that lock).
            self._ready = True
            return
        with self._transaction() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)"
            )
            applied = conn.execute("SELECT version FROM schema_migrations").fetchall()
            done = {row[0] for row in applied}
            for version, name, _sqls in migrations.MIGRATIONS:
                if version in done:
                    continue
                for sql in migrations.statements(self.dialect, version):
                    if sql == migrations.FACETS_BACKFILL[self.dialect]:
                        self._backfill_facets(conn)
                    else:
                        conn.execute(sql)
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (version, name, unix_now()),
                )
            self._check_timezone(conn)
        self._ready = True

    @staticmethod
    def _backfill_facets(conn: Connection) -> None:
        """Fill the facet columns of every stored call from its body (migration 9)."""
        after = ""
        while True:
            rows = conn.execute(
                "SELECT universal_id, body FROM calls WHERE universal_id > ? "
                "ORDER BY universal_id LIMIT 2000",
                (after,),
            ).fetchall()
            if not rows:
                return
            conn.executemany(
                "UPDATE calls SET manager_number = ?, utm_source = ?, utm_medium = ?, "
                "utm_campaign = ?, flags = ?, device = ?, source = ? WHERE universal_id = ?",
                [
                    (*facets_of(decode_record(b'{"page":0,' + bytes(body))).columns(), uid)
                    for uid, body in rows
                ],
            )
            after = str(rows[-1][0])

    def _schema_is_current(self) -> bool:
        """Every known migration applied and the time zone stored is ours (read only)."""
        with self._connect() as conn:
            if not self._has_table(conn, "schema_migrations"):
                return False
            applied = conn.execute("SELECT version FROM schema_migrations").fetchall()
            done = {row[0] for row in applied}
            if not {version for version, _, _ in migrations.MIGRATIONS} <= done:
                return False
            row = conn.execute("SELECT value FROM meta WHERE key = 'timezone'").fetchone()
        return row is not None and row[0] == self.settings.timezone

    def _check_timezone(self, conn: Connection) -> None:
        # Stored bodies carry callTime rendered in the service zone, so the zone is part of
        # the data: it may change only while the store holds no calls.
        row = conn.execute("SELECT value FROM meta WHERE key = 'timezone'").fetchone()
        wanted = self.settings.timezone
        if row is not None and row[0] == wanted:
            return
        if row is not None and conn.execute("SELECT 1 FROM calls LIMIT 1").fetchone():
            raise ConfigError(
                f"CALLTRACK_TIMEZONE is {wanted!r} but this database's calls were stored in "
                f"{row[0]!r}; set CALLTRACK_TIMEZONE={row[0]} or use a new database"
            )
        conn.execute("DELETE FROM meta WHERE key = 'timezone'")
        conn.execute("INSERT INTO meta (key, value) VALUES ('timezone', ?)", (wanted,))

    def ping(self) -> None:
        """Raise StoreUnavailable unless the database answers."""
        self.ensure_ready()
        with self._connect() as conn:
            conn.execute("SELECT 1").fetchone()


def unix_now() -> int:
    return int(time.time())
