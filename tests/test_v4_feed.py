"""The v4 changes feed against a model, over random writes, grants, revokes and reads.

Hypothesis picks a script: imports of new calls into three accounts (a, b, c), updates, deletes,
imports of deleted calls again, grants and revokes of b's and c's roles to a, and reads of
random sizes (JSON or NDJSON) through the real app by two clients: a's user key with
``scope=withRole`` and the role key of b's role granted to a (a new key after each re-grant,
continuing its cursor). A client starts over now and then. The model says:

- a read serves only calls of accounts the key sees at that moment (a revoked role's calls
  never again after the revoke; its role key gets 401);
- no change repeats within a walk: each state of a call at most once, unless its account was
  dropped from the walk (not visible at a read) and came back with a fill, and no cursor twice;
- after reading to the end, the client's mirror holds every call the key sees now, each in its
  current state, and no call deleted since, except one whose delete was not served before the
  walk dropped its account, or came while it was dropped (the feed cannot tell of it then: it
  shows only calls the key may see).

``CALLTRACK_HYPOTHESIS_EXAMPLES=200 pytest tests/test_v4_feed.py`` runs it longer.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from calltrack import access
from calltrack.api.v4.cursor import FeedCursor, RunPlace, decode
from calltrack.importer import import_bytes
from calltrack.store import Store
from calltrack.store.changes import ChangeRun
from tests.conftest import new_account

EXAMPLES = int(os.environ.get("CALLTRACK_HYPOTHESIS_EXAMPLES", "20"))
MakeClient = Callable[..., tuple[TestClient, Store]]
_runs = itertools.count()

operations = st.one_of(
    st.tuples(st.just("import"), st.sampled_from("abc"), st.integers(1, 3)),
    st.tuples(st.just("update"), st.integers(0, 10**6)),
    st.tuples(st.just("delete"), st.integers(0, 10**6)),
    st.tuples(st.just("recreate"), st.integers(0, 10**6)),
    st.tuples(st.just("toggle"), st.sampled_from("bc")),
    st.tuples(st.just("read"), st.sampled_from("UR"), st.integers(1, 7), st.booleans()),
    st.tuples(st.just("read"), st.sampled_from("UR"), st.integers(1, 7), st.booleans()),
    st.tuples(st.just("restart"), st.sampled_from("UR")),
)


@dataclass
class Client:
    """One feed client: its key, cursor and mirror, and what the model knows of its walk."""

    name: str  # "U": a's user key, withRole; "R": the role key of b's role
    key: str | None
    after: str | None = None
    mirror: dict[str, int] = field(default_factory=dict)  # uid -> version
    cursors: set[str] = field(default_factory=set)
    followed: set[str] = field(default_factory=set)  # accounts at its last read
    epoch: dict[str, int] = field(default_factory=dict)  # bumped when an account is dropped
    served: set[tuple[str, int, int]] = field(default_factory=set)  # uid, version, epoch
    excused: set[str] = field(default_factory=set)  # deleted while its account was dropped


class World:
    def __init__(self, http: TestClient, store: Store) -> None:
        self.http, self.store = http, store
        # Imports of two calls or more are runs, which a fill reads in page order (SQLite
        # records runs; PostgreSQL has none and reads in change order).
        store.run_min_changes, store.run_density = 2, 10**9
        run = next(_runs)
        self.prefix = f"f{run}"
        self.ids: dict[str, int] = {}
        self.keys: dict[str, str] = {}
        for name in "abc":
            self.ids[name], self.keys[name] = new_account(store, f"{self.prefix}{name}")
        self.roles = {name: store.create_role(self.ids[name], "feed").id for name in "bc"}
        self.granted = {"b": False, "c": False}
        self.calls: dict[str, tuple[str, int]] = {}  # uid -> owner, version
        self.deleted: dict[str, str] = {}  # uid -> owner
        self.versions = itertools.count(1)
        self.uids = itertools.count()
        self.clients = {"U": Client("U", self.keys["a"]), "R": Client("R", None)}
        self.toggle("b")  # the role key's client starts with a key

    # -- writes -------------------------------------------------------------------------------

    def write(self, owner: str, uids: list[str]) -> None:
        records = []
        for uid in uids:
            version = next(self.versions)
            self.calls[uid] = (owner, version)
            self.deleted.pop(uid, None)
            records.append(
                {"universalId": uid, "serviceType": "calltracking", "status": "success",
                 "callTime": f"2021-03-0{1 + version % 9} 10:00:00", "duration": version}
            )  # fmt: skip
        lines = b"\n".join(msgspec.json.encode(r) for r in records)
        import_bytes(self.store, self.ids[owner], lines, self.store.settings.zone)

    def delete(self, uid: str) -> None:
        owner, _ = self.calls.pop(uid)
        assert self.store.delete_call(self.ids[owner], uid) == 1
        self.deleted[uid] = owner
        for client in self.clients.values():
            if owner not in client.followed:  # the walk cannot be told of it
                client.excused.add(uid)

    def toggle(self, owner: str) -> None:
        role, grantee = self.roles[owner], self.ids["a"]
        if self.granted[owner]:
            self.store.revoke_grant(role, grantee)
        else:
            grant = self.store.create_grant(role, grantee)
            if owner == "b":  # the role key client goes on with a new key, the same cursor
                self.clients["R"].key = access.issue_role_key(self.store, grant)
        self.granted[owner] = not self.granted[owner]

    def apply(self, operation: tuple[Any, ...]) -> None:
        live, gone = sorted(self.calls), sorted(self.deleted)
        match operation:
            case ("import", str(owner), int(count)):
                self.write(owner, [f"{self.prefix}-{next(self.uids)}" for _ in range(count)])
            case ("update", int(index)) if live:
                uid = live[index % len(live)]
                self.write(self.calls[uid][0], [uid])
            case ("delete", int(index)) if live:
                self.delete(live[index % len(live)])
            case ("recreate", int(index)) if gone:
                uid = gone[index % len(gone)]
                self.write(self.deleted[uid], [uid])
            case ("toggle", str(owner)):
                self.toggle(owner)
            case ("read", str(name), int(limit), bool(streamed)):
                self.read(self.clients[name], limit, streamed)
            case ("restart", str(name)):
                old = self.clients[name]
                self.clients[name] = Client(name, old.key)

    # -- reads --------------------------------------------------------------------------------

    def visible(self, client: Client) -> set[str]:
        if client.name == "R":
            return {"b"} if self.granted["b"] else set()
        return {"a"} | {owner for owner, on in self.granted.items() if on}

    def read(self, client: Client, limit: int, streamed: bool) -> bool:
        """One read; whether more changes wait."""
        params: dict[str, str | int] = {"limit": limit}
        if client.name == "U":
            params["scope"] = "withRole"
        if client.after is not None:
            params["after"] = client.after
        headers = {"authorization": f"Bearer {client.key}"}
        if streamed:
            headers["accept"] = "application/x-ndjson"
        answer = self.http.get("/api/v4/calls/changes", params=params, headers=headers)
        visible = self.visible(client)
        if client.name == "R" and not self.granted["b"]:
            assert answer.status_code == 401, answer.text  # the revoke ended the role key
            assert answer.headers["content-type"] == "application/problem+json"
            return False
        assert answer.status_code == 200, answer.text
        if streamed:
            lines = [json.loads(line) for line in answer.content.splitlines()]
            assert set(lines[-1]) == {"next", "hasMore"}, lines[-1]
            changes, last = lines[:-1], lines[-1]
        else:
            changes, last = answer.json()["changes"], answer.json()
        assert len(changes) <= limit
        # Accounts not visible now are dropped from the walk: a state seen again later (a
        # fill when they come back) is no repeat.
        for owner in client.followed - visible:
            client.epoch[owner] = client.epoch.get(owner, 0) + 1
            # Its deletes not served yet never will be: none are sent for an account no
            # longer visible (found by the model: a delete, then a revoke before a read).
            client.excused |= {uid for uid in client.mirror if self.deleted.get(uid) == owner}
        client.followed = set(visible)
        owner_of = {uid: owner for uid, (owner, _) in self.calls.items()} | self.deleted
        upserts: set[str] = set()
        for change in changes:
            uid, cursor = change["universalId"], change["cursor"]
            owner = owner_of[uid]
            assert owner in visible, f"{client.name} was served {uid} of {owner}, not visible"
            assert cursor not in client.cursors, f"cursor {cursor} served twice"
            client.cursors.add(cursor)
            if change["op"] == "delete":
                assert "call" not in change
                client.mirror.pop(uid, None)
                continue
            assert uid not in upserts, f"{uid} twice in one read"
            upserts.add(uid)
            version = int(change["call"]["duration"])
            seen = (uid, version, client.epoch.get(owner, 0))
            assert seen not in client.served, f"{uid} version {version} served again"
            client.served.add(seen)
            client.mirror[uid] = version
        client.after = str(last["next"])
        return bool(last["hasMore"])

    def finish(self) -> None:
        for client in self.clients.values():
            for _ in range(1000):
                if not self.read(client, 50, streamed=False):
                    break
            visible = self.visible(client)
            if not visible:
                continue  # the role key is revoked: nothing to compare
            expected = {uid: v for uid, (owner, v) in self.calls.items() if owner in visible}
            shown = {uid: v for uid, v in client.mirror.items() if uid in expected}
            assert shown == expected, f"{client.name}: calls missing or not in their last state"
            stale = {
                uid
                for uid in client.mirror
                if uid not in expected and self.deleted.get(uid) in visible
            }
            assert stale <= client.excused, f"{client.name}: deletes never served: {stale}"


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    initial=st.lists(st.sampled_from("abc"), max_size=12),
    script=st.lists(operations, max_size=40),
)
def test_the_feed_serves_what_the_model_says(
    client: tuple[TestClient, Store], initial: list[str], script: list[tuple[Any, ...]]
) -> None:
    world = World(*client)
    for number, owner in enumerate(initial):
        world.write(owner, [f"{world.prefix}-i{number}"])
    for operation in script:
        world.apply(operation)
    world.finish()


def test_a_granted_account_is_filled_in_and_a_revoked_one_stops(
    client: tuple[TestClient, Store],
) -> None:
    """The example the model is for, step by step."""
    world = World(*client)
    world.write("a", ["x-a1", "x-a2"])
    world.write("b", ["x-b1"])
    world.write("c", ["x-c1", "x-c2", "x-c3"])
    user = world.clients["U"]
    assert world.read(user, 2, streamed=False)  # a fill of a's and b's calls
    while world.read(user, 2, streamed=True):
        pass
    assert set(user.mirror) == {"x-a1", "x-a2", "x-b1"}
    world.toggle("c")  # granted: c's calls come as upserts from the next read on
    world.write("a", ["x-a3"])
    while world.read(user, 1, streamed=False):
        pass
    assert set(user.mirror) == {"x-a1", "x-a2", "x-a3", "x-b1", "x-c1", "x-c2", "x-c3"}
    world.toggle("b")  # revoked: b's changes are never served again
    world.write("b", ["x-b1", "x-b2"])
    world.delete("x-a1")
    while world.read(user, 3, streamed=False):
        pass
    assert "x-b2" not in user.mirror
    assert "x-a1" not in user.mirror
    world.finish()


def test_an_account_granted_while_a_fill_runs_is_filled_before_has_more_turns_false(
    client: tuple[TestClient, Store],
) -> None:
    """Found by the model: a role granted while the first fill (a's and b's calls) was still
    running was left for a later read, and the read that ended the fill said hasMore false,
    so a client reading to the end missed the new grantor's calls."""
    world = World(*client)
    world.write("a", ["y-a1", "y-a2", "y-a3"])
    world.write("b", ["y-b1", "y-b2"])
    world.write("c", ["y-c1", "y-c2"])
    user = world.clients["U"]
    assert world.read(user, 2, streamed=False)  # the fill of a's and b's calls is under way
    world.toggle("c")
    while world.read(user, 50, streamed=False):
        pass
    assert {"y-c1", "y-c2"} <= set(user.mirror)
    world.toggle("b")
    world.toggle("b")
    world.clients["U"] = user = Client("U", world.keys["a"])  # the same in NDJSON
    assert world.read(user, 1, streamed=True)
    world.toggle("c")
    world.toggle("c")
    world.write("c", ["y-c3"])
    while world.read(user, 1000, streamed=True):
        pass
    world.finish()


