"""The generic events endpoint's body: one event or a JSON array of them, checked whole.

Numbers are normalised to digits (``8XXXXXXXXXX`` and ``+7`` to ``7XXXXXXXXXX``); ``at`` is
an ISO 8601 date-time (without an offset: in the service time zone) or unix seconds.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Final, Literal
from zoneinfo import ZoneInfo

import msgspec

from calltrack.telephony.events import TelephonyEvent
from calltrack.tracking.numbers import normalise

MAX_EVENTS: Final = 1000
EARLIEST: Final = 946684800  # 2000-01-01: older is a clock or a unit gone wrong
FUTURE_SLACK: Final = 86400  # a PBX's clock may run ahead; a day ahead is not a clock

Disposition = Literal["", "answered", "busy", "no_answer", "cancelled", "failed"]
Status = Annotated[int, msgspec.Meta(ge=0, le=999)]


class InvalidEvent(ValueError):
    """An event the contract does not allow; the message says which and why (422)."""


class _Event(msgspec.Struct, forbid_unknown_fields=False):
    event: Literal["call.started", "call.answered", "call.ended", "call.recording"]
    call_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    at: str | int
    caller: Annotated[str, msgspec.Meta(max_length=64)] = ""
    called: Annotated[str, msgspec.Meta(max_length=64)] = ""
    forwarded_to: Annotated[str, msgspec.Meta(max_length=64)] = ""
    talk_seconds: Annotated[int, msgspec.Meta(ge=0, le=86400)] | None = None
    disposition: Disposition = ""
    sip_status_first: Status | None = None
    sip_status_second: Status | None = None
    recording_url: Annotated[str, msgspec.Meta(max_length=2048)] = ""


_one = msgspec.json.Decoder(_Event)
_many = msgspec.json.Decoder(Annotated[list[_Event], msgspec.Meta(max_length=MAX_EVENTS)])


def parse_events(body: bytes, zone: ZoneInfo, now: int) -> list[TelephonyEvent]:
    """The events of a generic request body; InvalidEvent for the first thing wrong."""
    head = body.lstrip()[:1]
    try:
        raw = _many.decode(body) if head == b"[" else [_one.decode(body)]
    except msgspec.ValidationError as exc:
        raise InvalidEvent(f"not an event: {exc}") from None
    except msgspec.DecodeError:
        raise InvalidEvent("not an event: the body is not JSON") from None
    if not raw:
        raise InvalidEvent("no event in the array")
    return [_checked(index, event, zone, now) for index, event in enumerate(raw)]


def _checked(index: int, event: _Event, zone: ZoneInfo, now: int) -> TelephonyEvent:
    where = f"event {index}" if index else "the event"
    texts = (event.call_id, event.caller, event.called, event.forwarded_to, event.recording_url)
    if any("\x00" in text for text in texts):  # PostgreSQL keeps no NUL in text
        raise InvalidEvent(f"{where}: a field holds a NUL character")
    try:
        at = instant(event.at, zone)
        if not EARLIEST <= at <= now + FUTURE_SLACK:
            raise ValueError(f"at {event.at!r} is not a time a call can have")
        numbers = [normalise(n) if n else "" for n in (event.caller, event.called)]
        forwarded = normalise(event.forwarded_to) if event.forwarded_to else ""
        if event.recording_url and not event.recording_url.startswith(("https://", "http://")):
            raise ValueError("recording_url is not an http(s) URL")
    except ValueError as exc:
        raise InvalidEvent(f"{where}: {exc}") from None
    if event.event == "call.recording" and not event.recording_url:
        raise InvalidEvent(f"{where}: call.recording without a recording_url")
    return TelephonyEvent(
        event=event.event,
        call_id=event.call_id,
        at=at,
        caller=numbers[0],
        called=numbers[1],
        forwarded_to=forwarded,
        talk_seconds=event.talk_seconds,
        disposition=event.disposition,
        sip_status_first=event.sip_status_first,
        sip_status_second=event.sip_status_second,
        recording_url=event.recording_url,
    )


def instant(value: str | int, zone: ZoneInfo) -> int:
    """Unix seconds of ``at``: digits are unix seconds, else ISO 8601 (naive: in ``zone``)."""
    if isinstance(value, int):
        return value
    text = value.strip()
    if text.isascii() and text.isdigit() and len(text) <= 12:
        return int(text)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"at {value!r} is neither unix seconds nor an ISO 8601 time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=zone)
    return int(parsed.timestamp())
