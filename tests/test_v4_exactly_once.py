"""Exactly once, proven: the v4 changes feed of a real `calltrack serve`, read in a loop while
several writer processes commit calls in overlapping transactions, on PostgreSQL and SQLite.

Writers (tests/faults/feed_writers.py, one process each): ``store.import_calls`` batches,
`calltrack import` subprocesses, v3 ``call/put`` and ``call/delete`` over HTTP, and telephony
events to ``/telephony/generic``. Two readers loop on ``GET /api/v4/calls/changes`` meanwhile,
in JSON pages and in NDJSON streams of random sizes: a user key with ``scope=withRole`` (its
own calls and a grantor's) and the grantor's role key. ``check`` then says whether a reader
saw each change once:

- no cursor position is served twice;
- within one read a call comes at most once as an upsert (its current state);
- nothing is skipped: the reader's mirror (upserts and deletes applied in order) equals the
  database's calls of the accounts it sees: every call present, in its current state, and
  every deleted call gone.

The test of the test: a naive feed (numbers from a PostgreSQL SEQUENCE taken in concurrent
transactions that commit out of order, read by ``seq > cursor``) fails the same ``check``.
"""

from __future__ import annotations

import contextlib
import json
import random
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import httpx2
import msgspec
import pytest

from calltrack import access
from calltrack.demo_data import generate_calls
from calltrack.importer import import_bytes
from calltrack.store import Store
from calltrack.store.calls import RUN_MIN_CHANGES
from calltrack.store.changes import CallFilter
from tests.conftest import StoreFactory, new_account
from tests.faults import _common as common

WRITERS = Path(__file__).parent / "faults" / "feed_writers.py"
SEEDED = 60  # calls per account before the writers start


@dataclass(frozen=True)
class Seen:
    """One change as a reader got it."""

    cursor: str
    op: str  # "upsert" or "delete"
    uid: str
    call: dict[str, Any] | None


class Feed(Protocol):
    def read(self, limit: int, streamed: bool) -> tuple[list[Seen], bool]:
        """The next changes (at most ``limit``) and whether more are waiting."""


@dataclass
class Reader:
    """A client looping ``after = next`` on a feed; every read kept for the checks."""

    feed: Feed
    reads: list[list[Seen]] = field(default_factory=list)

    def read(self, limit: int, streamed: bool = False) -> tuple[list[Seen], bool]:
        changes, more = self.feed.read(limit, streamed)
        self.reads.append(changes)
        return changes, more

    def drain(self, limit: int = 500) -> int:
        """Read to the end; how many changes came."""
        count, more = 0, True
        for _ in range(10_000):
            changes, more = self.read(limit, streamed=False)
            count += len(changes)
            if not more:
                return count
        raise AssertionError("the feed never ended")


def check(reads: list[list[Seen]], truth: dict[str, dict[str, Any]]) -> list[str]:
    """What is wrong with a reader's reads given the state of the database at their end."""
    problems: list[str] = []
    cursors = Counter(seen.cursor for read in reads for seen in read)
    if repeated := [cursor for cursor, n in cursors.items() if n > 1]:
        problems.append(f"repeated: {len(repeated)} cursor positions served twice")
    for number, read in enumerate(reads):
        upserts = Counter(seen.uid for seen in read if seen.op == "upsert")
        if twice := [uid for uid, n in upserts.items() if n > 1]:
            problems.append(f"repeated: read {number} served {twice[0]} {upserts[twice[0]]}x")
    mirror: dict[str, dict[str, Any]] = {}
    for read in reads:
        for seen in read:
            if seen.op == "upsert":
                assert seen.call is not None
                mirror[seen.uid] = seen.call
            else:
                mirror.pop(seen.uid, None)
    if missing := sorted(truth.keys() - mirror.keys()):
        problems.append(f"skipped: {len(missing)} calls never served, e.g. {missing[0]}")
    if extra := sorted(mirror.keys() - truth.keys()):
        problems.append(f"skipped: {len(extra)} deletes not served (or foreign calls), {extra[0]}")
    if stale := sorted(uid for uid in truth.keys() & mirror.keys() if mirror[uid] != truth[uid]):
        problems.append(f"skipped: {len(stale)} calls not in their last state, e.g. {stale[0]}")
    return problems