def test_a_fill_reads_an_import_in_page_order_and_resumes_inside_it(
    client: tuple[TestClient, Store],
) -> None:
    """An import is a run of changes that commits whole, so a fill may serve it in page order
    (SQLite does). Calls changed, deleted and added while the fill is inside the run come once
    each, in their last state; a cursor of any line inside the run resumes right after it."""
    http, store = client
    account, key = new_account(store, "runs")
    store.run_min_changes = 5  # so that 40 calls are a run, as a large import is
    headers = {"authorization": f"Bearer {key}"}

    def record(number: int, version: int) -> dict[str, Any]:
        # Change order is the file's; page order (time) is the reverse of it.
        return {"universalId": f"run-{number}", "serviceType": "calltracking",
                "status": "success", "duration": version,
                "callTime": f"2021-03-01 10:{59 - number:02d}:00"}  # fmt: skip

    def write(*records: dict[str, Any]) -> None:
        lines = b"\n".join(msgspec.json.encode(r) for r in records)
        import_bytes(store, account, lines, store.settings.zone)

    def read(after: str | None, limit: int, fields: str = "") -> dict[str, Any]:
        params: dict[str, str | int] = {"limit": limit, **({"after": after} if after else {})}
        if fields:
            params["fields"] = fields
        answer = http.get("/api/v4/calls/changes", params=params, headers=headers)
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    write(*(record(number, 1) for number in range(40)))
    first = read(None, 7)
    served = [change["universalId"] for change in first["changes"]]
    if store.calls_clustered:  # in page order: the last calls of the file first
        assert served == [f"run-{number}" for number in range(39, 32, -1)]
    # While the fill is inside the run: one call not served yet changes, one served changes,
    # one not served yet is deleted, a new one comes.
    unserved = sorted({f"run-{number}" for number in range(40)} - set(served))
    changed_later, deleted = unserved[0], unserved[1]
    write(record(int(changed_later[4:]), 2), record(int(served[0][4:]), 2), record(45, 1))
    assert store.delete_call(account, deleted) == 1
    changes = first["changes"]
    after, more = first["next"], first["hasMore"]
    while more:
        page = read(after, 5)
        changes += page["changes"]
        after, more = page["next"], page["hasMore"]
    upserts = [(c["universalId"], c["call"]["duration"]) for c in changes if c["op"] == "upsert"]
    assert len(upserts) == len(set(upserts)), "a state served twice"
    assert [v for u, v in upserts if u == changed_later] == [2]  # once, in its last state
    assert [v for u, v in upserts if u == served[0]] == [1, 2]  # served, then its change
    assert deleted not in {u for u, _ in upserts}
    mirror: dict[str, int] = {}
    for change in changes:
        if change["op"] == "upsert":
            mirror[change["universalId"]] = change["call"]["duration"]
        else:
            mirror.pop(change["universalId"], None)
    expected = {f"run-{n}": 1 for n in range(40)} | {changed_later: 2, served[0]: 2, "run-45": 1}
    del expected[deleted]
    assert mirror == expected

    # With no writes, any line's cursor resumes with exactly the lines after it.
    walk = read(None, 100)["changes"]
    ids = [change["universalId"] for change in walk]
    for index in (0, 5, 17, len(walk) - 2):
        rest = read(walk[index]["cursor"], 100)["changes"]
        assert [change["universalId"] for change in rest] == ids[index + 1 :]
    # Only the fields asked for, in the run as anywhere.
    some = read(None, 3, fields="duration,universalId")["changes"]
    assert [change["call"] for change in some] == [
        {"duration": mirror[uid], "universalId": uid} for uid in ids[:3]
    ]
    # And after the fill, in the feed's own changes; a delete is a delete there too.
    whole = read(None, 100)
    assert not whole["hasMore"]
    write(record(3, 7))
    assert store.delete_call(account, "run-5") == 1
    later = read(whole["next"], 10, fields="duration")["changes"]
    assert [(c["op"], c["universalId"], c.get("call")) for c in later] == [
        ("upsert", "run-3", {"duration": 7}),
        ("delete", "run-5", None),
    ]
    assert later[0]["changedAt"][:2] == later[1]["changedAt"][:2] == "20"


