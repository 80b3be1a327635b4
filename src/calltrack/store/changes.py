"""Changes of calls in the order they were committed: v4's changes feed.

Every write of calls takes the store's one write lock and numbers its changes after the
newest one (``change_seq``, see ``CallQueries._write_calls``), so changes commit in the order
of their numbers: a reader that has seen change N has seen every change before it, and one
statement (one snapshot) never shows a change while hiding an earlier one. A call keeps only
its current state, so a call changed twice between two reads shows once, at its last change;
a delete leaves a tombstone with its own number. Tombstones older than the retention are
pruned; ``changes_pruned_through`` then says which cursors can no longer be served.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from calltrack.store.calls import CallQueries
from calltrack.store.core import Connection, unix_now

PRUNED_KEY = "changes_pruned_through"


@dataclass(frozen=True, slots=True)
class Change:
    seq: int
    universal_id: str
    account_id: int
    changed_at: int  # unix seconds
    body: bytes | None  # the stored body (record after '{"page":0,'); None: deleted


class ChangeQueries(CallQueries):
    """Reading calls' changes in commit order."""

    def read_changes(
        self,
        owners: Sequence[int],
        after: int,
        limit: int,
        through: int | None = None,
        deletes: bool = True,
    ) -> list[Change]:
        """The owners' changes numbered in (``after``, ``through``], oldest first, at most
        ``limit``: current calls (upserts) and, with ``deletes``, tombstones.

        One statement, so one snapshot: on PostgreSQL two statements could see a change
        committed between them without an earlier one.
        """
        if not owners or limit < 1:
            return []
        upper = "" if through is None else " AND change_seq <= ?"
        blob = "BYTEA" if self.dialect == "postgres" else "BLOB"
        parts: list[str] = []
        params: list[object] = []
        for owner in owners:
            bounds = [owner, after] + ([] if through is None else [through])
            parts.append(
                "SELECT * FROM (SELECT change_seq, universal_id, account_id, changed_at, body "
                f"FROM calls WHERE account_id = ? AND change_seq > ?{upper} "
                "ORDER BY change_seq LIMIT ?) AS c"
            )
            params += [*bounds, limit]
            if deletes:
                parts.append(
                    "SELECT * FROM (SELECT change_seq, universal_id, account_id, deleted_at, "
                    f"CAST(NULL AS {blob}) FROM call_tombstones WHERE account_id = ? "
                    f"AND change_seq > ?{upper} ORDER BY change_seq LIMIT ?) AS t"
                )
                params += [*bounds, limit]
        sql = " UNION ALL ".join(parts) + " ORDER BY 1 LIMIT ?"
        self.ensure_ready()
        with self._connect() as conn:
            rows = conn.execute(sql, (*params, limit)).fetchall()
        return [
            Change(
                int(r[0]), str(r[1]), int(r[2]), int(r[3]), None if r[4] is None else bytes(r[4])
            )
            for r in rows
        ]

    def last_change(self) -> int:
        """The newest change number (what a feed started now has seen once it is through)."""
        self.ensure_ready()
        with self._connect() as conn:
            return self._last_change(conn)

    def changes_pruned_through(self) -> int:
        """Changes up to this number may be gone (pruned deletes): older cursors expired."""
        self.ensure_ready()
        with self._connect() as conn:
            return _pruned_through(conn)

    def prune_changes(self, keep_days: int, now: int | None = None) -> int:
        """Forget deletes older than ``keep_days``; how many."""
        cutoff = (unix_now() if now is None else now) - keep_days * 86400
        self.ensure_ready()
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT max(change_seq), count(*) FROM call_tombstones WHERE deleted_at < ?",
                (cutoff,),
            ).fetchone()
            if not row[1]:
                return 0
            # Recorded with the rows' going: change numbers never go back (``_last_change``
            # counts it), and cursors before it are told they expired.
            through = max(int(row[0]), _pruned_through(conn))
            conn.execute("DELETE FROM meta WHERE key = ?", (PRUNED_KEY,))
            conn.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (PRUNED_KEY, str(through)))
            conn.execute("DELETE FROM call_tombstones WHERE deleted_at < ?", (cutoff,))
            return int(row[1])


def _pruned_through(conn: Connection) -> int:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (PRUNED_KEY,)).fetchone()
    return 0 if row is None else int(row[0])