# -- the v4 feed of a real server -----------------------------------------------------------


@dataclass
class HttpFeed:
    """``GET /api/v4/calls/changes`` of a live server, JSON or NDJSON."""

    http: httpx2.Client
    key: str
    scope: str | None = None
    after: str | None = None

    def read(self, limit: int, streamed: bool) -> tuple[list[Seen], bool]:
        params: dict[str, str | int] = {"limit": limit}
        if self.scope is not None:
            params["scope"] = self.scope
        if self.after is not None:
            params["after"] = self.after
        headers = {"authorization": f"Bearer {self.key}"}
        if streamed:
            headers["accept"] = "application/x-ndjson"
        answer = self.http.get("/api/v4/calls/changes", params=params, headers=headers)
        assert answer.status_code == 200, answer.text
        if streamed:
            assert answer.headers["content-type"].startswith("application/x-ndjson")
            lines = [json.loads(line) for line in answer.content.splitlines()]
            assert lines, "an empty stream"
            assert set(lines[-1]) == {"next", "hasMore"}, "no last line"
            changes, last = lines[:-1], lines[-1]
        else:
            body = answer.json()
            changes, last = body["changes"], body
        assert len(changes) <= limit
        seen = [Seen(c["cursor"], c["op"], c["universalId"], c.get("call")) for c in changes]
        for item in seen:
            assert (item.op == "upsert") == (item.call is not None), item
            if item.call is not None:
                assert item.call["universalId"] == item.uid
        self.after = str(last["next"])
        return seen, bool(last["hasMore"])


def stored(store: Store, owners: list[int]) -> dict[str, dict[str, Any]]:
    """The database's calls of ``owners`` as v4 serves them (the v3 record without page)."""
    rows = store.filtered_calls(owners, CallFilter(), None, 10**7)
    return {
        str(call["universalId"]): call
        for call in (msgspec.json.decode(b"{" + body) for _, _, body in rows)
    }


def seed(store: Store, account: int, prefix: str, number: int) -> None:
    # With enough calls besides the writers' to be a run of changes, which a fill reads in
    # page order on SQLite (store.changes) while the writers change and delete its calls.
    count = SEEDED + RUN_MIN_CHANGES
    calls = list(generate_calls(count, seed=number, now=datetime(2020, 5, 20)))
    for index, call in enumerate(calls):
        call["universalId"] = f"{prefix}-s{index}" if index < SEEDED else f"{prefix}-r{index}"
    lines = b"\n".join(msgspec.json.encode(call) for call in calls)
    import_bytes(store, account, lines, store.settings.zone)


