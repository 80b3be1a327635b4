"""A hit of the page snippet: checked, then recorded in one transaction, answered with the
number the visitor is shown.

The rules (which source, which rule, when a session ends) are the pure functions of this
package; the store runs the queries and lends numbers under row locks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import astuple, dataclass, replace
from functools import lru_cache
from typing import Final, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import msgspec

from calltrack.errors import StoreUnavailable
from calltrack.store import Store
from calltrack.store.tracking import (
    HitCampaign,
    SessionRow,
    TrackingCampaign,
    TrackingTx,
    VisitorRow,
    new_id,
)
from calltrack.tracking.lending import session_ended
from calltrack.tracking.numbers import display
from calltrack.tracking.rules import Rule, first_match
from calltrack.tracking.sources import Sighting, Source, classify, effective_source, is_new_source

MAX_HIT_BYTES: Final = 8 * 1024
MAX_URL_LENGTH: Final = 2048
MAX_ID_LENGTH: Final = 64
MAX_USER_AGENT: Final = 512
_ID_CHARS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


class HitRejected(Exception):
    """A hit that is refused: ``status`` and the message of the ``{"error": ...}`` answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class HitBody(msgspec.Struct, frozen=True):
    """What the snippet posts (unknown keys are ignored: a newer snippet may send more)."""

    k: str
    u: str
    t: Literal["hit", "ping"] = "hit"
    v: str | None = None
    s: str | None = None
    r: str | None = None
    ga: str | None = None
    ym: str | None = None
    rs: str | None = None


@dataclass(frozen=True, slots=True)
class HitAnswer:
    v: str
    s: str
    n: str
    d: str
    hold: int

    def encode(self) -> bytes:
        return msgspec.json.encode(
            {"v": self.v, "s": self.s, "n": self.n, "d": self.d, "hold": self.hold}
        )


_decoder = msgspec.json.Decoder(HitBody)
_source_decoder = msgspec.json.Decoder(Source)


def parse_hit(body: bytes) -> HitBody:
    """The hit in ``body``, or HitRejected naming what is wrong with it."""
    if len(body) > MAX_HIT_BYTES:
        raise HitRejected(413, f"a hit is at most {MAX_HIT_BYTES} bytes")
    try:
        hit = _decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise HitRejected(400, f"not a hit: {exc}") from None
    except msgspec.DecodeError:
        raise HitRejected(400, "not a hit: the body is not JSON") from None
    for name in ("k", "v", "s", "ga", "ym", "rs"):
        value = getattr(hit, name)
        if value is not None and len(value) > MAX_ID_LENGTH:
            raise HitRejected(400, f"not a hit: {name} is longer than {MAX_ID_LENGTH}")
    for name in ("u", "r"):
        value = getattr(hit, name)
        if value is not None and len(value) > MAX_URL_LENGTH:
            raise HitRejected(400, f"not a hit: {name} is longer than {MAX_URL_LENGTH}")
    # The fields kept as text: PostgreSQL refuses a NUL in text (a 500 before). The ids v and
    # s are never kept as sent (one the server did not issue is replaced), and k is looked up
    # only when it could be a site key, so a NUL in those is no error.
    for name in ("u", "r", "ga", "ym", "rs"):
        if "\x00" in (getattr(hit, name) or ""):
            raise HitRejected(400, f"not a hit: {name} holds a NUL character")
    return hit


def site_host(campaign: TrackingCampaign) -> str:
    """The campaign's site host: ``https://shop.example/`` and ``shop.example`` alike."""
    return host_of_site(campaign.site)


@lru_cache(maxsize=1024)  # a campaign's site, parsed on every hit
def host_of_site(site: str) -> str:
    """The host of a site as a campaign names it, without ``www.``; "" for none."""
    site = site.strip().lower()
    try:
        host = urlsplit(site if "//" in site else "//" + site).hostname or ""
    except ValueError:
        return ""
    return host.removeprefix("www.")


