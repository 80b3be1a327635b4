"""Calls: all-or-nothing imports, and pages that stay stable while a client walks them."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from calltrack.errors import ImportRejected
from calltrack.model import NO_FACETS, StoredCall
from calltrack.store.core import Connection, StoreCore, batched, unix_now
from calltrack.store.counts import COUNTED_COLUMNS, CountChanges, Counted
from calltrack.store.paging import Boundary, Columns, Window, build_page_query, mark_key
from calltrack.store.records import ImportResult

FACET_COLUMNS = (
    "manager_number",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "flags",
    "device",
    "source",
)
CALL_COLUMNS = (
    "id",
    "account_id",
    "universal_id",
    "call_time",
    "change_seq",
    "service_type",
    "status",
    "campaign_id",
    "body",
    "created_seq",
    "client_number",
    "duration",
    "changed_at",
    *FACET_COLUMNS,
)
_FACETS_SET = ", ".join(f"{name} = ?" for name in FACET_COLUMNS)
TAG_COLUMNS = ("universal_id", "account_id", "call_time", "tag")

# An import at least this large refreshes the planner's statistics: PostgreSQL otherwise plans
# pages of a freshly loaded table as if it were empty (measured: 100 ms a page instead of 8).
STATISTICS_AFTER = 10_000

# A page 0 keeps the layout its scope and window already have when a walk started on it
# within this time (so walks of the last hour share their pages); after it, a new layout.
LAYOUT_HOLD_SECONDS = 3600
# How often a page 0 records that a walk started on its layout (a write, so not every time).
TOUCH_EVERY_SECONDS = 60
# Layouts no walk started on for this long are forgotten.
LAYOUT_TTL_SECONDS = 24 * 3600


# A write of at least this many changes of one account records them as a run (migration 13):
# the changes feed may then read them in page order (store.changes). Below it, reading them
# in change order costs little.
RUN_MIN_CHANGES = 1000

# The meta key of the newest change number pruned from the changes feed (store.changes).
PRUNED_CHANGES_KEY = "changes_pruned_through"

# The newest change number, of a live call or of a deleted one's tombstone; deletes pruned
# from the changes feed (store.changes) still count. Its parameter: PRUNED_CHANGES_KEY.
_LAST_CHANGE = (
    "SELECT max(seq) FROM (SELECT max(change_seq) AS seq FROM calls "
    "UNION ALL SELECT max(change_seq) AS seq FROM call_tombstones "
    "UNION ALL SELECT CAST(value AS BIGINT) FROM meta WHERE key = ?) AS changes"
)

# Which webhooks a write of calls announces: None for imports (nothing), "put" for call/put
# (CALL_UPDATED for calls that changed), "live" for records of live calls (AFTER_CALL_FINISH
# for new ones, CALL_UPDATED for changed ones).
Announce = Literal["put", "live"] | None


class Existing(NamedTuple):
    """A stored call about to be written again: whose, its body, what the counts know."""

    account_id: int
    body: bytes
    counted: Counted


def _page_order(row: tuple[Any, ...]) -> tuple[int, int]:
    return row[3], row[0]  # call_time, id (one account per import)


class CallQueries(StoreCore):
    """Writing and reading calls."""

    run_min_changes = RUN_MIN_CHANGES  # tests lower it to make runs of small writes

    def import_calls(
        self,
        account_id: int,
        calls: Iterable[tuple[int, StoredCall]],
        batch_size: int = 2000,
        announce: Announce = None,
    ) -> ImportResult:
        """Insert or update calls of one account in one transaction: all of them or none.

        ``calls`` pairs each call with its line number for error messages; an exception raised
        while iterating it rolls everything back. Campaigns seen in calltracking calls are
        added to the account's campaigns unless it has them already. ``announce``: the
        webhooks the write sends (see ``Announce``).
        """
        self.ensure_ready()
        with self._bulk_writing(), self._transaction() as conn:
            result = self._write_calls(conn, account_id, calls, batch_size, announce)
        if result.imported + result.updated >= STATISTICS_AFTER:
            self._refresh_statistics()
        return result

    def _write_calls(
        self,
        conn: Connection,
        account_id: int,
        calls: Iterable[tuple[int, StoredCall]],
        batch_size: int = 2000,
        announce: Announce = None,
    ) -> ImportResult:
        """Insert or update calls of one account inside the caller's write transaction; with
        ``announce``, the webhook deliveries of the change in the same transaction, and the
        calls' ``hooks`` showing their deliveries."""
        imported = updated = 0
        now = unix_now()
        # Ids are handed out here, not by the database: SQLite's clustered calls table has
        # no rowid to number them (writers are serialized, so max + 1 is safe). One statement
        # with the newest change number: a live call's record is a write of its own.
        row = conn.execute(
            f"SELECT ({_LAST_CHANGE}), (SELECT coalesce(max(id), 0) FROM calls)",
            (PRUNED_CHANGES_KEY,),
        ).fetchone()
        seq, next_id = int(row[0] or 0), int(row[1])
        first_seq, earliest, latest = seq + 1, 2**63 - 1, -(2**63)
        counts = CountChanges()  # applied once, at the end: one upsert of the groups
        for chunk in batched(calls, batch_size):
            existing = self._existing(conn, [call.universal_id for _, call in chunk])
            inserts: list[tuple[Any, ...]] = []
            changes: list[tuple[Any, ...]] = []
            written: list[StoredCall] = []
            if announce is not None:
                chunk = self._announced(conn, account_id, announce, chunk, existing)
            for line, call in chunk:
                found = existing.get(call.universal_id)
                if found is not None and found[0] != account_id:
                    raise ImportRejected(
                        line, f"universalId {call.universal_id!r} belongs to another account"
                    )
                if found is not None:
                    updated += 1
                    if bytes(found[1]) == call.body:
                        continue  # unchanged: no write, no new change number
                seq += 1
                earliest, latest = min(earliest, call.call_time), max(latest, call.call_time)
                values = (
                    call.call_time,
                    seq,
                    call.service_type,
                    call.status,
                    call.campaign_id,
                    call.body,
                )
                facets = (call.facets or NO_FACETS).columns()
                caller = (call.client_number, call.duration, now, *facets)
                if found is None:
                    imported += 1
                    next_id += 1
                    row = (next_id, account_id, call.universal_id, *values, seq, *caller)
                    inserts.append(row)
                else:  # in place: the call keeps its id, so its place among equal times
                    changes.append((*values, *caller, call.universal_id))
                    counts.add(found.counted, -1)
                counts.add_call(account_id, call)
                written.append(call)
            if changes:
                conn.executemany(
                    "UPDATE calls SET call_time = ?, change_seq = ?, service_type = ?, "
                    "status = ?, campaign_id = ?, body = ?, client_number = ?, duration = ?, "
                    f"changed_at = ?, {_FACETS_SET} WHERE universal_id = ?",
                    changes,
                )
                conn.executemany(
                    "DELETE FROM call_tags WHERE universal_id = ?",
                    [(row[-1],) for row in changes],
                )
            if inserts:
                # In page order: consecutive rows land on neighbouring B-tree pages (SQLite
                # clusters calls by it), which cuts the cost of a write by about 40%.
                inserts.sort(key=_page_order)
                self._insert_many(conn, "calls", CALL_COLUMNS, inserts)
            self._write_tags_and_campaigns(conn, account_id, written, now)
        with self._pipelined(conn):  # nothing read back: the upserts go in one round trip
            counts.apply(conn, self.dialect)
        if self.calls_clustered and seq - first_seq + 1 >= self.run_min_changes:
            conn.execute(
                "INSERT INTO change_runs (account_id, first_seq, last_seq, first_time, "
                "last_time, written_at) VALUES (?, ?, ?, ?, ?, ?)",
                (account_id, first_seq, seq, earliest, latest, now),
            )
        return ImportResult(imported, updated)

    def _write_tags_and_campaigns(
        self, conn: Connection, account_id: int, calls: list[StoredCall], now: int
    ) -> None:
        tags = [
            (call.universal_id, account_id, call.call_time, tag)
            for call in calls
            for tag in call.tags
        ]
        if tags:
            self._insert_many(conn, "call_tags", TAG_COLUMNS, tags)
        # A campaign is named by the first call that shows it; later calls don't rename it.
        campaigns: dict[int, tuple[Any, ...]] = {}
        for call in calls:
            if call.campaign_id and call.service_type == "calltracking":
                campaigns.setdefault(
                    call.campaign_id,
                    (account_id, call.campaign_id, call.campaign_name, call.site, now),
                )
        if campaigns:
            conn.executemany(
                "INSERT INTO campaigns (account_id, campaign_id, name, site, status, created_at) "
                "VALUES (?, ?, ?, ?, 'active', ?) ON CONFLICT DO NOTHING",
                list(campaigns.values()),
            )

    def _announced(
        self,
        conn: Connection,
        account_id: int,
        announce: Announce,
        chunk: Sequence[tuple[int, StoredCall]],
        existing: dict[str, Existing],
    ) -> list[tuple[int, StoredCall]]:
        """Write the deliveries a chunk's changes cause; the chunk with ``hooks`` showing
        them. (Webhooks, ``store.hooks``, implement it.)"""
        raise NotImplementedError

    @staticmethod
    def _last_change(conn: Connection) -> int:
        """The newest change number, of a live call or of a deleted one's tombstone."""
        row = conn.execute(_LAST_CHANGE, (PRUNED_CHANGES_KEY,)).fetchone()
        return int(row[0] or 0)

    def delete_call(self, account_id: int, universal_id: str) -> int:
        """Delete one of the account's calls; 1 if deleted, 0 if it has no such call.

        A call of another account counts as absent, so the answer reveals nothing about it.
        The call leaves a tombstone with a new change number.
        """
        self.ensure_ready()
        with self._transaction() as conn:
            row = conn.execute(
                f"SELECT {', '.join(COUNTED_COLUMNS)} FROM calls WHERE universal_id = ?",
                (universal_id,),
            ).fetchone()
            if row is None or row[0] != account_id:
                return 0
            seq = self._last_change(conn) + 1
            now = unix_now()
            conn.execute("DELETE FROM calls WHERE universal_id = ?", (universal_id,))
            counts = CountChanges()
            counts.add(Counted.from_row(row), -1)
            counts.apply(conn, self.dialect)
            conn.execute("DELETE FROM call_tags WHERE universal_id = ?", (universal_id,))
            conn.execute(
                "INSERT INTO call_tombstones (universal_id, account_id, change_seq, deleted_at) "
                "VALUES (?, ?, ?, ?)",
                (universal_id, account_id, seq, now),
            )
        return 1

    @staticmethod
    def _existing(conn: Connection, universal_ids: list[str]) -> dict[str, Existing]:
        marks = ", ".join("?" * len(universal_ids))
        rows = conn.execute(
            f"SELECT universal_id, body, {', '.join(COUNTED_COLUMNS)} FROM calls "
            f"WHERE universal_id IN ({marks})",
            universal_ids,
        ).fetchall()
        return {
            row[0]: Existing(int(row[2]), bytes(row[1]), Counted.from_row(row[2:])) for row in rows
        }

    def count_calls(self, account_id: int | None = None) -> int:
        self.ensure_ready()
        with self._connect() as conn:
            if account_id is None:
                row = conn.execute("SELECT count(*) FROM calls").fetchone()
            else:
                row = conn.execute(
                    "SELECT count(*) FROM calls WHERE account_id = ?",
                    (account_id,),
                ).fetchone()
        return int(row[0])

    def read_page(
        self,
        owner_ids: Sequence[int],
        window: Window,
        page: int,
        size: int,
        now: int | None = None,
    ) -> list[bytes] | None:
        """Stored bodies of page ``page`` of the owners' calls in the window, in page order;
        None when there is no such page (past the last one, or page 0 of an empty window).

        A page is a range of the window's order, shared by every walk of the same scope,
        window and page size (their layout) and fixed once a walk has read it whole or moved
        past it, so walks that began at different times never shift each other's pages. The
        range is read as it is now. The rules, and why: docs/api.md, "Paging".
        """
        self.ensure_ready()
        now = unix_now() if now is None else now
        key = mark_key(owner_ids, window, size)
        end = now if window.end is None else window.end
        with self._connect() as conn, self._page_bounds(conn) as bounds:
            layout = self._walk_layout(bounds, key, page, now)
            rows = bounds.execute(
                "SELECT page, after_time, after_id, final FROM page_bounds WHERE mark_key = ? "
                "AND layout = ? AND page BETWEEN 1 AND ? ORDER BY page DESC LIMIT 2",
                (key, layout, page + 1),
            ).fetchall()
            marks = {row[0]: _Mark(Boundary(row[1], row[2]), bool(row[3])) for row in rows}
            scan = _PageScan(conn, bounds, key, layout, owner_ids, window.start, end, size, now)
            nearest = max((number for number in marks if number <= page), default=0)
            after: Boundary | None = None
            if nearest:
                after = marks[nearest].boundary
                if not marks[nearest].final:
                    # A walk read the page before it whole and now moves on: from here on
                    # that page ends where the walk saw it end (if anything follows it).
                    if not scan.any_after(after):
                        return None
                    after = scan.settle(nearest, None)
            for missing in range(nearest + 1, page + 1):  # a jump: fix the pages between
                after = scan.next_start(missing, after)
                if after is None:
                    return None
            bodies = scan.read(page, after, marks.get(page + 1))
            if not bodies and not scan.any_after(after):
                return None
            return bodies

    @contextmanager
    def _page_bounds(self, conn: Connection) -> Iterator[Connection]:
        """Where page layouts are kept: by default the database itself, in autocommit."""
        yield conn

    def _walk_layout(self, bounds: Connection, key: str, page: int, now: int) -> int:
        """The layout this request reads: the key's newest, or a new one for a page 0 when
        no walk started on the newest within ``LAYOUT_HOLD_SECONDS``."""
        row = bounds.execute(
            "SELECT layout, touched_at FROM page_bounds WHERE mark_key = ? AND page = 0 "
            "ORDER BY layout DESC LIMIT 1",
            (key,),
        ).fetchone()
        if row is not None:
            layout, touched = int(row[0]), int(row[1])
            held = touched >= now - LAYOUT_HOLD_SECONDS
            if page > 0 or held:
                if page == 0 and touched < now - TOUCH_EVERY_SECONDS:
                    bounds.execute(
                        "UPDATE page_bounds SET touched_at = ? WHERE mark_key = ? "
                        "AND layout = ? AND page = 0 AND touched_at < ?",
                        (now, key, layout, now),
                    )
                return layout
        layout = 1 if row is None else int(row[0]) + 1
        bounds.execute(
            "INSERT INTO page_bounds (mark_key, layout, page, touched_at) VALUES (?, ?, 0, ?) "
            "ON CONFLICT DO NOTHING",
            (key, layout, now),
        )
        # Earlier layouts of this key and layouts of walks nobody started for a day go.
        bounds.execute("DELETE FROM page_bounds WHERE mark_key = ? AND layout < ?", (key, layout))
        bounds.execute(
            "DELETE FROM page_bounds WHERE mark_key IN (SELECT mark_key FROM page_bounds "
            "WHERE page = 0 AND touched_at < ?)",
            (now - LAYOUT_TTL_SECONDS,),
        )
        return layout


