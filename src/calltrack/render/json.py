"""JSON answers: pages of calls from stored bodies, and the one error envelope."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Final

import msgspec

from calltrack import messages
from calltrack.protocol import ENTITY_METHODS, FORMATS, VERSIONS

CONTENT_TYPE: Final = "application/json; charset=utf-8"

# The same in every error answer (section 2 of the contract).
INFO: Final = {
    "entities": {entity: list(methods) for entity, methods in ENTITY_METHODS.items()},
    "types": list(FORMATS),
    "versions": list(VERSIONS),
}


def render_page(bodies: Sequence[bytes], page: int) -> bytes:
    """A JSON array of the calls whose stored bodies are given, each stamped with ``page``."""
    if not bodies:
        return b"[]"
    # Stored bodies are the record without its leading '{"page":0,'; the page is one join of
    # them with the page's prefix between (one copy of the bytes, not two).
    prefix = b'{"page":%d,' % page
    parts = [b"," + prefix] * (2 * len(bodies) + 1)
    parts[0] = b"[" + prefix
    parts[1::2] = bodies
    parts[-1] = b"]"
    return b"".join(parts)


@cache
def error_body(message: str) -> bytes:
    """The error envelope with ``message`` as ``inbound.error``."""
    return envelope({"error": message})


def envelope(inbound: dict[str, object]) -> bytes:
    """The v3 answer shape that errors and writes share: inbound, info, empty payload."""
    return msgspec.json.encode({"inbound": inbound, "info": INFO, "payload": []})


def internal_error_body(request_id: str) -> bytes:
    """The envelope of an unexpected failure: the request id to quote, never a traceback."""
    return envelope({"error": messages.INTERNAL_ERROR, "requestId": request_id})
