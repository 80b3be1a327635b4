"""What the store hands out: plain, immutable values."""

from __future__ import annotations

from dataclasses import dataclass


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
