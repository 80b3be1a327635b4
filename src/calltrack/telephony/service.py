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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from functools import lru_cache
from typing import cast
from zoneinfo import ZoneInfo

import msgspec

from calltrack.config import Settings
from calltrack.errors import StoreUnavailable
from calltrack.model import StoredCall, content_id, format_local, prepare
from calltrack.store import Store, Window
from calltrack.store.core import Connection
from calltrack.store.telephony import CallState, RecordFacts, TelephonyEndpoint, WriteLockBusy
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


@dataclass(frozen=True, slots=True)
class Delivery:
    """One request's events, and the endpoint they came through: known already (a Zadarma
    endpoint whose signature was checked, a simulated call), or by the bearer secret of a
    generic endpoint, looked up in the merge's own transaction (stores whose transactions do
    not take the one write lock: one statement fewer a request, and a wrong secret holds no
    lock)."""

    events: list[TelephonyEvent]
    endpoint: TelephonyEndpoint | None = None
    secret: str = ""


_CallKey = tuple[int, str, str]  # a call's account, provider and call id
# What ``receive_batch`` says of each delivery: True when its events are in, False when no
# active endpoint has its secret (nothing stored), or the exception that refused it.
Outcome = bool | Exception


def receive(
    store: Store,
    endpoint: TelephonyEndpoint,
    events: list[TelephonyEvent],
    settings: Settings,
    now: int,
) -> None:
    """Merge the events into their calls and write the records of the ended ones (see
    ``receive_batch``)."""
    (outcome,) = receive_batch(store, settings, [Delivery(events, endpoint)], now)
    if isinstance(outcome, Exception):
        raise outcome


def receive_batch(
    store: Store, settings: Settings, deliveries: list[Delivery], now: int
) -> list[Outcome]:
    """Merge the events of several requests into their calls, with the records of the calls
    that end, in one transaction: a group commit. Requests that arrive while one transaction
    runs wait and go together in the next, so a busy PBX costs one transaction, one commit
    and one write of the pages they share for many requests (bench/RESULTS.md, in process:
    1.7 against 0.4-0.7 ms of CPU a call on SQLite, 4.6 against 0.9 on PostgreSQL).

    Should the transaction fail for one request's sake, each request is merged alone, so one
    bad request fails alone; should the store be unavailable, each gets StoreUnavailable.
    Where an import holds the store's one write lock (SQLite), the events are kept aside at
    once instead of waiting it out, and the sweeper merges them when the lock is free.
    """
    if not deliveries:  # nothing to merge: no transaction (a wrong secret takes no lock)
        return []
    found: list[bool] = []

    def merged(records: Settings | None) -> list[CallState]:
        with store.telephony_transaction(quick=True) as conn:
            merger = _Merger(store, conn, now)
            found[:] = merger.add(deliveries)
            return merger.finish(records)

    try:
        _receive_with(store, settings, merged)
        return list(found)
    except StoreUnavailable as exc:
        known = [delivery.endpoint for delivery in deliveries]
        if store.spills_events and all(known):
            for delivery in deliveries:
                assert delivery.endpoint is not None
                ids = (delivery.endpoint.account_id, delivery.endpoint.provider)
                store.spill_events(*ids, _events.encode(delivery.events))
            return [True] * len(deliveries)
        if len(deliveries) == 1 or not exc.conflicted:
            # The store itself: each request answered 503 and retried by its PBX, not tried
            # again one by one here (each of them would wait out the store's timeout).
            return [exc] * len(deliveries)
        log.info(
            "telephony: %d requests conflicted with another worker's: %s", len(deliveries), exc
        )
    except Exception as exc:
        if len(deliveries) == 1:
            return [exc]
        log.exception(
            "telephony: %d requests failed together; each is merged alone", len(deliveries)
        )
    # A batch that failed for one bad request's sake, or deadlocked: one by one.
    return [receive_batch(store, settings, [delivery], now)[0] for delivery in deliveries]


class _RecordFailed(Exception):
    """Building or writing a record failed inside the merge's transaction (rolled back)."""


def _receive_with(
    store: Store, settings: Settings, merged: Callable[[Settings | None], list[CallState]]
) -> None:
    """``merged(settings)``: the events merged with the records of the calls they end, in one
    transaction. Should a record fail there, or an import hold the write lock, the events are
    merged again without the records: a record that cannot be built must not refuse the
    events (a PBX would post them again and again), nor an import hold them up."""
    try:
        changed = merged(settings)
    except _RecordFailed:
        log.exception("telephony: a record failed; the events are merged without it")
        changed = merged(None)
    except WriteLockBusy as exc:  # the sweeper writes the records once the import is done
        log.info("telephony: records left for the sweeper, an import writes: %s", exc)
        merged(None)
        return
    ended = [state for state in changed if state.ended and state.built < state.version]
    if ended:
        try:
            write_records(store, settings, ended, quick=True)
        except StoreUnavailable as exc:  # an import holds the write lock: the sweeper writes them
            log.info("telephony: records of %d calls left for the sweeper: %s", len(ended), exc)
        except Exception:  # the events are kept: the sweeper writes these records
            log.exception("telephony: records of %d calls left for the sweeper", len(ended))


