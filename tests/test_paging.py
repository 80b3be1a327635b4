"""Pages: the SQL builder on its own, and walks that must return every call exactly once."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import msgspec
import pytest

from calltrack.importer import import_bytes
from calltrack.model import parse_local
from calltrack.store import Store, Window
from calltrack.store.calls import LAYOUT_HOLD_SECONDS
from calltrack.store.core import unix_now
from calltrack.store.paging import Boundary, Columns, build_page_query, mark_key
from tests.conftest import StoreFactory, new_account


def call(uid: str, when: str) -> dict[str, str]:
    return {
        "universalId": uid,
        "serviceType": "calltracking",
        "status": "success",
        "callTime": when,
    }


def load(store: Store, account_id: int, calls: Sequence[Mapping[str, object]]) -> None:
    lines = b"\n".join(msgspec.json.encode(c) for c in calls)
    import_bytes(store, account_id, lines, store.settings.zone)


def ids(bodies: list[bytes]) -> list[str]:
    return [msgspec.json.decode(b"{" + body)["universalId"] for body in bodies]


def walk(store: Store, owners: list[int], window: Window, size: int, start: int = 0) -> list[str]:
    """The ids of pages ``start``, ``start + 1``... until there is no such page."""
    seen: list[str] = []
    for page in range(start, 10_000):  # loop guard
        bodies = store.read_page(owners, window, page, size)
        if bodies is None:
            return seen
        seen += ids(bodies)
    raise AssertionError("the walk never ended")


def test_single_owner_query_reads_one_index_range() -> None:
    sql, params = build_page_query([7], 100, 200, None, None, 0, 10)
    assert "UNION" not in sql
    assert "OFFSET" not in sql
    assert params == [7, 100, 200, 10]


def test_keyset_query_starts_at_the_boundary_not_the_window_start() -> None:
    sql, params = build_page_query([7], 100, 200, Boundary(150, 9), None, 0, 10)
    assert "call_time > ? OR id > ?" in sql
    assert params == [7, 150, 200, 150, 9, 10]


def test_a_fixed_range_is_read_whole_up_to_its_end() -> None:
    sql, params = build_page_query([7], 100, 200, Boundary(150, 9), Boundary(180, 4), 0, None)
    assert "call_time < ? OR id <= ?" in sql
    assert "LIMIT" not in sql
    assert params == [7, 150, 180, 150, 9, 180, 4]


def test_several_owners_get_one_limited_subquery_each() -> None:
    sql, params = build_page_query([1, 2, 3], 0, 10, None, None, 20, 10)
    assert sql.count("LIMIT ?)") == 3
    # each subquery may need every row up to the end of the page: skip + limit
    assert params.count(30) == 3
    assert params[-2:] == [10, 20]


@pytest.mark.parametrize("owners", [[7], [1, 2]])
def test_columns_choose_keys_bodies_or_both(owners: list[int]) -> None:
    def selected(columns: Columns) -> str:
        sql, _ = build_page_query(owners, 0, 10, None, None, 0, 10, columns)
        return sql.split(" FROM ")[0]

    assert selected("key_body").endswith("body")
    assert "call_time" in selected("key_body")
    assert selected("body") in ("SELECT body", "SELECT c.body")
    assert selected("key") == "SELECT call_time, id"


def test_a_query_without_owners_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one owner"):
        build_page_query([], 0, 10, None, None, 0, 10)


def test_mark_key_ignores_owner_order_and_tells_walks_apart() -> None:
    assert mark_key([2, 1], Window(0, 5), 10) == mark_key([1, 2], Window(0, 5), 10)
    assert mark_key([1], Window(0, 5), 10) != mark_key([1], Window(0, None), 10)
    assert mark_key([1], Window(0, 5), 10) != mark_key([1, 2], Window(0, 5), 10)
    assert mark_key([1], Window(0, 5), 10) != mark_key([1], Window(0, 5), 11)


def test_walk_returns_every_call_once_in_time_order_with_ties(store: Store) -> None:
    owner, _ = new_account(store, "a")
    calls = [call(f"{i}", f"2020-05-01 10:00:{i % 7:02d}") for i in range(53)]
    load(store, owner, calls)
    walked = walk(store, [owner], Window(0, 2**40), size=5)
    assert sorted(walked) == sorted(c["universalId"] for c in calls)
    times = {c["universalId"]: c["callTime"] for c in calls}
    assert [times[u] for u in walked] == sorted(times[u] for u in walked)
    assert walk(store, [owner], Window(0, 2**40), size=5) == walked  # stable ties


def test_pages_read_out_of_order_match_a_sequential_walk(store: Store) -> None:
    owner, _ = new_account(store, "a")
    load(store, owner, [call(f"{i}", f"2020-05-0{1 + i % 3} 10:00:{i % 5:02d}") for i in range(40)])
    window = Window(0, 2**40)
    sequential = [ids(store.read_page([owner], window, p, 6) or []) for p in range(7)]
    # A different window key has no remembered boundaries: pages come by OFFSET.
    shifted = Window(-1, 2**40)
    jumping = {p: ids(store.read_page([owner], shifted, p, 6) or []) for p in (5, 2, 6, 0, 3, 1, 4)}
    assert [jumping[p] for p in range(7)] == sequential


def test_a_jump_to_a_later_page_of_several_owners_matches_their_sequential_walk(
    store: Store,
) -> None:
    first, _ = new_account(store, "a")
    second, _ = new_account(store, "b")
    load(store, first, [call(f"a{i}", f"2020-05-01 10:{i % 20:02d}:00") for i in range(23)])
    load(store, second, [call(f"b{i}", f"2020-05-01 10:{i % 20:02d}:00") for i in range(17)])
    sequential = [
        ids(store.read_page([first, second], Window(0, 2**40), p, 6) or []) for p in range(7)
    ]
    # Another window key: no page of it is known, so page 4 is found by fixing pages 1-3.
    shifted = Window(-1, 2**40)
    assert ids(store.read_page([second, first], shifted, 4, 6) or []) == sequential[4]
    jumped = {p: ids(store.read_page([first, second], shifted, p, 6) or []) for p in (6, 2, 0)}
    assert jumped == {p: sequential[p] for p in (6, 2, 0)}
    assert store.read_page([first, second], shifted, 7, 6) is None


def test_merged_owners_walk_interleaves_their_calls_in_time_order(store: Store) -> None:
    first, _ = new_account(store, "a")
    second, _ = new_account(store, "b")
    load(store, first, [call(f"a{i}", f"2020-05-01 10:{i:02d}:00") for i in range(0, 30, 2)])
    load(store, second, [call(f"b{i}", f"2020-05-01 10:{i:02d}:00") for i in range(1, 30, 2)])
    walked = walk(store, [first, second], Window(0, 2**40), size=4)
    assert [int(u[1:]) for u in walked] == list(range(30))
    # Walked again, every page end is known and the pages are read without their keys.
    assert walk(store, [first, second], Window(0, 2**40), size=4) == walked


def test_calls_imported_during_a_walk_appear_at_most_once_and_the_others_once(
    make_store: StoreFactory,
) -> None:
    store = make_store()
    owner, _ = new_account(store, "a")
    zone = store.settings.zone
    load(store, owner, [call(f"old{i}", f"2020-05-01 12:{i % 60:02d}:00") for i in range(50)])
    window = Window(
        parse_local("2020-05-01 00:00:00", zone, "from"),
        parse_local("2020-05-01 23:59:59", zone, "to"),
    )
    seen: list[str] = []
    for page in range(100):
        bodies = store.read_page([owner], window, page, 7)
        if bodies is None:
            break
        seen += ids(bodies)
        # New calls land inside the window, before and after the reader's position.
        load(store, owner, [call(f"new{page}a", "2020-05-01 00:00:01")])
        load(store, owner, [call(f"new{page}b", "2020-05-01 23:00:00")])
    assert len(seen) == len(set(seen))
    assert sorted(u for u in seen if u.startswith("old")) == sorted(f"old{i}" for i in range(50))
    # Those behind the reader stay behind it; those ahead of it are met.
    assert not any(u.endswith("a") for u in seen if u.startswith("new"))
    assert any(u.endswith("b") for u in seen if u.startswith("new"))
    # Another walk sees every call once; the first page grew by the calls that landed in it.
    again = walk(store, [owner], window, 7)
    assert len(again) == len(set(again)) == store.count_calls(owner)


def test_an_update_keeps_the_call_in_its_place_among_calls_of_the_same_second(
    store: Store,
) -> None:
    owner, _ = new_account(store, "a")
    load(store, owner, [call(f"c{i}", "2020-05-01 10:00:00") for i in range(9)])
    window = Window(0, 2**40)
    before = walk(store, [owner], window, 4)
    load(store, owner, [{**call("c2", "2020-05-01 10:00:00"), "duration": 7}])
    assert walk(store, [owner], window, 4) == before


def test_a_page_emptied_by_deletes_answers_empty_and_the_walk_goes_on(store: Store) -> None:
    owner, _ = new_account(store, "a")
    load(store, owner, [call(f"c{i}", f"2020-05-01 10:{i:02d}:00") for i in range(9)])
    window = Window(0, 2**40)
    assert walk(store, [owner], window, 3) == [f"c{i}" for i in range(9)]
    for uid in ("c3", "c4", "c5"):
        assert store.delete_call(owner, uid) == 1
    assert store.read_page([owner], window, 1, 3) == []
    assert walk(store, [owner], window, 3) == ["c0", "c1", "c2", "c6", "c7", "c8"]
    assert store.read_page([owner], window, 3, 3) is None


def test_a_walk_past_its_last_page_continues_where_it_saw_that_page_end(store: Store) -> None:
    owner, _ = new_account(store, "a")
    load(store, owner, [call(f"c{i}", "2020-05-01 10:00:00") for i in range(5)])
    window = Window(0, 2**40)
    seen = ids(store.read_page([owner], window, 0, 3) or [])
    seen += ids(store.read_page([owner], window, 1, 3) or [])  # the last page, 2 calls
    # Calls of the same second land after those two (ids grow) and would fill page 1.
    load(store, owner, [call(f"n{i}", "2020-05-01 10:00:00") for i in range(4)])
    seen += walk(store, [owner], window, 3, start=2)
    assert seen == [f"c{i}" for i in range(5)] + [f"n{i}" for i in range(4)]


def test_page_zero_starts_new_pages_when_no_walk_started_for_an_hour(store: Store) -> None:
    owner, _ = new_account(store, "a")
    load(store, owner, [call(f"c{i}", f"2020-05-01 10:{i:02d}:00") for i in range(6)])
    window = Window(0, 2**40)
    now = unix_now()
    assert ids(store.read_page([owner], window, 0, 3, now=now) or []) == ["c0", "c1", "c2"]
    load(store, owner, [call("early", "2020-05-01 09:00:00")])
    later = now + LAYOUT_HOLD_SECONDS - 10  # a walk within the hour keeps the pages
    assert len(store.read_page([owner], window, 0, 3, now=later) or []) == 4
    fresh = later + LAYOUT_HOLD_SECONDS + 1  # an hour after the last walk began: fresh pages
    assert ids(store.read_page([owner], window, 0, 3, now=fresh) or []) == ["early", "c0", "c1"]
