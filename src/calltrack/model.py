"""The call record: fields, types, empty values and validation, written once.

``CallRecord`` is the single source of truth: its field order is the order of the v3 answer,
its defaults are the empty values, its annotations are the JSON types. Readers (the importer)
and writers (the renderers) derive from it.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Final, Literal
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


def decode_record(data: bytes | str) -> CallRecord:
    """Parse one JSON object into a record; raises InvalidRecord with the reason."""
    try:
        return _line_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise InvalidRecord(str(exc)) from None


def prepare(record: CallRecord, zone: ZoneInfo) -> StoredCall:
    """Check what types alone cannot, fill derived values, and render the stored body."""
    for name in REQUIRED_FIELDS:
        if not getattr(record, name):
            raise InvalidRecord(f"missing required field `{name}`")
    if record.visitSite != record.siteVisit:
        if record.visitSite and record.siteVisit:
            raise InvalidRecord("`visitSite` and `siteVisit` differ; they are the same field")
        record.visitSite = record.siteVisit = record.visitSite or record.siteVisit
    call_time = parse_local(record.callTime, zone, "callTime")
    if record.localDate:
        _parse_naive(record.localDate, "localDate")
    if record.cbOrderDate:
        _parse_naive(record.cbOrderDate, "cbOrderDate")
    if not record.universalId:
        record.universalId = new_universal_id()
    record.page = 0
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
    )


def parse_local(text: str, zone: ZoneInfo, field: str) -> int:
    """``YYYY-MM-DD HH:MM:SS`` in the service zone -> unix seconds; InvalidRecord if impossible."""
    return int(_parse_naive(text, field).replace(tzinfo=zone).timestamp())


def _parse_naive(text: str, field: str) -> datetime:
    if not _DATETIME_RE.match(text):
        raise InvalidRecord(f"`{field}` is not a date-time 'YYYY-MM-DD HH:MM:SS': {text!r}")
    try:
        # The pattern above fixed the shape, so the C parser reads exactly that (strptime
        # would cost several times more on a large import).
        return datetime.fromisoformat(text)
    except ValueError:
        raise InvalidRecord(f"`{field}` is not a real date-time: {text!r}") from None


def format_local(instant: int, zone: ZoneInfo) -> str:
    """Unix seconds -> ``YYYY-MM-DD HH:MM:SS`` in the service zone."""
    return datetime.fromtimestamp(instant, zone).strftime(TIME_FORMAT)


def new_universal_id() -> str:
    """A fresh identity for a call imported without one: 19 random digits."""
    return str(10**18 + secrets.randbelow(9 * 10**18))