def test_a_run_is_read_in_page_order_only_while_most_calls_in_its_span_are_its_own(
    client: tuple[TestClient, Store],
) -> None:
    """A run mostly written over since, or whose time span holds mostly other calls, is read
    in change order: a sequential read in page order would wade through calls it skips."""
    _, store = client
    account, _ = new_account(store, "spans")
    store.run_min_changes = 10

    def write(numbers: range, day: int, version: int) -> None:
        records = [{"universalId": f"span-{n}", "serviceType": "calltracking",
                    "status": "success", "duration": version,
                    "callTime": f"2021-03-{day:02d} {8 + n % 9:02d}:{n % 60:02d}:00"}
                   for n in numbers]  # fmt: skip
        lines = b"\n".join(msgspec.json.encode(r) for r in records)
        import_bytes(store, account, lines, store.settings.zone)

    write(range(40), 1, 1)  # a run of 40 changes
    write(range(5, 40), 1, 2)  # a run of 35: the first keeps 5 calls, too few
    for start in range(100, 150, 9):  # 50 calls of day 2, written in writes too small for runs
        write(range(start, min(start + 9, 150)), 2, 1)
    write(range(200, 210), 2, 1)  # a run of 10 calls among the 50 in its hours
    runs = store.next_run([account], 0, store.last_change())
    if not store.calls_clustered:
        assert runs is None  # PostgreSQL records no runs: its fills are in change order
        return
    assert runs is not None
    assert (runs.first_seq, runs.last_seq - runs.first_seq + 1) == (41, 35)
    assert store.next_run([account], runs.last_seq, store.last_change()) is None
    store.run_density = 10  # 10 calls of at most 60 in its span: dense enough now
    store._run_decisions.clear()
    last = store.next_run([account], runs.last_seq, store.last_change())
    assert last is not None
    assert last.last_seq == store.last_change()


