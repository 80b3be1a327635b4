"""Dynamic call tracking's SQL: campaign settings, source rules, visitors, sessions, page views,
and the holds of pool numbers.

The decisions (which source, which number, when a session ends) are pure functions in
``calltrack.tracking``; a hit runs them between the queries of one ``TrackingTx``.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final, Literal

from calltrack.config import Settings
from calltrack.errors import Conflict, NotFound
from calltrack.store.catalog import CAMPAIGN_STATUSES
from calltrack.store.core import Connection, StoreCore, unix_now

SOURCE_TYPES: Final = ("ad", "organic", "referral", "social", "direct")
# Sessions, page views and holds are kept this long past the account's unique window: a call
# is attributed when it ends, and unique flags look back that far.
PRUNE_MARGIN_SECONDS: Final = 7 * 86400
# The account settings' ranges (from 0): how far back a call's number is looked up for an
# earlier call, and the talk that makes a call target.
UNIQUE_DAYS_MAX: Final = 3650
TARGET_SECONDS_MAX: Final = 86400
# How long a worker answers hits from a campaign's settings, rules and numbers as it last
# read them: a change shows in hits within this many seconds (docs/tracking.md). Read on
# every hit, they were three of a hit's statements (four round trips on PostgreSQL).
HIT_CAMPAIGN_SECONDS: Final = 1.0
_HIT_CAMPAIGNS_KEPT: Final = 1024  # campaigns a worker keeps so; past that it starts afresh
# A visitor's last_seen_at only decides when pruning forgets it (days past its account's
# unique window): a hit that changes nothing else rewrites it only when it is older than this.
SEEN_SLACK_SECONDS: Final = 3600


@dataclass(frozen=True, slots=True)
class TrackingCampaign:
    """What a hit needs to know of its campaign."""

    account_id: int
    campaign_id: int
    name: str
    site: str
    status: str
    site_key: str
    hold_seconds: int
    stub: str
    display_format: str
    replace_numbers: tuple[str, ...]
    selector: str


@dataclass(frozen=True, slots=True)
class SourceRule:
    id: int
    position: int
    utm_source: str
    utm_medium: str
    utm_campaign: str
    referrer: str
    source_type: str
    number: str  # "" = the campaign's pool


@dataclass(frozen=True, slots=True)
class HitCampaign:
    """A campaign with what a hit decides by: its source rules (in position order) and its
    tracking numbers as (number, kind), in the order they were added. Read before the hit's
    transaction, so only for choosing among them: the transaction lends from the rows it
    locks, never from this list."""

    campaign: TrackingCampaign
    rules: list[SourceRule]
    numbers: list[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class AccountSettings:
    unique_days: int
    target_seconds: int


@dataclass(frozen=True, slots=True)
class VisitorRow:
    id: str
    sessions: int
    source_at: int | None
    source: str  # the last non-direct source, JSON (``{}`` when none)
    last_seen_at: int = 0


@dataclass(frozen=True, slots=True)
class SessionRow:
    id: str
    visitor_id: str
    started_at: int
    last_activity_at: int
    source: str  # JSON
    number: str


@dataclass(frozen=True, slots=True)
class HeldSession:
    """The session that held a number at some instant, as a call record takes it."""

    session_id: str
    visitor_id: str
    campaign_id: int
    started_at: int
    ordinal: int
    source: str
    landing_url: str
    referrer: str
    ga: str
    ym: str
    rs: str
    ip: str
    user_agent: str


@dataclass(frozen=True, slots=True)
class HeldAt:
    """Who held a number at an instant: the session, and its page views up to then."""

    session: HeldSession
    pages: int
    last_page: str  # the URL of the last of them ("" for none)


@dataclass(frozen=True, slots=True)
class PoolStats:
    size: int
    held_now: int
    peak_held: int  # over the last 24 hours
    exhausted_hits: int  # over the last 24 hours

    @property
    def advice_kind(self) -> Literal["no_pool", "add", "enough"]:
        """What the advice says, for wording it in any language: no dynamic numbers; add
        numbers (to ``wanted`` in all: the peak passed 75% of the pool or a visitor got the
        stub); or the pool is large enough."""
        if self.size == 0:
            return "no_pool"
        if self.peak_held > 0.75 * self.size or self.exhausted_hits:
            return "add"
        return "enough"

    @property
    def wanted(self) -> int:
        """The pool size to grow to when the advice is "add": the peak at 75% of it."""
        return max(self.size + 1, -(-self.peak_held * 4 // 3))

    @property
    def advice(self) -> str:
        kind = self.advice_kind
        if kind == "no_pool":
            return "the campaign has no dynamic numbers: add some with `phone add --dynamic`"
        if kind == "add":
            return f"the peak passed 75% of the pool: add numbers (about {self.wanted} in all)"
        return "the pool is large enough"


@dataclass(frozen=True, slots=True)
class CampaignSetup:
    """A campaign as the console shows it: its settings, tracking numbers as (number, kind)
    in the order they were added, source rules in the order they are tried, and its pool."""

    campaign: TrackingCampaign  # site_key "" when none was made yet
    numbers: list[tuple[str, str]]
    rules: list[SourceRule]
    pool: PoolStats


def new_id() -> str:
    """An id the server issues (visitor, session, site key): 128 random bits, URL-safe."""
    return secrets.token_urlsafe(16)


# The hold of a number that a session holds now: the number's latest (a number is lent
# again only once its hold ended), if it is that session's. Found by the index of the number's
# holds, not among all of them: the history of a busy number grows by thousands a month.
_CURRENT_HOLD = (
    "id = (SELECT id FROM holds WHERE account_id = ? AND number = ? "
    "ORDER BY held_from DESC, id DESC LIMIT 1) AND session_id = ?"
)
_VISITOR_COLUMNS = "v.id, v.sessions, v.source_at, v.source, v.last_seen_at"
_CAMPAIGN_COLUMNS = (
    "account_id, campaign_id, name, site, status, site_key, hold_seconds, stub, "
    "display_format, replace_numbers, selector"
)


def _campaign(row: Sequence[Any]) -> TrackingCampaign:
    account_id, campaign_id, name, site, status, site_key, hold, stub, fmt, replace, selector = row
    numbers = tuple(n for n in str(replace).split(",") if n)
    key = site_key or ""  # a campaign made outside the CLI has none until its first snippet
    return TrackingCampaign(
        account_id, campaign_id, name, site, status, key, hold, stub, fmt, numbers, selector
    )


class TrackingTx:
    """The queries of one hit, inside one transaction."""

    def __init__(self, conn: Connection, row_locks: bool) -> None:
        self.conn = conn
        self._row_locks = row_locks
        # Stub page views to count after the commit, by (account, campaign, minute).
        self._exhausted: dict[tuple[int, int, int], int] = {}
        # The pools found with every number held, by (account, campaign, now): the hits of a
        # group commit that come in the same second are lent nothing without asking again.
        self._pools_held: set[tuple[int, int, int]] = set()
        # Where rows lock (PostgreSQL), a hit locks the rows it decides on.
        self._for_update = " FOR UPDATE" if row_locks else ""
        self._skip_locked = " FOR UPDATE SKIP LOCKED" if row_locks else ""

    def visit(
        self, visitor_id: str, session_id: str | None, campaign: TrackingCampaign
    ) -> tuple[VisitorRow | None, SessionRow | None]:
        """The campaign's visitor, and its session ``session_id`` if it has one of that id;
        both locked where rows lock. One statement when the session is the visitor's (every
        hit of a visit after its first), two otherwise."""
        (found,) = self.visits([(visitor_id, session_id, campaign)])
        return found

    def visits(
        self, wanted: Sequence[tuple[str, str | None, TrackingCampaign]]
    ) -> list[tuple[VisitorRow | None, SessionRow | None]]:
        """``visit`` of each (visitor id, session id, campaign), in that order, which is the
        order their rows lock in. Where rows lock (PostgreSQL, pipelined) the statements of
        all are sent before any answer is read: one round trip for a group commit's
        visitors, two when some session is not its visitor's."""
        where = "v.id = ? AND v.account_id = ? AND v.campaign_id = ?"
        with_session = (
            f"SELECT {_VISITOR_COLUMNS}, s.id, s.visitor_id, s.started_at, "
            "s.last_activity_at, s.source, s.number FROM visitors v JOIN sessions s "
            f"ON s.id = ? AND s.visitor_id = v.id WHERE {where}{self._for_update}"
        )
        alone = f"SELECT {_VISITOR_COLUMNS} FROM visitors v WHERE {where}{self._for_update}"
        # In the order given, so the visitors lock in that order: the visitor with its session
        # where a session is named, else the visitor alone.
        rows = self._rows_of_each(
            (with_session, (session, visitor, campaign.account_id, campaign.campaign_id))
            if session is not None
            else (alone, (visitor, campaign.account_id, campaign.campaign_id))
            for visitor, session, campaign in wanted
        )
        found: list[tuple[VisitorRow | None, SessionRow | None]] = [
            (None, None) if row is None
            else (VisitorRow(*row[:5]), SessionRow(*row[5:])) if session is not None
            else (VisitorRow(*row), None)
            for row, (_, session, _) in zip(rows, wanted, strict=True)
        ]  # fmt: skip
        # A session that is not the visitor's (a stale or forged id): the visitor alone, in
        # a second round.
        missed = [
            place
            for place, (_, session, _) in enumerate(wanted)
            if session is not None and rows[place] is None
        ]
        again = self._rows_of_each(
            (alone, (wanted[place][0], wanted[place][2].account_id, wanted[place][2].campaign_id))
            for place in missed
        )
        for place, row in zip(missed, again, strict=True):
            found[place] = (None if row is None else VisitorRow(*row)), None
        return found

    def _rows_of_each(
        self, statements: Iterable[tuple[str, Sequence[Any]]]
    ) -> list[Sequence[Any] | None]:
        """The first row of each statement (or None), all of them sent before any answer
        is read: in a pipeline (``TrackingQueries.tracking_transaction``) one round trip.
        Not ``Store._fetch_each``: inside the transaction's pipeline its own pipeline would
        first wait for everything queued before it, a round trip more."""
        if not self._row_locks:
            return [self.conn.execute(sql, params).fetchone() for sql, params in statements]
        cursors = [self.conn.execute(sql, params) for sql, params in statements]
        return [cursor.fetchone() for cursor in cursors]

    def save_visitor(
        self, visitor: VisitorRow, campaign: TrackingCampaign, now: int, before: VisitorRow | None
    ) -> None:
        """Insert the visitor (``before`` None: it is new) or write what changed since
        ``before``; nothing when only its last_seen_at would move, by under an hour."""
        if before is None:
            self.conn.execute(
                "INSERT INTO visitors (id, account_id, campaign_id, created_at, last_seen_at, "
                "sessions, source_at, source) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    visitor.id,
                    campaign.account_id,
                    campaign.campaign_id,
                    now,
                    now,
                    visitor.sessions,
                    visitor.source_at,
                    visitor.source,
                ),
            )
        elif visitor != before or before.last_seen_at < now - SEEN_SLACK_SECONDS:
            self.conn.execute(
                "UPDATE visitors SET last_seen_at = ?, sessions = ?, source_at = ?, source = ? "
                "WHERE id = ?",
                (now, visitor.sessions, visitor.source_at, visitor.source, visitor.id),
            )

    def add_session(
        self,
        session: SessionRow,
        campaign: TrackingCampaign,
        ordinal: int,
        landing_url: str,
        referrer: str,
        ids: tuple[str, str, str],
        ip: str,
        user_agent: str,
    ) -> None:
        self.conn.execute(
            "INSERT INTO sessions (id, visitor_id, account_id, campaign_id, started_at, "
            "last_activity_at, ordinal, source, landing_url, referrer, ga, ym, rs, ip, "
            "user_agent, number) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                session.id,
                session.visitor_id,
                campaign.account_id,
                campaign.campaign_id,
                session.started_at,
                session.last_activity_at,
                ordinal,
                session.source,
                landing_url,
                referrer,
                *ids,
                ip,
                user_agent,
                session.number,
            ),
        )

    def touch_session(self, session_id: str, now: int, number: str) -> None:
        self.conn.execute(
            "UPDATE sessions SET last_activity_at = ?, number = ? WHERE id = ?",
            (now, number, session_id),
        )

    def add_page_view(self, session_id: str, now: int, url: str) -> None:
        self.conn.execute(
            "INSERT INTO page_views (session_id, viewed_at, url) VALUES (?, ?, ?)",
            (session_id, now, url),
        )

    def extend_hold(
        self, campaign: TrackingCampaign, number: str, session_id: str, now: int
    ) -> bool:
        """Extend the session's hold of ``number`` to now + the hold time, if it still holds
        it (True); False if its hold ended or the number is gone. A hold spans the half-open
        ``[held_from, held_until)``: at ``held_until`` the number is free."""
        # One conditional UPDATE (it locks the row it changes) instead of a SELECT ... FOR
        # UPDATE, then the UPDATE: a hold is extended only while the session holds it, and
        # never shortened (a hold time lowered since keeps the longer end promised).
        row = self.conn.execute(
            "UPDATE phones SET held_until = CASE WHEN held_until > ? THEN held_until ELSE ? END "
            "WHERE account_id = ? AND campaign_id = ? AND number = ? AND kind = 'dynamic' "
            "AND held_by = ? AND held_until > ? RETURNING held_until",
            (
                now + campaign.hold_seconds,
                now + campaign.hold_seconds,
                campaign.account_id,
                campaign.campaign_id,
                number,
                session_id,
                now,
            ),
        ).fetchone()
        if row is None:
            return False
        self.conn.execute(
            f"UPDATE holds SET held_until = ? WHERE {_CURRENT_HOLD}",
            (int(row[0]), campaign.account_id, number, session_id),
        )
        return True

    def send_keep_visit(
        self,
        campaign: TrackingCampaign,
        session_id: str,
        number: str,
        now: int,
        page_url: str | None,
    ) -> Callable[[], bool]:
        """A hit of a session going on with ``number``: extend its hold (``extend_hold``),
        mark the session active and add the page view of ``page_url`` (None: a ping). The
        function returned says whether it did: False, with nothing written, when the hold
        ended or the number is gone. In a pipeline (PostgreSQL) the statement is sent at
        once and answered with the next one whose rows are read: several hits' keeps cost
        one round trip.

        Where rows lock (PostgreSQL) one statement of data-modifying CTEs: every statement is
        a round trip, and a hit's round trips were most of its time. SQLite has no such CTEs
        and no network, and runs them one by one."""
        if not self._row_locks:
            kept = self.extend_hold(campaign, number, session_id, now)
            if kept:
                self.touch_session(session_id, now, number)
                if page_url is not None:
                    self.add_page_view(session_id, now, page_url)
            return lambda: kept
        until = now + campaign.hold_seconds
        parts = [
            "p AS (UPDATE phones SET held_until = CASE WHEN held_until > ? THEN held_until "
            "ELSE ? END WHERE account_id = ? AND campaign_id = ? AND number = ? "
            "AND kind = 'dynamic' AND held_by = ? AND held_until > ? RETURNING held_until)",
            "h AS (UPDATE holds SET held_until = (SELECT held_until FROM p) "
            f"WHERE {_CURRENT_HOLD} AND EXISTS (SELECT 1 FROM p))",
            "s AS (UPDATE sessions SET last_activity_at = ?, number = ? WHERE id = ? "
            "AND EXISTS (SELECT 1 FROM p))",
        ]
        params: list[object] = [
            until, until, campaign.account_id, campaign.campaign_id, number, session_id, now,
            campaign.account_id, number, session_id,
            now, number, session_id,
        ]  # fmt: skip
        if page_url is not None:
            parts.append(
                "v AS (INSERT INTO page_views (session_id, viewed_at, url) "
                "SELECT ?, ?, ? WHERE EXISTS (SELECT 1 FROM p))"
            )
            params += [session_id, now, page_url]
        cursor = self.conn.execute(f"WITH {', '.join(parts)} SELECT count(*) FROM p", params)
        return lambda: int(cursor.fetchone()[0]) > 0

    def lend(self, campaign: TrackingCampaign, session_id: str, now: int) -> str | None:
        """Lend the session the campaign's dynamic number that has been free the longest
        (never held counts as longest; ties by number); None when every one is held.

        Where rows lock, a number another hit is lending at this moment is skipped, not
        waited for: two sessions never get one number, and neither waits for the other.
        Once a pool had none to lend, the transaction's later hits of the same second get
        none either without asking (a number frees by time; one freed at once, by a hold
        ended or a number added, is lent from the next second on).
        """
        pool = (campaign.account_id, campaign.campaign_id, now)
        if pool in self._pools_held:
            return None
        row = self.conn.execute(
            "SELECT number FROM phones WHERE account_id = ? AND campaign_id = ? "
            "AND kind = 'dynamic' AND (held_until IS NULL OR held_until <= ?) "
            f"ORDER BY coalesce(held_until, 0), number LIMIT 1{self._skip_locked}",
            (campaign.account_id, campaign.campaign_id, now),
        ).fetchone()
        if row is None:
            self._pools_held.add(pool)
            return None
        number = str(row[0])
        until = now + campaign.hold_seconds
        self.conn.execute(
            "UPDATE phones SET held_by = ?, held_until = ? WHERE account_id = ? AND number = ?",
            (session_id, until, campaign.account_id, number),
        )
        self.conn.execute(
            "INSERT INTO holds (account_id, number, session_id, held_from, held_until) "
            "VALUES (?, ?, ?, ?, ?)",
            (campaign.account_id, number, session_id, now, until),
        )
        return number

    def count_exhausted(self, campaign: TrackingCampaign, now: int) -> None:
        """Count a page view that got the stub (every pool number held), in the minute: at
        once, or where rows lock after the commit (``tracking_transaction``)."""
        key = (campaign.account_id, campaign.campaign_id, now - now % 60)
        if self._row_locks:
            self._exhausted[key] = self._exhausted.get(key, 0) + 1
        else:
            self._count_exhausted(key, 1)

    def count_deferred(self) -> None:
        """The counts ``count_exhausted`` left for after the commit, if any."""
        for key, hits in self._exhausted.items():
            self._count_exhausted(key, hits)
        self._exhausted = {}

    def _count_exhausted(self, key: tuple[int, int, int], hits: int) -> None:
        self.conn.execute(
            "INSERT INTO exhausted_hits (account_id, campaign_id, minute, hits) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (account_id, campaign_id, minute) "
            "DO UPDATE SET hits = exhausted_hits.hits + excluded.hits",
            (*key, hits),
        )

    def count_ip_hit(self, ip: str, window_start: int, limit: int) -> bool:
        """Count a hit of a client IP in the minute from ``window_start`` unless the minute
        has ``limit`` already: whether it was counted. A hit refused writes nothing, so the
        other hits of its transaction go on (a group commit's)."""
        row = self.conn.execute(
            "INSERT INTO hit_counts (ip, window_start, hits) VALUES (?, ?, 1) "
            "ON CONFLICT (ip, window_start) DO UPDATE SET hits = hit_counts.hits + 1 "
            "WHERE hit_counts.hits < ? RETURNING hits",
            (ip, window_start, limit),
        ).fetchone()
        return row is not None


