"""Telephony events in, call records out: the steps between the routes and the store.

``receive`` merges a request's events into their calls in one transaction (beside imports on
PostgreSQL) and then writes the records of the calls that ended or changed after ending.
Should that second step fail (the store busy, the process killed), the calls stay behind
their events and ``sweep`` writes them; it also ends calls left open too long. Delivering an
event again changes nothing, so a PBX may always retry.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import fields, replace
from functools import lru_cache
from typing import cast
from zoneinfo import ZoneInfo

import msgspec

from calltrack.config import Settings
from calltrack.errors import StoreUnavailable
from calltrack.model import StoredCall, content_id, format_local, prepare
from calltrack.store import Store, Window
from calltrack.store.core import Connection
from calltrack.store.telephony import CallState, TelephonyEndpoint, WriteLockBusy
from calltrack.store.tracking import SourceRule
from calltrack.telephony import enrich
from calltrack.telephony.calls import (
    OPEN_CALL_SECONDS,
    CallContext,
    CallFacts,
    Place,
    Visit,
    abandon,
    build_record,
    merge,
)
from calltrack.telephony.events import TelephonyEvent
from calltrack.tracking.hits import host_of_site
from calltrack.tracking.lending import EarlierCall, call_flags
from calltrack.tracking.sources import Source, SourceType

log = logging.getLogger("calltrack.telephony")
_FACTS = [f.name for f in fields(CallFacts)]
_NO_FACTS = CallFacts()
_source = msgspec.json.Decoder(Source)
# A caller's place depends on the number only, and parsing it costs as much as the rest of
# building a record: the callers of a busy PBX repeat.
_caller_place = lru_cache(maxsize=65536)(enrich.caller_place)
_events = msgspec.json.Encoder()
_events_of = msgspec.json.Decoder(list[TelephonyEvent])
# The events that may change an ended call's record.
_RECORDED = frozenset({"call.ended", "call.recording"})


def receive(
    store: Store,
    endpoint: TelephonyEndpoint,
    events: list[TelephonyEvent],
    settings: Settings,
    now: int,
) -> None:
    """Merge the events into their calls and write the records of the ended ones.

    Where an import holds the store's one write lock (SQLite), the events are kept aside at
    once instead of waiting it out, and the sweeper merges them when the lock is free.
    """

    def merged(records: Settings | None) -> list[CallState]:
        with store.telephony_transaction(quick=True) as conn:
            ids = (endpoint.account_id, endpoint.provider)
            return _merge_in(store, conn, *ids, events, now, records)

    try:
        _receive_with(store, settings, merged)
    except StoreUnavailable:
        if not store.spills_events:
            raise
        store.spill_events(endpoint.account_id, endpoint.provider, _events.encode(events))


def receive_by_secret(
    store: Store, secret: str, events: list[TelephonyEvent], settings: Settings, now: int
) -> bool:
    """``receive`` for the generic endpoint whose bearer secret this is, looked up in the
    merge's own transaction (one pool checkout a request instead of two; for stores whose
    transactions do not take the one write lock, so a wrong secret holds no lock); False,
    with nothing stored, when no active endpoint has the secret."""

    # The first event's call is read with the endpoint (one round trip), unless it starts
    # a call, most often a new one, which is claimed at once.
    first = "" if not events or events[0].event == "call.started" else events[0].call_id

    def merged(records: Settings | None) -> list[CallState] | None:
        with store.telephony_transaction(quick=True) as conn:
            if first:
                endpoint, known = store.endpoint_and_call_in(conn, secret, first)
            else:
                endpoint, known = store.endpoint_by_secret_in(conn, secret), None
            if endpoint is None:
                return None
            ids = (endpoint.account_id, endpoint.provider)
            read = {first: known} if known is not None else {}
            return _merge_in(store, conn, *ids, events, now, records, read)

    return _receive_with(store, settings, merged)


class _RecordFailed(Exception):
    """Building or writing a record failed inside the merge's transaction (rolled back)."""