@dataclass(frozen=True, slots=True)
class _Mark:
    """Where a page starts. Not final while only walks that saw the page before it as the
    last one know it (it may still move on, to where a later such walk saw it end)."""

    boundary: Boundary
    final: bool


class _PageScan:
    """Reads the ranges of one layout, fixing where pages end as walks read them."""

    def __init__(
        self,
        conn: Connection,
        bounds: Connection,
        key: str,
        layout: int,
        owner_ids: Sequence[int],
        start: int,
        end: int,
        size: int,
        now: int,
    ) -> None:
        self.conn, self.bounds, self.key, self.layout = conn, bounds, key, layout
        self.owner_ids, self.start, self.end, self.size = owner_ids, start, end, size
        self.now = now

    def _rows(
        self,
        after: Boundary | None,
        until: Boundary | None,
        skip: int,
        limit: int | None,
        columns: Columns,
    ) -> list[Any]:
        sql, params = build_page_query(
            self.owner_ids, self.start, self.end, after, until, skip, limit, columns
        )
        return self.conn.execute(sql, params).fetchall()

    def _range(self, after: Boundary | None, until: Boundary) -> list[bytes]:
        return [row[0] for row in self._rows(after, until, 0, None, "body")]

    def read(self, page: int, after: Boundary | None, end: _Mark | None) -> list[bytes]:
        """The bodies of ``page``, which starts after ``after``: up to its fixed end, else
        the next ``size`` calls (and then the page's end is where they end)."""
        if end is not None and end.final:
            return self._range(after, end.boundary)
        rows = self._rows(after, None, 0, self.size, "key_body")
        if not rows:
            return []
        last = Boundary(rows[-1][0], rows[-1][1])
        if len(rows) == self.size:
            fixed = self.settle(page + 1, last)
        else:  # the last page for now: remember where this walk saw it end
            mark = self._extend(page + 1, last)
            if not mark.final:
                return [row[-1] for row in rows]
            fixed = mark.boundary
        if fixed is not None and fixed != last:
            return self._range(after, fixed)  # fixed by another walk, over other data
        return [row[-1] for row in rows]

    def next_start(self, page: int, after: Boundary | None) -> Boundary | None:
        """Fix where ``page`` starts, given where ``page - 1`` does; None if it has none."""
        row = self._rows(after, None, self.size - 1, 1, "key")
        return None if not row else self.settle(page, Boundary(row[0][0], row[0][1]))

    def any_after(self, after: Boundary | None) -> bool:
        return bool(self._rows(after, None, 0, 1, "key"))

    def settle(self, page: int, candidate: Boundary | None) -> Boundary | None:
        """Make the start of ``page`` final, at ``candidate`` or wherever a walk saw the page
        before it end if that is later (a walk must not see a call twice); the stored one."""
        if candidate is not None:
            self._propose(page, candidate, final=True)
        self.bounds.execute(
            "UPDATE page_bounds SET final = 1 WHERE mark_key = ? AND layout = ? AND page = ? "
            "AND final = 0",
            (self.key, self.layout, page),
        )
        mark = self._stored(page)
        return None if mark is None else mark.boundary

    def _extend(self, page: int, seen_end: Boundary) -> _Mark:
        """A walk saw page ``page - 1`` end at ``seen_end``: the page's end moves there unless
        it is final already or further on."""
        self._propose(page, seen_end, final=False)
        # None only if a newer layout replaced this one meanwhile: then nobody continues it.
        return self._stored(page) or _Mark(seen_end, final=False)

    def _propose(self, page: int, boundary: Boundary, final: bool) -> None:
        where = "mark_key = ? AND layout = ? AND page = ?"
        self.bounds.execute(
            "INSERT INTO page_bounds (mark_key, layout, page, after_time, after_id, final, "
            "touched_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (self.key, self.layout, page, boundary.call_time, boundary.id, int(final), self.now),
        )
        self.bounds.execute(
            f"UPDATE page_bounds SET after_time = ?, after_id = ? WHERE {where} AND final = 0 "
            "AND (after_time < ? OR (after_time = ? AND after_id < ?))",
            (
                boundary.call_time,
                boundary.id,
                self.key,
                self.layout,
                page,
                boundary.call_time,
                boundary.call_time,
                boundary.id,
            ),
        )

    def _stored(self, page: int) -> _Mark | None:
        row = self.bounds.execute(
            "SELECT after_time, after_id, final FROM page_bounds WHERE mark_key = ? "
            "AND layout = ? AND page = ?",
            (self.key, self.layout, page),
        ).fetchone()
        return None if row is None else _Mark(Boundary(int(row[0]), int(row[1])), bool(row[2]))