class TrackingQueries(StoreCore):
    """Campaign settings and rules (the CLI), hits (the public API), who held a number when."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        # site key -> (until when, on time.monotonic(); the campaign as a hit reads it)
        self._hit_campaigns: dict[str, tuple[float, HitCampaign]] = {}

    # -- setup ------------------------------------------------------------------------------

    def configure_campaign(
        self,
        account_id: int,
        campaign_id: int,
        *,
        hold_seconds: int | None = None,
        stub: str | None = None,
        display_format: str | None = None,
        replace_numbers: Sequence[str] | None = None,
        selector: str | None = None,
    ) -> TrackingCampaign:
        """Change the given settings of a campaign (None leaves one as it is); give it a site
        key if it has none."""
        return self.save_campaign(
            account_id,
            campaign_id,
            hold_seconds=hold_seconds,
            stub=stub,
            display_format=display_format,
            replace_numbers=replace_numbers,
            selector=selector,
        )

    def save_campaign(
        self,
        account_id: int,
        campaign_id: int,
        name: str | None = None,
        site: str | None = None,
        status: str | None = None,
        **settings: Any,
    ) -> TrackingCampaign:
        """Create the campaign (``name`` required then) or update it, with its tracking
        settings (see ``configure_campaign``), in one transaction: all of it or nothing.
        Whatever is None stays as it is."""
        changes = _setting_changes(**settings)
        if status is not None and status not in CAMPAIGN_STATUSES:
            raise Conflict(f"status must be one of {', '.join(CAMPAIGN_STATUSES)}")
        self.ensure_ready()
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT site_key FROM campaigns WHERE account_id = ? AND campaign_id = ?",
                (account_id, campaign_id),
            ).fetchone()
            if row is None:
                if name is None:
                    raise NotFound(f"the account has no campaign {campaign_id}")
                conn.execute(
                    "INSERT INTO campaigns (account_id, campaign_id, name, site, status, "
                    "created_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (account_id, campaign_id, name, site or "", status or "active", unix_now()),
                )
            else:
                named = {"name": name, "site": site, "status": status}
                changes.update({k: v for k, v in named.items() if v is not None})
            if row is None or row[0] is None:
                changes["site_key"] = new_id()
            if changes:
                assignments = ", ".join(f"{column} = ?" for column in changes)
                conn.execute(
                    f"UPDATE campaigns SET {assignments} WHERE account_id = ? AND campaign_id = ?",
                    (*changes.values(), account_id, campaign_id),
                )
            found = conn.execute(
                f"SELECT {_CAMPAIGN_COLUMNS} FROM campaigns WHERE account_id = ? "
                "AND campaign_id = ?",
                (account_id, campaign_id),
            ).fetchone()
        return _campaign(found)

    def tracking_campaign(self, site_key: str) -> TrackingCampaign | None:
        """The campaign of a public site key, or None."""
        self.ensure_ready()
        with self._connect() as conn:
            row = conn.execute(
                f"SELECT {_CAMPAIGN_COLUMNS} FROM campaigns WHERE site_key = ?", (site_key,)
            ).fetchone()
        return None if row is None else _campaign(row)

    def hit_campaign(self, site_key: str) -> HitCampaign | None:
        """The campaign of a public site key with its rules and numbers, as read at most
        ``HIT_CAMPAIGN_SECONDS`` ago by this process (read anew on one connection: one pool
        checkout, not three); None if no campaign has the key (not kept: a key made a moment
        ago works at once)."""
        now = time.monotonic()
        kept = self._hit_campaigns.get(site_key)
        if kept is not None and kept[0] > now:
            return kept[1]
        self.ensure_ready()
        with self._connect() as conn:
            row = conn.execute(
                f"SELECT {_CAMPAIGN_COLUMNS} FROM campaigns WHERE site_key = ?", (site_key,)
            ).fetchone()
            if row is None:
                return None
            campaign = _campaign(row)
            ids = (campaign.account_id, campaign.campaign_id)
            found = HitCampaign(campaign, rules_of(conn, *ids), _numbers(conn, *ids))
        if len(self._hit_campaigns) >= _HIT_CAMPAIGNS_KEPT:
            self._hit_campaigns = {}  # threads may race here: at worst a read more
        self._hit_campaigns[site_key] = (now + HIT_CAMPAIGN_SECONDS, found)
        return found

    def campaign_numbers(self, account_id: int, campaign_id: int) -> list[tuple[str, str]]:
        """(number, kind) of the campaign's tracking numbers, in the order they were added."""
        self.ensure_ready()
        with self._connect() as conn:
            return _numbers(conn, account_id, campaign_id)

    def add_rule(
        self,
        account_id: int,
        campaign_id: int,
        *,
        utm_source: str = "",
        utm_medium: str = "",
        utm_campaign: str = "",
        referrer: str = "",
        source_type: str = "",
        number: str = "",
    ) -> SourceRule:
        """Append a source rule to the campaign's list (``number`` "" sends to the pool)."""
        if source_type and source_type not in SOURCE_TYPES:
            raise Conflict(f"source type must be one of {', '.join(SOURCE_TYPES)}")
        for name, value in (
            ("utm source", utm_source),
            ("utm medium", utm_medium),
            ("utm campaign", utm_campaign),
            ("referrer", referrer),
        ):
            if len(value) > 200:
                raise Conflict(f"the {name} of a rule has at most 200 characters")
        if number:
            number = _digits(number, "rule's number")
        self.ensure_ready()
        with self._transaction() as conn:
            self._require_campaign(conn, account_id, campaign_id)
            if (
                number
                and not conn.execute(
                    "SELECT 1 FROM phones WHERE account_id = ? AND campaign_id = ? AND number = ? "
                    "AND kind = 'static'",
                    (account_id, campaign_id, number),
                ).fetchone()
            ):
                raise Conflict(f"the campaign has no static number {number}")
            position = conn.execute(
                "SELECT coalesce(max(position), 0) + 1 FROM source_rules "
                "WHERE account_id = ? AND campaign_id = ?",
                (account_id, campaign_id),
            ).fetchone()[0]
            values = (utm_source, utm_medium, utm_campaign, referrer.lower(), source_type, number)
            row = conn.execute(
                "INSERT INTO source_rules (account_id, campaign_id, position, utm_source, "
                "utm_medium, utm_campaign, referrer, source_type, number, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (account_id, campaign_id, position, *values, unix_now()),
            ).fetchone()
        return SourceRule(int(row[0]), int(position), *values)

    def rules(self, account_id: int, campaign_id: int) -> list[SourceRule]:
        self.ensure_ready()
        with self._connect() as conn:
            return rules_of(conn, account_id, campaign_id)

    def remove_rule(self, account_id: int, rule_id: int) -> None:
        self.ensure_ready()
        with self._transaction() as conn:
            if not conn.execute(
                "SELECT 1 FROM source_rules WHERE account_id = ? AND id = ?", (account_id, rule_id)
            ).fetchone():
                raise NotFound(f"the account has no rule {rule_id}")
            conn.execute("DELETE FROM source_rules WHERE id = ?", (rule_id,))

    def account_settings(self, account_id: int) -> AccountSettings:
        self.ensure_ready()
        with self._connect() as conn:
            row = conn.execute(
                "SELECT unique_days, target_seconds FROM accounts WHERE id = ?", (account_id,)
            ).fetchone()
        if row is None:
            raise NotFound(f"no account {account_id}")
        return AccountSettings(*row)

    def set_account_settings(
        self, account_id: int, unique_days: int | None, target_seconds: int | None
    ) -> AccountSettings:
        if unique_days is not None and not 0 <= unique_days <= UNIQUE_DAYS_MAX:
            raise Conflict(
                f"unique days must be between 0 (every call unique) and {UNIQUE_DAYS_MAX}"
            )
        if target_seconds is not None and not 0 <= target_seconds <= TARGET_SECONDS_MAX:
            raise Conflict(f"target seconds must be between 0 and {TARGET_SECONDS_MAX}")
        self.ensure_ready()
        with self._transaction() as conn:
            conn.execute(
                "UPDATE accounts SET unique_days = coalesce(?, unique_days), "
                "target_seconds = coalesce(?, target_seconds) WHERE id = ?",
                (unique_days, target_seconds, account_id),
            )
        return self.account_settings(account_id)

    # -- hits -------------------------------------------------------------------------------

    @contextmanager
    def tracking_transaction(self) -> Iterator[TrackingTx]:
        """The transaction of a hit, or of a group commit's hits. Where rows lock
        (PostgreSQL), the stub page views it counts (``TrackingTx.count_exhausted``) are
        counted after its COMMIT, on the same connection, in autocommit: one row a minute
        takes every stub page view, and holding its lock through each transaction would
        queue them all behind it; a connection of its own would cost a second pool checkout.
        Where rows do not lock (SQLite), writes are serialized anyway, and the count is one
        more statement of the transaction."""
        self.ensure_ready()
        if not self.row_locks:
            with self._live_transaction() as conn:
                yield TrackingTx(conn, row_locks=False)
            return
        # The live transaction (no write lock of imports) by hand, on an autocommit
        # connection that stays checked out for the count after it. Pipelined: a hit's
        # writes are sent without waiting, and answered with the next statement whose rows
        # are read, so they cost no round trip of their own.
        with self._connect() as conn:
            tx = TrackingTx(conn, row_locks=True)
            with self._pipelined_transaction(conn):
                yield tx
            tx.count_deferred()

    # -- reading what hits left -------------------------------------------------------------

    def holder_at(self, account_id: int, number: str, at: int) -> HeldAt | None:
        """The session that held the account's ``number`` at instant ``at``, if any, with
        its page views up to then."""
        self.ensure_ready()
        with self._connect() as conn:
            return held_at(conn, account_id, number, at)

    def pool_stats(self, account_id: int, campaign_id: int, now: int | None = None) -> PoolStats:
        now = unix_now() if now is None else now
        self.ensure_ready()
        with self._connect() as conn:
            return _pool_stats(conn, account_id, now, campaign_id).get(campaign_id, NO_POOL)

    def campaign_setups(self, account_id: int, now: int | None = None) -> list[CampaignSetup]:
        """Every campaign of the account with its numbers, rules and pool (as ``pool_stats``
        at ``now``), by campaign id: six queries on one connection however many campaigns."""
        now = unix_now() if now is None else now
        self.ensure_ready()
        with self._connect() as conn:
            rows = conn.execute(
                f"SELECT {_CAMPAIGN_COLUMNS} FROM campaigns WHERE account_id = ? "
                "ORDER BY campaign_id",
                (account_id,),
            ).fetchall()
            if not rows:
                return []
            numbers = _numbers_by_campaign(conn, account_id)
            rules = _rules_by_campaign(conn, account_id)
            pools = _pool_stats(conn, account_id, now)
        setups = []
        for row in rows:
            campaign = _campaign(row)
            key = campaign.campaign_id
            setups.append(
                CampaignSetup(
                    campaign, numbers.get(key, []), rules.get(key, []), pools.get(key, NO_POOL)
                )
            )
        return setups

    def prune_tracking(self, now: int | None = None) -> None:
        """Forget sessions, page views, holds and visitors older than their account's unique
        window plus a margin."""
        now = unix_now() if now is None else now
        self.ensure_ready()
        with self._live_transaction() as conn:
            for account_id, days in conn.execute("SELECT id, unique_days FROM accounts").fetchall():
                cutoff = now - int(days) * 86400 - PRUNE_MARGIN_SECONDS
                for sql in (
                    "DELETE FROM page_views WHERE viewed_at < ? AND session_id IN "
                    "(SELECT id FROM sessions WHERE account_id = ?)",
                    "DELETE FROM holds WHERE held_until < ? AND account_id = ?",
                    "DELETE FROM sessions WHERE last_activity_at < ? AND account_id = ?",
                    "DELETE FROM visitors WHERE last_seen_at < ? AND account_id = ?",
                ):
                    conn.execute(sql, (cutoff, account_id))
            conn.execute("DELETE FROM exhausted_hits WHERE minute < ?", (now - 86400 * 2,))
            conn.execute("DELETE FROM hit_counts WHERE window_start < ?", (now - 3600,))

    @staticmethod
    def _require_campaign(conn: Connection, account_id: int, campaign_id: int) -> None:
        if not conn.execute(
            "SELECT 1 FROM campaigns WHERE account_id = ? AND campaign_id = ?",
            (account_id, campaign_id),
        ).fetchone():
            raise NotFound(f"the account has no campaign {campaign_id}")


