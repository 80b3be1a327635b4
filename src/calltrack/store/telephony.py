"""Telephony's SQL: endpoints a PBX posts to, the calls its events tell, and what a call
record needs to know of the account (its number's campaign, the caller's earlier calls).

Events are merged into ``telephony_calls`` in a transaction of their own (beside imports on
PostgreSQL); the v3 record of an ended call is written with the calls' write lock, and a
call whose record is behind its events is found again by ``calls_behind``.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from typing import Any, Final

from calltrack.errors import Conflict, NotFound
from calltrack.hashing import hash_secret
from calltrack.model import StoredCall
from calltrack.store.core import Connection, unix_now
from calltrack.store.hooks import HookQueries
from calltrack.store.tracking import (
    HeldAt,
    SourceRule,
    TrackingQueries,
    held_at_query,
    held_at_sql,
    held_from,
    rules_from,
    rules_query,
)

PROVIDERS: Final = ("generic", "zadarma")


@dataclass(frozen=True, slots=True)
class TelephonyEndpoint:
    id: int
    account_id: int
    provider: str
    endpoint: str  # the public id in the events URL
    signing_secret: str  # Zadarma's; "" for a generic endpoint (its secret is kept hashed)
    hint: str
    created_at: int
    revoked_at: int | None

    def events_url(self, server: str) -> str:
        """Where the PBX posts its events, on this service reached at ``server``."""
        base = server.rstrip("/")
        if self.provider == "zadarma":
            return f"{base}/telephony/zadarma/{self.endpoint}"
        return f"{base}/telephony/generic"


class WriteLockBusy(Exception):
    """Another writer holds the write lock of records (``take_write_lock``)."""


@dataclass(frozen=True, slots=True)
class IssuedEndpoint:
    endpoint: TelephonyEndpoint
    secret: str  # shown once


@dataclass(frozen=True, slots=True)
class CallState:
    """One call as its events told it so far."""

    id: int
    account_id: int
    provider: str
    call_id: str
    universal_id: str
    started_at: int | None
    answered_at: int | None
    ended_at: int | None
    caller: str
    called: str
    forwarded_to: str
    talk_seconds: int | None
    disposition: str
    sip_first: int | None
    sip_second: int | None
    recording_url: str
    ended: bool
    opened_at: int
    version: int
    built: int


@dataclass(frozen=True, slots=True)
class NumberInfo:
    """A tracking number as a call record sees it."""

    number: str
    campaign_id: int
    kind: str
    office: str
    campaign_name: str
    site: str


@dataclass(frozen=True, slots=True)
class RecordFacts:
    """What the account knows of an ended call besides its events, read at once."""

    unique_days: int
    target_seconds: int
    # (call_time, talk seconds, universal id) of the caller's other calls
    earlier: list[tuple[int, int, str]]
    number: NumberInfo | None  # the called number, if a campaign of the account has it
    rules: list[SourceRule]  # the campaign's rules, for a static number
    held: HeldAt | None  # who held a dynamic number when the call started, with its pages


_NUMBER_FACTS: Final = (
    "SELECT a.unique_days, a.target_seconds, p.number, p.campaign_id, p.kind, "
    "p.office, coalesce(c.name, ''), coalesce(c.site, '') FROM accounts a "
    "LEFT JOIN phones p ON p.account_id = a.id AND p.number = ? "
    "LEFT JOIN campaigns c ON c.account_id = p.account_id "
    "AND c.campaign_id = p.campaign_id WHERE a.id = ?"
)
# ``_NUMBER_FACTS``, the caller's earlier calls (as three arrays) and ``held_at`` of a batch of
# calls given as arrays of their accounts, callers, called numbers, starts and universal ids,
# a row a call in their order (PostgreSQL).
_FACTS_OF_BATCH: Final = (
    "SELECT a.unique_days, a.target_seconds, p.number, p.campaign_id, p.kind, p.office, "
    "coalesce(c.name, ''), coalesce(c.site, ''), e.times, e.talks, e.uids, held.* "
    "FROM unnest(?::bigint[], ?::text[], ?::text[], ?::bigint[], ?::text[]) WITH ORDINALITY "
    "AS f(account_id, caller, called, start, universal_id, n) "
    "LEFT JOIN accounts a ON a.id = f.account_id "
    "LEFT JOIN phones p ON p.account_id = a.id AND p.number = f.called "
    "LEFT JOIN campaigns c ON c.account_id = p.account_id AND c.campaign_id = p.campaign_id "
    "LEFT JOIN LATERAL (SELECT array_agg(call_time) AS times, array_agg(duration) AS talks, "
    "array_agg(universal_id) AS uids FROM calls WHERE account_id = f.account_id "
    "AND client_number = f.caller AND call_time BETWEEN f.start - 86400 * a.unique_days "
    "AND f.start AND universal_id <> f.universal_id) e ON true "
    "LEFT JOIN LATERAL ("
    + held_at_sql("f.start", "f.account_id", "p.number")
    + " AND p.kind = 'dynamic') held ON true ORDER BY f.n"
)
_STATE_COLUMNS: Final = ", ".join(f.name for f in fields(CallState))
_ENDPOINT_FIELDS: Final = [f.name for f in fields(TelephonyEndpoint)]
_ENDPOINT_COLUMNS: Final = ", ".join(f"e.{name}" for name in _ENDPOINT_FIELDS)
_NEW_COLUMNS: Final = [f.name for f in fields(CallState)][1:]  # without the id
_CLAIM_INTO: Final = f"INSERT INTO telephony_calls ({', '.join(_NEW_COLUMNS)})"
_CLAIM_END: Final = (
    "ON CONFLICT (account_id, provider, call_id) DO NOTHING "
    "RETURNING id, account_id, provider, call_id"
)
# The claim of any number of calls, a column an array (PostgreSQL): one text, so it is parsed
# and planned once a connection; rows of VALUES would make a new statement of every count.
_CLAIM_ARRAYS: Final = (
    f"{_CLAIM_INTO} SELECT * FROM unnest("
    + ", ".join(
        "?::text[]" if f.type in ("str", str) else "?::bigint[]" for f in fields(CallState)[1:]
    )
    + f") {_CLAIM_END}"
)
# Rows a statement claims or reads at most (SQLite binds at most 32,766 values a statement).
_CLAIMS_A_STATEMENT: Final = 500
_IDS_A_STATEMENT: Final = 1000
_STATES: Final = (
    f"SELECT {_STATE_COLUMNS} FROM telephony_calls WHERE account_id = ? AND provider = ?"
)
_STATES_LOCKED: Final = f"{_STATES} AND call_id = ANY(?) ORDER BY call_id FOR UPDATE"
# What a call's events change: not its key, universal id or first event's time. (SQLite
# rewrites the entries of every index whose columns an UPDATE sets, changed or not, and checks
# the account's foreign key when account_id is set.)
_KEPT: Final = ("account_id", "provider", "call_id", "universal_id", "opened_at")
_SAVED: Final = [name for name in _NEW_COLUMNS if name not in _KEPT]
_SAVE: Final = (
    f"UPDATE telephony_calls SET {', '.join(f'{name} = ?' for name in _SAVED)} WHERE id = ?"
)


def _column(value: object) -> object:
    return int(value) if isinstance(value, bool) else value


class TelephonyQueries(HookQueries, TrackingQueries):
    """Endpoints (the CLI), events (the telephony routes), records of ended calls."""

    # -- endpoints --------------------------------------------------------------------------

    def add_telephony_endpoint(self, account_id: int, provider: str) -> IssuedEndpoint:
        """A new endpoint of the account with its secret (shown once; the bearer secret of
        a generic endpoint is kept only as a hash, Zadarma's signing secret as it is)."""
        if provider not in PROVIDERS:
            raise Conflict(f"provider must be one of {', '.join(PROVIDERS)}")
        secret = secrets.token_urlsafe(24)
        endpoint = secrets.token_urlsafe(12)
        signing = secret if provider == "zadarma" else ""
        now = unix_now()
        self.ensure_ready()
        with self._transaction() as conn:
            if not conn.execute("SELECT 1 FROM accounts WHERE id = ?", (account_id,)).fetchone():
                raise NotFound(f"no account {account_id}")
            row = conn.execute(
                "INSERT INTO telephony_endpoints (account_id, provider, endpoint, secret_hash, "
                "signing_secret, hint, created_at) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (account_id, provider, endpoint, hash_secret(secret), signing, secret[:4], now),
            ).fetchone()
        found = TelephonyEndpoint(
            int(row[0]), account_id, provider, endpoint, signing, secret[:4], now, None
        )
        return IssuedEndpoint(found, secret)

    def telephony_endpoints(self, account_id: int) -> list[TelephonyEndpoint]:
        self.ensure_ready()
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT id, account_id, provider, endpoint, signing_secret, hint, created_at, "
                "revoked_at FROM telephony_endpoints WHERE account_id = ? ORDER BY id",
                (account_id,),
            ).fetchall()
        return [TelephonyEndpoint(*row) for row in rows]

    def revoke_telephony_endpoint(self, account_id: int, endpoint_id: int) -> None:
        self.ensure_ready()
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT revoked_at FROM telephony_endpoints WHERE account_id = ? AND id = ?",
                (account_id, endpoint_id),
            ).fetchone()
            if row is None:
                raise NotFound(f"the account has no telephony endpoint {endpoint_id}")
            if row[0] is None:
                conn.execute(
                    "UPDATE telephony_endpoints SET revoked_at = ? WHERE id = ?",
                    (unix_now(), endpoint_id),
                )

    def endpoint_by_secret(self, secret: str) -> TelephonyEndpoint | None:
        """The active generic endpoint whose bearer secret this is."""
        return self._endpoint("secret_hash = ? AND provider = 'generic'", hash_secret(secret))

    def endpoint_by_id(self, endpoint: str, provider: str) -> TelephonyEndpoint | None:
        """The active endpoint of ``provider`` with this public id."""
        found = self._endpoint("endpoint = ?", endpoint)
        return found if found is not None and found.provider == provider else None

    def endpoint_by_secret_in(self, conn: Connection, secret: str) -> TelephonyEndpoint | None:
        """``endpoint_by_secret`` on the caller's connection (in its transaction)."""
        return _endpoint_in(conn, "secret_hash = ? AND provider = 'generic'", hash_secret(secret))

    def endpoint_and_call_in(
        self, conn: Connection, secret: str, call_id: str
    ) -> tuple[TelephonyEndpoint | None, CallState | None]:
        """``endpoint_by_secret_in`` and that endpoint's call ``call_id`` (locked, as
        ``call_state`` has it) in one statement, for stores whose rows lock (PostgreSQL: a
        round trip of a call's later events saved)."""
        row = conn.execute(
            f"SELECT {_ENDPOINT_COLUMNS}, c.* FROM telephony_endpoints e LEFT JOIN LATERAL "
            f"(SELECT {_STATE_COLUMNS} FROM telephony_calls WHERE account_id = e.account_id "
            "AND provider = e.provider AND call_id = ? FOR UPDATE) c ON true "
            "WHERE e.secret_hash = ? AND e.provider = 'generic' AND e.revoked_at IS NULL",
            (call_id, hash_secret(secret)),
        ).fetchone()
        if row is None:
            return None, None
        width = len(_ENDPOINT_FIELDS)
        state = None if row[width] is None else CallState(*row[width:])
        return TelephonyEndpoint(*row[:width]), state

    def _endpoint(self, where: str, value: str) -> TelephonyEndpoint | None:
        self.ensure_ready()
        with self._connect() as conn:
            return _endpoint_in(conn, where, value)

    # -- events -----------------------------------------------------------------------------

    @contextmanager
    def telephony_transaction(self, quick: bool = False) -> Iterator[Connection]:
        """The transaction events are merged in: beside imports where rows lock; ``quick``
        gives up soon where an import holds the one write lock (see ``spill_events``).

        Where rows lock (PostgreSQL) it is pipelined (``_pipelined_transaction``): the saved
        calls, the deliveries and the records' rows go with the next read or the COMMIT, and
        a group commit of 16 requests makes 11 round trips instead of 23 (bench/RESULTS.md,
        telephony)."""
        self.ensure_ready()
        if not self.row_locks:
            with self._live_transaction(quick) as conn:
                yield conn
            return
        with self._connect() as conn, self._pipelined_transaction(conn):
            yield conn

    # Where one write lock serializes everything (SQLite), events that cannot be merged while
    # an import holds it are kept aside and merged by the sweeper.
    spills_events: bool = False

    def spill_events(self, account_id: int, provider: str, events: bytes) -> None:
        raise NotImplementedError("this store merges events beside imports")

    def spilled_events(self, limit: int = 100) -> list[tuple[int, int, str, bytes]]:
        """(id, account, provider, encoded events) kept aside, oldest first."""
        return []

    def drop_spilled(self, ids: list[int]) -> None:
        """Forget events kept aside once they are merged."""

    def call_state(
        self, conn: Connection, account_id: int, provider: str, call_id: str
    ) -> CallState | None:
        lock = " FOR UPDATE" if self.row_locks else ""
        row = conn.execute(
            f"SELECT {_STATE_COLUMNS} FROM telephony_calls WHERE account_id = ? "
            f"AND provider = ? AND call_id = ?{lock}",
            (account_id, provider, call_id),
        ).fetchone()
        return None if row is None else CallState(*row)

    def call_states(
        self, conn: Connection, account_id: int, provider: str, call_ids: Iterable[str]
    ) -> dict[str, CallState]:
        """``call_state`` of several calls of one endpoint's account, by call id (those not
        stored are missing); one statement, the rows locked in call id order where rows lock
        (so two transactions locking the same calls never wait for each other in a cycle)."""
        wanted = sorted(set(call_ids))
        found: dict[str, CallState] = {}
        for start in range(0, len(wanted), _IDS_A_STATEMENT):
            chunk = wanted[start : start + _IDS_A_STATEMENT]
            if self.row_locks:
                rows = conn.execute(_STATES_LOCKED, (account_id, provider, chunk)).fetchall()
            else:
                marks = ", ".join("?" * len(chunk))
                rows = conn.execute(
                    f"{_STATES} AND call_id IN ({marks})", (account_id, provider, *chunk)
                ).fetchall()
            found.update((row[3], CallState(*row)) for row in rows)
        return found

    def claim_calls(
        self, conn: Connection, states: list[CallState]
    ) -> dict[tuple[int, str, str], int]:
        """Store calls' first states; the ids of those stored, by (account, provider, call
        id). A call a concurrent request stored already is left out (after waiting for that
        request's transaction, where rows lock)."""
        claimed: dict[tuple[int, str, str], int] = {}
        if self.dialect == "postgres":
            columns = [[_column(getattr(state, name)) for state in states] for name in _NEW_COLUMNS]
            rows = conn.execute(_CLAIM_ARRAYS, columns).fetchall()
            return {(int(r[1]), str(r[2]), str(r[3])): int(r[0]) for r in rows}
        row_marks = "(" + ", ".join("?" * len(_NEW_COLUMNS)) + ")"
        for start in range(0, len(states), _CLAIMS_A_STATEMENT):
            chunk = states[start : start + _CLAIMS_A_STATEMENT]
            values = [_column(getattr(state, name)) for state in chunk for name in _NEW_COLUMNS]
            rows = conn.execute(
                f"{_CLAIM_INTO} VALUES {', '.join([row_marks] * len(chunk))} {_CLAIM_END}",
                values,
            ).fetchall()
            claimed.update(((int(r[1]), str(r[2]), str(r[3])), int(r[0])) for r in rows)
        return claimed

    def save_call_state(self, conn: Connection, state: CallState) -> None:
        """Store what is known now of a claimed call (see ``claim_calls``)."""
        self.save_call_states(conn, [state])

    def save_call_states(self, conn: Connection, states: Iterable[CallState]) -> None:
        """``save_call_state`` of several calls (pipelined: one round trip on PostgreSQL)."""
        rows = [(*[_column(getattr(s, name)) for name in _SAVED], s.id) for s in states]
        if rows:
            conn.executemany(_SAVE, rows)

    def announce_started(self, conn: Connection, account_id: int, started: list[CallState]) -> None:
        """BEFORE_CALL_START deliveries of calls that just started, in the transaction that
        merged their events (each rendered from its call when first sent)."""
        self._enqueue(
            conn,
            account_id,
            "BEFORE_CALL_START",
            [(state.universal_id, None, state.id) for state in started],
        )

    def call_state_by_id(self, state_id: int) -> CallState | None:
        self.ensure_ready()
        with self._connect() as conn:
            row = conn.execute(
                f"SELECT {_STATE_COLUMNS} FROM telephony_calls WHERE id = ?", (state_id,)
            ).fetchone()
        return None if row is None else CallState(*row)

    def calls_behind(self, limit: int = 100) -> list[CallState]:
        """Ended calls whose record was not written from their last events."""
        self.ensure_ready()
        with self._connect() as conn:
            rows = conn.execute(
                f"SELECT {_STATE_COLUMNS} FROM telephony_calls WHERE ended = 1 "
                "AND built < version ORDER BY id LIMIT ?",
                (limit,),
            ).fetchall()
        return [CallState(*row) for row in rows]

    def calls_open_since(self, before: int, limit: int = 100) -> list[CallState]:
        """Calls not ended whose first event came before ``before``."""
        self.ensure_ready()
        with self._connect() as conn:
            rows = conn.execute(
                f"SELECT {_STATE_COLUMNS} FROM telephony_calls WHERE ended = 0 "
                "AND opened_at < ? ORDER BY id LIMIT ?",
                (before, limit),
            ).fetchall()
        return [CallState(*row) for row in rows]

    # -- what a record needs ----------------------------------------------------------------

    def record_facts(self, calls: Sequence[tuple[int, str, str, int, str]]) -> list[RecordFacts]:
        """``record_facts_many_in`` on a connection of its own."""
        self.ensure_ready()
        with self._connect() as conn:
            return self.record_facts_many_in(conn, calls)

    def record_facts_many_in(
        self, conn: Connection, calls: Sequence[tuple[int, str, str, int, str]]
    ) -> list[RecordFacts]:
        """What the records of calls (account, caller, called, start, universal id) need
        beside their events, on ``conn``: the account's settings with the called number and
        its campaign, the caller's earlier calls within the account's unique days, and the
        session that held a dynamic number at the start, with its pages, or the rules of a
        static number's campaign. On PostgreSQL one statement for all the calls (and one more
        for static numbers' rules); on SQLite a few a call, which cost no round trip there."""
        if self.dialect == "postgres":
            found = self._facts_of_batch(conn, calls)
        else:
            found = self._facts_call_by_call(conn, calls)
        static = [
            (index, facts.number)
            for index, facts in enumerate(found)
            if facts.number is not None and facts.number.kind != "dynamic"
        ]
        if static:
            rows = self._fetch_each(
                conn,
                [rules_query(calls[index][0], number.campaign_id) for index, number in static],
            )
            for (index, number), rules in zip(static, rows, strict=True):
                found[index] = replace(
                    found[index], rules=rules_from(rules).get(number.campaign_id, [])
                )
        return found

    def _facts_of_batch(
        self, conn: Connection, calls: Sequence[tuple[int, str, str, int, str]]
    ) -> list[RecordFacts]:
        """``record_facts_many_in`` but the rules, in one statement over arrays of the calls
        (PostgreSQL): its text never changes, so it is parsed and planned once a connection,
        and a batch's records cost one round trip (bench/RESULTS.md, telephony)."""
        columns = [[call[index] for call in calls] for index in range(5)]
        rows = conn.execute(_FACTS_OF_BATCH, columns).fetchall()
        found = []
        for (account_id, _, called, _, _), row in zip(calls, rows, strict=True):
            if row[0] is None:
                raise NotFound(f"no account {account_id}")
            number = NumberInfo(*row[2:8]) if called and row[2] is not None else None
            times, talks, uids = row[8] or [], row[9] or [], row[10] or []
            held = held_from(row[11:]) if number is not None and row[11] is not None else None
            earlier = [
                (int(at), int(talk), str(uid))
                for at, talk, uid in zip(times, talks, uids, strict=True)
            ]
            found.append(RecordFacts(int(row[0]), int(row[1]), earlier, number, [], held))
        return found

    def _facts_call_by_call(
        self, conn: Connection, calls: Sequence[tuple[int, str, str, int, str]]
    ) -> list[RecordFacts]:
        """``record_facts_many_in`` but the rules, in three statements a call (SQLite)."""
        # SQLite, without statistics, would rather scan the account's calls of the window in
        # its clustered order (every call of unique_days: 0.5 ms at 2,000 calls, growing with
        # them) than seek the caller's: 4 us.
        first: list[tuple[str, Sequence[Any]]] = []
        for account_id, caller, called, start, universal_id in calls:
            first.append((_NUMBER_FACTS, (called, account_id)))
            first.append(
                (
                    "SELECT call_time, duration, universal_id FROM calls INDEXED BY calls_caller "
                    "WHERE account_id = ? "
                    "AND client_number = ? AND call_time BETWEEN ? - 86400 * (SELECT "
                    "unique_days FROM accounts WHERE id = ?) AND ? AND universal_id <> ?",
                    (account_id, caller, start, account_id, start, universal_id),
                )
            )
        rows = self._fetch_each(conn, first)
        numbers: list[NumberInfo | None] = []
        then: list[tuple[str, Sequence[Any]]] = []
        for index, (account_id, _, called, start, _) in enumerate(calls):
            if not rows[2 * index]:
                raise NotFound(f"no account {account_id}")
            row = rows[2 * index][0]
            number = NumberInfo(*row[2:]) if called and row[2] is not None else None
            numbers.append(number)
            if number is not None and number.kind == "dynamic":
                then.append(held_at_query(account_id, number.number, start))
        held_rows = iter(self._fetch_each(conn, then))
        found = []
        for index, number in enumerate(numbers):
            head, earlier = rows[2 * index][0], rows[2 * index + 1]
            held: HeldAt | None = None
            if number is not None and number.kind == "dynamic":
                held_row = next(held_rows)
                held = held_from(held_row[0] if held_row else None)
            found.append(
                RecordFacts(
                    int(head[0]),
                    int(head[1]),
                    [(int(at), int(talk), str(uid)) for at, talk, uid in earlier],
                    number,
                    [],
                    held,
                )
            )
        return found

    def number_owners(self, number: str) -> list[int]:
        """The accounts that have this tracking number."""
        self.ensure_ready()
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT account_id FROM phones WHERE number = ? ORDER BY account_id", (number,)
            ).fetchall()
        return [int(row[0]) for row in rows]

    def write_built_calls(
        self,
        account_id: int,
        built: Iterable[tuple[CallState, StoredCall]],
        quick: bool = False,
    ) -> None:
        """Write the v3 records of ended calls and mark each built from the version it was
        built from (a call that got another event meanwhile stays behind, for the next turn).
        ``quick``: StoreUnavailable rather than waiting for an import's write lock.
        """
        items = list(built)
        self.ensure_ready()
        wait = self._quick_wait() if quick else None
        with self._transaction(wait=wait) as conn:
            # Only records built from their call's current version are written: one built from
            # an older version (another request's, merged before this one's events) must not
            # overwrite the newer record written meanwhile, which its mark would not undo.
            # A call a request is merging into now (its row locked) is skipped, not waited for:
            # that request writes the record, or leaves it behind for the next turn. (It holds
            # the row while it waits for the write lock held here: waiting would deadlock.)
            skip = " FOR UPDATE SKIP LOCKED" if self.row_locks else ""
            current = [
                call
                for state, call in items
                if conn.execute(  # by the PBX's id of the call, the key its events share
                    "UPDATE telephony_calls SET built = ? WHERE id = (SELECT id FROM "
                    "telephony_calls WHERE account_id = ? AND provider = ? AND call_id = ? "
                    f"AND version = ?{skip}) RETURNING id",
                    (state.version, state.account_id, state.provider, state.call_id, state.version),
                ).fetchone()
                is not None
            ]
            self.write_current_calls(conn, account_id, current)

    def write_current_calls(
        self, conn: Connection, account_id: int, calls: list[StoredCall]
    ) -> None:
        """Write the v3 records of ended calls, in the caller's write transaction, which saves
        their calls marked built from the versions the records were built from."""
        self._write_calls(conn, account_id, [(0, call) for call in calls], announce="live")

    def _quick_wait(self) -> float:
        """Seconds a record's writer waits for the write lock before leaving it to the sweeper."""
        return self.settings.db_timeout / 10

    def take_write_lock(self, conn: Connection) -> None:
        """Take the write lock records are written with (ids and change numbers in commit
        order) in the caller's events transaction, which holds the rows of the calls it merged
        (``write_built_calls`` skips those); WriteLockBusy, with the transaction spoiled, when
        another writer (an import) holds it past the quick wait. Where one write lock
        serializes every write (SQLite) the transaction holds it already."""
        if not self.row_locks:
            return
        import psycopg  # only a PostgreSQL store gets here

        from calltrack.store.postgres import WRITE_LOCK_ID

        # One round trip: the CTE's row (the transaction's lock timeout set) comes before the
        # lock is waited for.
        wait = f"{int(self._quick_wait() * 1000)}ms"
        try:
            conn.execute(
                "WITH t AS MATERIALIZED (SELECT set_config('lock_timeout', ?, true)) "
                "SELECT pg_advisory_xact_lock(?) FROM t",
                (wait, WRITE_LOCK_ID),
            ).fetchone()  # read here: in a pipelined transaction it would fail a later read
        except psycopg.errors.LockNotAvailable as exc:
            raise WriteLockBusy(str(exc)) from exc


def _endpoint_in(conn: Connection, where: str, value: str) -> TelephonyEndpoint | None:
    row = conn.execute(
        f"SELECT {_ENDPOINT_COLUMNS} FROM telephony_endpoints e WHERE {where} "
        "AND revoked_at IS NULL",
        (value,),
    ).fetchone()
    return None if row is None else TelephonyEndpoint(*row)
