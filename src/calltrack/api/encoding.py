"""gzip on request (``Accept-Encoding``), done in a worker thread, never on the event loop.

Level 1 by default: measured on a 2 MB page (docs/decisions/dependencies.md) it costs about a third
of level 6 and still shrinks the page about fourfold. Levels 1-3 use Intel's ISA-L (``isal``)
where it is installed: on a 1.7 MB page of calls, 1.9 ms against zlib's 8.7 ms at level 1,
and a slightly smaller result (7.8x against 7.4x). Levels 4-9, and platforms without ``isal``
wheels, use zlib.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import replace
from typing import Any, Final

from calltrack.api.answers import Answer

try:
    from isal import isal_zlib

    HAVE_ISAL = True
except ImportError:  # pragma: no cover - a platform without isal wheels
    HAVE_ISAL = False

MIN_SIZE: Final = 1024  # smaller answers are not worth the header and the CPU
GZIP_WBITS: Final = 16 + zlib.MAX_WBITS  # a gzip header and trailer around the deflate stream
ISAL_MAX_LEVEL: Final = 3  # ISA-L's levels are 0-3


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
        return replace(answer, body=_compress(answer.body, level))
    return replace(answer, body=_gzip_chunks(answer.body, level))


def _deflate(level: int) -> Any:
    """The compression module for ``level``: ISA-L's for the fast levels when installed."""
    return isal_zlib if HAVE_ISAL and level <= ISAL_MAX_LEVEL else zlib


def _compress(data: bytes, level: int) -> bytes:
    """One gzip member in one call (no compressor object kept between pages)."""
    result: bytes = _deflate(level).compress(data, level, GZIP_WBITS)
    return result


def _compressor(level: int) -> Any:
    """A gzip compressor object, for answers that stream."""
    return _deflate(level).compressobj(level, zlib.DEFLATED, GZIP_WBITS)


def _gzip_chunks(chunks: Iterator[bytes], level: int) -> Iterator[bytes]:
    compressor = _compressor(level)
    for chunk in chunks:
        if compressed := compressor.compress(chunk):
            yield compressed
    yield compressor.flush()