def held_at(conn: Connection, account_id: int, number: str, at: int) -> HeldAt | None:
    """The latest hold of ``number`` from before ``at``, if it lasted past it: its session
    with the page views up to ``at``, in one query (one index seek however old ``at`` is)."""
    return held_from(conn.execute(*held_at_query(account_id, number, at)).fetchone())


def held_at_query(account_id: int, number: str, at: int) -> tuple[str, tuple[object, ...]]:
    """``held_at``'s statement and its parameters; its row goes to ``held_from``."""
    return _HELD_AT, (at, at, account_id, number, at, at)


def held_from(row: Sequence[Any] | None) -> HeldAt | None:
    if row is None:
        return None
    return HeldAt(HeldSession(*row[:13]), int(row[13]), "" if row[14] is None else str(row[14]))


def held_at_sql(at: str, account_id: str, number: str) -> str:
    """The statement of the session holding ``number`` at ``at``, with its page views up to
    then (15 columns: ``held_from``'s row), from SQL expressions: ``?`` for a statement of its
    own, or the columns of an outer row for a lateral join."""
    return (
        "SELECT s.id, s.visitor_id, s.campaign_id, s.started_at, s.ordinal, "
        "s.source, s.landing_url, s.referrer, s.ga, s.ym, s.rs, s.ip, s.user_agent, "
        "(SELECT count(*) FROM page_views v WHERE v.session_id = s.id "
        f"AND v.viewed_at <= {at}), "
        "(SELECT v.url FROM page_views v WHERE v.session_id = s.id "
        f"AND v.viewed_at <= {at} ORDER BY v.viewed_at DESC, v.id DESC LIMIT 1) "
        f"FROM (SELECT session_id, held_until FROM holds WHERE account_id = {account_id} "
        f"AND number = {number} AND held_from <= {at} ORDER BY held_from DESC, id DESC "
        f"LIMIT 1) h JOIN sessions s ON s.id = h.session_id WHERE h.held_until > {at}"
    )


