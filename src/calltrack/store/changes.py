"""Changes of calls in the order they were committed: v4's changes feed.

Every write of calls takes the store's one write lock and numbers its changes after the
newest one (``change_seq``, see ``CallQueries._write_calls``), so changes commit in the order
of their numbers: a reader that has seen change N has seen every change before it, and one
statement (one snapshot) never shows a change while hiding an earlier one. A call keeps only
its current state, so a call changed twice between two reads shows once, at its last change;
a delete leaves a tombstone with its own number. Tombstones older than the retention are
pruned; ``changes_pruned_through`` then says which cursors can no longer be served.

A large write of one account's calls (an import) is recorded as a run of change numbers
(``change_runs``, SQLite only). It commits whole, so no reader can tell the order of its
changes among themselves: a fill may read a run in page order (account, time, id), which on
SQLite's clustered calls is a sequential read where change order is a random page per call
(21 us a call against 4 at 500,000 calls, measured).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple, Protocol

from calltrack.config import Settings
from calltrack.store.calls import PRUNED_CHANGES_KEY, CallQueries
from calltrack.store.core import Connection, unix_now
from calltrack.store.migrations import DAY, QUARTER

NEWEST_CHANGE = 2**63 - 1  # above every change number: no upper bound
# A run is read in page order while at least this share of the calls in its time span are
# still its own (the rest are skipped by the sequential read): at 1/4 the read still costs
# about what change order does (4 against 21 us a call).
RUN_DENSITY = 4
_RUN_DECISIONS = 4096  # runs whose density a process remembers


class Change(NamedTuple):
    """A change as the feed reads it: a row as the database gives it (a walk reads one per
    change, and a frozen dataclass with its conversions cost a tenth of a walk)."""

    seq: int
    universal_id: str
    account_id: int
    changed_at: int  # unix seconds
    body: bytes | None  # the stored body (record after '{"page":0,'); None: deleted


class ChangeStream(Protocol):
    """The rows of one statement as the database sends them (``stream_changes``)."""

    def next_rows(self, count: int) -> list[Change]:
        """Up to ``count`` more rows; fewer only at the end."""

    def close(self) -> None:
        """Stop the statement if it still runs, and give its connection back."""


# A call of a run: universal id, body, call time, id. Rows as SQLite gives them: a fill of a
# run costs a few microseconds a call, and an object per row was a fifth of it (a line
# written by SQLite's printf cost more: it copies the body twice).
RunCall = tuple[str, bytes, int, int]


@dataclass(frozen=True, slots=True)
class ChangeRun:
    """Changes ``first_seq``..``last_seq`` of one account's calls, written by one
    transaction at ``written_at``, their calls' times within ``first_time``..``last_time``."""

    account_id: int
    first_seq: int
    last_seq: int
    first_time: int
    last_time: int
    # The calls' changed_at: the write set it for all of them, and a call changed since is
    # no longer in the run (its change number is later).
    written_at: int


