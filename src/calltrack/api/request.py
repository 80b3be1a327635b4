"""The v3 request parser: a pure function from the raw query string to a typed request.

Validation runs in the contract's order (section 2). Two checks need the store (the key, and
the key's kind against the method), so ``parse`` records every segment's error and the
handler asks for them in order: ``before_key``, then ``before_kind``, then ``after_kind``.
What follows the method depends on it: ``page/from/to`` for reads, the call's
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
    ApiError,
    BadEnd,
    BadPage,
    BadStart,
    FormatNotAvailable,
    MissingCallId,
    UnknownEntity,
    UnknownMethod,
    WrongVersion,
)
from calltrack.protocol import ENTITY_METHODS, FORMATS, READ_METHODS, VERSIONS, Method
from calltrack.store import Window

_PAGE_RE: Final = re.compile(r"[0-9]{1,9}")
_DATE_RE: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
# Up to 18 digits: any instant a client means, and always inside a 64-bit column.
_TIMESTAMP_RE: Final = re.compile(r"[0-9]{1,18}")
MAX_SEGMENT: Final = 256
_KEY_SHAPED: Final = re.compile(r"[A-Za-z0-9]{16}")
SEGMENTS: Final = ("format", "version", "apikey", "entity", "method", "page", "from", "to")


@dataclass(frozen=True, slots=True)
class V3Request:
    """A parsed request: each part is its value, or the documented error it earns."""

    format: str
    key: str
    entity: str
    method: Method | None
    page: int | None
    window: Window | None
    call_id: str  # the universalId of a delete
    errors: tuple[ApiError | None, ...]  # one slot per check, in the contract's order

    def before_key(self) -> ApiError | None:
        """Errors 1-2: format, version."""
        return _first(self.errors[0:2])

    def before_kind(self) -> ApiError | None:
        """Errors 4-5: entity, method (after the key is known)."""
        return _first(self.errors[2:4])

    def after_kind(self) -> ApiError | None:
        """Errors 7-9: page, from, to, or the call id of a delete (after the key's kind)."""
        return _first(self.errors[4:])

    def first_error(self) -> ApiError | None:
        """The first error that needs no store (the key taken as valid)."""
        return _first(self.errors)


def _first(errors: tuple[ApiError | None, ...]) -> ApiError | None:
    return next((error for error in errors if error is not None), None)


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

    page = int(page_text) if _PAGE_RE.fullmatch(page_text) else None
    start = _instant(start_text, zone, end_of_day=False)
    end = _instant(end_text, zone, end_of_day=True) if end_text else None
    errors: tuple[ApiError | None, ...] = (
        None if fmt in FORMATS else FormatNotAvailable(),
        None if version in VERSIONS else WrongVersion(),
        None if methods else UnknownEntity(),
        None if method is not None else UnknownMethod(),
    )
    if method == "delete":
        errors += (None if page_text else MissingCallId(),)
    elif method is None or method in READ_METHODS:
        errors += (
            None if page is not None else BadPage(),
            None if start is not None else BadStart(),
            None if not end_text or end is not None else BadEnd(),
        )
    window = Window(start, end) if start is not None and (end is not None or not end_text) else None
    return V3Request(
        format=fmt,
        key=key,
        entity=entity,
        method=method,
        page=page,
        window=window,
        call_id=page_text if method == "delete" else "",
        errors=errors,
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
