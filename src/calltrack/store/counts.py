"""The counts the console's overview and v4's stats and totals read (migrations 10 and 11),
kept by the writers of calls.

Every write of calls (imports, ``call/put``, telephony's records, deletes) sums what it changes
here, per group, and applies it once in its own transaction: an import of a million calls is
one upsert per table at its end (on PostgreSQL one statement of arrays). Triggers did it per
row: 100k calls imported in +52% time on SQLite and +28% on PostgreSQL, and on PostgreSQL a
long import's batches made new versions of the same count rows, which its later batches waded
through (1M calls: 388 s). This way: +3% on SQLite, +15% on PostgreSQL (measured, 100k calls).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from calltrack.model import NO_FACETS, StoredCall
from calltrack.store.core import Connection
from calltrack.store.migrations import CALL_COUNTS, CALL_FILTER_COUNTS

# The columns of calls the counts depend on, in ``Counted``'s order.
COUNTED_COLUMNS: Final = (
    "account_id",
    "call_time",
    "service_type",
    "status",
    "campaign_id",
    "duration",
    "source",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "flags",
)


@dataclass(frozen=True, slots=True)
class Counted:
    """What the counts know of one stored call."""

    account_id: int
    call_time: int
    service_type: str
    status: str
    campaign_id: int
    duration: int
    source: str
    utm_source: str
    utm_medium: str
    utm_campaign: str
    flags: int

    @classmethod
    def from_row(cls, row: Any) -> Counted:
        """From the ``COUNTED_COLUMNS`` of a row of calls."""
        return cls(*row)


# ``CountChanges`` spells out these tables' groups and sums (the hot loop of an import, where
# looking them up per call cost 10% of its time): it must change with them.
assert CALL_COUNTS.keys == ("source", "campaign_id", "utm_campaign")
assert [name for name, _ in CALL_COUNTS.sums] == [
    "calls", "answered", "unique_calls", "target_calls", "unique_target_calls", "talk_seconds"
]  # fmt: skip
assert CALL_FILTER_COUNTS.keys == (
    "status", "service_type", "campaign_id", "utm_source", "utm_medium", "utm_campaign", "flags"
)  # fmt: skip
assert [name for name, _ in CALL_FILTER_COUNTS.sums] == ["calls", "talk_seconds"]


def _bucket(call_time: int, size: int) -> int:
    """``call_time / size * size`` as SQL computes it (truncating toward zero)."""
    whole = abs(call_time) // size * size
    return whole if call_time >= 0 else -whole


class CountChanges:
    """What a write changes in the count tables, summed per group until applied."""

    def __init__(self) -> None:
        self._quarters: dict[tuple[Any, ...], list[int]] = {}
        self._days: dict[tuple[Any, ...], list[int]] = {}

    def add(self, call: Counted, sign: int = 1) -> None:
        self._add(
            call.account_id, call.call_time, call.service_type, call.status, call.campaign_id,
            call.duration, call.source, call.utm_source, call.utm_medium, call.utm_campaign,
            call.flags, sign,
        )  # fmt: skip

    def add_call(self, account_id: int, call: StoredCall) -> None:
        """A call written (without making a ``Counted`` of it: imports add a million)."""
        f = call.facets or NO_FACETS
        self._add(
            account_id, call.call_time, call.service_type, call.status, call.campaign_id,
            call.duration, f.source, f.utm_source, f.utm_medium, f.utm_campaign, f.flags, 1,
        )  # fmt: skip

    def _add(
        self,
        account_id: int,
        call_time: int,
        service_type: str,
        status: str,
        campaign_id: int,
        duration: int,
        source: str,
        utm_source: str,
        utm_medium: str,
        utm_campaign: str,
        flags: int,
        sign: int,
    ) -> None:
        key = (account_id, _bucket(call_time, CALL_COUNTS.bucket), source, campaign_id,
               utm_campaign)  # fmt: skip
        sums = self._quarters.get(key)
        if sums is None:
            sums = self._quarters[key] = [0, 0, 0, 0, 0, 0]
        sums[0] += sign
        if status == "success":
            sums[1] += sign
        if flags & 1:
            sums[2] += sign
        if flags & 2:
            sums[3] += sign
        if flags & 4:
            sums[4] += sign
        sums[5] += sign * duration
        day = (account_id, _bucket(call_time, CALL_FILTER_COUNTS.bucket), status, service_type,
               campaign_id, utm_source, utm_medium, utm_campaign, flags)  # fmt: skip
        sums = self._days.get(day)
        if sums is None:
            sums = self._days[day] = [0, 0]
        sums[0] += sign
        sums[1] += sign * duration

    def apply(self, conn: Connection, dialect: str) -> None:
        """Add the changes to the tables (in the caller's transaction) and forget them."""
        for table, groups in ((CALL_COUNTS, self._quarters), (CALL_FILTER_COUNTS, self._days)):
            rows = [(*key, *sums) for key, sums in groups.items() if any(sums)]
            groups.clear()
            if not rows:
                continue
            if dialect == "postgres":  # one statement: a list of each column's values
                columns = [list(column) for column in zip(*rows, strict=True)]
                conn.execute(table.upsert(dialect), columns)
            else:
                conn.executemany(table.upsert(dialect), rows)
