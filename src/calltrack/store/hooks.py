"""Webhooks' SQL: the account's endpoints, the outbox of deliveries, their attempts, and the
v3 ``hooks`` field of a call, filled from its deliveries.

A delivery is written in the transaction of the call change that causes it (``_announce``).
Deliverers claim due deliveries with a lease (row locks where there are some), and record
each attempt beside imports; a call's ``hooks`` then follows in a write of its own.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Final, Literal

import msgspec

from calltrack.errors import Conflict, NotFound
from calltrack.hooks import EVENTS, METHODS, V3_EVENTS
from calltrack.hooks.payload import record_json, render
from calltrack.hooks.signing import new_secret
from calltrack.model import CallRecord, Hook, StoredCall
from calltrack.store.calls import Announce, CallQueries, Existing
from calltrack.store.core import Connection, batched, unix_now

# Attempts, and deliveries no longer pending, are kept this long (`calltrack hook log`).
KEEP_SECONDS: Final = 30 * 86400
# After a rotation the previous secret signs too, for this long.
ROTATION_OVERLAP_SECONDS: Final = 24 * 3600

Outcome = Literal["delivered", "retry", "failed", "gone"]
_record = msgspec.json.Decoder(CallRecord)
_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True, slots=True)
class HookEndpoint:
    id: int
    account_id: int
    url: str
    method: str
    events: tuple[str, ...]
    enabled: bool
    disabled_reason: str
    failing_since: int | None  # unix ms of the first failure since the last success
    created_at: int
    removed_at: int | None
    rotating_until: int  # unix seconds: the previous secret signs too until then (0: none)


@dataclass(frozen=True, slots=True)
class IssuedHook:
    endpoint: HookEndpoint
    secret: str  # shown once


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    """A delivery a deliverer holds the lease of."""

    id: int
    endpoint_id: int
    account_id: int
    universal_id: str
    event: str
    message_id: str
    payload: bytes | None  # None: a BEFORE_CALL_START rendered at its first attempt
    telephony_call: int | None
    attempts: int  # before this one
    url: str
    method: str
    secrets: tuple[str, ...]  # the current secret, and the previous one during a rotation


@dataclass(frozen=True, slots=True)
class AttemptResult:
    delivery_id: int
    endpoint_id: int
    attempted_at: int  # unix ms
    status: int  # 0: no HTTP answer
    duration_ms: int
    error: str
    outcome: Outcome
    next_at: int = 0  # unix ms of the next try, for "retry"


@dataclass(frozen=True, slots=True)
class HookStats:
    last_status: int | None
    last_attempt_at: int | None  # unix ms
    pending: int
    failed: int
    delivered_day: int
    delay_p50_ms: int | None  # from the change to a 2xx, deliveries of the last day
    delay_p99_ms: int | None


@dataclass(frozen=True, slots=True)
class CallAttempt:
    attempted_at: int  # unix ms
    status: int  # 0: no HTTP answer
    duration_ms: int
    error: str


@dataclass(frozen=True, slots=True)
class CallDelivery:
    """One event of a call sent (or to be sent) to one endpoint, with its attempts."""

    id: int
    url: str
    method: str
    event: str
    message_id: str
    state: str  # pending, delivered, failed, cancelled
    created_at: int  # unix ms
    next_at: int  # unix ms: the next try of a pending delivery
    done_at: int | None  # unix ms
    last_status: int
    last_error: str
    attempts: tuple[CallAttempt, ...]  # oldest first (kept 30 days)


@dataclass(frozen=True, slots=True)
class LoggedAttempt:
    attempted_at: int  # unix ms
    universal_id: str
    event: str
    message_id: str
    status: int
    duration_ms: int
    error: str


_ENDPOINT_COLUMNS: Final = (
    "id, account_id, url, method, events, enabled, disabled_reason, failing_since, "
    "created_at, removed_at, previous_until"
)


def _endpoint(row: Sequence[object]) -> HookEndpoint:
    return HookEndpoint(
        id=int(row[0]),  # type: ignore[call-overload]
        account_id=int(row[1]),  # type: ignore[call-overload]
        url=str(row[2]),
        method=str(row[3]),
        events=tuple(str(row[4]).split(",")),
        enabled=bool(row[5]),
        disabled_reason=str(row[6]),
        failing_since=None if row[7] is None else int(row[7]),  # type: ignore[call-overload]
        created_at=int(row[8]),  # type: ignore[call-overload]
        removed_at=None if row[9] is None else int(row[9]),  # type: ignore[call-overload]
        rotating_until=int(row[10]),  # type: ignore[call-overload]
    )


def unix_ms() -> int:
    return time.time_ns() // 1_000_000


class HookQueries(CallQueries):
    """Endpoints (the CLI), the outbox (call writes), claims and attempts (deliverers)."""

    # -- endpoints --------------------------------------------------------------------------

    def add_hook(
        self, account_id: int, url: str, events: Sequence[str], method: str = "POST"
    ) -> IssuedHook:
        """A new endpoint with its signing secret (shown once). The URL is checked by the
        caller (``calltrack.hooks.targets``): the store keeps what it is given."""
        wanted = _events(events)
        if method not in METHODS:
            raise Conflict(f"method must be one of {', '.join(METHODS)}")
        secret = new_secret()
        now = unix_now()
        self.ensure_ready()
        with self._transaction() as conn:
            if not conn.execute("SELECT 1 FROM accounts WHERE id = ?", (account_id,)).fetchone():
                raise NotFound(f"no account {account_id}")
            row = conn.execute(
                "INSERT INTO hook_endpoints (account_id, url, method, events, secret, "
                f"created_at) VALUES (?, ?, ?, ?, ?, ?) RETURNING {_ENDPOINT_COLUMNS}",
                (account_id, url, method, ",".join(wanted), secret, now),
            ).fetchone()
        return IssuedHook(_endpoint(row), secret)

    def hooks(self, account_id: int | None = None) -> list[HookEndpoint]:
        """The endpoints not removed, of one account or of all."""
        self.ensure_ready()
        where = "removed_at IS NULL" + (" AND account_id = ?" if account_id is not None else "")
        with self._connect() as conn:
            rows = conn.execute(
                f"SELECT {_ENDPOINT_COLUMNS} FROM hook_endpoints WHERE {where} ORDER BY id",
                () if account_id is None else (account_id,),
            ).fetchall()
        return [_endpoint(row) for row in rows]

    def hook(self, hook_id: int) -> HookEndpoint:
        self.ensure_ready()
        with self._connect() as conn:
            row = conn.execute(
                f"SELECT {_ENDPOINT_COLUMNS} FROM hook_endpoints WHERE id = ? "
                "AND removed_at IS NULL",
                (hook_id,),
            ).fetchone()
        if row is None:
            raise NotFound(f"no webhook endpoint {hook_id}")
        return _endpoint(row)

    def hook_secrets(self, hook_id: int, now: int | None = None) -> tuple[str, ...]:
        """The secrets that sign for the endpoint now (two during a rotation)."""
        now = unix_now() if now is None else now
        self.ensure_ready()
        with self._connect() as conn:
            row = conn.execute(
                "SELECT secret, previous_secret, previous_until FROM hook_endpoints "
                "WHERE id = ? AND removed_at IS NULL",
                (hook_id,),
            ).fetchone()
        if row is None:
            raise NotFound(f"no webhook endpoint {hook_id}")
        return _signing(str(row[0]), str(row[1]), int(row[2]), now)

    def remove_hook(self, hook_id: int) -> None:
        """Remove an endpoint; its pending deliveries are cancelled, its history kept."""
        self.hook(hook_id)
        with self._live_transaction() as conn:
            conn.execute(
                "UPDATE hook_endpoints SET removed_at = ?, enabled = 0 WHERE id = ?",
                (unix_now(), hook_id),
            )
            conn.execute(
                "UPDATE hook_deliveries SET state = 'cancelled', done_at = ? "
                "WHERE endpoint_id = ? AND state = 'pending'",
                (unix_ms(), hook_id),
            )

    def rotate_hook(self, hook_id: int, overlap: int = ROTATION_OVERLAP_SECONDS) -> str:
        """A new signing secret; the current one signs too for ``overlap`` seconds."""
        self.hook(hook_id)
        secret = new_secret()
        with self._live_transaction() as conn:
            conn.execute(
                "UPDATE hook_endpoints SET previous_secret = secret, previous_until = ?, "
                "secret = ? WHERE id = ?",
                (unix_now() + overlap, secret, hook_id),
            )
        return secret

    def enable_hook(self, hook_id: int) -> None:
        """Turn a disabled endpoint back on: its held deliveries go out at once."""
        self.hook(hook_id)
        with self._live_transaction() as conn:
            conn.execute(
                "UPDATE hook_endpoints SET enabled = 1, disabled_reason = '', "
                "failing_since = NULL WHERE id = ?",
                (hook_id,),
            )

    # -- the outbox -------------------------------------------------------------------------

    def _subscribers(self, conn: Connection, account_id: int, event: str) -> list[tuple[int, str]]:
        """(id, method) of the account's enabled endpoints that take ``event``."""
        rows = conn.execute(
            "SELECT id, method, events FROM hook_endpoints WHERE account_id = ? "
            "AND enabled = 1 AND removed_at IS NULL",
            (account_id,),
        ).fetchall()
        return [(int(row[0]), str(row[1])) for row in rows if event in str(row[2]).split(",")]

    def _enqueue(
        self,
        conn: Connection,
        account_id: int,
        event: str,
        calls: Iterable[tuple[str, bytes | None, int | None]],
    ) -> int:
        """Deliveries of ``event`` for (universal id, record JSON or None, telephony call) to
        every endpoint that takes it; how many."""
        endpoints = self._subscribers(conn, account_id, event)
        if not endpoints:
            return 0
        now = unix_ms()
        # Only deliveries the v3 `hooks` field shows wait to be shown (last_status starts 0).
        unshown = -1 if event in V3_EVENTS else 0
        rows = [
            (
                endpoint_id,
                account_id,
                universal_id,
                event,
                "msg_" + secrets.token_urlsafe(18),
                None if record is None else render(event, record, method),
                telephony_call,
                now,
                now,
                unshown,
            )
            for universal_id, record, telephony_call in calls
            for endpoint_id, method in endpoints
        ]
        conn.executemany(
            "INSERT INTO hook_deliveries (endpoint_id, account_id, universal_id, event, "
            "message_id, payload, telephony_call, created_at, next_at, shown_status) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        return len(rows)

    def _announced(
        self,
        conn: Connection,
        account_id: int,
        announce: Announce,
        chunk: Sequence[tuple[int, StoredCall]],
        existing: dict[str, Existing],
    ) -> list[tuple[int, StoredCall]]:
        """Write the deliveries of a chunk's changes (AFTER_CALL_FINISH for live calls new to
        the store, CALL_UPDATED for calls that changed); the chunk with ``hooks`` showing
        every delivery of its calls."""
        if not conn.execute(  # an account that never had an endpoint: nothing to do
            "SELECT 1 FROM hook_endpoints WHERE account_id = ? LIMIT 1", (account_id,)
        ).fetchone():
            return list(chunk)
        shown = self._with_hooks(conn, [call for _, call in chunk])
        new = [call for call in shown if call.universal_id not in existing]
        changed = [
            call
            for call in shown
            if (found := existing.get(call.universal_id)) is not None
            and found[0] == account_id
            and _changed(bytes(found[1]), call.body)
        ]
        finished = 0
        if announce == "live" and new:
            finished = self._enqueue(
                conn,
                account_id,
                "AFTER_CALL_FINISH",
                [(call.universal_id, record_json(call.body), None) for call in new],
            )
        if changed:
            self._enqueue(
                conn,
                account_id,
                "CALL_UPDATED",
                [(call.universal_id, record_json(call.body), None) for call in changed],
            )
        if finished:
            shown = self._with_hooks(conn, shown)  # the new deliveries, not answered yet
        return [(line, call) for (line, _), call in zip(chunk, shown, strict=True)]

    def _with_hooks(self, conn: Connection, calls: list[StoredCall]) -> list[StoredCall]:
        """``calls`` whose v3 ``hooks`` show their deliveries (the others as they are)."""
        shown = self._delivery_hooks(conn, [call.universal_id for call in calls])
        if not shown:
            return calls
        return [
            _showing(call, shown[call.universal_id]) if call.universal_id in shown else call
            for call in calls
        ]

    def _delivery_hooks(self, conn: Connection, universal_ids: list[str]) -> dict[str, list[Hook]]:
        """Per call, a ``hooks`` entry for each endpoint and v3 event it was delivered to,
        with the status of the latest attempt (0: no HTTP answer yet); marks them shown."""
        found: dict[str, dict[tuple[str, str, str], tuple[int, int]]] = {}
        events = ", ".join(f"'{event}'" for event in V3_EVENTS)
        for chunk in batched(universal_ids, 500):
            marks = ", ".join("?" * len(chunk))
            rows = conn.execute(
                "SELECT d.universal_id, d.event, e.url, e.method, d.last_status, d.id, "
                "d.shown_status FROM hook_deliveries d JOIN hook_endpoints e "
                f"ON e.id = d.endpoint_id WHERE d.universal_id IN ({marks}) "
                f"AND d.event IN ({events})",
                chunk,
            ).fetchall()
            stale: list[tuple[int, int]] = []
            for universal_id, event, url, method, status, delivery_id, shown in rows:
                entries = found.setdefault(str(universal_id), {})
                key = (str(event), str(url), str(method))
                if key not in entries or entries[key][1] < int(delivery_id):
                    entries[key] = (int(status), int(delivery_id))
                if int(shown) != int(status):
                    stale.append((int(status), int(delivery_id)))
            # Marked shown with the status read, not the row's status at the UPDATE: on
            # PostgreSQL a delivery answered in between (the deliverer's commit) would be
            # marked shown without having been, and its call's hooks keep 0 for good.
            if stale:
                conn.executemany("UPDATE hook_deliveries SET shown_status = ? WHERE id = ?", stale)
        return {
            universal_id: [
                Hook(
                    hookEventName=event,  # type: ignore[arg-type]
                    hookAddress=url,
                    hookMethod=method,  # type: ignore[arg-type]
                    hookResponseStatus=status,
                )
                for (event, url, method), (status, _) in sorted(entries.items())
            ]
            for universal_id, entries in found.items()
        }

    def show_delivery_statuses(self, batch: int = 500) -> int:
        """Bring the ``hooks`` of calls whose deliveries' statuses changed up to date, in
        batches (each a write of calls, so it may wait for an import); how many calls were
        rewritten."""
        rewritten = 0
        while True:
            done, selected = self._show_statuses(batch)
            rewritten += done
            if selected < batch:
                return rewritten

    def _show_statuses(self, batch: int) -> tuple[int, int]:
        self.ensure_ready()
        with self._transaction(wait=self.settings.db_timeout / 10) as conn:
            universal_ids = [
                str(row[0])
                for row in conn.execute(
                    "SELECT DISTINCT universal_id FROM hook_deliveries "
                    "WHERE shown_status <> last_status LIMIT ?",
                    (batch,),
                ).fetchall()
            ]
            if not universal_ids:
                return 0, 0
            existing = self._existing(conn, universal_ids)
            shown = self._delivery_hooks(conn, universal_ids)
            seq = self._last_change(conn)
            now = unix_now()
            updates = []
            for universal_id, hooks in shown.items():
                found = existing.get(universal_id)
                if found is None:
                    continue  # no record yet (a call still ringing): its write shows them
                body = _merged_body(bytes(found[1]), hooks)
                if body != bytes(found[1]):
                    seq += 1
                    updates.append((body, seq, now, universal_id))
            conn.executemany(
                "UPDATE calls SET body = ?, change_seq = ?, changed_at = ? WHERE universal_id = ?",
                updates,
            )
            return len(updates), len(universal_ids)

    # -- deliverers -------------------------------------------------------------------------

    def any_due(self, now_ms: int) -> bool:
        """Whether a pending delivery is due (a cheap read before a claim, which writes)."""
        self.ensure_ready()
        with self._connect() as conn:
            row = conn.execute(
                "SELECT 1 FROM hook_deliveries d JOIN hook_endpoints e ON e.id = d.endpoint_id "
                "WHERE d.state = 'pending' AND d.next_at <= ? AND d.lease_until <= ? "
                "AND e.enabled = 1 LIMIT 1",
                (now_ms, now_ms),
            ).fetchone()
        return row is not None

    def claim_deliveries(self, now_ms: int, lease_ms: int, limit: int) -> list[ClaimedDelivery]:
        """Up to ``limit`` due deliveries, leased to the caller until ``now_ms + lease_ms``.

        A delivery waits while an earlier one of its call to its endpoint is pending, so a
        call's deliveries to an endpoint go in order; deliveries of disabled endpoints wait.
        Where rows lock, deliverers of other processes skip the rows one is claiming.
        """
        lock = " FOR UPDATE OF d SKIP LOCKED" if self.row_locks else ""
        self.ensure_ready()
        with self._live_transaction(quick=True) as conn:
            rows = conn.execute(
                "SELECT d.id, d.endpoint_id, d.account_id, d.universal_id, d.event, "
                "d.message_id, d.payload, d.telephony_call, d.attempts, e.url, e.method, "
                "e.secret, e.previous_secret, e.previous_until "
                "FROM hook_deliveries d JOIN hook_endpoints e ON e.id = d.endpoint_id "
                "WHERE d.state = 'pending' AND d.next_at <= ? AND d.lease_until <= ? "
                "AND e.enabled = 1 AND NOT EXISTS (SELECT 1 FROM hook_deliveries p "
                "WHERE p.endpoint_id = d.endpoint_id AND p.universal_id = d.universal_id "
                "AND p.id < d.id AND p.state = 'pending') "
                f"ORDER BY d.next_at, d.id LIMIT ?{lock}",
                (now_ms, now_ms, limit),
            ).fetchall()
            if not rows:
                return []
            conn.executemany(
                "UPDATE hook_deliveries SET lease_until = ? WHERE id = ?",
                [(now_ms + lease_ms, row[0]) for row in rows],
            )
        now = now_ms // 1000
        return [
            ClaimedDelivery(
                id=int(row[0]),
                endpoint_id=int(row[1]),
                account_id=int(row[2]),
                universal_id=str(row[3]),
                event=str(row[4]),
                message_id=str(row[5]),
                payload=None if row[6] is None else bytes(row[6]),
                telephony_call=None if row[7] is None else int(row[7]),
                attempts=int(row[8]),
                url=str(row[9]),
                method=str(row[10]),
                secrets=_signing(str(row[11]), str(row[12]), int(row[13]), now),
            )
            for row in rows
        ]

    def save_payload(self, delivery_id: int, payload: bytes) -> None:
        """Keep a payload rendered at the first attempt, so that every retry sends it."""
        with self._live_transaction(quick=True) as conn:
            conn.execute(
                "UPDATE hook_deliveries SET payload = ? WHERE id = ? AND payload IS NULL",
                (payload, delivery_id),
            )

    def record_attempts(self, results: Sequence[AttemptResult], disable_after_ms: int) -> None:
        """Write the attempts and what follows from each: delivered, tried again later,
        failed, or (410) the endpoint disabled; an endpoint failing for ``disable_after_ms``
        is disabled. Beside imports: only the deliveries' tables are written."""
        if not results:
            return
        self.ensure_ready()
        with self._live_transaction() as conn:
            conn.executemany(
                "INSERT INTO hook_attempts (delivery_id, endpoint_id, attempted_at, status, "
                "duration_ms, error) VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (
                        r.delivery_id,
                        r.endpoint_id,
                        r.attempted_at,
                        r.status,
                        r.duration_ms,
                        r.error[:500],
                    )
                    for r in results
                ],
            )
            shown = ", ".join(f"'{event}'" for event in V3_EVENTS)
            conn.executemany(  # one statement for the batch: one round trip, not one each
                "UPDATE hook_deliveries SET attempts = attempts + 1, state = ?, "
                "last_status = ?, last_error = ?, next_at = ?, lease_until = 0, done_at = ?, "
                # only what the v3 `hooks` field shows waits to be shown
                f"shown_status = CASE WHEN event IN ({shown}) THEN shown_status ELSE ? END "
                "WHERE id = ?",
                [
                    (
                        _STATES.get(r.outcome, "pending"),
                        r.status,
                        r.error[:500],
                        r.next_at if r.outcome == "retry" else r.attempted_at,
                        r.attempted_at if r.outcome in _STATES else None,
                        r.status,
                        r.delivery_id,
                    )
                    for r in results
                ],
            )
            for endpoint_id, change in _endpoint_changes(results).items():
                if change.gone_at is not None:
                    conn.execute(
                        "UPDATE hook_endpoints SET enabled = 0, disabled_reason = ? WHERE id = ?",
                        (
                            f"the receiver answered 410 Gone (at {change.gone_at // 1000})",
                            endpoint_id,
                        ),
                    )
                if change.failing_since is None:
                    if change.succeeded:  # no failure after its last success here
                        conn.execute(
                            "UPDATE hook_endpoints SET failing_since = NULL WHERE id = ? "
                            "AND failing_since IS NOT NULL",
                            (endpoint_id,),
                        )
                    continue
                since = "?" if change.succeeded else "coalesce(failing_since, ?)"
                conn.execute(
                    f"UPDATE hook_endpoints SET failing_since = {since} WHERE id = ?",
                    (change.failing_since, endpoint_id),
                )
                conn.execute(
                    "UPDATE hook_endpoints SET enabled = 0, disabled_reason = ? "
                    "WHERE id = ? AND enabled = 1 AND failing_since <= ?",
                    (
                        f"every delivery failed for {_duration(disable_after_ms)}",
                        endpoint_id,
                        change.last_failure - disable_after_ms,
                    ),
                )

    # -- what a person reads ----------------------------------------------------------------

    def hook_stats(self, hook_id: int, now_ms: int | None = None) -> HookStats:
        now_ms = unix_ms() if now_ms is None else now_ms
        day_ago = now_ms - 86_400_000
        self.ensure_ready()
        with self._connect() as conn:
            last = conn.execute(
                "SELECT status, attempted_at FROM hook_attempts WHERE endpoint_id = ? "
                "ORDER BY attempted_at DESC, id DESC LIMIT 1",
                (hook_id,),
            ).fetchone()
            pending, failed = conn.execute(
                "SELECT coalesce(sum(CASE WHEN state = 'pending' THEN 1 ELSE 0 END), 0), "
                "coalesce(sum(CASE WHEN state = 'failed' THEN 1 ELSE 0 END), 0) "
                "FROM hook_deliveries WHERE endpoint_id = ? AND state IN ('pending', 'failed')",
                (hook_id,),
            ).fetchone()
            delays = [
                int(row[0])
                for row in conn.execute(
                    "SELECT done_at - created_at FROM hook_deliveries WHERE endpoint_id = ? "
                    "AND done_at >= ? AND state = 'delivered' ORDER BY 1",
                    (hook_id, day_ago),
                ).fetchall()
            ]
        return HookStats(
            last_status=None if last is None else int(last[0]),
            last_attempt_at=None if last is None else int(last[1]),
            pending=int(pending),
            failed=int(failed),
            delivered_day=len(delays),
            delay_p50_ms=_percentile(delays, 0.50),
            delay_p99_ms=_percentile(delays, 0.99),
        )

    def hook_log(self, hook_id: int, limit: int = 50) -> list[LoggedAttempt]:
        """The endpoint's latest attempts, newest first."""
        self.hook(hook_id)
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT a.attempted_at, d.universal_id, d.event, d.message_id, a.status, "
                "a.duration_ms, a.error FROM hook_attempts a "
                "JOIN hook_deliveries d ON d.id = a.delivery_id WHERE a.endpoint_id = ? "
                "ORDER BY a.attempted_at DESC, a.id DESC LIMIT ?",
                (hook_id, limit),
            ).fetchall()
        return [
            LoggedAttempt(
                int(r[0]), str(r[1]), str(r[2]), str(r[3]), int(r[4]), int(r[5]), str(r[6])
            )
            for r in rows
        ]

    def call_deliveries(
        self, owners: Sequence[int], universal_id: str, limit: int = 200
    ) -> list[CallDelivery]:
        """The webhook deliveries of a call of one of ``owners`` (oldest first, at most
        ``limit``) with their attempts; none for a call of anyone else."""
        if not owners:
            return []
        marks = ", ".join("?" * len(owners))
        self.ensure_ready()
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT d.id, e.url, e.method, d.event, d.message_id, d.state, d.created_at, "
                "d.next_at, d.done_at, d.last_status, d.last_error FROM hook_deliveries d "
                "JOIN hook_endpoints e ON e.id = d.endpoint_id "
                f"WHERE d.universal_id = ? AND d.account_id IN ({marks}) ORDER BY d.id LIMIT ?",
                (universal_id, *owners, limit),
            ).fetchall()
            found = conn.execute(
                "SELECT a.delivery_id, a.attempted_at, a.status, a.duration_ms, a.error "
                "FROM hook_deliveries d JOIN hook_attempts a ON a.delivery_id = d.id "
                f"WHERE d.universal_id = ? AND d.account_id IN ({marks}) "
                "ORDER BY a.attempted_at, a.id",
                (universal_id, *owners),
            ).fetchall()
        attempts: dict[int, list[CallAttempt]] = {}
        for a in found:
            attempts.setdefault(int(a[0]), []).append(
                CallAttempt(int(a[1]), int(a[2]), int(a[3]), str(a[4]))
            )
        return [
            CallDelivery(
                id=int(r[0]),
                url=str(r[1]),
                method=str(r[2]),
                event=str(r[3]),
                message_id=str(r[4]),
                state=str(r[5]),
                created_at=int(r[6]),
                next_at=int(r[7]),
                done_at=None if r[8] is None else int(r[8]),
                last_status=int(r[9]),
                last_error=str(r[10]),
                attempts=tuple(attempts.get(int(r[0]), ())),
            )
            for r in rows
        ]

    def prune_hooks(self, now_ms: int | None = None) -> None:
        """Forget attempts, and deliveries no longer pending, older than 30 days."""
        cutoff = (unix_ms() if now_ms is None else now_ms) - KEEP_SECONDS * 1000
        self.ensure_ready()
        with self._live_transaction() as conn:
            conn.execute("DELETE FROM hook_attempts WHERE attempted_at < ?", (cutoff,))
            conn.execute(
                "DELETE FROM hook_deliveries WHERE state <> 'pending' AND done_at < ? "
                "AND shown_status = last_status",
                (cutoff,),
            )


