"""The page at ``/``: what the server is, its version, where to go next; every value escaped."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from starlette.testclient import TestClient

from calltrack import __version__
from calltrack.api.home import DOCS, URL_FORM, render_home
from calltrack.protocol import ENTITY_METHODS, FORMATS
from calltrack.store import Store

HOSTILE = "<script>alert('x')</script> & \"q\" <b>"


class Page(HTMLParser):
    """The tags, link targets and text of an HTML document."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: set[str] = set()
        self.links: list[str] = []
        self.chunks: list[str] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.links += [value for name, value in attrs if name == "href" and value is not None]

    def handle_data(self, data: str) -> None:
        self.chunks.append(data)

    @property
    def text(self) -> str:
        return " ".join("".join(self.chunks).split())


def test_every_value_is_escaped_so_it_shows_as_text() -> None:
    html = render_home(HOSTILE, [HOSTILE], {HOSTILE: [HOSTILE]}, [HOSTILE]).decode()
    page = Page(html)
    assert "script" not in page.tags
    assert page.tags == {
        "html",
        "head",
        "meta",
        "title",
        "body",
        "h1",
        "h2",
        "p",
        "code",
        "ul",
        "li",
        "a",
    }
    assert page.text.count(HOSTILE) == 6  # title, heading, versions, formats, entity, method


def test_the_page_names_the_server_its_version_the_url_form_and_the_docs() -> None:
    page = Page(render_home("9.8.7", FORMATS, ENTITY_METHODS, ["v3"]).decode())
    assert "calltrack 9.8.7" in page.text
    assert URL_FORM in page.text
    assert DOCS in page.text
    assert "CallKeeper v3" in page.text
    for entity, methods in ENTITY_METHODS.items():
        assert f"{entity}: {', '.join(methods)}" in page.text
    assert page.links == ["console/", "healthz"]  # relative: they work behind a path prefix


def test_get_and_head_of_the_root(client: tuple[TestClient, Store]) -> None:
    http, _ = client
    answer = http.get("/")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/html; charset=utf-8"
    assert f"calltrack {__version__}" in Page(answer.text).text
    head = http.head("/")
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == str(len(answer.content))
    assert head.headers["content-type"] == answer.headers["content-type"]


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_the_root_only_reads(client: tuple[TestClient, Store], method: str) -> None:
    http, _ = client
    assert http.request(method, "/").status_code == 405
