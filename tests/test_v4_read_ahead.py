"""A streamed feed reads its next batch ahead (``api/v4/feed.ReadingAhead``): the lines are
those of reading batch after batch, a change written meanwhile still comes exactly once, and a
read ahead that no thread has started is read in place rather than waited for."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import msgspec
import pytest
from starlette.testclient import TestClient

from calltrack import access
from calltrack.api.v4 import feed
from calltrack.api.v4.cursor import decode
from calltrack.importer import import_bytes
from calltrack.store import Store
from tests.conftest import new_account
from tests.helpers_calls import record, seed

CALLS = 25
BATCH = 10


@pytest.fixture
def threads() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(2) as pool:
        yield pool


def _account(store: Store) -> int:
    account, _ = new_account(store, "shop")
    store.run_min_changes = 10**9  # no runs: every fill in change order, as on PostgreSQL
    for index in range(CALLS):  # one write each: one change each
        seed(store, account, f"call-{index:02d}")
    return account


def _started(threads: ThreadPoolExecutor, func: Callable[..., Any], *args: Any) -> Future[Any]:
    """``threads.submit``, returning once a thread runs it: a batch of 10 is written before a
    new thread starts, and a read ahead not yet started is read in place instead."""
    started = threading.Event()

    def run() -> Any:
        started.set()
        return func(*args)

    future = threads.submit(run)
    started.wait()
    return future


def _walk(
    store: Store, reads: feed.FeedReads, account: int, between: Callable[[], None] = lambda: None
) -> list[dict[str, Any]]:
    """The feed from the start in batches of BATCH, ``between`` run after the first."""
    cursor = feed.start(store, (account,), None)
    lines: list[dict[str, Any]] = []
    for _ in range(CALLS):  # more batches than calls: a feed that never ends
        page = feed.read(reads, cursor, BATCH, store.settings.zone, None, (account,))
        lines += [msgspec.json.decode(line) for line in page.lines]
        if len(lines) == len(page.lines):
            between()
        cursor = page.next
        if not page.has_more:
            return lines
    raise AssertionError(f"no end of the feed after {len(lines)} lines")


def test_the_lines_read_ahead_are_the_lines_read_in_turn(
    store: Store, threads: ThreadPoolExecutor
) -> None:
    account = _account(store)
    asked: list[tuple[Any, ...]] = []
    futures: list[Future[Any]] = []

    def submit(func: Callable[..., Any], *args: Any) -> Future[Any]:
        asked.append(args)
        futures.append(_started(threads, func, *args))
        return futures[-1]

    ahead = _walk(store, feed.ReadingAhead(store, submit), account)
    assert ahead == _walk(store, store, account)
    assert [line["universalId"] for line in ahead] == [f"call-{i:02d}" for i in range(CALLS)]
    # Each full batch read the next ahead (10, 10, then the last 5), from its last change on,
    # and the feed took each read ahead: none was read twice.
    last_of_batches = [decode(ahead[index]["cursor"]).fill_after for index in (9, 19)]
    assert [after for _, after, *_ in asked] == last_of_batches
    assert all(future.done() and not future.cancelled() for future in futures)


def test_a_change_written_after_the_read_ahead_still_comes_once(
    store: Store, threads: ThreadPoolExecutor
) -> None:
    account = _account(store)
    changed = "call-15"  # in the batch read ahead before it changes

    def update() -> None:
        line = msgspec.json.encode(record(changed, callTime="2020-05-01 10:15:00", duration=99))
        import_bytes(store, account, line, store.settings.zone)

    lines = _walk(store, feed.ReadingAhead(store, threads.submit), account, update)
    states = [(line["universalId"], line["call"]["duration"]) for line in lines]
    assert len({uid for uid, _ in states}) == CALLS
    assert states[-1] == (changed, 99)  # its last state, after every other call
    assert len(states) == len(set(states))  # no state twice
    assert len(states) in (CALLS, CALLS + 1)  # its first state too, if read before the write


def test_a_read_ahead_not_started_is_read_in_place(store: Store) -> None:
    """Every thread of the pool may be a feed waiting for its read ahead: one that has not
    started is cancelled and read by the feed itself, never waited for."""
    account = _account(store)
    release = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        pool.submit(release.wait)  # the pool's only thread, busy
        futures: list[Future[Any]] = []

        def submit(func: Callable[..., Any], *args: Any) -> Future[Any]:
            futures.append(pool.submit(func, *args))
            return futures[-1]

        lines = _walk(store, feed.ReadingAhead(store, submit), account)
        release.set()
    assert [line["universalId"] for line in lines] == [f"call-{i:02d}" for i in range(CALLS)]
    assert futures
    assert all(future.cancelled() for future in futures)


def test_a_read_ahead_is_used_only_for_its_own_question(
    store: Store, threads: ThreadPoolExecutor
) -> None:
    account = _account(store)
    reads = feed.ReadingAhead(store, lambda func, *args: _started(threads, func, *args))
    first = reads.read_changes((account,), 0, 11)  # full: the 10 after its 10th read ahead
    assert [row.universal_id for row in first] == [f"call-{i:02d}" for i in range(11)]
    again = reads.read_changes((account,), 0, 5)  # another question: not the read ahead
    assert again == first[:5]
    later = reads.read_changes((account,), again[3].seq, 5, through=first[6].seq)
    assert [row.universal_id for row in later] == ["call-04", "call-05", "call-06"]


# -- streamed reads (feed.StreamedReads): one statement for a request's batches -------------


def _pool_idle(store: Store) -> bool:
    """Every connection of a PostgreSQL store's pool is back (SQLite has no pool)."""
    pool = getattr(store, "pool", None)
    if pool is None:
        return True
    stats = pool.get_stats()
    return bool(stats["pool_available"] == stats["pool_size"])


