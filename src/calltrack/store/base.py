"""The store: one interface over SQLite and PostgreSQL, sharing every query shape.

Backends differ only in how they connect, lock and count; they subclass ``SqlStore`` and
implement its four abstract methods. SQL uses ``?`` placeholders everywhere; the PostgreSQL
backend translates them.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from itertools import islice
from typing import Any, ClassVar, Protocol, TypeVar

from calltrack.config import ConfigError, Settings
from calltrack.errors import Conflict, ImportRejected, NotFound
from calltrack.model import StoredCall
from calltrack.store import migrations
from calltrack.store.paging import Boundary, Window, build_page_query, mark_key

T = TypeVar("T")

# Page marks older than this are pruned; a walk taking longer falls back to OFFSET reads.
MARK_TTL_SECONDS = 24 * 3600


class Cursor(Protocol):
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


class Connection(Protocol):
    """The part of a DB-API connection the store uses, with ``?`` placeholders."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor: ...
    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...


@dataclass(frozen=True, slots=True)
class Account:
    id: int
    name: str
    created_at: int


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """An API key as the store knows it: never the key itself, only its first characters."""

    id: int
    account_id: int
    grant_id: int | None
    hint: str
    created_at: int
    revoked_at: int | None


@dataclass(frozen=True, slots=True)
class ResolvedKey:
    """What a presented key may do: whose key it is, and for a role key, whose calls it opens."""

    key_id: int
    account_id: int
    grant_id: int | None
    grantor_id: int | None  # set for role keys of an active grant

    @property
    def is_role_key(self) -> bool:
        return self.grant_id is not None


@dataclass(frozen=True, slots=True)
class Role:
    id: int
    grantor_id: int
    name: str


@dataclass(frozen=True, slots=True)
class Grant:
    id: int
    role_id: int
    grantee_id: int


@dataclass(frozen=True, slots=True)
class ImportResult:
    imported: int
    updated: int