_HELD_AT: Final = held_at_sql("?", "?", "?")


def rules_of(conn: Connection, account_id: int, campaign_id: int) -> list[SourceRule]:
    return _rules_by_campaign(conn, account_id, campaign_id).get(campaign_id, [])


def rules_query(account_id: int, campaign_id: int | None) -> tuple[str, tuple[object, ...]]:
    """The statement of the source rules of the account's campaigns (or of one), and its
    parameters; its rows go to ``rules_from``."""
    only, params = _only("campaign_id", campaign_id)
    sql = (
        "SELECT campaign_id, id, position, utm_source, utm_medium, utm_campaign, referrer, "
        f"source_type, number FROM source_rules WHERE account_id = ?{only} "
        "ORDER BY campaign_id, position"
    )
    return sql, (account_id, *params)


def rules_from(rows: Iterable[Sequence[Any]]) -> dict[int, list[SourceRule]]:
    """The rules of ``rules_query``'s rows, each campaign's by position."""
    found: dict[int, list[SourceRule]] = {}
    for row in rows:
        found.setdefault(int(row[0]), []).append(SourceRule(*row[1:]))
    return found


def _rules_by_campaign(
    conn: Connection, account_id: int, campaign_id: int | None = None
) -> dict[int, list[SourceRule]]:
    """The source rules of the account's campaigns (or of one), each list by position."""
    return rules_from(conn.execute(*rules_query(account_id, campaign_id)).fetchall())


