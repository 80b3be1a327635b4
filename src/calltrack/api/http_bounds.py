"""HTTP bounds: uvicorn's httptools protocol limiting what a client may make the server buffer.

httptools accumulates the request target and headers without limit; a client could send a
gigabyte URL. These bounds make such a request a 400 long before it costs memory.

The 400 is followed by a lingering close, as nginx does: closing a socket that still has
unread request bytes makes the kernel send a reset, which can destroy the 400 before the
client reads it. So the server half-closes, discards what the client is still sending for a
bounded time and amount, then closes.
"""

from __future__ import annotations

from typing import Final

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

MAX_URL_BYTES: Final = 8 * 1024
MAX_HEADER_BYTES: Final = 64 * 1024
LINGER_SECONDS: Final = 2.0
LINGER_MAX_BYTES: Final = 1024 * 1024


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """Answers 400 to a request whose URL or headers exceed the bounds above."""

    _lingering_bytes: int | None = None  # not None once a 400 was sent: discard, then close

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

    def data_received(self, data: bytes) -> None:
        if self._lingering_bytes is None:
            super().data_received(data)
            return
        self._lingering_bytes += len(data)
        if self._lingering_bytes > LINGER_MAX_BYTES:
            self.transport.close()

    def send_400_response(self, msg: str) -> None:
        body = msg.encode("ascii")
        head = [STATUS_LINE[400]]
        for name, value in self.server_state.default_headers:
            head.extend([name, b": ", value, b"\r\n"])
        head.append(
            b"content-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n" % len(body)
        )
        self.transport.write(b"".join(head) + body)
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()
        self._lingering_bytes = 0
        self.loop.call_later(LINGER_SECONDS, self.transport.close)