class SqlStore(ABC):
    """Everything calltrack keeps, behind methods; SQL lives here and in ``paging``."""

    dialect: ClassVar[str]

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._ready = False

    # -- what a backend provides ------------------------------------------------------------

    @abstractmethod
    def _connect(self) -> AbstractContextManager[Connection]:
        """A connection in autocommit mode; maps connection failures to StoreUnavailable."""

    @abstractmethod
    def _transaction(self) -> AbstractContextManager[Connection]:
        """A connection inside one write transaction, committed on success, else rolled back.

        Write transactions are serialized, so ``id`` and ``change_seq`` grow in commit order.
        """

    @abstractmethod
    def close(self) -> None:
        """Release every connection."""

    # -- schema -----------------------------------------------------------------------------

    def ensure_ready(self) -> None:
        """Bring the schema up to date and check the stored time zone, once per process."""
        if self._ready:
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
                    conn.execute(sql)
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (version, name, _now()),
                )
            self._check_timezone(conn)
        self._ready = True

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

    # -- accounts ---------------------------------------------------------------------------

    def create_account(self, name: str) -> Account:
        self.ensure_ready()
        with self._transaction() as conn:
            if conn.execute("SELECT 1 FROM accounts WHERE name = ?", (name,)).fetchone():
                raise Conflict(f"account {name!r} already exists")
            now = _now()
            row = conn.execute(
                "INSERT INTO accounts (name, created_at) VALUES (?, ?) RETURNING id", (name, now)
            ).fetchone()
        return Account(row[0], name, now)

    def find_account(self, ref: str) -> Account:
        """An account by name, or by numeric id when no account has that name."""
        self.ensure_ready()
        with self._connect() as conn:
            row = conn.execute(
                "SELECT id, name, created_at FROM accounts WHERE name = ?", (ref,)
            ).fetchone()
            if row is None and ref.isdigit() and len(ref) < 19:
                row = conn.execute(
                    "SELECT id, name, created_at FROM accounts WHERE id = ?", (int(ref),)
                ).fetchone()
        if row is None:
            raise NotFound(f"no account {ref!r}")
        return Account(*row)

    def list_accounts(self) -> list[Account]:
        self.ensure_ready()
        with self._connect() as conn:
            rows = conn.execute("SELECT id, name, created_at FROM accounts ORDER BY id").fetchall()
        return [Account(*row) for row in rows]

    # -- keys -------------------------------------------------------------------------------

    def add_key(
        self, account_id: int, key_hash: str, hint: str, grant_id: int | None = None
    ) -> KeyInfo:
        self.ensure_ready()
        now = _now()
        with self._transaction() as conn:
            row = conn.execute(
                "INSERT INTO api_keys (account_id, grant_id, key_hash, key_hint, created_at) "
                "VALUES (?, ?, ?, ?, ?) RETURNING id",
                (account_id, grant_id, key_hash, hint, now),
            ).fetchone()
        return KeyInfo(row[0], account_id, grant_id, hint, now, None)

    def find_key(self, key_hash: str | None = None, key_id: int | None = None) -> KeyInfo:
        self.ensure_ready()
        column, value = ("key_hash", key_hash) if key_hash is not None else ("id", key_id)
        with self._connect() as conn:
            row = conn.execute(
                "SELECT id, account_id, grant_id, key_hint, created_at, revoked_at "
                f"FROM api_keys WHERE {column} = ?",
                (value,),
            ).fetchone()
        if row is None:
            raise NotFound("no such key")
        return KeyInfo(*row)

    def list_keys(self, account_id: int) -> list[KeyInfo]:
        self.ensure_ready()
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT id, account_id, grant_id, key_hint, created_at, revoked_at "
                "FROM api_keys WHERE account_id = ? ORDER BY id",
                (account_id,),
            ).fetchall()
        return [KeyInfo(*row) for row in rows]

    def revoke_key(self, key_id: int) -> None:
        self.ensure_ready()
        with self._transaction() as conn:
            conn.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (_now(), key_id),
            )

    def resolve_key(self, key_hash: str) -> ResolvedKey | None:
        """The active key with this hash, or None (unknown, revoked, or its grant revoked)."""
        self.ensure_ready()
        with self._connect() as conn:
            row = conn.execute(
                "SELECT k.id, k.account_id, k.grant_id, r.grantor_id, k.revoked_at, g.revoked_at "
                "FROM api_keys k LEFT JOIN grants g ON g.id = k.grant_id "
                "LEFT JOIN roles r ON r.id = g.role_id WHERE k.key_hash = ?",
                (key_hash,),
            ).fetchone()
        if row is None or row[4] is not None or row[5] is not None:
            return None
        return ResolvedKey(row[0], row[1], row[2], row[3])

    def count_hit(self, key_id: int, window_start: int) -> int:
        """Count one request of a key in the rate window starting at ``window_start``.

        Kept in the database so every worker and host shares the count.
        """
        self.ensure_ready()
        with self._connect() as conn:
            row = conn.execute(
                "INSERT INTO rate_hits (key_id, window_start, hits) VALUES (?, ?, 1) "
                "ON CONFLICT (key_id, window_start) DO UPDATE SET hits = rate_hits.hits + 1 "
                "RETURNING hits",
                (key_id, window_start),
            ).fetchone()
            if row[0] == 1:  # the key's first request of a window: drop its old windows
                conn.execute(
                    "DELETE FROM rate_hits WHERE key_id = ? AND window_start < ?",
                    (key_id, window_start),
                )
        return int(row[0])

    # -- roles and grants -------------------------------------------------------------------

    def create_role(self, grantor_id: int, name: str) -> Role:
        self.ensure_ready()
        with self._transaction() as conn:
            if conn.execute(
                "SELECT 1 FROM roles WHERE grantor_id = ? AND name = ?", (grantor_id, name)
            ).fetchone():
                raise Conflict(f"the account already has a role named {name!r}")
            row = conn.execute(
                "INSERT INTO roles (grantor_id, name, created_at) VALUES (?, ?, ?) RETURNING id",
                (grantor_id, name, _now()),
            ).fetchone()
        return Role(row[0], grantor_id, name)

    def find_role(self, role_id: int) -> Role:
        self.ensure_ready()
        with self._connect() as conn:
            row = conn.execute(
                "SELECT id, grantor_id, name FROM roles WHERE id = ?", (role_id,)
            ).fetchone()
        if row is None:
            raise NotFound(f"no role {role_id}")
        return Role(*row)

    def role_id_by_name(self, grantor_id: int, name: str) -> int:
        self.ensure_ready()
        with self._connect() as conn:
            row = conn.execute(
                "SELECT id FROM roles WHERE grantor_id = ? AND name = ?", (grantor_id, name)
            ).fetchone()
        if row is None:
            raise NotFound(f"no role {name!r}")
        return int(row[0])

    def create_grant(self, role_id: int, grantee_id: int) -> Grant:
        self.ensure_ready()
        with self._transaction() as conn:
            if self._active_grant(conn, role_id, grantee_id) is not None:
                raise Conflict("the role is already granted to that account; revoke it first")
            row = conn.execute(
                "INSERT INTO grants (role_id, grantee_id, created_at) VALUES (?, ?, ?) "
                "RETURNING id",
                (role_id, grantee_id, _now()),
            ).fetchone()
        return Grant(row[0], role_id, grantee_id)

    def revoke_grant(self, role_id: int, grantee_id: int) -> Grant:
        """End an active grant and every key issued for it."""
        self.ensure_ready()
        now = _now()
        with self._transaction() as conn:
            grant_id = self._active_grant(conn, role_id, grantee_id)
            if grant_id is None:
                raise NotFound("the role is not granted to that account")
            conn.execute("UPDATE grants SET revoked_at = ? WHERE id = ?", (now, grant_id))
            conn.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE grant_id = ? AND revoked_at IS NULL",
                (now, grant_id),
            )
        return Grant(grant_id, role_id, grantee_id)

    @staticmethod
    def _active_grant(conn: Connection, role_id: int, grantee_id: int) -> int | None:
        row = conn.execute(
            "SELECT id FROM grants WHERE role_id = ? AND grantee_id = ? AND revoked_at IS NULL",
            (role_id, grantee_id),
        ).fetchone()
        return None if row is None else int(row[0])

    def grantors_of(self, grantee_id: int) -> list[int]:
        """Accounts whose calls ``grantee_id`` sees through active grants, each once."""
        self.ensure_ready()
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT DISTINCT r.grantor_id FROM grants g JOIN roles r ON r.id = g.role_id "
                "WHERE g.grantee_id = ? AND g.revoked_at IS NULL",
                (grantee_id,),
            ).fetchall()
        return sorted(row[0] for row in rows)

    # -- calls ------------------------------------------------------------------------------

    def import_calls(
        self, account_id: int, calls: Iterable[tuple[int, StoredCall]], batch_size: int = 2000
    ) -> ImportResult:
        """Insert or update calls of one account in one transaction: all of them or none.

        ``calls`` pairs each call with its line number for error messages; an exception raised
        while iterating it rolls everything back.
        """
        self.ensure_ready()
        imported = updated = 0
        with self._transaction() as conn:
            change_seq = conn.execute("SELECT coalesce(max(change_seq), 0) FROM calls").fetchone()
            seq = int(change_seq[0])
            for chunk in batched(calls, batch_size):
                existing = self._existing(conn, [call.universal_id for _, call in chunk])
                inserts: list[tuple[Any, ...]] = []
                changes: list[tuple[Any, ...]] = []
                for line, call in chunk:
                    found = existing.get(call.universal_id)
                    seq += 1
                    values = (
                        call.call_time,
                        seq,
                        call.service_type,
                        call.status,
                        call.campaign_id,
                        call.body,
                    )
                    if found is None:
                        inserts.append((account_id, call.universal_id, *values))
                        imported += 1
                    elif found[0] != account_id:
                        raise ImportRejected(
                            line, f"universalId {call.universal_id!r} belongs to another account"
                        )
                    else:
                        updated += 1
                        if bytes(found[1]) != call.body:
                            changes.append((*values, call.universal_id))
                if inserts:
                    conn.executemany(
                        "INSERT INTO calls (account_id, universal_id, call_time, change_seq, "
                        "service_type, status, campaign_id, body) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        inserts,
                    )
                if changes:
                    conn.executemany(
                        "UPDATE calls SET call_time = ?, change_seq = ?, service_type = ?, "
                        "status = ?, campaign_id = ?, body = ? WHERE universal_id = ?",
                        changes,
                    )
        return ImportResult(imported, updated)

    @staticmethod
    def _existing(conn: Connection, universal_ids: list[str]) -> dict[str, tuple[int, bytes]]:
        marks = ", ".join("?" * len(universal_ids))
        rows = conn.execute(
            f"SELECT universal_id, account_id, body FROM calls WHERE universal_id IN ({marks})",
            universal_ids,
        ).fetchall()
        return {row[0]: (row[1], row[2]) for row in rows}

    def count_calls(self, account_id: int | None = None) -> int:
        self.ensure_ready()
        with self._connect() as conn:
            if account_id is None:
                row = conn.execute("SELECT count(*) FROM calls").fetchone()
            else:
                row = conn.execute(
                    "SELECT count(*) FROM calls WHERE account_id = ?", (account_id,)
                ).fetchone()
        return int(row[0])

    def read_page(
        self, owner_ids: Sequence[int], window: Window, page: int, size: int
    ) -> list[bytes]:
        """Stored bodies of page ``page`` of the owners' calls in the window, in page order.

        Page 0 takes a snapshot (the largest call id); later pages of the same walk see only
        calls up to it, and start from the remembered end of the previous page when known.
        """
        self.ensure_ready()
        now = _now()
        key = mark_key(owner_ids, window)
        end = now if window.end is None else window.end
        with self._connect() as conn:
            snapshot = self._snapshot(conn, key, refresh=page == 0, now=now)
            known = conn.execute(
                "SELECT page, after_time, after_id FROM page_marks WHERE mark_key = ? "
                "AND snapshot = ? AND page BETWEEN 1 AND ? ORDER BY page DESC LIMIT 2",
                (key, snapshot, page + 1),
            ).fetchall()
            next_known = bool(known) and known[0][0] == page + 1
            usable = [Boundary(*row) for row in known if row[0] <= page]
            after = usable[0] if usable else None
            skip = (page - (after.page if after else 0)) * size
            sql, params = build_page_query(
                owner_ids, window.start, end, snapshot, after, skip, size
            )
            rows = conn.execute(sql, params).fetchall()
            if len(rows) == size and not next_known:
                conn.execute(
                    "INSERT INTO page_marks (mark_key, page, snapshot, after_time, after_id, "
                    "created_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (key, page + 1, snapshot, rows[-1][0], rows[-1][1], now),
                )
        return [row[2] for row in rows]

    def _snapshot(self, conn: Connection, key: str, *, refresh: bool, now: int) -> int:
        row = conn.execute(
            "SELECT snapshot FROM page_marks WHERE mark_key = ? AND page = 0", (key,)
        ).fetchone()
        if row is not None and not refresh:
            return int(row[0])
        current = int(conn.execute("SELECT coalesce(max(id), 0) FROM calls").fetchone()[0])
        if row is not None and int(row[0]) == current:
            return current
        # A new walk over changed data: forget the old boundaries and expired walks.
        conn.execute(
            "DELETE FROM page_marks WHERE mark_key = ? OR created_at < ?",
            (key, now - MARK_TTL_SECONDS),
        )
        conn.execute(
            "INSERT INTO page_marks (mark_key, page, snapshot, created_at) VALUES (?, 0, ?, ?) "
            "ON CONFLICT (mark_key, page) DO UPDATE SET snapshot = excluded.snapshot, "
            "created_at = excluded.created_at",
            (key, current, now),
        )
        return current

    def export_all(self, account_id: int) -> Iterator[bytes]:
        """Every stored body of an account in page order (for dumps and tests)."""
        self.ensure_ready()
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT body FROM calls WHERE account_id = ? ORDER BY call_time, id",
                (account_id,),
            ).fetchall()
        for row in rows:
            yield bytes(row[0])


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Lists of up to ``size`` items (itertools.batched arrived only in Python 3.12)."""
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _now() -> int:
    return int(time.time())