class ChangeQueries(CallQueries):
    """Reading calls' changes in commit order."""

    run_density = RUN_DENSITY  # tests raise it to read every run in page order

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        # (account, first change) of a run: whether it is read in page order (next_run).
        self._run_decisions: OrderedDict[tuple[int, int], bool] = OrderedDict()

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
        sql, params = self._changes_query(owners, after, limit, through, deletes)
        self.ensure_ready()
        with self._connect() as conn:
            rows = conn.execute(sql, params).fetchall()
        return list(map(Change._make, rows))  # the columns in Change's order

    def stream_changes(
        self, owner: int, after: int, limit: int, through: int | None, deletes: bool
    ) -> ChangeStream | None:
        """``read_changes`` of one account as a stream: one statement whose rows the database
        sends while the caller works on those it has (``ChangeStream``); None where reads cost
        no round trip (SQLite)."""
        return None

    def _changes_query(
        self,
        owners: Sequence[int],
        after: int,
        limit: int,
        through: int | None,
        deletes: bool,
    ) -> tuple[str, tuple[object, ...]]:
        postgres = self.dialect == "postgres"
        blob = "BYTEA" if postgres else "BLOB"
        if postgres:
            # Row comparisons, which only the (account_id, change_seq) index serves: with
            # ``account_id = ?`` PostgreSQL chose the index of change_seq alone and filtered
            # it, so the read at the end of a small account's changes went through every
            # later change of the other accounts (1M calls: 0.2-0.4 s a read, not 3 ms).
            where = "(account_id, change_seq) > (?, ?) AND (account_id, change_seq) <= (?, ?)"
        else:
            where = "account_id = ? AND change_seq > ?" + (
                "" if through is None else " AND change_seq <= ?"
            )
        parts: list[str] = []
        params: list[object] = []
        for owner in owners:
            if postgres:
                bounds = [owner, after, owner, NEWEST_CHANGE if through is None else through]
            else:
                bounds = [owner, after] + ([] if through is None else [through])
            selects = [
                "SELECT change_seq, universal_id, account_id, changed_at, body FROM calls "
                f"WHERE {where}"
            ]
            if deletes:
                selects.append(
                    "SELECT change_seq, universal_id, account_id, deleted_at, "
                    f"CAST(NULL AS {blob}) FROM call_tombstones WHERE {where}"
                )
            for select in selects:
                if postgres:
                    # Each part an index range cut at the limit: PostgreSQL then merges them
                    # (a bare UNION ALL would be scanned whole and sorted).
                    parts.append(
                        f"SELECT * FROM ({select} ORDER BY account_id, change_seq LIMIT ?) AS p"
                    )
                    params += [*bounds, limit]
                else:
                    # SQLite merges the parts' index order itself; a subquery with its own
                    # LIMIT made it sort every batch, bodies and all (half the read's cost).
                    parts.append(select)
                    params += bounds
        # One account's parts are merged in (account, change) order, which is change order
        # and their own: PostgreSQL then merges them as they come (Merge Append). By change
        # number alone it sorted every row, bodies and all (a fill of 100,000 calls: 157 MB
        # sorted on disk, 750 of the read's 790 ms). Several accounts' are sorted.
        order = "3, 1" if postgres and len(owners) == 1 else "1"
        return " UNION ALL ".join(parts) + f" ORDER BY {order} LIMIT ?", (*params, limit)

    def next_run(self, owners: Sequence[int], after: int, through: int) -> ChangeRun | None:
        """The owners' first run numbered in (``after``, ``through``] that is worth reading in
        page order (most of it still current, and most of the calls in its time span its
        own); None when there is none."""
        if not owners or not self.calls_clustered:
            return None
        marks = ", ".join("?" * len(owners))
        self.ensure_ready()
        with self._connect() as conn:
            while True:
                found = conn.execute(
                    "SELECT account_id, first_seq, last_seq, first_time, last_time, written_at "
                    f"FROM change_runs WHERE account_id IN ({marks}) AND first_seq > ? "
                    "AND last_seq <= ? ORDER BY first_seq LIMIT 16",
                    (*owners, after, through),
                ).fetchall()
                for row in found:
                    run = ChangeRun(*map(int, row))
                    if self._run_is_dense(conn, run):
                        return run
                if len(found) < 16:
                    return None
                after = int(found[-1][1])

    def _run_is_dense(self, conn: Connection, run: ChangeRun) -> bool:
        # Decided once per run and process: calls only ever leave a run, so a run found
        # sparse stays so, and a dense one read later is at worst slower, never wrong.
        decisions = self._run_decisions
        key = (run.account_id, run.first_seq)
        if key in decisions:
            return decisions[key]
        in_span = conn.execute(
            # ``quarter``: the time its quarter hour starts.
            "SELECT coalesce(sum(calls), 0) FROM call_counts WHERE account_id = ? "
            "AND quarter BETWEEN ? AND ?",
            (run.account_id, run.first_time // QUARTER * QUARTER, run.last_time),
        ).fetchone()[0]
        # Dense when at least this many of its calls are still its own: counted up to there
        # only (a million-call run's count took 50 ms warm, 0.5 s cold).
        needed = max(self.run_min_changes, -(-int(in_span) // self.run_density))
        left = conn.execute(
            "SELECT count(*) FROM (SELECT 1 FROM calls WHERE account_id = ? "
            "AND change_seq BETWEEN ? AND ? LIMIT ?) AS run",
            (run.account_id, run.first_seq, run.last_seq, needed),
        ).fetchone()[0]
        dense = int(left) >= needed
        decisions[key] = dense
        if len(decisions) > _RUN_DECISIONS:
            decisions.popitem(last=False)
        return dense

    def read_run(self, run: ChangeRun, after_time: int, after_id: int, limit: int) -> list[RunCall]:
        """The run's calls still current, in page order after (``after_time``, ``after_id``),
        at most ``limit``: one statement, one snapshot."""
        # ``+change_seq`` has no index to use, so SQLite walks the clustered calls from the
        # place on instead of looking each change up.
        sql = (
            "SELECT universal_id, body, call_time, id FROM calls WHERE account_id = ? "
            "AND call_time >= ? AND call_time <= ? AND (call_time > ? OR id > ?) "
            "AND +change_seq BETWEEN ? AND ? ORDER BY call_time, id LIMIT ?"
        )
        params = (run.account_id, after_time, run.last_time, after_time, after_id,
                  run.first_seq, run.last_seq, limit)  # fmt: skip
        self.ensure_ready()
        with self._connect() as conn:
            rows: list[RunCall] = conn.execute(sql, params).fetchall()
        return rows

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
            conn.execute("DELETE FROM meta WHERE key = ?", (PRUNED_CHANGES_KEY,))
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?)", (PRUNED_CHANGES_KEY, str(through))
            )
            conn.execute("DELETE FROM call_tombstones WHERE deleted_at < ?", (cutoff,))
            return int(row[1])


def _pruned_through(conn: Connection) -> int:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (PRUNED_CHANGES_KEY,)).fetchone()
    return 0 if row is None else int(row[0])


