"""What a call's events add up to, and the v3 record it becomes: pure functions.

Events may come twice and in any order. ``merge`` folds one into what is known of the call so
that the same event again changes nothing, ``call.ended`` alone gives a whole call, and once a
call has ended only a recording still changes it.
``build_record`` turns an ended call and what the account knows of it (its number's campaign,
the visit that held the number) into the record the v3 export serves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Final
from urllib.parse import urlsplit, urlunsplit

from calltrack.model import CallRecord
from calltrack.telephony.events import TelephonyEvent
from calltrack.tracking.lending import CallFlags
from calltrack.tracking.sources import Source

# A call started and not ended within this is ended by the service as failed.
OPEN_CALL_SECONDS: Final = 4 * 3600
# SIP statuses of a disposition when the PBX gives none: (to the caller, to the manager).
DISPOSITION_STATUSES: Final = {
    "answered": (200, 200),
    "busy": (200, 486),
    "no_answer": (200, 480),
    "cancelled": (487, 0),
    "failed": (503, 0),
}


NO_FLAGS: Final = CallFlags(unique=False, target=False, unique_target=False)


@dataclass(frozen=True, slots=True)
class CallFacts:
    """What the events of one call said so far."""

    started_at: int | None = None
    answered_at: int | None = None
    ended_at: int | None = None
    caller: str = ""
    called: str = ""
    forwarded_to: str = ""
    talk_seconds: int | None = None
    disposition: str = ""
    sip_first: int | None = None
    sip_second: int | None = None
    recording_url: str = ""
    ended: bool = False


def merge(facts: CallFacts, event: TelephonyEvent) -> CallFacts:
    """``facts`` with ``event`` folded in (the same facts when it adds nothing)."""
    numbers = replace(
        facts,
        caller=facts.caller or event.caller,
        called=facts.called or event.called,
        forwarded_to=facts.forwarded_to or event.forwarded_to,
    )
    if event.event == "call.recording":
        return replace(numbers, recording_url=event.recording_url)
    if facts.ended:
        return facts  # a late or repeated event of an ended call adds nothing (the contract)
    if event.event == "call.started":
        start = event.at if facts.started_at is None else min(facts.started_at, event.at)
        return replace(numbers, started_at=start)
    if event.event == "call.answered":
        answered = event.at if facts.answered_at is None else min(facts.answered_at, event.at)
        return replace(numbers, answered_at=answered)
    talk = event.talk_seconds or 0
    disposition = event.disposition or ("answered" if talk > 0 else "failed")
    started = facts.started_at
    if started is None:  # call.ended alone: it started its talk (and an unknown ring) before
        started = event.at - talk
    return replace(
        numbers,
        started_at=started,
        ended_at=event.at,
        talk_seconds=talk,
        disposition=disposition,
        sip_first=event.sip_status_first,
        sip_second=event.sip_status_second,
        recording_url=event.recording_url or facts.recording_url,  # a PBX may tell it here
        ended=True,
    )


def abandon(facts: CallFacts, now: int) -> CallFacts:
    """A call left open too long, ended by the service as failed."""
    return replace(facts, ended=True, ended_at=now, talk_seconds=0, disposition="failed")


@dataclass(frozen=True, slots=True)
class Visit:
    """The session that held the called number when the call started."""

    source: Source
    landing_url: str
    referrer: str
    ga: str
    ym: str
    rs: str
    ip: str
    user_agent: str
    pages: int
    last_page: str
    visits: int  # the visitor's sessions so far


@dataclass(frozen=True, slots=True)
class Place:
    city: str = ""
    region: str = ""
    country: str = ""


@dataclass(frozen=True, slots=True)
class CallContext:
    """Everything but the events that a call's record says."""

    universal_id: str
    call_number: int  # ctCallId: the call's id in the service
    call_time: str  # callTime, in the service time zone
    local_date: str
    timezone_offset: str
    campaign_id: int = 0
    campaign_name: str = ""
    site_host: str = ""
    office_line: str = ""
    visit: Visit | None = None
    rule_source: Source | None = None  # a static number's rule, when no visit
    place: Place = Place()
    device: str = ""
    flags: CallFlags = NO_FLAGS


def build_record(facts: CallFacts, context: CallContext) -> CallRecord:
    """The v3 record of an ended call."""
    talk = facts.talk_seconds or 0
    first, second = DISPOSITION_STATUSES.get(facts.disposition, (0, 0))
    visit = context.visit
    source = visit.source if visit is not None else context.rule_source or Source()
    landing = visit.landing_url if visit is not None else ""
    return CallRecord(
        universalId=context.universal_id,
        serviceType="calltracking",
        clientNumber=facts.caller,
        managerNumber=facts.forwarded_to or context.office_line,
        callerIdToManager=facts.caller,
        callerIdToClient=facts.called,
        statusFirst=facts.sip_first if facts.sip_first is not None else first,
        statusSecond=facts.sip_second if facts.sip_second is not None else second,
        status="success" if facts.disposition == "answered" and talk > 0 else "fail",
        callTime=context.call_time,
        localDate=context.local_date,
        timezoneOffset=context.timezone_offset,
        duration=talk,
        tariffTime=math.ceil(talk / 60),
        site=context.site_host,
        recordUrl=facts.recording_url,
        unique=context.flags.unique,
        target=context.flags.target,
        uniqueTarget=context.flags.unique_target,
        visitSite=context.site_host,
        siteVisit=context.site_host,
        referrer=visit.referrer if visit is not None else "",
        utm_source=source.utm_source,
        utm_medium=source.utm_medium,
        utm_campaign=source.utm_campaign,
        utm_content=source.utm_content,
        utm_term=source.utm_term,
        yaClid=visit.ym if visit is not None else "",
        gaClid=visit.ga if visit is not None else "",
        roistatClid=visit.rs if visit is not None else "",
        city=context.place.city,
        region=context.place.region,
        country=context.place.country,
        ipAddress=visit.ip if visit is not None else "",
        pagesCount=visit.pages if visit is not None else 0,
        entryPoint=without_query(landing),
        entryPointQuery=landing,
        callPage=visit.last_page if visit is not None else "",
        counts=visit.visits if visit is not None else 0,
        userAgent=visit.user_agent if visit is not None else "",
        device=context.device,
        ctCallId=context.call_number,
        ctCampaignId=context.campaign_id,
        ctCampaignName=context.campaign_name,
    )


def without_query(url: str) -> str:
    """A URL without its query and fragment."""
    if not url:
        return ""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