def on_site(url: str, host: str) -> bool:
    """Whether ``url`` (an http(s) URL or an Origin) is on the site or one of its subdomains."""
    try:
        # Browsers read a backslash in an http(s) URL as a slash: in
        # "https://evil.example\@shop.example/" the host is evil.example, not shop.example.
        parts = urlsplit(url.replace("\\", "/"))
        found = (parts.hostname or "").removeprefix("www.")
        _ = parts.port  # raises for a port out of range: no browser sends such a URL
    except ValueError:
        return False
    if parts.scheme not in {"http", "https"} or not host:
        return False
    return found == host or found.endswith("." + host)


def issued(value: str | None) -> str | None:
    """An id as the server issues them, or None (an id it could not have issued)."""
    if value and 16 <= len(value) <= MAX_ID_LENGTH and set(value) <= _ID_CHARS:
        return value
    return None


@dataclass(frozen=True, slots=True)
class Visit:
    """What the server knows of the request beside its body."""

    ip: str
    user_agent: str
    now: int
    ip_limit: int  # hits a minute; 0 for none


def record_hit(
    store: Store,
    campaign: TrackingCampaign,
    hit: HitBody,
    visit: Visit,
    zone: ZoneInfo,
) -> HitAnswer:
    """Record the hit and lend the number: the answer for the snippet."""
    ids = (campaign.account_id, campaign.campaign_id)
    found = HitCampaign(campaign, store.rules(*ids), store.campaign_numbers(*ids))
    return record_campaign_hit(store, found, hit, visit, zone)


def record_campaign_hit(
    store: Store,
    found: HitCampaign,
    hit: HitBody,
    visit: Visit,
    zone: ZoneInfo,
) -> HitAnswer:
    """``record_hit`` with the campaign's rules and numbers already read
    (``Store.hit_campaign``)."""
    (answer,) = record_hits(store, [(found, hit, visit)], zone)
    if isinstance(answer, Exception):
        raise answer
    return answer


# A hit to record: its campaign (``Store.hit_campaign``), what the snippet posted, and who
# posted it when.
HitToRecord = tuple[HitCampaign, HitBody, Visit]


def record_hits(
    store: Store, hits: list[HitToRecord], zone: ZoneInfo
) -> list[HitAnswer | HitRejected | StoreUnavailable | Exception]:
    """Record hits in one transaction, in order (a group commit: each sees the ones before
    it, as if they had come one by one): for each, its answer or what refused it. A hit
    refused writes nothing and the others go on; should the transaction fail (but for the
    store being unavailable), each hit is recorded again in a transaction of its own, so
    that one bad hit fails alone."""
    if not hits:
        return []
    answers: dict[int, HitAnswer | HitRejected | StoreUnavailable | Exception] = {}
    places = list(range(len(hits)))
    # Where rows lock, the rows are locked in one order in every batch, so two workers'
    # batches never wait for each other in a cycle: first the addresses' counts, by address,
    # then the visitors, by id (a visitor's own hits in the order they came).
    by_address, by_visitor = places, places
    if store.row_locks:
        by_address = sorted(places, key=lambda index: hits[index][2].ip)
        by_visitor = sorted(places, key=lambda index: issued(hits[index][1].v) or "")
    try:
        with store.tracking_transaction() as tx:
            for index in by_address:
                try:
                    _admit(tx, *hits[index])
                except HitRejected as exc:
                    answers[index] = exc
            admitted = [index for index in by_visitor if index not in answers]
            in_order = [hits[index] for index in admitted]
            recorded = _record_all(tx, in_order, _first_visits(tx, in_order), zone)
            answers.update(zip(admitted, recorded, strict=True))
        return [answers[index] for index in places]
    except StoreUnavailable as exc:
        if len(hits) == 1 or not exc.conflicted:
            # The store itself: every hit answered 503, none tried again one by one here
            # (each would wait out the store's timeout).
            return [exc] * len(hits)
    except Exception as exc:
        if len(hits) == 1:
            return [exc]
    return [record_hits(store, [posted], zone)[0] for posted in hits]


def _admit(tx: TrackingTx, found: HitCampaign, hit: HitBody, visit: Visit) -> None:
    """Check the hit's page and count it against its address's limit, in ``tx``:
    HitRejected, with nothing written, when it is refused (403 before 429)."""
    if not on_site(hit.u, site_host(found.campaign)):
        raise HitRejected(403, "the page is not on the campaign's site")
    now = visit.now
    if visit.ip_limit and not tx.count_ip_hit(visit.ip, now - now % 60, visit.ip_limit):
        raise HitRejected(429, f"more than {visit.ip_limit} hits a minute from this address")