@contextlib.contextmanager
def writers(commands: list[list[str]]) -> Iterator[list[subprocess.Popen[str]]]:
    processes = [
        subprocess.Popen(
            [sys.executable, str(WRITERS), *command],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        for command in commands
    ]
    try:
        yield processes
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()


def running(processes: list[subprocess.Popen[str]]) -> bool:
    return any(process.poll() is None for process in processes)


@pytest.mark.parametrize("seconds", [6.0])
def test_each_change_is_seen_exactly_once_while_writer_processes_commit(
    make_store: StoreFactory, tmp_path: Path, seconds: float
) -> None:
    store = make_store()
    database = store.settings.database_url
    alpha, alpha_key = new_account(store, "alpha")  # the reader's account
    beta, beta_key = new_account(store, "beta")  # grants alpha a role
    gamma, _ = new_account(store, "gamma")  # nobody reading sees it
    grant = store.create_grant(store.create_role(beta, "export").id, alpha)
    role_key = access.issue_role_key(store, grant)
    for number, (account, prefix) in enumerate(((alpha, "a"), (beta, "b"), (gamma, "g"))):
        seed(store, account, prefix, number)
    if store.calls_clustered:  # the readers' fills read the seeded runs in page order
        assert store.next_run([alpha, beta], 0, store.last_change()) is not None
    secret = store.add_telephony_endpoint(alpha, "generic").secret
    server = common.Server(database, tmp_path / "server.log", env={"CALLTRACK_SWEEP_SECONDS": "1"})
    try:
        port = str(server.port)
        common_args = ["--database", database, "--port", port, "--seconds", str(seconds)]

        def writer(kind: str, account: int, prefix: str, key: str = "") -> list[str]:
            return [kind, *common_args, "--account", str(account), "--prefix", prefix,
                    "--seeded", str(SEEDED), "--key", key, "--secret", secret,
                    "--seed", str(random.randrange(10**6))]  # fmt: skip

        commands = [
            writer("import", beta, "b"),
            writer("import", gamma, "g"),
            writer("cli-import", alpha, "a"),
            writer("put", alpha, "a", alpha_key),
            writer("delete", beta, "b", beta_key),
            writer("delete", alpha, "a", alpha_key),
            writer("telephony", alpha, "t"),
        ]
        with httpx2.Client(base_url=server.base, timeout=60) as http:
            user = Reader(HttpFeed(http, alpha_key, "withRole"))
            role = Reader(HttpFeed(http, role_key))
            rng = random.Random()
            busy_reads = 0
            with writers(commands) as processes:
                while running(processes):
                    for reader in (user, role):
                        streamed = rng.random() < 0.4
                        limit = rng.choice((1, 3, 17, 100, 1000 if streamed else 250))
                        changes, _ = reader.read(limit, streamed)
                        busy_reads += bool(changes)
                outputs = [process.communicate(timeout=60) for process in processes]
            results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
            # The writers did write (each kind, every process) while the readers read.
            assert all(r["ok"] > 0 for r in results), results
            assert busy_reads >= 10, f"only {busy_reads} reads found changes while writing"
            failed = [r for r in results if r["failed"]]
            assert sum(r["failed"] for r in failed) <= sum(r["ok"] for r in results) // 10, failed

            owners = {id(user): [alpha, beta], id(role): [beta]}
            for reader in (user, role):
                problems: list[str] = ["the database never settled"]
                for _ in range(40):  # the sweeper may still write telephony records
                    reader.drain()
                    before = store.last_change()
                    truth = stored(store, owners[id(reader)])
                    if reader.drain() == 0 and store.last_change() == before:
                        problems = check(reader.reads, truth)
                        break
                    time.sleep(0.25)
                assert problems == [], problems
                # Every kind of change went through this reader.
                ops = Counter(seen.op for read in reader.reads for seen in read)
                assert ops["upsert"] > SEEDED, ops
                assert ops["delete"] > 0, ops
            # Telephony calls get 25-digit ids (the others here are named by their writer).
            telephony = [u for u in stored(store, [alpha]) if u.isdigit() and len(u) == 25]
            assert telephony, "no telephony call was recorded"
    finally:
        server.stop()


# -- the test of the test: a naive feed ------------------------------------------------------


@dataclass
class NaiveFeed:
    """``seq > cursor`` over a scratch table numbered by a SEQUENCE outside any write lock:
    one statement per read (one snapshot), as the real feed."""

    url: str
    table: str
    after: int = 0

    def read(self, limit: int, streamed: bool) -> tuple[list[Seen], bool]:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            rows = conn.execute(
                f"SELECT seq, uid, body FROM (SELECT seq, uid, body FROM {self.table} "
                f"WHERE seq > %s UNION ALL SELECT seq, uid, NULL FROM {self.table}_gone "
                "WHERE seq > %s) AS c ORDER BY seq LIMIT %s",
                (self.after, self.after, limit + 1),
            ).fetchall()
        seen = [
            Seen(str(seq), "delete" if body is None else "upsert", uid,
                 None if body is None else json.loads(body))
            for seq, uid, body in rows[:limit]
        ]  # fmt: skip
        if seen:
            self.after = int(seen[-1].cursor)
        return seen, len(rows) > limit


def naive_writer(url: str, table: str, name: str, stop: threading.Event) -> None:
    """Upserts and deletes, each in a transaction that holds its number a little while."""
    import psycopg

    rng = random.Random(name)
    with psycopg.connect(url) as conn:
        count = 0
        while not stop.is_set():
            count += 1
            uid = f"{name}-{rng.randrange(30)}"
            with conn.transaction():
                if rng.random() < 0.2:
                    gone = conn.execute(f"DELETE FROM {table} WHERE uid = %s", (uid,)).rowcount
                    if gone:
                        conn.execute(
                            f"INSERT INTO {table}_gone VALUES (nextval('{table}_seq'), %s)",
                            (uid,),
                        )
                else:
                    conn.execute(
                        f"INSERT INTO {table} VALUES (nextval('{table}_seq'), %s, %s) "
                        "ON CONFLICT (uid) DO UPDATE SET seq = EXCLUDED.seq, body = EXCLUDED.body",
                        (uid, json.dumps({"universalId": uid, "n": count})),
                    )
                time.sleep(rng.uniform(0, 0.01))  # committed after a later number, maybe


@pytest.fixture
def naive_table(postgres_url: str | None) -> Iterator[tuple[str, str]]:
    if postgres_url is None:
        pytest.skip("PostgreSQL unavailable")
    import psycopg

    table = f"naive_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE SEQUENCE {table}_seq")
        conn.execute(f"CREATE TABLE {table} (seq BIGINT, uid TEXT PRIMARY KEY, body TEXT)")
        conn.execute(f"CREATE TABLE {table}_gone (seq BIGINT, uid TEXT)")
    yield postgres_url, table
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE {table}, {table}_gone")
        conn.execute(f"DROP SEQUENCE {table}_seq")