_STATES: Final = {"delivered": "delivered", "failed": "failed"}


@dataclass(slots=True)
class _EndpointChange:
    """What a batch of attempts says of one endpoint."""

    succeeded: bool = False  # some attempt succeeded
    failing_since: int | None = None  # the first failure after the last success
    last_failure: int = 0
    gone_at: int | None = None  # a 410


def _endpoint_changes(results: Sequence[AttemptResult]) -> dict[int, _EndpointChange]:
    changes: dict[int, _EndpointChange] = {}
    for r in sorted(results, key=lambda r: r.attempted_at):
        change = changes.setdefault(r.endpoint_id, _EndpointChange())
        if r.outcome == "delivered":
            change.succeeded, change.failing_since = True, None
        elif r.outcome == "gone":
            change.gone_at = r.attempted_at
        else:
            if change.failing_since is None:
                change.failing_since = r.attempted_at
            change.last_failure = r.attempted_at
    return changes


def _events(events: Sequence[str]) -> list[str]:
    wanted = list(dict.fromkeys(event.upper() for event in events))
    if not wanted:
        raise Conflict(f"name at least one event: {', '.join(EVENTS)}")
    unknown = [event for event in wanted if event not in EVENTS]
    if unknown:
        raise Conflict(f"unknown event {unknown[0]!r}; expected one of {', '.join(EVENTS)}")
    return wanted


