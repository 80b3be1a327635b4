"""Calls: all-or-nothing imports, and pages that stay stable while a client walks them."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from calltrack.errors import ImportRejected
from calltrack.model import StoredCall
from calltrack.store.core import Connection, StoreCore, batched, unix_now
from calltrack.store.paging import Boundary, Window, build_page_query, mark_key
from calltrack.store.records import ImportResult

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
)
TAG_COLUMNS = ("universal_id", "account_id", "call_time", "tag")

# An import at least this large refreshes the planner's statistics: PostgreSQL otherwise plans
# pages of a freshly loaded table as if it were empty (measured: 100 ms a page instead of 8).
STATISTICS_AFTER = 10_000

# Page marks older than this are pruned; a walk taking longer falls back to OFFSET reads.
MARK_TTL_SECONDS = 24 * 3600


def _page_order(row: tuple[Any, ...]) -> tuple[int, int]:
    return row[3], row[0]  # call_time, id (one account per import)


class CallQueries(StoreCore):
    """Writing and reading calls."""

    def import_calls(
        self, account_id: int, calls: Iterable[tuple[int, StoredCall]], batch_size: int = 2000
    ) -> ImportResult:
        """Insert or update calls of one account in one transaction: all of them or none.

        ``calls`` pairs each call with its line number for error messages; an exception raised
        while iterating it rolls everything back. Campaigns seen in calltracking calls are
        added to the account's campaigns unless it has them already.
        """
        self.ensure_ready()
        imported = updated = 0
        now = unix_now()
        with self._bulk_writing(), self._transaction() as conn:
            seq = self._last_change(conn)
            # Ids are handed out here, not by the database: SQLite's clustered calls table has
            # no rowid to number them (writers are serialized, so max + 1 is safe).
            next_id = int(conn.execute("SELECT coalesce(max(id), 0) FROM calls").fetchone()[0])
            for chunk in batched(calls, batch_size):
                existing = self._existing(conn, [call.universal_id for _, call in chunk])
                inserts: list[tuple[Any, ...]] = []
                changes: list[tuple[Any, ...]] = []
                written: list[StoredCall] = []
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
                    values = (
                        call.call_time,
                        seq,
                        call.service_type,
                        call.status,
                        call.campaign_id,
                        call.body,
                    )
                    if found is None:
                        imported += 1
                    else:  # a new version: the old one stays for walks that began before
                        changes.append((seq, now, call.universal_id))
                    next_id += 1
                    inserts.append((next_id, account_id, call.universal_id, *values, seq))
                    written.append(call)
                if changes:
                    conn.executemany(
                        "UPDATE calls SET superseded_seq = ?, superseded_at = ? "
                        "WHERE universal_id = ? AND superseded_seq IS NULL",
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
            self._prune_old_versions(conn, now)
        if imported + updated >= STATISTICS_AFTER:
            self._refresh_statistics()
        return ImportResult(imported, updated)

    @staticmethod
    def _prune_old_versions(conn: Connection, now: int) -> None:
        # Walks older than the page marks' lifetime fall back to current data anyway.
        conn.execute(
            "DELETE FROM calls WHERE superseded_seq IS NOT NULL AND superseded_at < ?",
            (now - MARK_TTL_SECONDS,),
        )

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

    @staticmethod
    def _last_change(conn: Connection) -> int:
        """The newest change number, of a live call or of a deleted one's tombstone."""
        row = conn.execute(
            "SELECT max(seq) FROM (SELECT max(change_seq) AS seq FROM calls "
            "UNION ALL SELECT max(change_seq) AS seq FROM call_tombstones) AS changes"
        ).fetchone()
        return int(row[0] or 0)

    def delete_call(self, account_id: int, universal_id: str) -> int:
        """Delete one of the account's calls; 1 if deleted, 0 if it has no such call.

        A call of another account counts as absent, so the answer reveals nothing about it.
        The call leaves a tombstone with a new change number.
        """
        self.ensure_ready()
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT account_id FROM calls WHERE universal_id = ? AND superseded_seq IS NULL",
                (universal_id,),
            ).fetchone()
            if row is None or row[0] != account_id:
                return 0
            seq = self._last_change(conn) + 1
            now = unix_now()
            # The version stays, superseded, for walks that began before the delete.
            conn.execute(
                "UPDATE calls SET superseded_seq = ?, superseded_at = ? "
                "WHERE universal_id = ? AND superseded_seq IS NULL",
                (seq, now, universal_id),
            )
            conn.execute("DELETE FROM call_tags WHERE universal_id = ?", (universal_id,))
            conn.execute(
                "INSERT INTO call_tombstones (universal_id, account_id, change_seq, deleted_at) "
                "VALUES (?, ?, ?, ?)",
                (universal_id, account_id, seq, now),
            )
            self._prune_old_versions(conn, now)
        return 1

    @staticmethod
    def _existing(conn: Connection, universal_ids: list[str]) -> dict[str, tuple[int, bytes]]:
        marks = ", ".join("?" * len(universal_ids))
        rows = conn.execute(
            f"SELECT universal_id, account_id, body FROM calls WHERE universal_id IN ({marks}) "
            "AND superseded_seq IS NULL",
            universal_ids,
        ).fetchall()
        return {row[0]: (row[1], row[2]) for row in rows}

    def count_calls(self, account_id: int | None = None) -> int:
        self.ensure_ready()
        with self._connect() as conn:
            if account_id is None:
                row = conn.execute(
                    "SELECT count(*) FROM calls WHERE superseded_seq IS NULL"
                ).fetchone()
            else:
                row = conn.execute(
                    "SELECT count(*) FROM calls WHERE account_id = ? AND superseded_seq IS NULL",
                    (account_id,),
                ).fetchone()
        return int(row[0])

    def read_page(
        self, owner_ids: Sequence[int], window: Window, page: int, size: int
    ) -> list[bytes]:
        """Stored bodies of page ``page`` of the owners' calls in the window, in page order.

        Page 0 starts a walk under a snapshot (the newest change number then); later pages see
        the calls as they were at it, and start from the remembered end of the previous page
        when known.
        """
        self.ensure_ready()
        now = unix_now()
        key = mark_key(owner_ids, window, size)
        end = now if window.end is None else window.end
        with self._connect() as conn:
            snapshot = self._walk_snapshot(conn, key, page, now)
            known = conn.execute(
                "SELECT page, after_time, after_id FROM page_marks WHERE mark_key = ? "
                "AND snapshot = ? AND page BETWEEN 1 AND ? ORDER BY page DESC LIMIT 2",
                (key, snapshot, page + 1),
            ).fetchall()
            next_known = bool(known) and known[0][0] == page + 1
            usable = [Boundary(*row) for row in known if row[0] <= page]
            after = usable[0] if usable else None
            skip = (page - (after.page if after else 0)) * size
            sql, params = build_page_query(
                owner_ids, window.start, end, snapshot, after, skip, size, with_keys=not next_known
            )
            rows = conn.execute(sql, params).fetchall()
            if len(rows) == size and not next_known:
                self._optional_write(
                    conn,
                    "INSERT INTO page_marks (mark_key, snapshot, page, after_time, after_id, "
                    "created_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (key, snapshot, page + 1, rows[-1][0], rows[-1][1], now),
                )
        return [row[-1] for row in rows]

    def _walk_snapshot(self, conn: Connection, key: str, page: int, now: int) -> int:
        """The snapshot of the walk this page request continues.

        Walks of one key and window that started at different times keep their own snapshots:
        a page belongs to the newest walk that has already reached it (has its boundary), so a
        second reader starting over does not shift the pages of a first reader further on.
        """
        if page > 0:
            row = conn.execute(
                "SELECT max(snapshot) FROM page_marks WHERE mark_key = ? AND page = ?",
                (key, page),
            ).fetchone()
            if row[0] is None:  # no walk got here yet: continue the newest one
                row = conn.execute(
                    "SELECT max(snapshot) FROM page_marks WHERE mark_key = ?", (key,)
                ).fetchone()
            if row[0] is not None:
                return int(row[0])
        current = self._last_change(conn)
        started = conn.execute(
            "SELECT 1 FROM page_marks WHERE mark_key = ? AND snapshot = ? AND page = 0",
            (key, current),
        ).fetchone()
        if started is None:
            # Marks are a cache: while another process holds the write lock, go without.
            self._optional_write(
                conn, "DELETE FROM page_marks WHERE created_at < ?", (now - MARK_TTL_SECONDS,)
            )
            self._optional_write(
                conn,
                "INSERT INTO page_marks (mark_key, snapshot, page, created_at) "
                "VALUES (?, ?, 0, ?) ON CONFLICT DO NOTHING",
                (key, current, now),
            )
        return current

    def export_all(self, account_id: int) -> Iterator[bytes]:
        """Every stored body of an account in page order (for dumps and tests)."""
        self.ensure_ready()
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT body FROM calls WHERE account_id = ? AND superseded_seq IS NULL "
                "ORDER BY call_time, id",
                (account_id,),
            ).fetchall()
        for row in rows:
            yield bytes(row[0])
