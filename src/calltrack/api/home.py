"""The page at ``/``: what this server is, its version, and where to go next.

A person who opens the server's address in a browser lands here instead of on a 404. Every
value put into the page is HTML-escaped, the constants included, so the page stays safe to
change.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import cache
from html import escape
from typing import Final

from calltrack import __version__
from calltrack.protocol import ENTITY_METHODS, FORMATS, VERSIONS

CONTENT_TYPE: Final = "text/html; charset=utf-8"
URL_FORM: Final = "/api/?{format}/v3/{apikey}/{entity}/{method}/{page}/{from}/{to}"
EXAMPLE: Final = "/api/?json/v3/YOUR_API_KEY/call/get/0/2020-05-01/2020-05-31"
# Relative, so that it still leads to the health check behind a proxy that adds a prefix.
HEALTH_LINK: Final = "healthz"
CONSOLE_LINK: Final = "console/"
DOCS: Final = "docs/api.md"


def _code_list(items: Iterable[str]) -> str:
    return ", ".join(f"<code>{escape(item)}</code>" for item in items)


@cache
def home_page() -> bytes:
    """The page of this server, the same for every request (nothing of a request is shown)."""
    return render_home(__version__, FORMATS, ENTITY_METHODS, VERSIONS)


def render_home(
    version: str,
    formats: Iterable[str],
    entity_methods: Mapping[str, Iterable[str]],
    versions: Iterable[str],
) -> bytes:
    """The page for these values, each one escaped."""
    entities = "".join(
        f"<li><code>{escape(entity)}</code>: {_code_list(methods)}</li>"
        for entity, methods in entity_methods.items()
    )
    shown_version = escape(version)
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>calltrack {shown_version}</title>
</head>
<body>
<h1>calltrack {shown_version}</h1>
<p>A self-hosted call-tracking service. Its export API speaks the CallKeeper
{_code_list(versions)} protocol.</p>
<h2>Requests</h2>
<p><code>{escape(URL_FORM)}</code> (<code>{escape("{to}")}</code> may be left out), for example
<code>{escape(EXAMPLE)}</code>. <code>/api?</code> and <code>/api/index.php?</code> are the
same.</p>
<p>Formats: {_code_list(formats)}.</p>
<p>Entities and their methods:</p>
<ul>{entities}</ul>
<h2>More</h2>
<ul>
<li><a href="{escape(CONSOLE_LINK)}">Console</a>: the calls, campaigns and settings in a
browser (sign in with an API key).</li>
<li><a href="{escape(HEALTH_LINK)}">Health check</a>: <code>ok</code> while the database
answers.</li>
<li>Documentation: <code>{escape(DOCS)}</code> in the calltrack repository, the complete
reference of the API (validation order and messages, access, paging, fields).</li>
</ul>
</body>
</html>
"""
    return page.encode()