def _numbers(conn: Connection, account_id: int, campaign_id: int) -> list[tuple[str, str]]:
    return _numbers_by_campaign(conn, account_id, campaign_id).get(campaign_id, [])


def _numbers_by_campaign(
    conn: Connection, account_id: int, campaign_id: int | None = None
) -> dict[int, list[tuple[str, str]]]:
    """(number, kind) of the account's campaigns (or of one), in the order they were added."""
    only, params = _only("campaign_id", campaign_id)
    rows = conn.execute(
        f"SELECT campaign_id, number, kind FROM phones WHERE account_id = ?{only} "
        "ORDER BY created_at, id",
        (account_id, *params),
    ).fetchall()
    found: dict[int, list[tuple[str, str]]] = {}
    for row in rows:
        found.setdefault(int(row[0]), []).append((str(row[1]), str(row[2])))
    return found


NO_POOL: Final = PoolStats(0, 0, 0, 0)


def _pool_stats(
    conn: Connection, account_id: int, now: int, campaign_id: int | None = None
) -> dict[int, PoolStats]:
    """The pools of the account's campaigns (or of one) that have dynamic numbers, holds or
    stub hits: size, held at ``now``, and the peak held and the stub hits of the 24 hours
    before; three queries."""
    since = now - 86400
    only, params = _only("campaign_id", campaign_id)
    sizes = conn.execute(
        "SELECT campaign_id, count(*), sum(CASE WHEN held_until > ? THEN 1 ELSE 0 END) "
        f"FROM phones WHERE account_id = ? AND kind = 'dynamic'{only} GROUP BY campaign_id",
        (now, account_id, *params),
    ).fetchall()
    held_only, _ = _only("p.campaign_id", campaign_id)
    holds: dict[int, list[tuple[int, int]]] = {}
    for campaign, held_from, held_until in conn.execute(
        "SELECT p.campaign_id, h.held_from, h.held_until FROM holds h JOIN phones p "
        "ON p.account_id = h.account_id AND p.number = h.number "
        f"WHERE h.account_id = ? AND h.held_until >= ?{held_only}",
        (account_id, since, *params),
    ).fetchall():
        holds.setdefault(int(campaign), []).append((int(held_from), int(held_until)))
    exhausted = conn.execute(
        "SELECT campaign_id, coalesce(sum(hits), 0) FROM exhausted_hits WHERE account_id = ? "
        f"AND minute >= ?{only} GROUP BY campaign_id",
        (account_id, since, *params),
    ).fetchall()
    size = {int(row[0]): (int(row[1]), int(row[2] or 0)) for row in sizes}
    stub_hits = {int(row[0]): int(row[1]) for row in exhausted}
    return {
        campaign: PoolStats(
            *size.get(campaign, (0, 0)),
            _peak(holds.get(campaign, []), since),
            stub_hits.get(campaign, 0),
        )
        for campaign in {*size, *holds, *stub_hits}
    }