def _receive_with(
    store: Store, settings: Settings, merged: Callable[[Settings | None], list[CallState] | None]
) -> bool:
    """``merged(settings)``: the events merged with the records of the calls they end, in one
    transaction; False if ``merged`` found no endpoint. Should a record fail there, or an
    import hold the write lock, the events are merged again without the records: a record
    that cannot be built must not refuse the events (a PBX would post them again and again),
    nor an import hold them up."""
    try:
        changed = merged(settings)
    except _RecordFailed:
        log.exception("telephony: a record failed; the events are merged without it")
        changed = merged(None)
    except WriteLockBusy as exc:  # the sweeper writes the records once the import is done
        log.info("telephony: records left for the sweeper, an import writes: %s", exc)
        return merged(None) is not None
    if changed is None:
        return False
    ended = [state for state in changed if state.ended and state.built < state.version]
    if ended:
        try:
            write_records(store, settings, ended, quick=True)
        except StoreUnavailable as exc:  # an import holds the write lock: the sweeper writes them
            log.info("telephony: records of %d calls left for the sweeper: %s", len(ended), exc)
        except Exception:  # the events are kept: the sweeper writes these records
            log.exception("telephony: records of %d calls left for the sweeper", len(ended))
    return True


def merge_events(
    store: Store,
    account_id: int,
    provider: str,
    events: list[TelephonyEvent],
    now: int,
    quick: bool = False,
) -> list[CallState]:
    """Fold events into their calls in one transaction; the calls that changed."""
    with store.telephony_transaction(quick) as conn:
        return _merge_in(store, conn, account_id, provider, events, now)


def _merge_in(
    store: Store,
    conn: Connection,
    account_id: int,
    provider: str,
    events: list[TelephonyEvent],
    now: int,
    records: Settings | None = None,
    read: dict[str, CallState] | None = None,
) -> list[CallState]:
    """``merge_events`` inside the caller's transaction; with ``records``, the records of the
    calls that end are written in it too (those come back built from their version).
    ``read``: calls the transaction has read already (as ``call_state`` does)."""
    endpoint = TelephonyEndpoint(0, account_id, provider, "", "", "", now, None)
    # The calls as this transaction has them (a call's later events in the request are not
    # read back), and those changed since they were claimed or read: saved once, at the end.
    states: dict[str, CallState] = dict(read or {})
    changed: dict[str, CallState] = {}
    unsaved: set[str] = set()
    started: dict[str, CallState] = {}
    # The records of calls these events end (or add a recording to) are written in this
    # transaction too: one commit a call.ended instead of two.
    with_records = records is not None and any(event.event in _RECORDED for event in events)
    for event in events:
        # A call.started is most often a call's first event: it tries the claim at once.
        state = states.get(event.call_id)
        if state is None and event.event != "call.started":
            state = store.call_state(conn, account_id, provider, event.call_id)
        if state is None:
            # A call's first event: its row is claimed with the event merged in (insert
            # or nothing). Where requests run at once (PostgreSQL), a retry of the same
            # event may claim it first: then this one waits for it and merges into what
            # it stored, instead of failing.
            fresh = _new_state(endpoint, event.call_id, now)
            merged = merge(_NO_FACTS, event)
            first = fresh if merged == _NO_FACTS else _replace_facts(fresh, merged)
            claimed = store.claim_call(conn, first)
            if claimed is not None:
                states[event.call_id] = replace(first, id=claimed)
                if merged != _NO_FACTS:
                    changed[event.call_id] = states[event.call_id]
                    if event.event == "call.started":
                        started[event.call_id] = states[event.call_id]
                continue
            state = store.call_state(conn, account_id, provider, event.call_id)
            if state is None:
                raise RuntimeError(f"telephony call {event.call_id!r} was not stored")
        states[event.call_id] = state
        facts = _facts(state)
        merged = merge(facts, event)
        if merged == facts:
            continue  # nothing new: the same event again, or one that adds nothing
        updated = _replace_facts(state, merged)
        states[event.call_id] = changed[event.call_id] = updated
        unsaved.add(event.call_id)
        if event.event == "call.started" and facts.started_at is None:
            started[event.call_id] = updated  # a live call starts: BEFORE_CALL_START
    ended = [state for state in changed.values() if state.ended] if with_records else []
    for state in ended:  # built from this version, in this transaction (or none of it)
        changed[state.call_id] = replace(state, built=state.version)
        unsaved.add(state.call_id)
    for call_id in unsaved:
        store.save_call_state(conn, changed[call_id])
    if started:  # before the records, whose `hooks` show these deliveries
        store.announce_started(conn, account_id, list(started.values()))
    if records is not None and ended:
        try:
            by_account = _built(store, records, ended, conn)
            # Built first: the write lock (PostgreSQL's, for every writer of calls) is held
            # only for the writes and the commit.
            store.take_write_lock(conn)
            for account, built in by_account.items():
                store.write_current_calls(conn, account, [call for _, call in built])
        except (StoreUnavailable, WriteLockBusy):
            raise
        except Exception as exc:
            raise _RecordFailed from exc
    return list(changed.values())