# A hit's visitor and session as stored, if any (``TrackingTx.visit``).
Visited = tuple[VisitorRow | None, SessionRow | None]


def _first_visits(tx: TrackingTx, hits: list[HitToRecord]) -> list[Visited | None]:
    """The stored visit of each hit that is its visitor's first in ``hits``, read for all of
    them at once (on PostgreSQL one round trip, not one a hit); None for a hit whose visitor
    came earlier in ``hits``, which must see what that earlier hit writes."""
    seen: list[Visited | None] = [(None, None)] * len(hits)  # no visitor id: a new visitor
    firsts: dict[str, int] = {}  # a visitor id: the place of its first hit
    for place, (_, hit, _) in enumerate(hits):
        visitor = issued(hit.v)
        if visitor is not None:
            if visitor in firsts:
                seen[place] = None
            else:
                firsts[visitor] = place
    wanted = [
        (visitor, issued(hits[place][1].s), hits[place][0].campaign)
        for visitor, place in firsts.items()
    ]
    for place, visited in zip(firsts.values(), tx.visits(wanted), strict=True):
        seen[place] = visited
    return seen


@dataclass(frozen=True, slots=True)
class _Plan:
    """What a hit decided before its writes: its visitor and session (new ones not yet
    stored), its number if fixed (None: the pool's), and whether it may keep the number its
    visit holds (``TrackingTx.send_keep_visit`` then says whether it did)."""

    found: HitCampaign
    hit: HitBody
    visit: Visit
    known: VisitorRow | None
    visitor: VisitorRow
    session: SessionRow
    fresh: bool
    number: str | None
    page: str | None
    may_keep: bool


def _plan(
    tx: TrackingTx,
    found: HitCampaign,
    hit: HitBody,
    visit: Visit,
    zone: ZoneInfo,
    visited: Visited | None,
) -> _Plan:
    """Decide a hit that ``_admit`` let in; ``visited``, its stored visit if already read
    (``_first_visits``), else it is read here."""
    campaign, kinds = found.campaign, found.numbers
    rules = [Rule(*astuple(rule)) for rule in found.rules]
    source = classify(hit.u, hit.r or "", site_host(campaign))
    now = visit.now
    if visited is None:
        v = issued(hit.v)
        visited = tx.visit(v, issued(hit.s), campaign) if v else (None, None)
    known, session = visited
    visitor = known or VisitorRow(new_id(), 0, None, "{}")
    fresh = session is None or _ends(session, source, hit.t, now, zone)
    if session is None or fresh:
        session, visitor = _new_session(visitor, source, visit)
    number = _fixed_number(campaign, _decode(session.source), rules, kinds)
    # The usual hit: a visit going on with the pool number it holds.
    may_keep = number is None and not fresh and _holds(campaign, session, kinds)
    page = hit.u if hit.t == "hit" else None
    return _Plan(found, hit, visit, known, visitor, session, fresh, number, page, may_keep)


def _finish(tx: TrackingTx, plan: _Plan, kept: bool) -> HitAnswer:
    """The rest of a hit's writes, once it is known whether it kept its number."""
    campaign, session, visitor, now = (
        plan.found.campaign,
        plan.session,
        plan.visitor,
        plan.visit.now,
    )
    hit, number = plan.hit, plan.number
    if kept:
        number = session.number
    elif number is None:
        lent = tx.lend(campaign, session.id, now)
        number = campaign.stub if lent is None else lent
    if plan.fresh:  # inserted with its number: no UPDATE of the row just written
        tx.add_session(
            replace(session, number=number),
            campaign,
            visitor.sessions,
            hit.u,
            _host(hit.r or ""),
            (hit.ga or "", hit.ym or "", hit.rs or ""),
            plan.visit.ip,
            plan.visit.user_agent[:MAX_USER_AGENT],
        )
    elif not kept:
        tx.touch_session(session.id, now, number)
    if plan.page is not None and not kept:
        tx.add_page_view(session.id, now, plan.page)
    tx.save_visitor(visitor, campaign, now, plan.known)
    if number == campaign.stub and number != "" and hit.t == "hit":
        tx.count_exhausted(campaign, now)
    shown = display(number, campaign.display_format) if number else ""
    return HitAnswer(visitor.id, session.id, number, shown, campaign.hold_seconds)