@dataclass(frozen=True, slots=True)
class CallFilter:
    """What v4's /calls and /stats select: a window and conditions, all optional."""

    start: int = 0
    end: int = 2**62
    status: str | None = None
    service_type: str | None = None
    campaign: int | None = None
    tag: str | None = None
    utm_source: str | None = None
    utm_medium: str | None = None
    utm_campaign: str | None = None
    unique: bool | None = None
    target: bool | None = None
    digits: str | None = None  # in the caller's or the manager's number

    def window_only(self) -> bool:
        """Whether it selects by time alone."""
        return replace(self, start=0, end=2**62) == _EVERY_CALL

    def where(self, time_column: str = "call_time") -> tuple[str, list[object]]:
        """SQL conditions (after ``account_id = ?``) and their parameters."""
        sql = f" AND {time_column} BETWEEN ? AND ?"
        params: list[object] = [self.start, self.end]
        for column, value in (
            ("status", self.status),
            ("service_type", self.service_type),
            ("campaign_id", self.campaign),
            ("utm_source", self.utm_source),
            ("utm_medium", self.utm_medium),
            ("utm_campaign", self.utm_campaign),
        ):
            if value is not None:
                sql += f" AND {column} = ?"
                params.append(value)
        for bit, wanted in ((1, self.unique), (2, self.target)):
            if wanted is not None:
                sql += f" AND (flags & {bit}) {'<>' if wanted else '='} 0"
        if self.tag is not None:
            sql += (
                " AND universal_id IN (SELECT universal_id FROM call_tags "
                "WHERE tag = ? AND account_id = calls.account_id)"
            )
            params.append(self.tag)
        if self.digits:
            sql += " AND (client_number LIKE ? OR manager_number LIKE ?)"
            params += [f"%{self.digits}%", f"%{self.digits}%"]
        return sql, params


_EVERY_CALL = CallFilter()

# What /stats groups by: a column, or the time (grouped in Python, in the service zone).
GROUP_COLUMNS: dict[str, str] = {
    "source": "source",
    "campaign": "campaign_id",
    "utm_source": "utm_source",
    "utm_medium": "utm_medium",
    "utm_campaign": "utm_campaign",
    "device": "device",
}
# Time is grouped in quarter hours in SQL (every zone's offset is a whole number of them),
# then into the zone's days or hours.
QUARTER_HOUR = 900


@dataclass(frozen=True, slots=True)
class StatsRow:
    keys: tuple[object, ...]  # per ``by``: a quarter-hour start (unix s) or a column's value
    calls: int
    answered: int
    unique: int
    target: int
    unique_target: int
    talk_seconds: int


# What ``call_counts`` (migration 10) is grouped by, as /stats names it: its column.
COUNTED_BY: dict[str, str] = {
    "day": "quarter",
    "hour": "quarter",
    "source": "source",
    "campaign": "campaign_id",
    "utm_campaign": "utm_campaign",
}