@pytest.mark.parametrize("known", [(), (7,), (7, 12), (7, 12, 130)])
def test_a_cursor_decodes_to_itself(known: tuple[int, ...]) -> None:
    """Inside a run (``c2.``: the state in base64, then the place in digits, as the store
    writes it beside each call) and outside one (``c3.``: the accounts in base64, then the
    change numbers in digits); the earlier form outside a run (``c1.``, the whole state in
    base64) is still read."""
    run = ChangeRun(account_id=5, first_seq=41, last_seq=9000, first_time=1614547440,
                    last_time=1614630180, written_at=1700000000)  # fmt: skip
    state = f"9001.40.{'-'.join(map(str, known))}.5"
    for after_id in (0, 7, 12345):
        cursor = FeedCursor(seq=9001, known=known, filling=(5,), fill_after=40,
                            run=RunPlace(run, 1614600000, after_id))  # fmt: skip
        text = cursor.encode()
        assert decode(text) == cursor
        whole = f"{state}.5:41:9000:1614547440:1614630180:1700000000".encode()
        head = base64.urlsafe_b64encode(whole).decode().rstrip("=")
        assert text == f"c2.{head}.1614600000.{after_id}"
    plain = FeedCursor(seq=9001, known=known, filling=(5,), fill_after=40)
    accounts = base64.urlsafe_b64encode(f"{'-'.join(map(str, known))}.5".encode())
    assert plain.encode() == f"c3.{accounts.decode().rstrip('=')}.9001.40"
    assert decode(plain.encode()) == plain
    issued_before = "c1." + base64.urlsafe_b64encode(state.encode()).decode().rstrip("=")
    assert decode(issued_before) == plain
