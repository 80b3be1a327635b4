"""From a parsed request to an answer: the contract's checks in order, then the entity.

Blocking (it talks to the store): the app runs it in a worker thread.
"""

from __future__ import annotations

from typing import Final

from calltrack import access
from calltrack.api.answers import Answer
from calltrack.api.calls import call_page
from calltrack.api.entities import entity_page
from calltrack.api.request import V3Request
from calltrack.api.writes import delete_call, put_calls
from calltrack.config import Settings
from calltrack.errors import HttpMethodNotAllowed
from calltrack.store import Store

# HTTP methods each v3 method accepts; reads are GET (and HEAD).
HTTP_METHODS: Final = {
    "put": frozenset({"POST", "PUT"}),
    "delete": frozenset({"POST", "DELETE"}),
}
READ_HTTP_METHODS: Final = frozenset({"GET", "HEAD"})


def handle(
    store: Store, settings: Settings, request: V3Request, http_method: str, body: bytes | None
) -> Answer:
    """Answer the request or raise its documented ApiError (the first that applies)."""
    if (error := request.before_key()) is not None:
        raise error
    resolved = access.resolve(store, request.key)
    if settings.rate_limit:
        access.enforce_rate_limit(store, resolved, settings.rate_limit, settings.rate_window)
    if (error := request.before_kind()) is not None:
        raise error
    method = request.method
    assert method is not None  # before_kind() checked it
    owners = access.visible_owners(store, resolved, method)
    if http_method not in HTTP_METHODS.get(method, READ_HTTP_METHODS):
        raise HttpMethodNotAllowed
    if (error := request.after_kind()) is not None:
        raise error
    if method == "put":
        return put_calls(store, resolved.account_id, body)
    if method == "delete":
        return delete_call(store, resolved.account_id, request)
    if request.entity == "call":
        return call_page(store, settings, request, owners)
    return entity_page(store, settings, request, resolved, owners)


def allowed_http_methods(request: V3Request) -> str:
    """The Allow header for a 405 answer."""
    methods = HTTP_METHODS.get(request.method or "get", READ_HTTP_METHODS)
    return ", ".join(sorted(methods))
