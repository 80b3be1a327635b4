"""The v3 request parser: a pure function from the raw query string to a typed request.

``parse`` never raises: it records what each segment holds. The checks of the contract's
section 2 are methods of the request, each raising its documented error and returning what
the next step needs; two checks need the store (the key, and the key's kind against the
method), so the handler (``api.handler.check``) runs them in the contract's order between
them. What follows the method depends on it: ``page/from/to`` for reads, the call's
``universalId`` for ``delete``, nothing for ``put`` (its calls come in the body).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import Final
from urllib.parse import unquote_to_bytes
from zoneinfo import ZoneInfo

from calltrack.errors import (
    BadEnd,
    BadPage,
    BadStart,
    FormatNotAvailable,
    MissingCallId,
    UnknownEntity,
    UnknownMethod,
    WrongVersion,
)
from calltrack.protocol import ENTITY_METHODS, FORMATS, VERSIONS, Method
from calltrack.store import Window

_PAGE_RE: Final = re.compile(r"[0-9]{1,9}")
_DATE_RE: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
# Up to 18 digits: any instant a client means, and always inside a 64-bit column.
_TIMESTAMP_RE: Final = re.compile(r"[0-9]{1,18}")
MAX_SEGMENT: Final = 256
_KEY_SHAPED: Final = re.compile(r"[A-Za-z0-9]{16}")
SEGMENTS: Final = ("format", "version", "apikey", "entity", "method", "page", "from", "to")


@dataclass(frozen=True, slots=True)
class PageQuery:
    """What a read asks for, once checks 7-9 passed: a page number and a window."""

    number: int
    window: Window


@dataclass(frozen=True, slots=True)
class V3Request:
    """A parsed request: each segment decoded, and what it means where it means something."""

    format: str
    version: str
    key: str
    entity: str
    method: Method | None  # None: no such entity, or not one of its methods
    page: int | None  # None: not a page number
    start: int | None  # None: neither a date nor a timestamp
    window: Window | None  # None: a bad start, or a ``to`` given and bad
    call_id: str  # the universalId of a delete

    def check_format_and_version(self) -> None:
        """Checks 1 (format) and 2 (version)."""
        if self.format not in FORMATS:
            raise FormatNotAvailable
        if self.version not in VERSIONS:
            raise WrongVersion

    def checked_method(self) -> Method:
        """Checks 4 (entity) and 5 (method): the method asked for."""
        if self.entity not in ENTITY_METHODS:
            raise UnknownEntity
        if self.method is None:
            raise UnknownMethod
        return self.method

    def checked_page(self) -> PageQuery:
        """Checks 7 (page), 8 (from) and 9 (to) of a read."""
        if self.page is None:
            raise BadPage
        if self.start is None:
            raise BadStart
        if self.window is None:
            raise BadEnd
        return PageQuery(self.page, self.window)

    def check_call_id(self) -> None:
        """A delete names its call."""
        if not self.call_id:
            raise MissingCallId


def split_query(query: bytes) -> list[str]:
    """Segments of the raw query string, each percent-decoded on its own.

    Only the first segments mean anything, and none is valid past a few dozen bytes, so
    a huge query string costs no more than a normal one.
    """
    parts = query.split(b"/", len(SEGMENTS))[: len(SEGMENTS) + 1]
    while parts and parts[-1] == b"":
        parts.pop()  # a trailing '/' is ignored
    return [_decode(part) for part in parts[: len(SEGMENTS)]]


def _decode(part: bytes) -> str:
    if len(part) > MAX_SEGMENT:
        return "\ufffd"  # no valid value is this long; decoding it would only cost time
    return unquote_to_bytes(part).decode("utf-8", "replace")


def parse(query: bytes, zone: ZoneInfo) -> V3Request:
    """Parse ``format/version/apikey/entity/method/...``; never raises."""
    seg = split_query(query)
    seg += [""] * (len(SEGMENTS) - len(seg))
    fmt, version, key, entity, method_text, page_text, start_text, end_text = seg[:8]
    methods = ENTITY_METHODS.get(entity, ())
    method = next((m for m in methods if m == method_text), None)
    start = _instant(start_text, zone, end_of_day=False)
    end = _instant(end_text, zone, end_of_day=True) if end_text else None
    end_ok = end is not None or not end_text  # an empty ``to`` is an open window
    return V3Request(
        format=fmt,
        version=version,
        key=key,
        entity=entity,
        method=method,
        page=int(page_text) if _PAGE_RE.fullmatch(page_text) else None,
        start=start,
        window=Window(start, end) if start is not None and end_ok else None,
        call_id=page_text if method == "delete" else "",
    )


def _instant(text: str, zone: ZoneInfo, *, end_of_day: bool) -> int | None:
    """A date (its first or last second in the zone) or a unix timestamp; None if neither."""
    if _TIMESTAMP_RE.fullmatch(text):
        return int(text)
    if not _DATE_RE.fullmatch(text):
        return None
    try:
        day = date.fromisoformat(text)
    except ValueError:
        return None  # impossible dates such as 2020-02-30
    hour, minute, second = (23, 59, 59) if end_of_day else (0, 0, 0)
    # Wall-clock bounds, so days that are 23 or 25 hours long keep their real length.
    moment = datetime(day.year, day.month, day.day, hour, minute, second, tzinfo=zone)
    return int(moment.timestamp())


def redact_query(query: bytes) -> bytes:
    """The query string with its key replaced, for logs.

    The key's place is the third segment, but a client may misplace it (a leading or doubled
    '/'), so any segment that decodes to something key-shaped is hidden too.
    """
    parts = query.split(b"/")
    for index, part in enumerate(parts):
        if part and (index == 2 or _KEY_SHAPED.fullmatch(_decode(part))):
            parts[index] = b"<key>"
    return b"/".join(parts)