def _only(column: str, campaign_id: int | None) -> tuple[str, tuple[int, ...]]:
    """The condition (and its parameter) that narrows a query to one campaign, if given."""
    if campaign_id is None:
        return "", ()
    return f" AND {column} = ?", (campaign_id,)


def _setting_changes(
    hold_seconds: int | None = None,
    stub: str | None = None,
    display_format: str | None = None,
    replace_numbers: Sequence[str] | None = None,
    selector: str | None = None,
) -> dict[str, Any]:
    """The columns to set for the given tracking settings, each checked (Conflict if bad)."""
    changes: dict[str, Any] = {}
    if hold_seconds is not None:
        if not 60 <= hold_seconds <= 86400:  # as tracking.lending.check_hold_seconds
            raise Conflict("the hold time must be between 60 and 86400 seconds")
        changes["hold_seconds"] = hold_seconds
    if stub is not None:
        changes["stub"] = _digits(stub, "stub number", empty=True)
    if display_format is not None:
        if len(display_format) > 40 or display_format.count("X") < 5:
            raise Conflict(
                "a display format has at most 40 characters and at least 5 X marks, "
                "like '+7 (XXX) XXX-XX-XX'"
            )
        changes["display_format"] = display_format
    if replace_numbers is not None:
        numbers = [_digits(n, "number to replace") for n in replace_numbers]
        if len(numbers) > 20:
            raise Conflict("at most 20 numbers to replace")
        changes["replace_numbers"] = ",".join(dict.fromkeys(numbers))
    if selector is not None:
        if len(selector) > 200:
            raise Conflict("a selector has at most 200 characters")
        changes["selector"] = selector
    return changes


def _digits(text: str, what: str, empty: bool = False) -> str:
    """A number as the store keeps it: digits only (callers normalise spellings first)."""
    if empty and not text:
        return ""
    if not (text.isascii() and text.isdigit() and 10 <= len(text) <= 15):
        raise Conflict(f"the {what} must be 10-15 digits, got {text!r}")
    return text


def _peak(holds: list[Any], since: int) -> int:
    """The most holds at once over the period from ``since``."""
    events: list[tuple[int, int]] = []
    for held_from, held_until in holds:
        events.append((max(int(held_from), since), 1))
        events.append((int(held_until), -1))
    peak = current = 0
    for _, step in sorted(events, key=lambda e: (e[0], -e[1])):
        current += step
        peak = max(peak, current)
    return peak
