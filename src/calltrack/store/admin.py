"""Accounts, keys, roles, grants and request counts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from calltrack.errors import AdminError, Conflict, NotFound
from calltrack.store.core import Connection, StoreCore, unix_now
from calltrack.store.records import Account, Grant, KeyInfo, ResolvedKey, Role

# A key with its grant's state and grantor; the caller adds the condition that finds it.
_RESOLVE_KEY: Final = (
    "SELECT k.id, k.account_id, k.grant_id, r.grantor_id, k.revoked_at, g.revoked_at "
    "FROM api_keys k LEFT JOIN grants g ON g.id = k.grant_id "
    "LEFT JOIN roles r ON r.id = g.role_id WHERE "
)


def _active_key(row: Any) -> ResolvedKey | None:
    if row is None or row[4] is not None or row[5] is not None:
        return None  # unknown, revoked, or its grant revoked
    return ResolvedKey(row[0], row[1], row[2], row[3])


@dataclass(frozen=True, slots=True)
class GrantState:
    """One grant of a role, seen from either side: ``account`` is the other party."""

    id: int
    role_id: int
    role_name: str
    account_id: int
    account_name: str
    created_at: int
    revoked_at: int | None


@dataclass(frozen=True, slots=True)
class AccountRoles:
    """The roles an account created (each with every grant of it) and the grants it received."""

    granted: list[tuple[Role, list[GrantState]]]  # account = the grantee
    received: list[GrantState]  # account = the grantor


class AdminQueries(StoreCore):
    """Who exists and who may see what."""

    def create_account(self, name: str) -> Account:
        if not name.strip():  # an account is found by its name: a blank one could not be
            raise AdminError("the account name is empty")
        self.ensure_ready()
        with self._transaction() as conn:
            if conn.execute("SELECT 1 FROM accounts WHERE name = ?", (name,)).fetchone():
                raise Conflict(f"account {name!r} already exists")
            now = unix_now()
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
        now = unix_now()
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
                (unix_now(), key_id),
            )

    def resolve_key(self, key_hash: str) -> ResolvedKey | None:
        """The active key with this hash, or None (unknown, revoked, or its grant revoked)."""
        self.ensure_ready()
        with self._connect() as conn:
            row = conn.execute(_RESOLVE_KEY + "k.key_hash = ?", (key_hash,)).fetchone()
        return _active_key(row)

    def resolve_key_id(self, key_id: int) -> ResolvedKey | None:
        """The active key with this id, or None (unknown, revoked, or its grant revoked): a
        console session names its key by id, and is checked on every request."""
        self.ensure_ready()
        with self._connect() as conn:
            row = conn.execute(_RESOLVE_KEY + "k.id = ?", (key_id,)).fetchone()
        return _active_key(row)

    def shared_secret(self, name: str, make: Callable[[], str]) -> str:
        """A secret every worker and host shares (the console's cookie key): kept in ``meta``,
        made by ``make`` on first use; the first writer wins a race."""
        meta_key = "secret:" + name
        self.ensure_ready()
        with self._connect() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (meta_key,)).fetchone()
        if row is not None:
            return str(row[0])
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
                (meta_key, make()),
            )
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (meta_key,)).fetchone()
        return str(row[0])

    def count_sign_in_failure(self, ip: str, window_start: int) -> int:
        """Count a failed console sign-in from ``ip`` in the window from ``window_start``: the
        window's count so far. Kept with the snippet's per-IP counts (pruned after an hour)."""
        self.ensure_ready()
        with self._transaction() as conn:
            row = conn.execute(
                "INSERT INTO hit_counts (ip, window_start, hits) VALUES (?, ?, 1) "
                "ON CONFLICT (ip, window_start) DO UPDATE SET hits = hit_counts.hits + 1 "
                "RETURNING hits",
                ("sign-in " + ip, window_start),
            ).fetchone()
        return int(row[0])

    def sign_in_failures(self, ip: str, window_start: int) -> int:
        self.ensure_ready()
        with self._connect() as conn:
            row = conn.execute(
                "SELECT hits FROM hit_counts WHERE ip = ? AND window_start = ?",
                ("sign-in " + ip, window_start),
            ).fetchone()
        return 0 if row is None else int(row[0])

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
                (grantor_id, name, unix_now()),
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
                (role_id, grantee_id, unix_now()),
            ).fetchone()
        return Grant(row[0], role_id, grantee_id)

    def revoke_grant(self, role_id: int, grantee_id: int) -> Grant:
        """End an active grant and every key issued for it."""
        self.ensure_ready()
        now = unix_now()
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

    def roles_of(self, account_id: int) -> AccountRoles:
        """Both sides of an account's sharing, revoked grants included, in creation order."""
        self.ensure_ready()
        with self._connect() as conn:
            own = conn.execute(
                "SELECT r.id, r.name, g.id, a.id, a.name, g.created_at, g.revoked_at "
                "FROM roles r LEFT JOIN grants g ON g.role_id = r.id "
                "LEFT JOIN accounts a ON a.id = g.grantee_id "
                "WHERE r.grantor_id = ? ORDER BY r.id, g.id",
                (account_id,),
            ).fetchall()
            received = conn.execute(
                "SELECT g.id, r.id, r.name, a.id, a.name, g.created_at, g.revoked_at "
                "FROM grants g JOIN roles r ON r.id = g.role_id "
                "JOIN accounts a ON a.id = r.grantor_id "
                "WHERE g.grantee_id = ? ORDER BY g.id",
                (account_id,),
            ).fetchall()
        granted: dict[int, tuple[Role, list[GrantState]]] = {}
        for role_id, name, grant_id, *rest in own:
            grants = granted.setdefault(role_id, (Role(role_id, account_id, name), []))[1]
            if grant_id is not None:  # a role nobody was granted yet joins to one NULL row
                grants.append(GrantState(grant_id, role_id, name, *rest))
        return AccountRoles(list(granted.values()), [GrantState(*row) for row in received])
