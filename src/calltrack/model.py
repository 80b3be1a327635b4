"""The call record: fields, types, empty values and validation, written once.

``CallRecord`` is the single source of truth: its field order is the order of the v3 answer,
its defaults are the empty values, its annotations are the JSON types. Readers (the importer)
and writers (the renderers) derive from it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Final, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import msgspec

from calltrack.errors import InvalidRecord

# JSON integers in the record are non-negative and fit a signed 64-bit column.
Int = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
Digits = Annotated[str, msgspec.Meta(pattern=r"^[0-9]*$", max_length=32)]
Text = Annotated[str, msgspec.Meta(max_length=8192)]
DATETIME_PATTERN: Final = r"^(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2})?$"
DateTimeText = Annotated[str, msgspec.Meta(pattern=DATETIME_PATTERN)]
Offset = Annotated[str, msgspec.Meta(pattern=r"^([+-]\d{4})?$")]

ServiceType = Literal["callback", "calltracking", "import"]
Status = Literal["success", "fail"]
ConnectType = Literal["auto", "smartcall", "dtmf", ""]
EventSource = Literal[
    "widget", "mobile", "api", "lg", "iform", "form", "ckapp", "hand", "fb", "vk", "ok", ""
]
Listened = Literal["", "0", "1"]


class Hook(msgspec.Struct, forbid_unknown_fields=True):
    """One webhook delivery made for a call."""

    hookEventName: Literal["AFTER_CALL_FINISH", "BEFORE_CALL_START"]
    hookAddress: Text
    hookMethod: Literal["GET", "POST", "PUT", "DELETE"]
    hookResponseStatus: Int


class CallRecord(msgspec.Struct, forbid_unknown_fields=True):
    """One call, exactly as the v3 API answers it (section 5 of the contract)."""

    page: Int = 0
    universalId: Annotated[str, msgspec.Meta(max_length=64)] = ""
    serviceType: ServiceType | None = None  # required: None means "missing", rejected
    clientNumber: Digits = ""
    managerNumber: Digits = ""
    callerIdToManager: Digits = ""
    callerIdToClient: Digits = ""
    statusFirst: Int = 0
    statusSecond: Int = 0
    status: Status | None = None  # required
    callTime: DateTimeText = ""  # required
    localDate: DateTimeText = ""
    timezoneOffset: Offset = ""
    duration: Int = 0
    tariffTime: Int = 0
    site: Text = ""
    recordUrl: Text = ""
    unique: bool = False
    target: bool = False
    uniqueTarget: bool = False
    visitSite: Text = ""
    siteVisit: Text = ""
    referrer: Text = ""
    utm_source: Text = ""
    utm_medium: Text = ""
    utm_campaign: Text = ""
    utm_content: Text = ""
    utm_term: Text = ""
    yaClid: Text = ""
    gaClid: Text = ""
    roistatClid: Text = ""
    calltouchClid: Text = ""
    comagicClid: Text = ""
    city: Text = ""
    region: Text = ""
    country: Text = ""
    ipAddress: Text = ""
    pagesCount: Int = 0
    entryPoint: Text = ""
    entryPointQuery: Text = ""
    callPage: Text = ""
    counts: Int = 0
    userAgent: Text = ""
    device: Text = ""
    cbWidgetHash: Text = ""
    cbToolId: Int = 0
    cbCallId: Int = 0
    cbUid: Int = 0
    cbToolName: Text = ""
    cbOfficeNumber: Text = ""
    cbOfficeName: Text = ""
    cbOrderDate: DateTimeText = ""
    cbAttempt: Int = 0
    cbAttemptsQueue: Annotated[list[Int], msgspec.Meta(max_length=1000)] = msgspec.field(
        default_factory=list
    )
    cbConnectType: ConnectType = ""
    cbSmartCallCount: Int = 0
    cbIvrCount: Int = 0
    cbEventSource: EventSource = ""
    ctCallId: Int = 0
    ctCampaignId: Int = 0
    ctCampaignName: Text = ""
    ctIsListened: Listened = ""
    tags: Annotated[list[Text], msgspec.Meta(max_length=1000)] = msgspec.field(default_factory=list)
    hooks: Annotated[list[Hook], msgspec.Meta(max_length=1000)] = msgspec.field(
        default_factory=list
    )


FIELD_NAMES: Final[tuple[str, ...]] = CallRecord.__struct_fields__
REQUIRED_FIELDS: Final = ("serviceType", "status", "callTime")

# What every stored body is prefixed with to become the record of page N.
_PAGE0_PREFIX: Final = b'{"page":0,'

_encoder = msgspec.json.Encoder()
_line_decoder = msgspec.json.Decoder(CallRecord)
_DATETIME_RE: Final = re.compile(DATETIME_PATTERN)
TIME_FORMAT: Final = "%Y-%m-%d %H:%M:%S"


@dataclass(frozen=True, slots=True)
class StoredCall:
    """A validated call ready for the store: identity, instant, indexed columns, rendered body."""

    universal_id: str
    call_time: int  # unix seconds
    service_type: str
    status: str
    campaign_id: int
    body: bytes  # the record's JSON for page 0 without its '{"page":0,' prefix
    campaign_name: str = ""
    site: str = ""
    tags: tuple[str, ...] = ()
    client_number: str = ""  # indexed: a caller's earlier calls make the next one not unique
    duration: int = 0
    facets: Facets | None = None  # what v4's filters and stats group by


@dataclass(frozen=True, slots=True)
class Facets:
    """Fields of a record that v4 filters and groups calls by, kept in columns of their own."""

    manager_number: str = ""
    utm_source: str = ""
    utm_medium: str = ""
    utm_campaign: str = ""
    flags: int = 0  # UNIQUE | TARGET | UNIQUE_TARGET
    device: str = ""
    source: str = ""  # utm_source, else the referrer's host, else "direct"

    def columns(self) -> tuple[str, str, str, str, int, str, str]:
        return (
            self.manager_number,
            self.utm_source,
            self.utm_medium,
            self.utm_campaign,
            self.flags,
            self.device,
            self.source,
        )


UNIQUE: Final = 1
TARGET: Final = 2
UNIQUE_TARGET: Final = 4
NO_FACETS: Final = Facets()


def facets_of(record: CallRecord) -> Facets:
    flags = (
        (UNIQUE if record.unique else 0)
        | (TARGET if record.target else 0)
        | (UNIQUE_TARGET if record.uniqueTarget else 0)
    )
    return Facets(
        manager_number=record.managerNumber,
        utm_source=record.utm_source,
        utm_medium=record.utm_medium,
        utm_campaign=record.utm_campaign,
        flags=flags,
        device=record.device,
        source=source_of(record.utm_source, record.referrer),
    )


def source_of(utm_source: str, referrer: str) -> str:
    """A call's source for v4's stats: its utm_source, else its referrer's host (without
    ``www.``), else ``direct``."""
    if utm_source:
        return utm_source
    if referrer:
        try:
            host = urlsplit(referrer if "//" in referrer else "//" + referrer).hostname or ""
        except ValueError:  # not a URL: the referrer as it was given
            return referrer[:200]
        return host.removeprefix("www.") or "direct"
    return "direct"


def decode_record(data: bytes | str) -> CallRecord:
    """Parse one JSON object into a record; raises InvalidRecord with the reason."""
    try:
        return _line_decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise InvalidRecord(_explain(data, str(exc))) from None
    except msgspec.DecodeError as exc:
        raise InvalidRecord(f"not valid JSON: {exc}") from None


def prepare(record: CallRecord, zone: ZoneInfo, scope: int = 0) -> StoredCall:
    """Check what types alone cannot, fill derived values, and render the stored body.

    A record without a ``universalId`` gets one derived from its content and ``scope`` (the
    account), so that importing the same record again finds the same call.
    """
    for name in REQUIRED_FIELDS:
        if not getattr(record, name):
            # An absent callTime decodes as "" like an empty one: both are "missing or empty".
            value = "missing" if getattr(record, name) is None else "missing or empty"
            raise InvalidRecord(f"`{name}` is {value}, expected {_EXPECTED[name]}")
    if record.visitSite != record.siteVisit:
        if record.visitSite and record.siteVisit:
            raise InvalidRecord(
                f"`visitSite` is {_shown(record.visitSite)} and `siteVisit` is "
                f"{_shown(record.siteVisit)}, expected the same value (they are one field)"
            )
        record.visitSite = record.siteVisit = record.visitSite or record.siteVisit
    call_time = parse_local(record.callTime, zone, "callTime")
    if record.localDate:
        _parse_naive(record.localDate, "localDate")
    if record.cbOrderDate:
        _parse_naive(record.cbOrderDate, "cbOrderDate")
    record.page = 0
    if not record.universalId:
        record.universalId = content_id(_encoder.encode(record), scope)
    encoded = _encoder.encode(record)
    return StoredCall(
        universal_id=record.universalId,
        call_time=call_time,
        service_type=record.serviceType or "",
        status=record.status or "",
        campaign_id=record.ctCampaignId,
        body=encoded[len(_PAGE0_PREFIX) :],
        campaign_name=record.ctCampaignName,
        site=record.site,
        tags=tuple(dict.fromkeys(record.tags)),  # each tag once, in first-seen order
        client_number=record.clientNumber,
        duration=record.duration,
        facets=facets_of(record),
    )


def parse_local(text: str, zone: ZoneInfo, field: str) -> int:
    """``YYYY-MM-DD HH:MM:SS`` in the service zone -> unix seconds; InvalidRecord if impossible."""
    return int(_parse_naive(text, field).replace(tzinfo=zone).timestamp())


def _parse_naive(text: str, field: str) -> datetime:
    if not _DATETIME_RE.match(text):
        raise InvalidRecord(f"`{field}` is {_shown(text)}, expected {_DATE_TIME}")
    try:
        # The pattern fixed the shape, so the C parser reads exactly that (strptime would
        # cost several times more on a large import).
        return datetime.fromisoformat(text)
    except ValueError:
        raise InvalidRecord(
            f"`{field}` is {_shown(text)}, expected {_DATE_TIME} (there is no such date or time)"
        ) from None


def format_local(instant: int, zone: ZoneInfo) -> str:
    """Unix seconds -> ``YYYY-MM-DD HH:MM:SS`` in the service zone."""
    return datetime.fromtimestamp(instant, zone).strftime(TIME_FORMAT)


def content_id(encoded: bytes, scope: int) -> str:
    """The identity of a call imported without one: 25 digits from an 80-bit BLAKE2b hash of
    the call's canonical JSON (with ``page`` 0 and ``universalId`` empty) and the account.

    Digits, like the ids a v3 server gives; 25 of them, where the random ids that earlier
    versions gave such calls have 19, so either kind is recognised. With 80 bits, two
    different calls of one account share an id with a chance below one in a million even
    among a billion calls.
    """
    digest = hashlib.blake2b(encoded, digest_size=10, person=b"calltrack-call")
    digest.update(b"\x00account:%d" % scope)
    return f"{int.from_bytes(digest.digest()):025d}"


# -- what a rejected record is told ---------------------------------------------------------

_DATE_TIME: Final = "a date-time `YYYY-MM-DD HH:MM:SS`"
_AT = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_FIELD_IN_MESSAGE = re.compile(r"field `([^`]*)`")
_PATH_STEP = re.compile(r"\.([^.\[]+)|\[(\d+)\]")
_SHOWN_CHARS: Final = 60


def _explain(data: bytes | str, message: str) -> str:
    """msgspec's validation error, told as the field, the value given and what was expected.

    msgspec names the place (``$.hooks[0].hookMethod``) but speaks of types and patterns;
    the value is read back from the record and the expectation from ``CallRecord``'s types.
    """
    parsed = _AT.match(message)
    what, path = (parsed["what"], parsed["path"] or "") if parsed else (message, "")
    steps: list[str | int] = [name or int(index) for name, index in _PATH_STEP.findall(path)]
    named = _FIELD_IN_MESSAGE.search(what)
    if named and what.startswith("Object contains unknown field"):
        owner = "a v3 call record" if not steps else _expected(_type_at(steps))
        steps.append(named[1])
        value = _value_at(data, steps)
        return (
            f"unknown field `{_path_text(steps)}` (value {_shown(value)}), "
            f"expected only the fields of {owner}"
        )
    if named and what.startswith("Object missing required field"):
        steps.append(named[1])
        return f"`{_path_text(steps)}` is missing, expected {_expected(_type_at(steps))}"
    if not steps:
        return f"the record is {_shown(_value_at(data, steps))}, expected a JSON object"
    value = _value_at(data, steps)
    shown = f"a list of {len(value)} items" if isinstance(value, list) else _shown(value)
    field = _path_text(steps)
    expected = _EXPECTED.get(field) or _expected(_type_at(steps))
    return f"`{field}` is {shown}, expected {expected}"


def _path_text(steps: list[str | int]) -> str:
    text = "".join(f"[{step}]" if isinstance(step, int) else f".{step}" for step in steps)
    return text.removeprefix(".")


def _value_at(data: bytes | str, steps: list[str | int]) -> object:
    value: object = msgspec.json.decode(data)
    for step in steps:
        try:  # the steps are msgspec's path through this very document
            value = value[step]  # type: ignore[index]
        except (LookupError, TypeError):
            return None
    return value


def _type_at(steps: list[str | int]) -> msgspec.inspect.Type:
    kind: msgspec.inspect.Type = msgspec.inspect.type_info(CallRecord)
    for step in steps:
        kind = _unwrap(kind)
        if isinstance(kind, msgspec.inspect.StructType) and isinstance(step, str):
            kind = next((f.type for f in kind.fields if f.name == step), msgspec.inspect.AnyType())
        elif isinstance(kind, msgspec.inspect.ListType) and isinstance(step, int):
            kind = kind.item_type
    return _unwrap(kind)


def _unwrap(kind: msgspec.inspect.Type) -> msgspec.inspect.Type:
    """``X | None`` -> ``X``: None stands for "missing" in the required fields."""
    if isinstance(kind, msgspec.inspect.UnionType):
        kinds = [k for k in kind.types if not isinstance(k, msgspec.inspect.NoneType)]
        if len(kinds) == 1:
            return kinds[0]
    return kind


def _expected(kind: msgspec.inspect.Type) -> str:
    """What a value of this field type looks like, in words."""
    inspect = msgspec.inspect
    if isinstance(kind, inspect.IntType):
        return "a whole number from 0 to 9223372036854775807"
    if isinstance(kind, inspect.BoolType):
        return "true or false"
    if isinstance(kind, inspect.LiteralType):
        return "one of " + ", ".join(_json(value) for value in kind.values)
    if isinstance(kind, inspect.StrType):
        return _STRINGS.get(kind.pattern or "", f"a string of at most {kind.max_length} characters")
    if isinstance(kind, inspect.ListType):
        return f"a list of at most {kind.max_length} items, each {_expected(kind.item_type)}"
    if isinstance(kind, inspect.StructType):
        return "an object with " + ", ".join(f"`{field.name}`" for field in kind.fields)
    return "a value of the v3 call record"


_STRINGS: Final = {
    DATETIME_PATTERN: f"{_DATE_TIME} or empty",
    r"^[0-9]*$": "a string of digits (at most 32)",
    r"^([+-]\d{4})?$": "a UTC offset `+HHMM` or `-HHMM`, or empty",
}


def _shown(value: object) -> str:
    """A value as JSON, cut in the middle when long (a line may hold kilobytes of text)."""
    if value == "":
        return "empty"
    text = _json(value)
    if len(text) <= _SHOWN_CHARS:
        return text
    size = len(value) if isinstance(value, str) else len(text)
    return f"{text[: _SHOWN_CHARS - 10]}…{text[-8:]} ({size:,} characters)"


def _json(value: object) -> str:
    return msgspec.json.encode(value).decode()


# The required fields' expectation, for "missing" and "empty" alike.
_EXPECTED: Final = {
    "serviceType": _expected(_type_at(["serviceType"])),
    "status": _expected(_type_at(["status"])),
    "callTime": _DATE_TIME,
}
