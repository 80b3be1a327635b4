"""PostgreSQL backend: for production, and for several API processes or hosts on one store."""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from itertools import islice
from typing import Any, Final

from calltrack.config import ConfigError, Settings
from calltrack.errors import StoreUnavailable
from calltrack.store.base import SqlStore
from calltrack.store.changes import Change, ChangeStream
from calltrack.store.core import Connection, Cursor

try:
    import psycopg
    from psycopg import pq
    from psycopg import sql as pgsql
    from psycopg_pool import ConnectionPool, PoolTimeout
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ConfigError(
        "PostgreSQL support is not installed: pip install 'calltrack[postgres]'"
    ) from exc

# Held for the length of every write transaction, so ids and change numbers are handed out
# in commit order (a snapshot taken by a reader never misses a call committed later).
WRITE_LOCK_ID = 0x63616C6C  # "call"
# Up to this many rows are inserted with INSERTs, more with COPY: a group commit's records
# are a few, an import's many.
_FEW_ROWS = 32


class _Adapter:
    """A psycopg connection that speaks the store's ``?`` placeholders."""

    __slots__ = ("_conn",)

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        # Binary results: bytea bodies arrive as bytes without hex decoding.
        return self._conn.execute(sql.replace("?", "%s"), params, binary=True)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = list(rows)
        if len(rows) == 1:  # one row: one round trip, not a pipeline's several
            self._conn.execute(sql.replace("?", "%s"), rows[0])
            return
        with self._conn.cursor() as cur:
            cur.executemany(sql.replace("?", "%s"), rows)

    @property
    def in_pipeline(self) -> bool:
        return self._conn.pgconn.pipeline_status != pq.PipelineStatus.OFF

    @contextmanager
    def pipelined(self) -> Iterator[None]:
        """Pipeline mode: a statement is sent at once but its answer is read only when a row
        of it is fetched (or at the block's end), so statements whose rows nobody reads cost
        no round trip of their own. An error is raised at the next fetch, not at its own
        statement. Inside a pipeline already, nothing more: psycopg's nested pipeline would
        wait for every answer at its start and again at its end."""
        if self.in_pipeline:
            yield
            return
        with self._conn.pipeline():
            yield

    def confirm(self) -> None:
        """Wait for the answers of every statement sent so far, so that in a pipeline an
        error of one is raised here (a read answers all that were sent before it)."""
        if self.in_pipeline:
            self._conn.execute("SELECT 1").fetchone()

    def fetch_each(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[list[Any]]:
        """Each statement's rows, all of them sent before any answer is read (pipeline
        mode: one round trip)."""
        with self.pipelined():
            cursors = [self.execute(sql, params) for sql, params in statements]
        return [cursor.fetchall() for cursor in cursors]

    def copy_rows(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        """COPY rows in: several times faster than INSERT for bulk loads."""
        statement = pgsql.SQL("COPY {} ({}) FROM STDIN").format(
            pgsql.Identifier(table), pgsql.SQL(", ").join(map(pgsql.Identifier, columns))
        )
        with self._conn.cursor() as cur, cur.copy(statement) as copy:
            for row in rows:
                copy.write_row(row)


# Rows a streamed read asks the database for at a time (libpq 17's chunked rows; one by one
# before), and rows a stream may still hold when it is closed that are read out rather than
# cancelled (a cancel is a connection of its own).
_STREAM_CHUNK = 1000
_DRAIN_ROWS = 2 * _STREAM_CHUNK


class _RowStream:
    """``ChangeStream`` over psycopg's ``Cursor.stream``: the database sends the rows while
    the caller works on those it has. The connection is the stream's until ``close``."""

    def __init__(self, checkout: Callable[[], AbstractContextManager[Any]], sql: str,
                 params: Sequence[Any]) -> None:  # fmt: skip
        self._held = ExitStack()
        try:
            conn = self._held.enter_context(checkout())
            cursor = self._held.enter_context(conn.cursor(binary=True))
            size = _STREAM_CHUNK if psycopg.capabilities.has_stream_chunked() else 1
            self._rows: Iterator[tuple[Any, ...]] = cursor.stream(
                sql.replace("?", "%s"), params, size=size
            )
        except BaseException:
            self._held.close()
            raise

    def next_rows(self, count: int) -> list[Change]:
        return list(map(Change._make, islice(self._rows, count)))

    def close(self) -> None:
        try:
            # Near its end (a request's last batch leaves its probe row) the rest is read:
            # stopping a statement that still runs cancels it.
            for _ in islice(self._rows, _DRAIN_ROWS):
                pass
        finally:
            try:
                self._rows.close()  # type: ignore[attr-defined]  # a generator
            finally:
                self._held.close()


# A connection back in the pool within this many seconds is handed out unchecked: checking
# every checkout cost a round trip of every request (1 of a hit's 7). One idle longer is
# checked first, so a database restarted since is noticed without an error to the request.
CHECK_AFTER_IDLE_SECONDS: Final = 1.0
_last_returned: weakref.WeakKeyDictionary[psycopg.Connection[Any], float] = (
    weakref.WeakKeyDictionary()
)


def _returned(conn: psycopg.Connection[Any]) -> None:
    _last_returned[conn] = time.monotonic()


def _check_if_idle(conn: psycopg.Connection[Any]) -> None:
    if time.monotonic() - _last_returned.get(conn, 0.0) >= CHECK_AFTER_IDLE_SECONDS:
        ConnectionPool.check_connection(conn)


class PostgresStore(SqlStore):
    dialect = "postgres"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        timeout = settings.db_timeout
        self.pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            settings.database_url,
            min_size=1,
            max_size=settings.db_pool_size,
            # The app never runs more database calls than the pool has connections, so a
            # wait for one means the server is gone: give up fast (503), not after db_timeout.
            timeout=min(0.5, timeout),
            # psycopg_pool retries a lost connection with doubling delays until this many
            # seconds pass, then again on the next demand: keep the doubling short so the
            # service is back within seconds of the database, however long it was away.
            reconnect_timeout=3.0,
            kwargs={
                "autocommit": True,
                "connect_timeout": max(1, int(timeout)),
                # Bound every statement so a request cannot hold a connection for long.
                "options": f"-c statement_timeout={int(timeout * 1000)}",
            },
            # No ``reset`` callback to note returns with: given one, the pool hands every
            # return to its worker thread, a thread hop a request (see ``_checkout``).
            check=_check_if_idle,
            open=False,
        )
        self.pool.open(wait=False)

    @contextmanager
    def _checkout(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection of the pool; its return noted, for ``_check_if_idle``."""
        with self.pool.connection() as conn:
            try:
                yield conn
            finally:
                _returned(conn)

    @contextmanager
    def _connect(self) -> Iterator[Connection]:
        try:
            with self._checkout() as conn:
                yield _Adapter(conn)
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise StoreUnavailable(f"postgres: {exc}") from exc

    @contextmanager
    def _transaction(self, wait: float | None = None) -> Iterator[Connection]:
        """``wait`` given: wait at most that long for the write lock (a writer that must not
        wait out an import), then StoreUnavailable."""
        try:
            with self._checkout() as conn, conn.transaction():
                if wait is not None:  # a lock wait past it fails the statement
                    conn.execute(f"SET LOCAL lock_timeout = {int(wait * 1000)}")
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK_ID,))
                yield _Adapter(conn)
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise StoreUnavailable(f"postgres: {exc}") from exc

    row_locks = True

    @contextmanager
    def _live_transaction(self, quick: bool = False) -> Iterator[Connection]:
        # Without the write lock of imports: hits lock only the rows they decide on.
        try:
            with self._checkout() as conn, conn.transaction():
                yield _Adapter(conn)
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise StoreUnavailable(f"postgres: {exc}") from exc

    def _insert_many(
        self, conn: Connection, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]
    ) -> None:
        assert isinstance(conn, _Adapter)
        if len(rows) <= _FEW_ROWS or conn.in_pipeline:
            # A few rows (live calls' records): INSERTs sent pipelined are one round trip,
            # COPY three. In a pipelined transaction, INSERTs whatever their number: COPY
            # cannot be pipelined.
            super()._insert_many(conn, table, columns, rows)
            return
        conn.copy_rows(table, columns, rows)

    def _fetch_each(
        self, conn: Connection, statements: Sequence[tuple[str, Sequence[Any]]]
    ) -> list[list[Any]]:
        assert isinstance(conn, _Adapter)
        return (
            conn.fetch_each(statements)
            if len(statements) > 1
            else super()._fetch_each(conn, statements)
        )

    def _pipelined(self, conn: Connection) -> AbstractContextManager[None]:
        assert isinstance(conn, _Adapter)
        return conn.pipelined()

    def confirm_writes(self, conn: Connection) -> None:
        assert isinstance(conn, _Adapter)
        conn.confirm()

    def stream_changes(
        self, owner: int, after: int, limit: int, through: int | None, deletes: bool
    ) -> ChangeStream | None:
        sql, params = self._changes_query((owner,), after, limit, through, deletes)
        self.ensure_ready()
        return _RowStream(self._checkout, sql, params)

    def _has_table(self, conn: Connection, name: str) -> bool:
        return bool(conn.execute("SELECT to_regclass(?) IS NOT NULL", (name,)).fetchone()[0])

    def _refresh_statistics(self) -> None:
        with self._connect() as conn:
            conn.execute("ANALYZE calls")
            conn.execute("ANALYZE call_tags")
            conn.execute("ANALYZE call_counts")
            conn.execute("ANALYZE call_filter_counts")

    def close(self) -> None:
        self.pool.close()
