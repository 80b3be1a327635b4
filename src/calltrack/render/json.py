"""JSON answers: pages of calls from stored bodies, and the one error envelope."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Final

import msgspec

from calltrack.access import METHODS

CONTENT_TYPE: Final = "application/json; charset=utf-8"

# The same in every error answer (section 2 of the contract).
INFO: Final = {
    "entities": {
        "call": list(METHODS),
        "callrole": ["get"],
        "phone": ["get"],
        "user": ["get"],
        "campaign": ["get"],
        "tag": ["get"],
    },
    "types": ["json", "plain", "csv", "xml"],
    "versions": ["v3"],
}


def render_page(bodies: Sequence[bytes], page: int) -> bytes:
    """A JSON array of the calls whose stored bodies are given, each stamped with ``page``."""
    # Stored bodies are the record without its leading '{"page":0,'; joining bytes is all the
    # work a page needs.
    if not bodies:
        return b"[]"
    prefix = b'{"page":%d,' % page
    return b"".join((b"[", prefix, (b"," + prefix).join(bodies), b"]"))


@cache
def error_body(message: str) -> bytes:
    """The error envelope with ``message`` as ``inbound.error``."""
    return msgspec.json.encode({"inbound": {"error": message}, "info": INFO, "payload": []})


def internal_error_body(request_id: str) -> bytes:
    """The envelope of an unexpected failure: the request id to quote, never a traceback."""
    return msgspec.json.encode(
        {
            "inbound": {"error": "Internal error", "requestId": request_id},
            "info": INFO,
            "payload": [],
        }
    )
