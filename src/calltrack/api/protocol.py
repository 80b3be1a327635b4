"""uvicorn's httptools protocol with bounds on what a client may make the server buffer.

httptools accumulates the request target and headers without limit; a client could send a
gigabyte URL. These bounds make such a request a 400 long before it costs memory.
"""

from __future__ import annotations

from typing import Final

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_URL_BYTES: Final = 8 * 1024
MAX_HEADER_BYTES: Final = 64 * 1024


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """Answers 400 to a request whose URL or headers exceed the bounds above."""

    def on_url(self, url: bytes) -> None:
        if len(self.url) + len(url) > MAX_URL_BYTES:
            raise httptools.HttpParserError("request target too long")
        super().on_url(url)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes = getattr(self, "_header_bytes", 0) + len(name) + len(value)
        if self._header_bytes > MAX_HEADER_BYTES:
            raise httptools.HttpParserError("request headers too large")
        super().on_header(name, value)