def sweep(store: Store, settings: Settings, now: int) -> int:
    """Merge events kept aside, end calls left open too long, and write the records that are
    behind their events; the number of records written."""
    while spilled := store.spilled_events():
        for spill_id, account_id, provider, payload in spilled:
            merge_events(store, account_id, provider, _events_of.decode(payload), now)
            store.drop_spilled([spill_id])
    for state in store.calls_open_since(now - OPEN_CALL_SECONDS):
        with store.telephony_transaction() as conn:
            current = store.call_state(conn, state.account_id, state.provider, state.call_id)
            if current is not None and not current.ended:
                facts = abandon(_facts(current), now)
                store.save_call_state(conn, _replace_facts(current, facts))
    behind = store.calls_behind()
    if behind:
        write_records(store, settings, behind)
    return len(behind)


def write_records(
    store: Store, settings: Settings, states: list[CallState], quick: bool = False
) -> None:
    """Build and write the v3 records of ended calls, per account (``quick``: without
    waiting for another writer)."""
    for account_id, built in _built(store, settings, states).items():
        store.write_built_calls(account_id, built, quick)


def _built(
    store: Store, settings: Settings, states: list[CallState], conn: Connection | None = None
) -> dict[int, list[tuple[CallState, StoredCall]]]:
    """The v3 records of ended calls, per account (what they need read on ``conn`` if given)."""
    by_account: dict[int, list[tuple[CallState, StoredCall]]] = {}
    for state in states:
        record = build_record(_facts(state), context(store, settings, state, conn))
        stored = prepare(record, settings.zone, state.account_id)
        by_account.setdefault(state.account_id, []).append((state, stored))
    return by_account


def started_record(store: Store, settings: Settings, state_id: int) -> bytes | None:
    """The v3 record (JSON, without ``page``) of a call as it stood when it started: caller,
    tracking number, campaign and the visit's source; None if the call is gone."""
    state = store.call_state_by_id(state_id)
    if state is None:
        return None
    at_start = CallFacts(started_at=state.started_at, caller=state.caller, called=state.called)
    start = replace(state, **{name: getattr(at_start, name) for name in _FACTS})
    record = build_record(at_start, context(store, settings, start))
    return b"{" + prepare(record, settings.zone, state.account_id).body


def context(
    store: Store, settings: Settings, state: CallState, conn: Connection | None = None
) -> CallContext:
    """What the account knows of a call besides its events (read on ``conn`` if given)."""
    zone = settings.zone
    start = state.started_at if state.started_at is not None else state.opened_at
    caller = _caller_place(state.caller) if state.caller else None
    local, offset = _local_time(start, caller.time_zone if caller else "", zone)
    ids = (state.account_id, state.caller, state.called, start, state.universal_id)
    known = store.record_facts(*ids) if conn is None else store.record_facts_in(conn, *ids)
    flags = call_flags(
        [EarlierCall(at, talk) for at, talk in known.earlier],
        EarlierCall(start, state.talk_seconds or 0),
        known.unique_days,
        known.target_seconds,
    )
    place = Place("", caller.region, caller.country) if caller else Place()
    base = CallContext(
        universal_id=state.universal_id,
        call_number=state.id,
        call_time=format_local(start, zone),
        local_date=local,
        timezone_offset=offset,
        place=place,
        flags=flags,
    )
    number = known.number
    if number is None:
        return base  # a number no campaign owns: the call, without campaign or visit
    office = number.office if number.office.isascii() and number.office.isdigit() else ""
    host = host_of_site(number.site)
    base = replace(
        base,
        campaign_id=number.campaign_id,
        campaign_name=number.campaign_name,
        site_host=host,
        office_line=office,
    )
    if number.kind != "dynamic":
        return replace(base, rule_source=_static_rule(known.rules, number.number))
    if known.held is None:
        return base
    held = known.held.session
    visit = Visit(
        source=_decode(held.source),
        landing_url=held.landing_url,
        referrer=held.referrer,
        ga=held.ga,
        ym=held.ym,
        rs=held.rs,
        ip=held.ip,
        user_agent=held.user_agent,
        pages=known.held.pages,
        last_page=known.held.last_page,
        visits=held.ordinal,
    )
    if settings.geoip_db and (geo := enrich.geoip(held.ip, settings.geoip_db)) is not None:
        place = Place(geo.city, geo.region, geo.country)
    return replace(base, visit=visit, place=place, device=enrich.device(held.user_agent))


