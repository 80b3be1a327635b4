"""Who is asking: the bearer key, its scope, and the accounts whose calls it sees now.

The same keys and rules as v3 (``calltrack.access``): a user key sees its own calls
(``scope=own``) or also those of every account that granted it a role (``scope=withRole``); a
role key sees its grantor's calls. Resolved on every request, so a revoked key or grant stops
at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from calltrack import access
from calltrack.api.v4.problems import bad_parameter, too_many_requests, unauthorized
from calltrack.config import Settings
from calltrack.errors import RateLimited, UnknownKey
from calltrack.protocol import Method
from calltrack.store import ResolvedKey, Store

SCOPES = ("own", "withRole")


@dataclass(frozen=True, slots=True)
class Caller:
    key: ResolvedKey
    owners: tuple[int, ...]  # accounts whose calls the request may see, ascending


def bearer_key(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthorized("send the API key as `Authorization: Bearer KEY`")
    return token.strip()


def authorize(store: Store, settings: Settings, key: str, scope: str | None) -> Caller:
    """The caller behind ``key`` with the accounts it sees in ``scope`` (run in a thread)."""
    if scope is not None and scope not in SCOPES:
        raise bad_parameter("scope", f"expected one of {', '.join(SCOPES)}")
    try:
        resolved = access.resolve(store, key)
    except UnknownKey:
        raise unauthorized("the key is unknown or revoked") from None
    if settings.rate_limit:
        try:
            access.enforce_rate_limit(store, resolved, settings.rate_limit, settings.rate_window)
        except RateLimited as exc:
            raise too_many_requests(exc.retry_after or settings.rate_window) from None
    if resolved.is_role_key:
        if scope == "withRole":
            raise bad_parameter("scope", "a role key sees its grantor's calls only")
        owners = access.visible_owners(store, resolved, "getByRole")
    else:
        method: Method = "getWithRole" if scope == "withRole" else "get"
        owners = access.visible_owners(store, resolved, method)
    return Caller(resolved, tuple(sorted(owners)))
