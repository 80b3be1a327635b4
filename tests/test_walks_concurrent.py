"""Walks that run at the same time while calls are written, checked against the paging rules.

Several walkers (the same scope and window twice, a scope of two accounts as ``getWithRole``
sees it, a role key's scope, an overlapping window) take their pages in an order hypothesis
chooses, interleaved with imports, updates (some moving a call to another second) and deletes.
Every finished walk must obey docs/api.md, "Paging":

- a call that exists, unchanged, from the walk's first page to its last appears exactly once;
- any other call appears at most once, in a state it had during the walk (twice only if its
  callTime moved during the walk);
- callTime never goes back along the walk; a walk ends with "no such page".

``CALLTRACK_HYPOTHESIS_EXAMPLES=500 pytest tests/test_walks_concurrent.py`` runs it longer.
"""

from __future__ import annotations

import itertools
import os
from collections import Counter
from dataclasses import dataclass, field

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calltrack.importer import import_bytes
from calltrack.model import parse_local
from calltrack.store import Store, Window
from tests.conftest import new_account

EXAMPLES = int(os.environ.get("CALLTRACK_HYPOTHESIS_EXAMPLES", "30"))
SIZE = 4
_names = itertools.count()


@dataclass
class Version:
    owner: str  # "a" or "b"
    second: int  # of 2020-05-01 10:00
    number: int  # unique per write; stored as the call's duration


@dataclass
class Walker:
    owners: tuple[str, ...]
    seconds: range  # the window, as seconds of the minute
    size: int
    page: int = 0
    running: bool = False
    seen: list[tuple[str, int, int]] = field(default_factory=list)  # uid, second, number
    at_start: dict[str, Version] = field(default_factory=dict)
    alive: dict[str, set[int]] = field(default_factory=dict)  # versions during the walk
    written: set[str] = field(default_factory=set)
    moved: set[str] = field(default_factory=set)


def walkers() -> list[Walker]:
    everything = range(60)
    return [
        Walker(("a",), everything, SIZE),
        Walker(("a",), everything, SIZE),  # the same key and window as the first
        Walker(("a", "b"), everything, SIZE),  # getWithRole: own calls and a grantor's
        Walker(("b",), everything, SIZE - 1),  # a role key of b's role
        Walker(("a",), range(10, 41), SIZE),  # a window inside the others
    ]


operations = st.one_of(
    st.tuples(st.just("step"), st.integers(0, 4)),
    st.tuples(st.just("insert"), st.sampled_from("ab"), st.lists(st.integers(0, 59), max_size=6)),
    st.tuples(st.just("update"), st.integers(0, 10**6), st.none() | st.integers(0, 59)),
    st.tuples(st.just("delete"), st.integers(0, 10**6)),
)