@pytest.mark.parametrize("stream_rows", [feed.STREAM_ROWS, 7])
def test_the_lines_streamed_are_the_lines_read_in_turn(
    store: Store, threads: ThreadPoolExecutor, monkeypatch: pytest.MonkeyPatch, stream_rows: int
) -> None:
    """Also when a stream holds fewer rows than the request asks (7 here: streams follow one
    another from the last row served)."""
    account = _account(store)
    monkeypatch.setattr(feed, "STREAM_ROWS", stream_rows)
    opened: list[int] = []
    real_stream = store.stream_changes

    def stream_changes(*args: Any) -> Any:
        opened.append(args[1])
        return real_stream(*args)

    monkeypatch.setattr(store, "stream_changes", stream_changes)
    reads = feed.StreamedReads(store, threads.submit, 1000)
    streamed = _walk(store, reads, account)
    reads.close()
    assert streamed == _walk(store, store, account)
    assert [line["universalId"] for line in streamed] == [f"call-{i:02d}" for i in range(CALLS)]
    if store.dialect == "postgres":
        # The fill's batches went on from one stream, then the feed's own changes (another
        # question) from another; cut at 7 rows, each stream went on from the one before.
        last = decode(streamed[-1]["cursor"]).fill_after
        assert opened[0] == 0
        assert opened == sorted(opened)
        assert opened == [0, last] if stream_rows > CALLS else len(opened) > 4
    else:  # SQLite reads in process: nothing to stream, plain reads
        assert opened == [0]
    assert _pool_idle(store)


def test_a_change_written_while_streaming_still_comes_once(
    store: Store, threads: ThreadPoolExecutor
) -> None:
    account = _account(store)
    changed = "call-15"  # in the stream's snapshot before it changes

    def update() -> None:
        line = msgspec.json.encode(record(changed, callTime="2020-05-01 10:15:00", duration=99))
        import_bytes(store, account, line, store.settings.zone)

    reads = feed.StreamedReads(store, threads.submit, 1000)
    lines = _walk(store, reads, account, update)
    reads.close()
    states = [(line["universalId"], line["call"]["duration"]) for line in lines]
    assert len({uid for uid, _ in states}) == CALLS
    assert states[-1] == (changed, 99)  # its last state, after every other call
    assert len(states) == len(set(states))  # no state twice
    assert len(states) in (CALLS, CALLS + 1)  # its first state too, if read before the write
    assert _pool_idle(store)


def test_a_stream_that_fails_is_read_plainly_from_there(
    store: Store, threads: ThreadPoolExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream failing mid-request (a statement timeout on a slow client, a dropped
    connection): its connection is given back, and the batches go on with plain reads."""
    if store.dialect != "postgres":
        pytest.skip("only PostgreSQL streams")
    account = _account(store)
    real_stream = store.stream_changes
    streams: list[Any] = []

    class Failing:
        def __init__(self, stream: Any) -> None:
            self.stream, self.reads = stream, 0

        def next_rows(self, count: int) -> list[Any]:
            self.reads += 1
            if self.reads > 1:
                raise RuntimeError("the statement was cancelled")
            return list(self.stream.next_rows(count))

        def close(self) -> None:
            self.stream.close()

    def stream_changes(*args: Any) -> Any:
        streams.append(Failing(real_stream(*args)))
        return streams[-1]

    monkeypatch.setattr(store, "stream_changes", stream_changes)
    reads = feed.StreamedReads(store, threads.submit, 1000)
    lines = _walk(store, reads, account)
    reads.close()
    assert [line["universalId"] for line in lines] == [f"call-{i:02d}" for i in range(CALLS)]
    assert len(streams) == 1  # none after the failure
    assert _pool_idle(store)


def test_a_streamed_request_gives_its_connection_back(client: tuple[TestClient, Store]) -> None:
    """Over HTTP: a request cut by its limit (its stream closed with rows left) and one read
    to the feed's end; each gives its stream's connection back to the pool once it is sent."""
    http, store = client
    if store.dialect != "postgres":
        pytest.skip("only PostgreSQL streams")
    account = _account(store)
    key = access.issue_user_key(store, account)
    headers = {"authorization": f"Bearer {key}", "accept": "application/x-ndjson"}
    for limit in (10, 1000):
        answer = http.get("/api/v4/calls/changes", params={"limit": limit}, headers=headers)
        assert answer.status_code == 200, answer.text
        lines = [msgspec.json.decode(line) for line in answer.content.splitlines()]
        assert [line["universalId"] for line in lines[:-1]] == [
            f"call-{i:02d}" for i in range(min(limit, CALLS))
        ]
        assert lines[-1]["hasMore"] is (limit < CALLS)
        deadline = time.monotonic() + 5
        while not _pool_idle(store):
            assert time.monotonic() < deadline, "the stream's connection was not given back"
            time.sleep(0.01)