def _local_time(start: int, caller_zone: str, service_zone: ZoneInfo) -> tuple[str, str]:
    if not caller_zone:
        return "", ""
    return enrich.local_date(start, caller_zone, service_zone)


def _static_rule(rules: list[SourceRule], number: str) -> Source | None:
    """The source a static number's rule stands for (its utm conditions)."""
    for rule in rules:
        if rule.number == number:
            kind = cast(SourceType, rule.source_type or "direct")
            return Source(
                kind,
                utm_source=rule.utm_source,
                utm_medium=rule.utm_medium,
                utm_campaign=rule.utm_campaign,
                referrer=rule.referrer,
            )
    return None


def _decode(text: str) -> Source:
    try:
        return _source.decode(text)
    except msgspec.MsgspecError:
        return Source()


def _facts(state: CallState) -> CallFacts:
    return CallFacts(*[getattr(state, name) for name in _FACTS])


def _new_state(endpoint: TelephonyEndpoint, call_id: str, now: int) -> CallState:
    """A call before its first event: nothing known, version 0."""
    universal_id = content_id(f"{endpoint.provider}:{call_id}".encode(), endpoint.account_id)
    ids = (0, endpoint.account_id, endpoint.provider, call_id, universal_id)
    return _with_facts(ids, _NO_FACTS, now, 0, 0)


def _replace_facts(state: CallState, facts: CallFacts) -> CallState:
    ids = (state.id, state.account_id, state.provider, state.call_id, state.universal_id)
    return _with_facts(ids, facts, state.opened_at, state.version + 1, state.built)


def _with_facts(
    ids: tuple[int, int, str, str, str], facts: CallFacts, opened_at: int, version: int, built: int
) -> CallState:
    # Made field by field: replace() and asdict() cost more than the merge itself.
    f = facts
    return CallState(
        *ids,
        started_at=f.started_at,
        answered_at=f.answered_at,
        ended_at=f.ended_at,
        caller=f.caller,
        called=f.called,
        forwarded_to=f.forwarded_to,
        talk_seconds=f.talk_seconds,
        disposition=f.disposition,
        sip_first=f.sip_first,
        sip_second=f.sip_second,
        recording_url=f.recording_url,
        ended=f.ended,
        opened_at=opened_at,
        version=version,
        built=built,
    )


def simulate_call(
    store: Store,
    settings: Settings,
    account_id: int,
    called: str,
    caller: str,
    talk: int,
    now: int | None = None,
) -> dict[str, object]:
    """The events of a call to ``called`` starting now, as a PBX would post them, through
    the steps of a real request; the call's v3 record as the export shows it."""
    now = int(time.time()) if now is None else now
    endpoint = TelephonyEndpoint(0, account_id, "simulated", "", "", "", now, None)
    call_id = secrets.token_hex(8)
    answered = talk > 0
    events = [
        TelephonyEvent("call.started", call_id, now, caller=caller, called=called),
        TelephonyEvent(
            "call.ended",
            call_id,
            now + talk + 5,
            talk_seconds=talk,
            disposition="answered" if answered else "no_answer",
        ),
    ]
    receive(store, endpoint, events, settings, now)
    universal_id = content_id(f"simulated:{call_id}".encode(), account_id)
    for body in store.read_page([account_id], Window(now, now), 0, 10_000) or []:
        record: dict[str, object] = msgspec.json.decode(b'{"page":0,' + body)
        if record["universalId"] == universal_id:
            return record
    raise RuntimeError(f"the simulated call {universal_id} is not in the store")