# What ``call_filter_counts`` (migration 11) keeps per UTC day, as /stats names it: its column.
DAILY_BY: dict[str, str] = {
    "campaign": "campaign_id",
    "utm_source": "utm_source",
    "utm_medium": "utm_medium",
    "utm_campaign": "utm_campaign",
}

# A stats row's counts, summed from the calls, from ``call_counts`` or from
# ``call_filter_counts`` (whose rows each hold one status and one set of flags).
_CALL_SUMS = (
    "count(*), sum(CASE WHEN status = 'success' THEN 1 ELSE 0 END), "
    "sum(CASE WHEN (flags & 1) <> 0 THEN 1 ELSE 0 END), "
    "sum(CASE WHEN (flags & 2) <> 0 THEN 1 ELSE 0 END), "
    "sum(CASE WHEN (flags & 4) <> 0 THEN 1 ELSE 0 END), sum(duration)"
)
_COUNT_SUMS = (
    "sum(calls), sum(answered), sum(unique_calls), sum(target_calls), "
    "sum(unique_target_calls), sum(talk_seconds)"
)
_DAILY_SUMS = (
    "sum(calls), sum(CASE WHEN status = 'success' THEN calls ELSE 0 END), "
    "sum(CASE WHEN (flags & 1) <> 0 THEN calls ELSE 0 END), "
    "sum(CASE WHEN (flags & 2) <> 0 THEN calls ELSE 0 END), "
    "sum(CASE WHEN (flags & 4) <> 0 THEN calls ELSE 0 END), sum(talk_seconds)"
)


def _runs_of_days(days: Sequence[tuple[int, int]]) -> list[tuple[int, int, int, int]]:
    """Days (first and last second, in order) as runs of days of one length, each next day
    starting where the one before ended: (index of the run's first day, its first second, its
    last second, the days' length)."""
    runs: list[list[int]] = []
    for index, (start, end) in enumerate(days):
        length = end - start + 1
        if runs and runs[-1][2] + 1 == start and runs[-1][3] == length == DAY:
            runs[-1][2] = end
        else:
            runs.append([index, start, end, length])
    return [(first, start, end, length) for first, start, end, length in runs]


def _merged(rows: list[StatsRow]) -> list[StatsRow]:
    """Rows of the same keys summed; groups of no calls (all gone) left out."""
    sums: dict[tuple[object, ...], list[int]] = {}
    for row in rows:
        total = sums.setdefault(row.keys, [0] * 6)
        for index, value in enumerate(
            (row.calls, row.answered, row.unique, row.target, row.unique_target, row.talk_seconds)
        ):
            total[index] += value
    return [StatsRow(keys, *values) for keys, values in sums.items() if values[0]]