def test_the_check_catches_a_naive_seq_feed_skipping_changes(
    naive_table: tuple[str, str],
) -> None:
    import psycopg

    url, table = naive_table
    reader = Reader(NaiveFeed(url, table))
    stop = threading.Event()
    threads = [
        threading.Thread(target=naive_writer, args=(url, table, f"w{n}", stop)) for n in range(3)
    ]
    # One transaction takes its number first and commits last: the others commit later
    # numbers meanwhile, and the reader moves past its number before it is visible.
    held = psycopg.connect(url)
    held.execute(
        f"INSERT INTO {table} VALUES (nextval('{table}_seq'), 'held', %s)",
        (json.dumps({"universalId": "held"}),),
    )
    for thread in threads:
        thread.start()
    try:
        rng = random.Random(7)
        for _ in range(60):
            reader.read(rng.choice((1, 5, 50)), streamed=False)
            time.sleep(0.01)
        held.commit()
        for _ in range(60):
            reader.read(rng.choice((1, 5, 50)), streamed=False)
            time.sleep(0.01)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        held.close()
    reader.drain()
    with psycopg.connect(url, autocommit=True) as conn:
        truth = {
            uid: json.loads(body)
            for uid, body in conn.execute(f"SELECT uid, body FROM {table}").fetchall()
        }
    problems = check(reader.reads, truth)
    assert any(p.startswith("skipped:") for p in problems), problems
    assert "held" not in {s.uid for read in reader.reads for s in read}
    assert any(p.startswith("skipped:") and "held" in p for p in problems), problems
    # The check itself passes the same reads once the held call is served too.
    served = [*reader.reads, [Seen("fix", "upsert", "held", truth["held"])]]
    assert not any("held" in p for p in check(served, truth))
