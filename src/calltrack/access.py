"""Keys, roles and grants: who may see which calls (section 3 of the contract)."""

from __future__ import annotations

import secrets
import string
import time
from typing import Final

from calltrack.errors import RateLimited, UnknownKey
from calltrack.hashing import hash_secret
from calltrack.protocol import Method
from calltrack.store import Grant, ResolvedKey, Store

KEY_LENGTH: Final = 16
KEY_ALPHABET: Final = string.ascii_lowercase + string.digits


def new_key() -> str:
    """A fresh API key: 16 characters of [a-z0-9] (about 82 bits)."""
    return "".join(secrets.choice(KEY_ALPHABET) for _ in range(KEY_LENGTH))


def hash_key(key: str) -> str:
    """What the store keeps instead of the key (see ``calltrack.hashing``)."""
    return hash_secret(key)


def is_well_formed(key: str) -> bool:
    return len(key) == KEY_LENGTH and all(ch in KEY_ALPHABET for ch in key)


def issue_user_key(store: Store, account_id: int) -> str:
    """Create a user key for an account; the key is returned once and never stored."""
    key = new_key()
    store.add_key(account_id, hash_key(key), key[:4])
    return key


def issue_role_key(store: Store, grant: Grant) -> str:
    """Create a role key for a grant: its grantee sees the grantor's calls through it."""
    key = new_key()
    store.add_key(grant.grantee_id, hash_key(key), key[:4], grant_id=grant.id)
    return key


def resolve(store: Store, key: str) -> ResolvedKey:
    """The active key behind ``key``; UnknownKey if malformed, unknown or revoked."""
    if not is_well_formed(key):
        raise UnknownKey
    resolved = store.resolve_key(hash_key(key))
    if resolved is None:
        raise UnknownKey
    return resolved


def check_key_kind(resolved: ResolvedKey, method: Method) -> None:
    """A role key serves only getByRole, a user key every other method (error 6)."""
    if resolved.is_role_key != (method == "getByRole"):
        raise UnknownKey


def visible_owners(store: Store, resolved: ResolvedKey, method: Method) -> list[int]:
    """Accounts whose calls this key sees with this method; empty means none.

    The key's kind must already fit the method (``check_key_kind``).
    """
    if method in ("get", "put", "delete"):
        return [resolved.account_id]
    if method == "getByRole":
        # A role granted to oneself opens nothing: the grantee's own calls never come
        # through a role key.
        grantor = resolved.grantor_id
        if grantor is None or grantor == resolved.account_id:
            return []
        return [grantor]
    return sorted({resolved.account_id, *store.grantors_of(resolved.account_id)})


def enforce_rate_limit(store: Store, resolved: ResolvedKey, limit: int, window: int) -> None:
    """RateLimited once a key has made more than ``limit`` requests in the current window."""
    now = int(time.time())
    start = now - now % window
    if store.count_hit(resolved.key_id, start) > limit:
        raise RateLimited(retry_after=max(1, start + window - now))