class CallListQueries(ChangeQueries):
    """v4's calls: filtered pages in call-time order with keyset cursors, one call, stats."""

    def filtered_calls(
        self,
        owners: Sequence[int],
        where: CallFilter,
        after: tuple[int, int] | None,
        limit: int,
        descending: bool = False,
    ) -> list[tuple[int, int, bytes]]:
        """(call_time, id, body) of up to ``limit`` calls after the position ``after``.

        One query per owner, each reading its index range in order (so page 10,000 costs
        what page 1 costs), merged: one statement, one snapshot.
        """
        if not owners or limit < 1:
            return []
        direction = "DESC" if descending else "ASC"
        compare = "<" if descending else ">"
        position = ""
        extra: list[object] = []
        if after is not None:
            # The window itself starts at the cursor, so the index range does (a second
            # bound beside the window's was only a filter: every page scanned the pages
            # before it); the condition skips what the cursor's second showed.
            if descending:
                where = replace(where, end=min(where.end, after[0]))
            else:
                where = replace(where, start=max(where.start, after[0]))
            position = f" AND (call_time {compare} ? OR id {compare} ?)"
            extra = [after[0], after[1]]
        conditions, params = where.where()
        parts: list[str] = []
        values: list[object] = []
        for owner in owners:
            parts.append(
                "SELECT * FROM (SELECT call_time, id, body FROM calls WHERE account_id = ?"
                f"{conditions}{position} ORDER BY call_time {direction}, id {direction} "
                "LIMIT ?) AS p"
            )
            values += [owner, *params, *extra, limit]
        sql = " UNION ALL ".join(parts) + f" ORDER BY 1 {direction}, 2 {direction} LIMIT ?"
        self.ensure_ready()
        with self._connect() as conn:
            rows = conn.execute(sql, (*values, limit)).fetchall()
        return [(int(r[0]), int(r[1]), bytes(r[2])) for r in rows]

    def count_filtered(self, owners: Sequence[int], where: CallFilter) -> int:
        """How many calls ``where`` selects. Without a tag or digits, the whole days (UTC) of
        its window are read from ``call_filter_counts`` (migration 11, ``store.counts``) and
        the calls only for the parts of a day at either end."""
        if not owners:
            return 0
        self.ensure_ready()
        first = -(-where.start // DAY) * DAY  # the whole days inside the window
        last = (where.end + 1) // DAY * DAY - 1
        if where.tag is not None or where.digits or first > last:
            return self._count_calls(owners, where)
        conditions, params = replace(where, start=first, end=last - DAY + 1).where("day")
        marks = ", ".join("?" * len(owners))
        with self._connect() as conn:
            row = conn.execute(
                f"SELECT sum(calls) FROM call_filter_counts WHERE account_id IN ({marks})"
                f"{conditions}",
                (*owners, *params),
            ).fetchone()
        total = int(row[0] or 0)
        for start, end in ((where.start, first - 1), (last + 1, where.end)):
            if start <= end:
                total += self._count_calls(owners, replace(where, start=start, end=end))
        return total

    def _count_calls(self, owners: Sequence[int], where: CallFilter) -> int:
        conditions, params = where.where()
        marks = ", ".join("?" * len(owners))
        with self._connect() as conn:
            row = conn.execute(
                f"SELECT count(*) FROM calls WHERE account_id IN ({marks}){conditions}",
                (*owners, *params),
            ).fetchone()
        return int(row[0])

    def visible_call(self, owners: Sequence[int], universal_id: str) -> bytes | None:
        """The stored body of a call of one of ``owners``; None if there is none."""
        if not owners:
            return None
        marks = ", ".join("?" * len(owners))
        self.ensure_ready()
        with self._connect() as conn:
            row = conn.execute(
                f"SELECT body FROM calls WHERE universal_id = ? AND account_id IN ({marks})",
                (universal_id, *owners),
            ).fetchone()
        return None if row is None else bytes(row[0])

    def call_stats(
        self, owners: Sequence[int], where: CallFilter, by: Sequence[str]
    ) -> list[StatsRow]:
        """Counts per group of ``by`` (``day`` and ``hour`` come back as quarter hours).

        A window alone, grouped by what ``call_counts`` keeps, is read from those counts
        (migration 10, ``store.counts``) for its whole quarter hours, and from the calls for
        the parts of a quarter at either end: a month of 1M calls is tens of thousands of count
        rows, not a third of a million calls. Grouped by campaign or utm tags only (or not at
        all), its whole UTC days come from ``call_filter_counts`` (migration 11): a month is
        thousands of rows.
        """
        if not owners:
            return []
        self.ensure_ready()
        if where.window_only() and set(by) <= set(DAILY_BY):
            first_day = -(-where.start // DAY) * DAY  # the whole UTC days inside
            last_day = (where.end + 1) // DAY * DAY - 1
            if first_day <= last_day:
                # Whole days from the daily counts (a month: thousands of rows, not the
                # tens of thousands of its quarters); the parts at either end as below.
                marks = ", ".join("?" * len(owners))
                found = self._sums(
                    [DAILY_BY[name] for name in by],
                    _DAILY_SUMS,
                    f"FROM call_filter_counts WHERE account_id IN ({marks}) "
                    "AND day BETWEEN ? AND ?",
                    (*owners, first_day, last_day - DAY + 1),
                )
                for start, end in ((where.start, first_day - 1), (last_day + 1, where.end)):
                    if start <= end:
                        found += self.call_stats(owners, CallFilter(start=start, end=end), by)
                return _merged(found)
        if not where.window_only() or not set(by) <= set(COUNTED_BY):
            return self._stats_of_calls(owners, where, by)
        first = -(-where.start // QUARTER_HOUR) * QUARTER_HOUR  # the whole quarters inside
        last = (where.end + 1) // QUARTER_HOUR * QUARTER_HOUR - 1
        if first > last:
            return self._stats_of_calls(owners, where, by)
        marks = ", ".join("?" * len(owners))
        found = self._sums(
            [COUNTED_BY[name] for name in by],
            _COUNT_SUMS,
            f"FROM call_counts WHERE account_id IN ({marks}) AND quarter BETWEEN ? AND ?",
            (*owners, first, last),
        )
        for start, end in ((where.start, first - 1), (last + 1, where.end)):
            if start <= end:
                found += self._stats_of_calls(owners, CallFilter(start=start, end=end), by)
        return _merged(found)

    def stats_by_day(
        self, owners: Sequence[int], days: Sequence[tuple[int, int]], by: Sequence[str]
    ) -> list[StatsRow]:
        """Counts per day and group of ``by``: each row's first key is the index of its day in
        ``days`` (first and last second of each, in order, not overlapping).

        Days of whole quarter hours (a zone's days) grouped by what ``call_counts`` keeps are
        read from it in one statement, a part per run of 24-hour days in a row; others day by
        day from the stats of its calls.
        """
        if not owners or not days:
            return []
        self.ensure_ready()
        aligned = all(s % QUARTER_HOUR == 0 and (e + 1) % QUARTER_HOUR == 0 for s, e in days)
        if not aligned or not set(by) <= set(COUNTED_BY) - {"day", "hour"}:
            return [
                replace(row, keys=(index, *row.keys))
                for index, (start, end) in enumerate(days)
                for row in self.call_stats(owners, CallFilter(start=start, end=end), by)
            ]
        # One part per run of whole 24-hour days in a row (a period without a clock change is
        # one run; a day of 23 or 25 hours is a run of its own), its day's index computed from
        # the quarter: one index range and one grouping, where a part per day cost PostgreSQL
        # 30 plans and scans for a month (2x the time). A join of the days with the counts was
        # planned as one scan of every count row of the account (0.3 s for 7 days).
        keys = [COUNTED_BY[name] for name in by]
        marks = ", ".join("?" * len(owners))
        select = "".join(f", {key}" for key in keys)
        group = "".join(f", {n}" for n in range(2, len(keys) + 2))
        parts: list[str] = []
        params: list[object] = []
        for first_index, start, end, length in _runs_of_days(days):
            parts.append(
                f"SELECT ? + (quarter - ?) / {length}{select}, {_COUNT_SUMS} FROM call_counts "
                f"WHERE account_id IN ({marks}) AND quarter BETWEEN ? AND ? GROUP BY 1{group}"
            )
            params += [first_index, start, *owners, start, end - QUARTER_HOUR + 1]
        sql = " UNION ALL ".join(parts)
        with self._connect() as conn:
            rows = conn.execute(sql, params).fetchall()
        width = len(keys) + 1
        return [
            StatsRow(tuple(r[:width]), *(int(v or 0) for v in r[width:])) for r in rows if r[width]
        ]

    def _stats_of_calls(
        self, owners: Sequence[int], where: CallFilter, by: Sequence[str]
    ) -> list[StatsRow]:
        keys = [
            f"(call_time / {QUARTER_HOUR}) * {QUARTER_HOUR}"
            if name in ("day", "hour")
            else GROUP_COLUMNS[name]
            for name in by
        ]
        conditions, params = where.where()
        marks = ", ".join("?" * len(owners))
        return self._sums(
            keys,
            _CALL_SUMS,
            f"FROM calls WHERE account_id IN ({marks}){conditions}",
            (*owners, *params),
        )

    def _sums(
        self, keys: list[str], sums: str, source: str, params: Sequence[object]
    ) -> list[StatsRow]:
        """``SELECT keys, sums source GROUP BY keys`` as stats rows; no group of zero calls
        (an aggregate over nothing, or counts whose calls all left)."""
        select = ", ".join(keys) + ", " if keys else ""
        group = " GROUP BY " + ", ".join(keys) if keys else ""
        with self._connect() as conn:
            rows = conn.execute(f"SELECT {select}{sums} {source}{group}", params).fetchall()
        width = len(keys)
        return [
            StatsRow(tuple(r[:width]), *(int(v or 0) for v in r[width:])) for r in rows if r[width]
        ]

    def campaign_names(self, owners: Sequence[int]) -> dict[int, str]:
        if not owners:
            return {}
        marks = ", ".join("?" * len(owners))
        self.ensure_ready()
        with self._connect() as conn:
            rows = conn.execute(
                f"SELECT campaign_id, name FROM campaigns WHERE account_id IN ({marks}) "
                "ORDER BY account_id",
                tuple(owners),
            ).fetchall()
        return {int(r[0]): str(r[1]) for r in rows}
