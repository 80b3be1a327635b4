"""The ``call`` entity's read methods: one page of calls in the requested format."""

from __future__ import annotations

from calltrack.api.answers import Answer, call_writer
from calltrack.api.request import V3Request
from calltrack.config import Settings
from calltrack.errors import BadPage, NoRows
from calltrack.render.json import CONTENT_TYPE, render_page
from calltrack.store import Store


def call_page(store: Store, settings: Settings, request: V3Request, owners: list[int]) -> Answer:
    """The page the request asks for, or NoRows / BadPage when there is none."""
    assert request.page is not None
    assert request.window is not None
    bodies = (
        store.read_page(owners, request.window, request.page, settings.page_size) if owners else []
    )
    if not bodies:
        raise NoRows if request.page == 0 else BadPage
    if request.format == "json":
        # The hot path: stored bodies are already JSON, so the page is a join.
        return Answer(render_page(bodies, request.page), CONTENT_TYPE)
    out = call_writer(request.format)
    return Answer(out.render_calls(bodies, request.page), out.CONTENT_TYPE)
