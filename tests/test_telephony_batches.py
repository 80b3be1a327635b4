"""Group commit of telephony requests: those that queue while a transaction runs are merged
together in the next (``api/batches.py``, ``api/telephony.receive_posted``). Each request
still gets its own answer, one bad request fails alone, and the store ends as if the
requests had come one by one; on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec
import pytest

from calltrack.api.batches import GroupCommit
from calltrack.api.telephony import REFUSED, Posted, receive_posted
from calltrack.errors import StoreUnavailable
from calltrack.store import Store, Window
from calltrack.store.telephony import CallState
from tests.conftest import new_account

TRACKED = "74951110000"


def _event(kind: str, call_id: str, at: int, **fields: Any) -> bytes:
    return msgspec.json.encode({"event": kind, "call_id": call_id, "at": at, **fields})


def _started(call_id: str, at: int) -> bytes:
    return _event("call.started", call_id, at, caller="79161234567", called=TRACKED)


def _ended(call_id: str, at: int) -> bytes:
    return _event("call.ended", call_id, at, talk_seconds=40, disposition="answered")


def _account(store: Store, name: str) -> tuple[int, str]:
    account, _ = new_account(store, name)
    store.add_campaign(account, 7, "Spring", "https://shop.example", "active")
    store.add_phone(account, TRACKED, 7, "74957654321", "static")
    return account, store.add_telephony_endpoint(account, "generic").secret


def _calls(store: Store, account: int) -> dict[str, CallState]:
    with store._connect() as conn:
        ids = conn.execute(
            "SELECT id FROM telephony_calls WHERE account_id = ? ORDER BY id", (account,)
        ).fetchall()
    states = [store.call_state_by_id(int(row[0])) for row in ids]
    return {state.call_id: state for state in states if state is not None}


def _records(store: Store, account: int, now: int) -> list[dict[str, Any]]:
    pages = store.read_page([account], Window(now - 86400, now + 86400), 0, 1000) or []
    return [msgspec.json.decode(b'{"page":0,' + body) for body in pages]


# -- the queue --------------------------------------------------------------------------------


def test_requests_queued_while_a_batch_runs_go_together_in_the_next() -> None:
    batches: list[list[int]] = []
    first_runs, let_go = threading.Event(), threading.Event()

    def run(items: list[int]) -> list[int | Exception]:
        batches.append(items)
        if len(batches) == 1:
            first_runs.set()
            let_go.wait(10)
        return [item * 10 for item in items]

    async def scenario() -> list[int]:
        with ThreadPoolExecutor(2) as threads:
            group: GroupCommit[int, int] = GroupCommit(run, threads, limit=4)
            first = asyncio.ensure_future(group.submit(0))
            await asyncio.get_running_loop().run_in_executor(None, first_runs.wait, 10)
            rest = [asyncio.ensure_future(group.submit(item)) for item in range(1, 7)]
            await asyncio.sleep(0.05)
            let_go.set()
            return list(await asyncio.gather(first, *rest))

    assert asyncio.run(scenario()) == [0, 10, 20, 30, 40, 50, 60]
    # The lone first request went at once; the six that queued behind it went in batches of
    # at most four, in the order they came.
    assert batches == [[0], [1, 2, 3, 4], [5, 6]]


def test_an_exception_reaches_its_own_caller_or_the_whole_batch() -> None:
    def run(items: list[str]) -> list[str | Exception]:
        if "all" in items:
            raise OSError("the batch failed")
        return [ValueError(item) if item == "bad" else item.upper() for item in items]

    async def scenario() -> list[object]:
        with ThreadPoolExecutor(1) as threads:
            group: GroupCommit[str, str] = GroupCommit(run, threads)
            calls = [group.submit(item) for item in ("a", "bad", "b")]
            mixed = await asyncio.gather(*calls, return_exceptions=True)
            failed = await asyncio.gather(group.submit("all"), return_exceptions=True)
            after = await group.submit("c")  # the queue goes on after a failed batch
            return [*mixed, *failed, after]

    a, bad, b, failed, after = asyncio.run(scenario())
    assert (a, b, after) == ("A", "B", "C")
    assert isinstance(bad, ValueError)
    assert str(bad) == "bad"
    assert isinstance(failed, OSError)


# -- a batch of requests in the store ---------------------------------------------------------


def test_a_batch_answers_each_request_and_stores_what_one_by_one_would(store: Store) -> None:
    account, secret = _account(store, "shop")
    other, other_secret = _account(store, "other")
    now = int(time.time())
    posts = [
        Posted(secret, _started("c1", now - 60)),
        Posted("not-a-secret", _started("c2", now - 60)),
        Posted(secret, b"{not json"),
        Posted(secret, None),  # over the size limit
        Posted(secret, _started("c3", now - 50)),
        Posted(secret, _event("call.answered", "c1", now - 55)),
        Posted(secret, _ended("c1", now - 10)),
        Posted(secret, _started("c3", now - 50)),  # delivered again
        Posted(other_secret, _started("c1", now - 40)),  # the same call id, another account
        Posted("not-a-secret", b"{not json"),  # 401 before 422
    ]
    answers = receive_posted(store, store.settings, posts)
    assert answers[0] is None
    assert answers[4:9] == [None] * 5
    assert answers[1] == (401, REFUSED)
    assert answers[9] == (401, REFUSED)
    invalid, too_big = answers[2], answers[3]
    assert isinstance(invalid, tuple)
    assert invalid[0] == 422
    assert too_big == (413, "a request holds at most 1048576 bytes")

    calls = _calls(store, account)
    assert sorted(calls) == ["c1", "c3"]  # nothing of the refused requests
    c1, c3 = calls["c1"], calls["c3"]
    assert (c1.started_at, c1.answered_at, c1.ended_at) == (now - 60, now - 55, now - 10)
    assert c1.ended
    assert c1.built == c1.version
    assert c3.started_at == now - 50
    assert not c3.ended
    assert c3.version == 1
    assert list(_calls(store, other)) == ["c1"]
    (record,) = _records(store, account, now)
    assert record["universalId"] == c1.universal_id
    assert record["duration"] == 40
    assert _records(store, other, now) == []

    # The same requests one at a time, into a second store of the same kind, end the same.
    twin, twin_secret = _account(store, "twin")
    for post in posts:
        alone = Posted(twin_secret if post.secret == secret else post.secret, post.body)
        receive_posted(store, store.settings, [alone])
    alone_calls = _calls(store, twin)

    def facts(state: CallState) -> tuple[object, ...]:
        return (state.started_at, state.answered_at, state.ended_at, state.talk_seconds,
                state.disposition, state.ended, state.version, state.built)  # fmt: skip

    assert {k: facts(v) for k, v in alone_calls.items()} == {k: facts(v) for k, v in calls.items()}


def test_a_request_that_fails_in_a_batch_fails_alone(store: Store) -> None:
    account, secret = _account(store, "shop")
    now = int(time.time())
    real_claim = type(store).claim_calls

    def claim_calls(self: Store, conn: Any, states: list[CallState]) -> Any:
        if any(state.call_id == "poison" for state in states):
            raise RuntimeError("this call cannot be stored")
        return real_claim(self, conn, states)

    # The store's own class, but for one call id: the batch's transaction fails on it.
    store.__class__ = type("Failing", (type(store),), {"claim_calls": claim_calls})
    posts = [
        Posted(secret, _started("a", now - 30)),
        Posted(secret, _started("poison", now - 30)),
        Posted(secret, _started("b", now - 30)),
    ]
    first, poisoned, last = receive_posted(store, store.settings, posts)
    assert first is None
    assert last is None
    assert isinstance(poisoned, RuntimeError)
    assert sorted(_calls(store, account)) == ["a", "b"]


def test_concurrent_posts_over_http_each_get_their_answer(
    make_client: Any,
) -> None:
    http, store = make_client()
    account, secret = _account(store, "shop")
    now = int(time.time())
    headers = {"authorization": f"Bearer {secret}"}
    answers: dict[str, int] = {}

    def line(index: int) -> None:
        call_id = f"line-{index}"
        for body in (_started(call_id, now - 60), _ended(call_id, now - 5)):
            answers[call_id] = http.post(
                "/telephony/generic", content=body, headers=headers
            ).status_code
        wrong = {"authorization": "Bearer wrong"}
        answers[f"wrong-{index}"] = http.post(
            "/telephony/generic", content=_started("x", now), headers=wrong
        ).status_code

    threads = [threading.Thread(target=line, args=(index,)) for index in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {k: v for k, v in answers.items() if k.startswith("line")} == {
        f"line-{index}": 200 for index in range(16)
    }
    assert set(v for k, v in answers.items() if k.startswith("wrong")) == {401}
    calls = _calls(store, account)
    assert sorted(calls) == sorted(f"line-{index}" for index in range(16))
    assert all(state.ended and state.built == state.version for state in calls.values())
    assert len(_records(store, account, now)) == 16


def test_a_record_that_cannot_be_built_holds_up_no_other(store: Store) -> None:
    """One call's record fails in a batch: every request's events are in, the other calls'
    records are written, and that one call stays behind its events (for the sweeper)."""
    account, secret = _account(store, "shop")
    now = int(time.time())
    real_facts = type(store).record_facts_many_in

    def record_facts_many_in(self: Store, conn: Any, calls: list[tuple[Any, ...]]) -> Any:
        if any(call[1] == "79990000000" for call in calls):  # the caller
            raise ValueError("this record cannot be built")
        return real_facts(self, conn, calls)

    store.__class__ = type(
        "Failing", (type(store),), {"record_facts_many_in": record_facts_many_in}
    )
    poison = _event("call.started", "p", now - 60, caller="79990000000", called=TRACKED)
    starts = [Posted(secret, body) for body in (_started("a", now - 60), poison)]
    starts.append(Posted(secret, _started("b", now - 60)))
    assert receive_posted(store, store.settings, starts) == [None] * 3
    ends = [Posted(secret, _ended(call_id, now - 5)) for call_id in ("a", "p", "b")]
    assert receive_posted(store, store.settings, ends) == [None] * 3
    calls = _calls(store, account)
    assert {call_id: calls[call_id].built == calls[call_id].version for call_id in calls} == {
        "a": True,
        "p": False,
        "b": True,
    }
    assert all(state.ended for state in calls.values())
    written = {record["universalId"] for record in _records(store, account, now)}
    assert written == {calls["a"].universal_id, calls["b"].universal_id}


def test_a_record_the_database_refuses_leaves_the_events_merged_for_the_sweeper(
    store: Store,
) -> None:
    """A record built but refused by the database itself: the events are still in (the
    requests are answered), the call stays behind them, and the sweeper writes its record
    once the database takes it. On PostgreSQL the transaction is pipelined, so the refusal
    comes back after the record's INSERT was sent: it must still be told from a failure of
    the events themselves."""
    account, secret = _account(store, "shop")
    now = int(time.time())
    poison = "79990000000"
    with store._connect() as conn:  # the database refuses the record of one caller
        if store.dialect == "postgres":
            conn.execute(
                "ALTER TABLE calls ADD CONSTRAINT no_poison CHECK (client_number <> ?)"
                .replace("?", f"'{poison}'")
            )  # fmt: skip
        else:
            conn.execute(
                "CREATE TRIGGER no_poison BEFORE INSERT ON calls "
                f"WHEN NEW.client_number = '{poison}' BEGIN SELECT RAISE(ABORT, 'poison'); END"
            )
    started = _event("call.started", "p", now - 60, caller=poison, called=TRACKED)
    assert receive_posted(store, store.settings, [Posted(secret, started)]) == [None]
    assert receive_posted(store, store.settings, [Posted(secret, _ended("p", now - 5))]) == [None]
    [state] = _calls(store, account).values()
    assert state.ended
    assert state.built < state.version  # its record is behind its events
    assert _records(store, account, now) == []
    with store._connect() as conn:
        if store.dialect == "postgres":
            conn.execute("ALTER TABLE calls DROP CONSTRAINT no_poison")
        else:
            conn.execute("DROP TRIGGER no_poison")
    from calltrack.telephony.service import sweep

    assert sweep(store, store.settings, now) == 1
    [record] = _records(store, account, now)
    assert record["clientNumber"] == poison


def test_a_deadlock_is_told_from_a_store_that_is_down(postgres_url: str | None) -> None:
    """A batch that deadlocks with another worker's is merged again one by one; a store that
    is down is not (``StoreUnavailable.conflicted``): a real deadlock on PostgreSQL, and a
    real refused connection."""
    if postgres_url is None:
        pytest.skip("PostgreSQL unavailable")
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as setup:
        setup.execute("DROP TABLE IF EXISTS deadlock_probe")
        setup.execute("CREATE TABLE deadlock_probe (id int PRIMARY KEY)")
        setup.execute("INSERT INTO deadlock_probe VALUES (1), (2)")
    first, second = psycopg.connect(postgres_url), psycopg.connect(postgres_url)
    caught: list[StoreUnavailable] = []

    def lock(conn: psycopg.Connection[Any], row: int) -> None:
        try:
            conn.execute("SELECT 1 FROM deadlock_probe WHERE id = %s FOR UPDATE", (row,))
        except psycopg.OperationalError as exc:
            try:
                raise StoreUnavailable() from exc
            except StoreUnavailable as wrapped:
                caught.append(wrapped)
            conn.rollback()

    try:
        lock(first, 1)
        lock(second, 2)
        waiting = threading.Thread(target=lock, args=(first, 2))
        waiting.start()
        time.sleep(0.2)  # the first waits for row 2; the second now closes the cycle
        lock(second, 1)
        waiting.join(30)
    finally:
        first.close()
        second.close()
    assert len(caught) == 1  # PostgreSQL broke the cycle by failing one of the two
    assert caught[0].conflicted

    try:
        psycopg.connect("postgresql://nobody@127.0.0.1:1/none", connect_timeout=2)
    except psycopg.OperationalError as exc:
        down = StoreUnavailable()
        down.__cause__ = exc
        assert not down.conflicted


def test_a_callers_calls_that_end_in_one_batch_see_each_other(store: Store) -> None:
    """Both records are written after both calls' facts are read: the later call is still
    not unique, as if the requests had come one by one."""
    account, secret = _account(store, "shop")
    now = int(time.time())
    starts = [
        Posted(secret, _started(call_id, now - 300 + 60 * n)) for n, call_id in enumerate("ab")
    ]
    assert receive_posted(store, store.settings, starts) == [None, None]
    ends = [Posted(secret, _ended(call_id, now - 10)) for call_id in ("b", "a")]
    assert receive_posted(store, store.settings, ends) == [None, None]
    calls = _calls(store, account)
    unique = {record["universalId"]: record["unique"] for record in _records(store, account, now)}
    assert unique == {calls["a"].universal_id: True, calls["b"].universal_id: False}
