"""gzip on request (``Accept-Encoding``), done in the worker thread, never on the event loop.

Level 1 by default: measured on a 2 MB page (bench/choices/CHOICES.md) it costs about a third
of level 6 and still shrinks the page about fourfold.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import replace
from typing import Final

from calltrack.api.answers import Answer

MIN_SIZE: Final = 1024  # smaller answers are not worth the header and the CPU


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether the client accepts gzip (and did not refuse it with ``q=0``)."""
    for item in accept_encoding.lower().split(","):
        name, _, params = item.strip().partition(";")
        if name.strip() in ("gzip", "*"):
            quality = params.strip().removeprefix("q=").strip()
            return quality not in ("0", "0.0", "0.00", "0.000")
    return False


def gzip_answer(answer: Answer, level: int) -> Answer | None:
    """The answer gzip-encoded, or None when it is too small to be worth it."""
    if isinstance(answer.body, bytes):
        if len(answer.body) < MIN_SIZE:
            return None
        compressor = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        return replace(answer, body=compressor.compress(answer.body) + compressor.flush())
    return replace(answer, body=_gzip_chunks(answer.body, level))


def _gzip_chunks(chunks: Iterator[bytes], level: int) -> Iterator[bytes]:
    compressor = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    for chunk in chunks:
        if compressed := compressor.compress(chunk):
            yield compressed
    yield compressor.flush()
