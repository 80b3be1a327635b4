"""What a delivery sends: the event and the call's v3 record (without ``page``).

POST and PUT send ``{"event": ..., "call": {...}}`` as UTF-8 JSON. GET and DELETE have no
body: the event and the record's fields are query parameters, arrays and objects as JSON,
booleans as ``true``/``false``; the query string is then what is signed.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import msgspec

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(dict[str, Any]).decode

BODY_METHODS = frozenset({"POST", "PUT"})


def record_json(stored_body: bytes) -> bytes:
    """The v3 record without ``page`` from a stored body (the record after '{"page":0,')."""
    return b"{" + stored_body


def render(event: str, record: bytes, method: str) -> bytes:
    """The payload of ``event`` for a call whose record (JSON) is ``record``."""
    if method in BODY_METHODS:
        return b'{"event":' + _encode(event) + b',"call":' + record + b"}"
    fields = [("event", event)]
    for name, value in _decode(record).items():
        if value is None:
            continue
        fields.append((name, _query_value(value)))
    return urlencode(fields).encode()


def _query_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    return _encode(value).decode()  # arrays and objects


def request_parts(url: str, method: str, payload: bytes) -> tuple[str, bytes, bytes]:
    """(URL, body, signed content) of a delivery. GET and DELETE carry the payload in the
    query, after the endpoint's own parameters if it has some; the whole query string as the
    receiver gets it is what is signed."""
    if method in BODY_METHODS:
        return url, payload, payload
    base, _, own = url.partition("?")
    query = (own.encode() + b"&" if own else b"") + payload
    return base + "?" + query.decode(), b"", query