def merge_events(
    store: Store,
    account_id: int,
    provider: str,
    events: list[TelephonyEvent],
    now: int,
    quick: bool = False,
) -> list[CallState]:
    """Fold events into their calls in one transaction; the calls that changed."""
    endpoint = TelephonyEndpoint(0, account_id, provider, "", "", "", now, None)
    with store.telephony_transaction(quick) as conn:
        merger = _Merger(store, conn, now)
        merger.add([Delivery(events, endpoint)])
        return merger.finish(None)


class _Merger:
    """Events folded into their calls inside one transaction, for the requests of a batch:
    the calls read at once, the new ones claimed at once, and what changed saved at once at
    the end (``finish``): a few statements a batch rather than a few a request."""

    def __init__(self, store: Store, conn: Connection, now: int) -> None:
        self.store, self.conn, self.now = store, conn, now
        # The calls as this transaction has them (a call's later events are not read back),
        # keyed by (account, provider, call id), and those changed since they were claimed
        # or read.
        self.states: dict[_CallKey, CallState] = {}
        self.changed: dict[_CallKey, CallState] = {}
        self.unsaved: set[_CallKey] = set()
        self.started: dict[_CallKey, CallState] = {}
        self.endpoints: dict[str, TelephonyEndpoint | None] = {}  # by secret, as looked up

    def add(self, deliveries: list[Delivery]) -> list[bool]:
        """Merge requests' events, in order; for each, False, with nothing merged, when no
        active endpoint has its secret."""
        sent = [
            (delivery.endpoint or self._endpoint(delivery), delivery) for delivery in deliveries
        ]
        events = [(endpoint, event) for endpoint, d in sent if endpoint for event in d.events]
        consumed = self._read_and_claim(events)
        for endpoint, event in events:
            if id(event) not in consumed:
                self._merge(endpoint, event)
        return [endpoint is not None for endpoint, _ in sent]

    def _endpoint(self, delivery: Delivery) -> TelephonyEndpoint | None:
        store, conn, secret = self.store, self.conn, delivery.secret
        if secret in self.endpoints:
            return self.endpoints[secret]
        # The first event's call is read with the endpoint (one round trip), unless it
        # starts a call, most often a new one, which is claimed.
        first = delivery.events[0] if delivery.events else None
        if first is not None and first.event != "call.started":
            endpoint, known = store.endpoint_and_call_in(conn, secret, first.call_id)
            if endpoint is not None and known is not None:
                self.states[(endpoint.account_id, endpoint.provider, first.call_id)] = known
        else:
            endpoint = store.endpoint_by_secret_in(conn, secret)
        self.endpoints[secret] = endpoint
        return endpoint

    def _read_and_claim(self, events: list[tuple[TelephonyEndpoint, TelephonyEvent]]) -> set[int]:
        """Read the calls the events are of, and claim those not stored yet, each with its
        first event merged in: the events so merged (by ``id``)."""
        store, conn, states = self.store, self.conn, self.states
        wanted: dict[tuple[int, str], set[str]] = {}
        for endpoint, event in events:
            if (endpoint.account_id, endpoint.provider, event.call_id) not in states:
                wanted.setdefault((endpoint.account_id, endpoint.provider), set()).add(
                    event.call_id
                )
        for (account_id, provider), call_ids in wanted.items():
            found = store.call_states(conn, account_id, provider, call_ids)
            states.update(((account_id, provider, call_id), s) for call_id, s in found.items())
        # A call's first event claims its row with the event merged in (insert or nothing).
        firsts: dict[_CallKey, tuple[TelephonyEvent, CallState]] = {}
        for endpoint, event in events:
            key = (endpoint.account_id, endpoint.provider, event.call_id)
            if key not in states and key not in firsts:
                fresh = _new_state(endpoint, event.call_id, self.now)
                merged = merge(_NO_FACTS, event)
                firsts[key] = event, fresh if merged == _NO_FACTS else _replace_facts(fresh, merged)
        if not firsts:
            return set()
        claimed = store.claim_calls(conn, [first for _, first in firsts.values()])
        consumed: set[int] = set()
        for key, (event, first) in firsts.items():
            if key not in claimed:
                continue
            states[key] = replace(first, id=claimed[key])
            consumed.add(id(event))
            if first.version:  # the event told something
                self.changed[key] = states[key]
                if event.event == "call.started":
                    self.started[key] = states[key]
        # Where requests run at once (PostgreSQL), a concurrent request (a retry of the same
        # event) may have claimed a call first: this transaction waited for it, and its
        # events merge into what it stored.
        lost = [key for key in firsts if key not in claimed]
        for account_id, provider, call_id in lost:
            found = store.call_states(conn, account_id, provider, [call_id])
            if call_id not in found:
                raise RuntimeError(f"telephony call {call_id!r} was not stored")
            states[(account_id, provider, call_id)] = found[call_id]
        return consumed

    def _merge(self, endpoint: TelephonyEndpoint, event: TelephonyEvent) -> None:
        key = (endpoint.account_id, endpoint.provider, event.call_id)
        state = self.states[key]
        facts = _facts(state)
        merged = merge(facts, event)
        if merged == facts:
            return  # nothing new: the same event again, or one that adds nothing
        updated = _replace_facts(state, merged)
        self.states[key] = self.changed[key] = updated
        self.unsaved.add(key)
        if event.event == "call.started" and facts.started_at is None:
            self.started[key] = updated  # a live call starts: BEFORE_CALL_START

    def finish(self, records: Settings | None) -> list[CallState]:
        """Save what changed; with ``records``, write the records of the calls that ended
        (those come back built from their version). The calls that changed."""
        store, conn, changed, unsaved = self.store, self.conn, self.changed, self.unsaved
        ended = [state for state in changed.values() if state.ended] if records else []
        for state in ended:  # built from this version, in this transaction (or none of it)
            key = (state.account_id, state.provider, state.call_id)
            changed[key] = replace(state, built=state.version)
            unsaved.add(key)
        store.save_call_states(conn, [changed[key] for key in unsaved])
        by_account: dict[int, list[CallState]] = {}
        for state in self.started.values():
            by_account.setdefault(state.account_id, []).append(state)
        for account_id, started in by_account.items():  # before the records, whose `hooks`
            store.announce_started(conn, account_id, started)  # show these deliveries
        if records is not None and ended:
            try:
                built = _built(store, records, ended, conn)
                # Built first: the write lock (PostgreSQL's, for every writer of calls) is
                # held only for the writes and the commit.
                store.take_write_lock(conn)
                for account, calls in built.items():
                    store.write_current_calls(conn, account, [call for _, call in calls])
                store.confirm_writes(conn)  # a record's write that failed fails here
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
    waiting for another writer). A record that cannot be built or written is logged and left
    behind its events, and does not hold up the others (a batch's, or the sweeper's)."""
    try:
        by_account = _built(store, settings, states)
    except Exception:
        if len(states) == 1:
            raise
        by_account = {}
        for state in states:
            with _left_behind(state):
                for account_id, built in _built(store, settings, [state]).items():
                    by_account.setdefault(account_id, []).extend(built)
    for account_id, records in by_account.items():
        try:
            store.write_built_calls(account_id, records, quick)
        except StoreUnavailable:
            raise
        except Exception:
            if len(records) == 1:
                raise
            for state, record in records:
                with _left_behind(state):
                    store.write_built_calls(account_id, [(state, record)], quick)


@contextmanager
def _left_behind(state: CallState) -> Iterator[None]:
    """Log an error of one call's record and go on (StoreUnavailable is the store's, and
    stops them all)."""
    try:
        yield
    except StoreUnavailable:
        raise
    except Exception:
        log.exception("telephony: the record of call %s is left behind", state.universal_id)


def _built(
    store: Store, settings: Settings, states: list[CallState], conn: Connection | None = None
) -> dict[int, list[tuple[CallState, StoredCall]]]:
    """The v3 records of ended calls, per account: what they need read for all of them at
    once (on ``conn`` if given)."""
    by_account: dict[int, list[tuple[CallState, StoredCall]]] = {}
    keys = [_facts_key(state) for state in states]
    known = store.record_facts(keys) if conn is None else store.record_facts_many_in(conn, keys)
    # The batch's calls are written after all their facts are read: a caller's calls that
    # end together must still see each other (the later one is not unique).
    together: dict[tuple[int, str], list[tuple[int, int, str]]] = {}
    for state in states:
        if state.caller:
            mate = (_start(state), state.talk_seconds or 0, state.universal_id)
            together.setdefault((state.account_id, state.caller), []).append(mate)
    for state, facts in zip(states, known, strict=True):
        mates = together.get((state.account_id, state.caller), [])
        if len(mates) > 1:
            seen = {uid for _, _, uid in facts.earlier} | {state.universal_id}
            extra = [mate for mate in mates if mate[2] not in seen]
            facts = replace(facts, earlier=[*facts.earlier, *extra])
        record = build_record(_facts(state), context(store, settings, state, facts))
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
    store: Store, settings: Settings, state: CallState, known: RecordFacts | None = None
) -> CallContext:
    """What the account knows of a call besides its events: ``known``, or read."""
    zone = settings.zone
    start = _start(state)
    caller = _caller_place(state.caller) if state.caller else None
    local, offset = _local_time(start, caller.time_zone if caller else "", zone)
    if known is None:
        (known,) = store.record_facts([_facts_key(state)])
    flags = call_flags(
        [EarlierCall(at, talk) for at, talk, _ in known.earlier],
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


def _start(state: CallState) -> int:
    return state.started_at if state.started_at is not None else state.opened_at


def _facts_key(state: CallState) -> tuple[int, str, str, int, str]:
    """What ``Store.record_facts`` looks up for a call's record."""
    return (state.account_id, state.caller, state.called, _start(state), state.universal_id)


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
