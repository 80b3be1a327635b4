"""Pages: the SQL builder on its own, and walks that must return every call exactly once."""

from __future__ import annotations

import msgspec
import pytest

from calltrack.importer import import_bytes
from calltrack.model import parse_local
from calltrack.store import Store, Window
from calltrack.store.calls import MARK_TTL_SECONDS
from calltrack.store.core import unix_now
from calltrack.store.paging import Boundary, build_page_query, mark_key
from tests.conftest import StoreFactory, new_account


def call(uid: str, when: str) -> dict[str, object]:
    return {
        "universalId": uid,
        "serviceType": "calltracking",
        "status": "success",
        "callTime": when,
    }


def load(store: Store, account_id: int, calls: list[dict[str, object]]) -> None:
    lines = b"\n".join(msgspec.json.encode(c) for c in calls)
    import_bytes(store, account_id, lines, store.settings.zone)


def ids(bodies: list[bytes]) -> list[str]:
    return [msgspec.json.decode(b"{" + body)["universalId"] for body in bodies]


def walk(store: Store, owners: list[int], window: Window, size: int) -> list[str]:
    seen: list[str] = []
    for page in range(10_000):  # loop guard
        bodies = store.read_page(owners, window, page, size)
        if not bodies:
            return seen
        seen += ids(bodies)
    raise AssertionError("the walk never ended")


def test_single_owner_query_reads_one_index_range() -> None:
    sql, params = build_page_query([7], 100, 200, 50, None, 0, 10)
    assert "UNION" not in sql
    assert params == [7, 100, 200, 50, 50, 10, 0]


def test_keyset_query_starts_at_the_boundary_not_the_window_start() -> None:
    sql, params = build_page_query([7], 100, 200, 50, Boundary(3, 150, 9), 0, 10)
    assert "call_time > ? OR id > ?" in sql
    assert params == [7, 150, 200, 50, 50, 150, 9, 10, 0]


def test_several_owners_get_one_limited_subquery_each() -> None:
    sql, params = build_page_query([1, 2, 3], 0, 10, 99, None, 20, 10)
    assert sql.count("LIMIT ?)") == 3
    # each subquery may need every row up to the end of the page: skip + limit
    assert params.count(30) == 3
    assert params[-2:] == [10, 20]


@pytest.mark.parametrize("owners", [[7], [1, 2]])
def test_a_page_whose_end_is_known_is_read_without_its_keys(owners: list[int]) -> None:
    with_keys, _ = build_page_query(owners, 0, 10, 99, None, 0, 10)
    bodies_only, _ = build_page_query(owners, 0, 10, 99, None, 0, 10, with_keys=False)
    assert with_keys.split(" FROM ")[0].endswith("body")
    assert "call_time" in with_keys.split(" FROM ")[0]
    assert bodies_only.split(" FROM ")[0] in ("SELECT body", "SELECT c.body")


def test_a_query_without_owners_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one owner"):
        build_page_query([], 0, 10, 99, None, 0, 10)


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
    assert sorted(walked) == sorted(c["universalId"] for c in calls)  # type: ignore[type-var]
    times = {c["universalId"]: c["callTime"] for c in calls}
    assert [times[u] for u in walked] == sorted(times[u] for u in walked)
    assert walk(store, [owner], Window(0, 2**40), size=5) == walked  # stable ties


def test_pages_read_out_of_order_match_a_sequential_walk(store: Store) -> None:
    owner, _ = new_account(store, "a")
    load(store, owner, [call(f"{i}", f"2020-05-0{1 + i % 3} 10:00:{i % 5:02d}") for i in range(40)])
    window = Window(0, 2**40)
    sequential = [ids(store.read_page([owner], window, p, 6)) for p in range(7)]
    # A different window key has no remembered boundaries: pages come by OFFSET.
    shifted = Window(-1, 2**40)
    jumping = {p: ids(store.read_page([owner], shifted, p, 6)) for p in (5, 2, 6, 0, 3, 1, 4)}
    assert [jumping[p] for p in range(7)] == sequential


def test_merged_owners_walk_interleaves_their_calls_in_time_order(store: Store) -> None:
    first, _ = new_account(store, "a")
    second, _ = new_account(store, "b")
    load(store, first, [call(f"a{i}", f"2020-05-01 10:{i:02d}:00") for i in range(0, 30, 2)])
    load(store, second, [call(f"b{i}", f"2020-05-01 10:{i:02d}:00") for i in range(1, 30, 2)])
    walked = walk(store, [first, second], Window(0, 2**40), size=4)
    assert [int(u[1:]) for u in walked] == list(range(30))
    # Walked again, every page end is known and the pages are read without their keys.
    assert walk(store, [first, second], Window(0, 2**40), size=4) == walked


def test_walk_of_a_past_window_ignores_calls_imported_during_it(make_store: StoreFactory) -> None:
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
        if not bodies:
            break
        seen += ids(bodies)
        # New calls land inside the window, before and after the reader's position.
        load(store, owner, [call(f"new{page}a", "2020-05-01 00:00:01")])
        load(store, owner, [call(f"new{page}b", "2020-05-01 23:00:00")])
    assert sorted(seen) == sorted(f"old{i}" for i in range(50))
    # A new walk (page 0 again) sees the calls imported since.
    assert len(walk(store, [owner], window, 7)) == 50 + 2 * 8


def test_a_walk_keeps_the_calls_as_they_were_when_it_began(store: Store) -> None:
    owner, _ = new_account(store, "a")
    load(store, owner, [call(f"c{i:02d}", f"2020-05-01 10:{i:02d}:00") for i in range(20)])
    window = Window(0, 2**40)
    seen = ids(store.read_page([owner], window, 0, 5))
    # During the walk: a call already read is deleted, one ahead is moved to the front,
    # one already read is moved to the end.
    assert store.delete_call(owner, "c01") == 1
    load(store, owner, [call("c17", "2020-05-01 09:00:00"), call("c02", "2020-05-01 11:00:00")])
    for page in range(1, 10):
        bodies = store.read_page([owner], window, page, 5)
        if not bodies:
            break
        seen += ids(bodies)
    assert seen == [f"c{i:02d}" for i in range(20)]  # once each, in the order at the start
    fresh = walk(store, [owner], window, 5)
    assert fresh[0] == "c17"
    assert fresh[-1] == "c02"
    assert "c01" not in fresh


def test_superseded_versions_are_dropped_once_no_walk_can_need_them(store: Store) -> None:
    owner, _ = new_account(store, "a")
    load(store, owner, [call("v", "2020-05-01 10:00:00")])
    load(store, owner, [call("v", "2020-05-01 11:00:00")])
    store.delete_call(owner, "v")

    def versions() -> int:
        with store._connect() as conn:
            return int(conn.execute("SELECT count(*) FROM calls").fetchone()[0])

    assert versions() == 2  # both kept for walks that began before the changes
    with store._transaction() as conn:
        store._prune_old_versions(conn, unix_now() + MARK_TTL_SECONDS + 1)
    assert versions() == 0
    assert store.count_calls(owner) == 0
