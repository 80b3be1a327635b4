"""The ``call`` entity's read methods: one page of calls in the requested format."""

from __future__ import annotations

from calltrack.api.answers import Answer, call_writer
from calltrack.api.request import PageQuery
from calltrack.config import Settings
from calltrack.errors import BadPage, NoRows
from calltrack.render.json import CONTENT_TYPE, render_page
from calltrack.store import Store


def call_page(
    store: Store, settings: Settings, fmt: str, query: PageQuery, owners: list[int]
) -> Answer:
    """The page the query asks for in format ``fmt``, or NoRows / BadPage when there is none."""
    bodies = (
        store.read_page(owners, query.window, query.number, settings.page_size) if owners else None
    )
    if bodies is None:
        raise NoRows if query.number == 0 else BadPage
    if fmt == "json":
        # The hot path: stored bodies are already JSON, so the page is a join.
        return Answer(render_page(bodies, query.number), CONTENT_TYPE)
    out = call_writer(fmt)
    return Answer(out.render_calls(bodies, query.number), out.CONTENT_TYPE)
