"""From a parsed request to an answer: the contract's checks in order, then the entity.

Blocking (it talks to the store): the app runs it in a worker thread, or on the event loop
for a store whose reads stay in the process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from calltrack import access
from calltrack.api.answers import Answer
from calltrack.api.calls import call_page
from calltrack.api.entities import entity_page
from calltrack.api.request import PageQuery, V3Request
from calltrack.api.writes import delete_call, put_calls
from calltrack.config import Settings
from calltrack.errors import HttpMethodNotAllowed
from calltrack.protocol import Method
from calltrack.store import ResolvedKey, Store

# HTTP methods each v3 method accepts; reads are GET (and HEAD).
HTTP_METHODS: Final = {
    "put": frozenset({"POST", "PUT"}),
    "delete": frozenset({"POST", "DELETE"}),
}
READ_HTTP_METHODS: Final = frozenset({"GET", "HEAD"})


@dataclass(frozen=True, slots=True)
class Checked:
    """A request that passed every check: whose key, which method, and what a read asks for."""

    key: ResolvedKey
    method: Method
    page: PageQuery | None  # None for the writes (put, delete)


def check(store: Store, settings: Settings, request: V3Request, http_method: str) -> Checked:
    """Run the contract's checks in its order; raise the documented error of the first failing.

    The numbers are the contract's (section 2); the rate limit counts recognised keys only,
    and the HTTP method is judged once the key may use the v3 method at all.
    """
    request.check_format_and_version()  # 1-2
    key = access.resolve(store, request.key)  # 3
    if settings.rate_limit:
        access.enforce_rate_limit(store, key, settings.rate_limit, settings.rate_window)
    method = request.checked_method()  # 4-5
    access.check_key_kind(key, method)  # 6
    if http_method not in HTTP_METHODS.get(method, READ_HTTP_METHODS):
        raise HttpMethodNotAllowed
    if method == "put":
        return Checked(key, method, None)
    if method == "delete":
        request.check_call_id()
        return Checked(key, method, None)
    return Checked(key, method, request.checked_page())  # 7-9


def handle(
    store: Store, settings: Settings, request: V3Request, http_method: str, body: bytes | None
) -> Answer:
    """Answer the request or raise its documented ApiError (the first that applies)."""
    checked = check(store, settings, request, http_method)
    if checked.page is not None:
        owners = access.visible_owners(store, checked.key, checked.method)
        if request.entity == "call":
            return call_page(store, settings, request.format, checked.page, owners)
        return entity_page(store, settings, request, checked.page, checked.key, owners)
    if checked.method == "put":
        return put_calls(store, checked.key.account_id, body)
    return delete_call(store, checked.key.account_id, request)


def allowed_http_methods(request: V3Request) -> str:
    """The Allow header for a 405 answer."""
    methods = HTTP_METHODS.get(request.method or "get", READ_HTTP_METHODS)
    return ", ".join(sorted(methods))