def _record_all(
    tx: TrackingTx,
    hits: list[HitToRecord],
    seen: list[Visited | None],
    zone: ZoneInfo,
) -> list[HitAnswer]:
    """Record admitted hits in order (``seen``: their visits as ``_first_visits`` read them).

    The hits that keep their numbers are sent together and their answers read once a hit
    needs the database's state (on PostgreSQL one round trip for a run of them, not one
    each); none of them lends, so each hit still sees the ones before it as if one by one.
    """
    answers: list[HitAnswer | None] = [None] * len(hits)
    keeping: list[tuple[int, _Plan, Callable[[], bool]]] = []

    def settle() -> None:
        for place, plan, kept in keeping:
            answers[place] = _finish(tx, plan, kept())
        keeping.clear()

    for place, ((found, hit, visit), visited) in enumerate(zip(hits, seen, strict=True)):
        if visited is None:  # read here, after the visitor's earlier hits
            settle()
        plan = _plan(tx, found, hit, visit, zone, visited)
        if plan.may_keep:  # its hold, session and page view sent in one statement
            session = plan.session
            kept = tx.send_keep_visit(
                found.campaign, session.id, session.number, visit.now, plan.page
            )
            keeping.append((place, plan, kept))
            continue
        settle()  # before a lend: the hits before it lend first
        answers[place] = _finish(tx, plan, kept=False)
    settle()
    return [answer for answer in answers if answer is not None]


def _ends(session: SessionRow, source: Source, kind: str, now: int, zone: ZoneInfo) -> bool:
    if session_ended(session.last_activity_at, session.started_at, now, zone):
        return True
    # A page view from another non-direct source starts a new visit; a ping never does.
    return kind == "hit" and is_new_source(_decode(session.source), source)


def _new_session(
    visitor: VisitorRow, source: Source, visit: Visit
) -> tuple[SessionRow, VisitorRow]:
    """A new session of the visitor (not yet stored), and the visitor that starts it."""
    last = _decode(visitor.source) if visitor.source_at is not None else None
    sighting = Sighting(last, visitor.source_at or 0) if last is not None else None
    effective = effective_source(source, sighting, visit.now)
    source_at, kept = visitor.source_at, visitor.source
    if source.type != "direct":  # the visitor's last non-direct click is now this one
        source_at, kept = visit.now, _encode(source)
    visitor = replace(visitor, sessions=visitor.sessions + 1, source_at=source_at, source=kept)
    session = SessionRow(new_id(), visitor.id, visit.now, visit.now, _encode(effective), "")
    return session, visitor


def _fixed_number(
    campaign: TrackingCampaign, source: Source, rules: list[Rule], kinds: list[tuple[str, str]]
) -> str | None:
    """The number the session is shown without the pool: its rule's static number, else the
    campaign's static one where it has no pool ("" when it is not active: the page keeps its
    own numbers); None when the pool lends it one."""
    if campaign.status != "active":
        return ""
    rule = first_match(rules, source)
    if rule is not None and rule.number:
        return rule.number
    has_pool = any(kind == "dynamic" for _, kind in kinds)
    if rule is None and not has_pool:
        return next((number for number, kind in kinds if kind == "static"), "")
    return None


def _holds(campaign: TrackingCampaign, session: SessionRow, kinds: list[tuple[str, str]]) -> bool:
    """Whether the session may hold the number it was shown: a session shown the stub holds
    nothing to extend (unless the stub is a pool number too)."""
    held = session.number
    return bool(held) and (held != campaign.stub or (held, "dynamic") in kinds)


def _host(url: str) -> str:
    """The host of ``url``; "" for none, or for a URL urlsplit cannot read ("https://[::1/"
    raised, a 500, before)."""
    try:
        return urlsplit(url).hostname or ""
    except ValueError:
        return ""


def _encode(source: Source) -> str:
    return msgspec.json.encode(source).decode()


def _decode(text: str) -> Source:
    try:
        return _source_decoder.decode(text)
    except msgspec.MsgspecError:  # an empty record ("{}") or one from an older release
        return Source()
