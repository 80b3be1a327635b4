"""The ``call`` entity's read methods: from a parsed request to the bytes of a page."""

from __future__ import annotations

from calltrack import access
from calltrack.api.request import V3Request
from calltrack.config import Settings
from calltrack.errors import BadPage, NoRows
from calltrack.render.json import render_page
from calltrack.store import Store


def export_page(store: Store, settings: Settings, request: V3Request) -> bytes:
    """Answer a parsed request with one JSON page, or raise its documented ApiError.

    Blocking (it talks to the store): the app runs it in a worker thread.
    """
    if (error := request.before_key()) is not None:
        raise error
    resolved = access.resolve(store, request.key)
    if settings.rate_limit:
        access.enforce_rate_limit(store, resolved, settings.rate_limit, settings.rate_window)
    if (error := request.before_kind()) is not None:
        raise error
    assert request.method is not None  # before_kind() checked it
    owners = access.visible_owners(store, resolved, request.method)
    if (error := request.after_kind()) is not None:
        raise error
    assert request.page is not None
    assert request.window is not None
    bodies = (
        store.read_page(owners, request.window, request.page, settings.page_size) if owners else []
    )
    if not bodies:
        raise NoRows if request.page == 0 else BadPage
    return render_page(bodies, request.page)