class World:
    """The store under test beside a model of what it holds."""

    def __init__(self, store: Store) -> None:
        self.store = store
        run = next(_names)
        self.ids = {name: new_account(store, f"w{run}{name}")[0] for name in "ab"}
        self.prefix = f"w{run}-"  # universalIds are unique across the service
        self.calls: dict[str, Version] = {}
        self.numbers = itertools.count(1)
        self.next_uid = itertools.count()
        self.zone = store.settings.zone
        self.base = parse_local("2020-05-01 10:00:00", self.zone, "from")
        self.walkers = walkers()

    def write(self, owner: str, changes: dict[str, int]) -> None:
        """Import calls of one account: universalId -> second."""
        records = []
        for uid, second in changes.items():
            number = next(self.numbers)
            old = self.calls.get(uid)
            self.calls[uid] = Version(owner, second, number)
            for walker in self.running():
                walker.alive.setdefault(uid, set()).add(number)
                walker.written.add(uid)
                if old is not None and old.second != second:
                    walker.moved.add(uid)
            records.append(
                {
                    "universalId": uid,
                    "serviceType": "calltracking",
                    "status": "success",
                    "callTime": f"2020-05-01 10:00:{second:02d}",
                    "duration": number,
                }
            )
        lines = b"\n".join(msgspec.json.encode(r) for r in records)
        import_bytes(self.store, self.ids[owner], lines, self.zone)

    def apply(self, operation: tuple[object, ...]) -> None:
        match operation:
            case ("step", int(number)):
                self.step(self.walkers[number])
            case ("insert", str(owner), list(seconds)) if seconds:
                self.write(owner, {self.new_uid(): int(s) for s in seconds})
            case ("update", int(index), moved_to) if self.calls:
                uid = sorted(self.calls)[index % len(self.calls)]
                old = self.calls[uid]
                second = old.second if moved_to is None else int(str(moved_to))
                self.write(old.owner, {uid: second})
            case ("delete", int(index)) if self.calls:
                uid = sorted(self.calls)[index % len(self.calls)]
                version = self.calls.pop(uid)
                assert self.store.delete_call(self.ids[version.owner], uid) == 1
                for walker in self.running():
                    walker.written.add(uid)

    def new_uid(self) -> str:
        return f"{self.prefix}{next(self.next_uid)}"

    def running(self) -> list[Walker]:
        return [w for w in self.walkers if w.running]

    def visible(self, walker: Walker) -> dict[str, Version]:
        return {
            uid: v
            for uid, v in self.calls.items()
            if v.owner in walker.owners and v.second in walker.seconds
        }

    def step(self, walker: Walker) -> None:
        if not walker.running:
            walker.running, walker.page, walker.seen = True, 0, []
            walker.at_start = self.visible(walker)
            walker.alive = {uid: {v.number} for uid, v in self.calls.items()}
            walker.written, walker.moved = set(), set()
        window = Window(self.base + walker.seconds.start, self.base + walker.seconds.stop - 1)
        owners = [self.ids[name] for name in walker.owners]
        bodies = self.store.read_page(owners, window, walker.page, walker.size)
        if bodies is None:
            walker.running = False
            self.check(walker)
            return
        for body in bodies:
            call = msgspec.json.decode(b"{" + body)
            second = int(call["callTime"][-2:])
            walker.seen.append((call["universalId"], second, call["duration"]))
        walker.page += 1
        assert walker.page < 500, "the walk never ended"

    def check(self, walker: Walker) -> None:
        counts = Counter(uid for uid, _, _ in walker.seen)
        numbers = {uid: number for uid, _, number in walker.seen}
        for uid, version in walker.at_start.items():
            if uid not in walker.written:
                assert counts[uid] == 1, f"{uid}, unchanged through the walk, seen {counts[uid]}x"
                assert numbers[uid] == version.number, f"{uid} not in the state it kept"
        for uid, count in counts.items():
            assert count <= (2 if uid in walker.moved else 1), f"{uid} seen {count} times"
        for uid, second, number in walker.seen:
            assert number in walker.alive.get(uid, set()), f"{uid} in a state it never had"
            assert second in walker.seconds, f"{uid} outside the window"
        seconds = [second for _, second, _ in walker.seen]
        assert seconds == sorted(seconds), "callTime went back along the walk"

    def finish(self) -> None:
        for walker in self.walkers:
            while walker.running:
                self.step(walker)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    initial=st.lists(st.tuples(st.sampled_from("ab"), st.integers(0, 59)), max_size=40),
    script=st.lists(operations, max_size=60),
)
def test_concurrent_walks_obey_the_paging_rules(
    store: Store, initial: list[tuple[str, int]], script: list[tuple[object, ...]]
) -> None:
    world = World(store)
    for owner in "ab":
        seconds = [s for o, s in initial if o == owner]
        if seconds:
            world.write(owner, {world.new_uid(): s for s in seconds})
    for operation in script:
        world.apply(operation)
    world.finish()


def test_two_walks_of_one_window_begun_apart_share_their_pages(store: Store) -> None:
    """The case of the bug report: a walk begun before an import, another after it."""
    world = World(store)
    world.write("a", {f"{world.prefix}old{i}": i for i in range(0, 40, 3)})
    first, second = world.walkers[0], world.walkers[1]
    world.step(first)
    world.step(first)
    world.write("a", {f"{world.prefix}new{i}": i for i in range(60)})
    world.step(second)
    world.step(first)
    world.step(second)
    world.finish()
    # Pages the first walk fixed grew with the import; later pages hold the page size.
    assert len(second.seen) == len(world.calls)
