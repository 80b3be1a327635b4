"""``call_counts`` and ``call_filter_counts`` (migrations 10 and 11), kept by the writers of
calls, stay exactly what grouping the calls gives: after imports, updates that move a call to
another quarter, day, group or status, deletes, and an import rolled back; and the stats and
counts read from them equal those read from the calls."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest

from calltrack.errors import ImportRejected
from calltrack.importer import import_bytes
from calltrack.store import Store
from calltrack.store.changes import CallFilter
from calltrack.store.migrations import CALL_COUNTS, CALL_FILTER_COUNTS, Counts
from tests.conftest import StoreFactory, new_account
from tests.helpers_calls import jsonl, record

FILTERS = [
    CallFilter(status="success"),
    CallFilter(utm_source="yandex", unique=True),
    CallFilter(status="fail", utm_campaign="brand", target=False),
    CallFilter(utm_medium="cpc", service_type="calltracking"),
    CallFilter(campaign=0),
    CallFilter(digits="79"),  # not counted: read from the calls
]
BY = [
    (),
    ("day",),
    ("hour", "source"),
    ("campaign",),
    ("utm_campaign",),
    ("day", "source"),
    ("campaign", "utm_campaign"),
    ("utm_source",),
    ("utm_medium", "utm_campaign"),
]


def calls_of(uid: str, minute: int, **fields: Any) -> dict[str, Any]:
    """A call ``minute`` minutes after 2020-05-01 09:00, from one of a few sources."""
    when = datetime(2020, 5, 1, 9) + timedelta(minutes=minute, seconds=minute % 60)
    values: dict[str, Any] = {
        "callTime": when.strftime("%Y-%m-%d %H:%M:%S"),
        "clientNumber": str(79000000000 + minute % 7),
        "duration": minute % 90,
        "status": ("success", "fail")[minute % 2],
        "utm_source": ("yandex", "google", "")[minute % 3],
        "utm_campaign": ("spring", "", "brand")[minute % 3],
        "utm_medium": ("cpc", "", "social")[minute % 3],
        "unique": minute % 4 == 0,
        "target": minute % 5 < 2,
        "uniqueTarget": minute % 8 == 0,
    }
    return record(uid, **(values | fields))


def stored_counts(store: Store, counts: Counts) -> list[tuple[Any, ...]]:
    columns = counts.fill()[len(f"INSERT INTO {counts.table} (") :].split(")")[0]
    with store._connect() as conn:
        rows = conn.execute(f"SELECT {columns} FROM {counts.table} WHERE calls <> 0").fetchall()
    return sorted(tuple(int(v) if isinstance(v, int) else v for v in r) for r in rows)


def grouped_calls(store: Store, counts: Counts) -> list[tuple[Any, ...]]:
    select = counts.fill()[counts.fill().index("SELECT") :]
    with store._connect() as conn:
        rows = conn.execute(select).fetchall()
    return sorted(tuple(int(v) if isinstance(v, int) else v for v in r) for r in rows)


def assert_exact(store: Store, owners: tuple[int, ...]) -> None:
    for counts in (CALL_COUNTS, CALL_FILTER_COUNTS):
        assert stored_counts(store, counts) == grouped_calls(store, counts)
    day = 86400
    start = 1588280400  # 2020-05-01 00:00 Moscow
    windows = [
        CallFilter(),
        CallFilter(start=start, end=start + 2 * day - 1),  # whole days
        CallFilter(start=start + 9 * 3600 + 7, end=start + day + 3 * 3600 + 61),  # mid-quarter
        CallFilter(start=start + 9 * 3600 + 100, end=start + 9 * 3600 + 200),  # inside one
        CallFilter(start=start - 5 * day, end=start + 5 * day),  # whole UTC days and parts
    ]
    for where in windows:
        expected = store._stats_of_calls(owners, where, ())
        assert store.count_filtered(owners, where) == sum(r.calls for r in expected)
        for by in BY:
            direct = sorted(store._stats_of_calls(owners, where, by), key=repr)
            assert sorted(store.call_stats(owners, where, by), key=repr) == direct
        for condition in FILTERS:
            chosen = replace(condition, start=where.start, end=where.end)
            assert store.count_filtered(owners, chosen) == store._count_calls(owners, chosen)


@pytest.fixture
def store(make_store: StoreFactory) -> Store:
    return make_store()


def test_counts_follow_imports_updates_and_deletes(store: Store) -> None:
    zone = store.settings.zone
    a, _ = new_account(store, "a")
    b, _ = new_account(store, "b")
    first = [calls_of(f"a{n}", n * 7) for n in range(60)]
    import_bytes(store, a, jsonl(first), zone)
    import_bytes(store, b, jsonl([calls_of(f"b{n}", n * 5) for n in range(30)]), zone)
    assert_exact(store, (a,))
    assert_exact(store, (a, b))

    # Updates: moved to another quarter and day, another status, source and utm campaign,
    # and some unchanged (no write at all).
    changed = [
        calls_of(f"a{n}", n * 7 + 1000, utm_source="vk") if n % 3 == 0 else first[n]
        for n in range(60)
    ]
    import_bytes(store, a, jsonl(changed), zone)
    assert_exact(store, (a, b))

    for n in range(0, 60, 4):
        assert store.delete_call(a, f"a{n}") == 1
    assert_exact(store, (a,))
    assert_exact(store, (a, b))

    # An import that fails half-way writes nothing: its counts roll back with its calls.
    before = [stored_counts(store, CALL_COUNTS), stored_counts(store, CALL_FILTER_COUNTS)]
    broken = [calls_of(f"c{n}", n) for n in range(10)] + [{"callTime": "not a time"}]
    with pytest.raises(ImportRejected):
        import_bytes(store, a, jsonl(broken), zone)
    assert [stored_counts(store, CALL_COUNTS), stored_counts(store, CALL_FILTER_COUNTS)] == before
    assert_exact(store, (a, b))


def test_an_account_whose_calls_all_left_counts_nothing(store: Store) -> None:
    zone = store.settings.zone
    a, _ = new_account(store, "a")
    import_bytes(store, a, jsonl([calls_of(f"a{n}", n) for n in range(5)]), zone)
    for n in range(5):
        store.delete_call(a, f"a{n}")
    assert store.call_stats((a,), CallFilter(), ("day", "source")) == []
    assert store.count_filtered((a,), CallFilter()) == 0
    assert_exact(store, (a,))


def test_stats_by_day_from_the_counts_equal_those_of_the_calls(store: Store) -> None:
    zone = store.settings.zone
    a, _ = new_account(store, "a")
    # 80 calls over 8 days, every day and both ends of the longest days' counted
    import_bytes(store, a, jsonl([calls_of(f"a{n}", n * 149) for n in range(80)]), zone)
    midnight = 1588280400  # 2020-05-01 00:00 Moscow
    days = [(midnight + n * 86400, midnight + (n + 1) * 86400 - 1) for n in range(4)]
    # Days as a zone with clock changes has them: runs of 24 hours cut by days of 23 and 25
    # hours, and a gap (days need not follow each other).
    lengths = [86400, 86400, 82800, 86400, 90000, 90000, 86400, 86400]
    starts = [midnight + sum(lengths[:n]) for n in range(len(lengths))]
    changing = [(s, s + n - 1) for s, n in zip(starts, lengths, strict=True)]
    changing = changing[:7] + [(s + 86400, e + 86400) for s, e in changing[7:]]
    for days, by in [
        *((days, by) for by in [(), ("source",), ("campaign", "utm_campaign")]),
        (changing, ("source",)),
        (changing[1:], ()),
    ]:
        direct = [
            (index, *row.keys, row.calls, row.answered, row.unique, row.talk_seconds)
            for index, (start, end) in enumerate(days)
            for row in store._stats_of_calls((a,), CallFilter(start=start, end=end), by)
        ]
        found = [
            (*row.keys, row.calls, row.answered, row.unique, row.talk_seconds)
            for row in store.stats_by_day((a,), days, by)
        ]
        assert sorted(found, key=repr) == sorted(direct, key=repr)
        assert {row[0] for row in direct} >= set(range(min(len(days), 6)))  # calls every day
    # Days not of whole quarters are read from the calls: the same answer.
    odd = [(start + 60, end) for start, end in days]
    expected = [
        (index, *row.keys, row.calls)
        for index, (start, end) in enumerate(odd)
        for row in store._stats_of_calls((a,), CallFilter(start=start, end=end), ("source",))
    ]
    found_odd = [(*r.keys, r.calls) for r in store.stats_by_day((a,), odd, ("source",))]
    assert sorted(found_odd, key=repr) == sorted(expected, key=repr)