def _signing(secret: str, previous: str, previous_until: int, now: int) -> tuple[str, ...]:
    return (secret, previous) if previous and previous_until > now else (secret,)


def _merged_body(body: bytes, hooks: list[Hook]) -> bytes:
    """A stored body whose ``hooks`` show ``hooks`` (entries of other endpoints kept)."""
    record = _record.decode(b'{"page":0,' + body)
    by_key = {(h.hookEventName, h.hookAddress, h.hookMethod): h for h in record.hooks}
    for hook in hooks:
        by_key[(hook.hookEventName, hook.hookAddress, hook.hookMethod)] = hook
    record.hooks = list(by_key.values())
    encoded = _encode(record)
    prefix = b'{"page":0,'
    if not encoded.startswith(prefix):  # the record encodes page first: a broken invariant
        raise RuntimeError("a stored record does not start with its page")
    return encoded[len(prefix) :]


def _changed(stored: bytes, body: bytes) -> bool:
    """Whether a call's record changed, its ``hooks`` aside: they are the deliveries' own
    bookkeeping, whose order and statuses differ between two writes of the same record (the
    request's and the sweeper's, both built from one version of a call)."""
    if stored == body:
        return False
    before = _record.decode(b'{"page":0,' + stored)
    after = _record.decode(b'{"page":0,' + body)
    before.hooks = after.hooks = []
    return before != after


def _showing(call: StoredCall, hooks: list[Hook]) -> StoredCall:
    return replace(call, body=_merged_body(call.body, hooks))


def _percentile(sorted_values: list[int], share: float) -> int | None:
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(share * len(sorted_values)))]


def _duration(ms: int) -> str:
    hours = ms / 3_600_000
    return f"{hours:g} h" if hours >= 1 else f"{ms / 1000:g} s"
