"""The client on API v4's changes feed, against real servers: ``Client.changes``, ``calltrack
export --since-last`` merging into .jsonl and .parquet, its v3 fallback, and the SQLite mirror
example of docs/api-v4.md run as a program.

The server is the project's app served by uvicorn on a local port (a thread of the test), over
the test's store (SQLite and PostgreSQL); a server from before v4 is the same app with its v4
routes removed. Faults a real server will not make on demand (a stream cut short, a 429) come
from the scripted HTTP server of test_client_faults.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import msgspec
import pytest
import uvicorn
from click.testing import CliRunner, Result
from starlette.applications import Starlette

from calltrack.api.app import create_app
from calltrack.client import CallRecord, Client, command
from calltrack.client._client import Change
from calltrack.client._errors import CursorExpired, FeedNotOffered
from calltrack.client.writers import ParquetWriter
from calltrack.store import Store
from tests.conftest import StoreFactory, new_account
from tests.test_client import load, rich_call
from tests.test_client_faults import KEY, FakeServer, Reply, Sleeps
from tests.test_export_command import v3_only

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "docs" / "examples" / "mirror_sqlite.py"
WIDE = ("2000-01-01", "2099-12-31")  # a v3 window holding every call of these tests


class LiveServer:
    """``app`` served over HTTP on 127.0.0.1 by uvicorn, in a thread of this process."""

    def __init__(self, app: Starlette) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True
        )

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:  # a wait for start-up, not a timing assertion
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.socket.close()


class Site:
    """A live server over the test's store with one account and its key."""

    def __init__(self, store: Store, server: LiveServer) -> None:
        self.store = store
        self.server = server
        self.url = server.url
        self.account, self.key = new_account(store, "a")

    def client(self, **options: Any) -> Client:
        return Client(self.url, self.key, **options)

    def v3(self, action: str, body: bytes | None = None) -> Any:
        """A v3 write (call/put, call/delete/ID) over HTTP, checked."""
        url = f"{self.url}/api/?json/v3/{self.key}/call/{action}"
        answer = httpx2.post(url, content=body or b"").json()
        assert answer["inbound"].get("result") == "ok", answer
        return answer

    def put(self, *calls: dict[str, Any]) -> None:
        self.v3("put", b"\n".join(msgspec.json.encode(call) for call in calls))

    def delete(self, universal_id: str) -> None:
        assert self.v3(f"delete/{universal_id}")["inbound"]["deleted"] == 1

    def calls(self) -> list[CallRecord]:
        """Every call of the server, as v3 exports them (``page`` 0), by universalId."""
        with self.client() as client:
            calls = [msgspec.structs.replace(call, page=0) for call in client.iter_calls(*WIDE)]
        return sorted(calls, key=lambda call: call.universalId)

    def export(self, *args: str | Path) -> Result:
        base = ["--url", self.url, "--key", self.key, "--no-progress"]
        return CliRunner().invoke(command.export, [*base, *map(str, args)])


def serve(make_store: StoreFactory, *, v4: bool = True) -> Iterator[Site]:
    store = make_store()
    app = create_app(store.settings, store)
    with LiveServer(app if v4 else v3_only(app)) as server:
        yield Site(store, server)


@pytest.fixture
def site(make_store: StoreFactory) -> Iterator[Site]:
    yield from serve(make_store)


@pytest.fixture
def v3_site(make_store: StoreFactory) -> Iterator[Site]:
    yield from serve(make_store, v4=False)


def uid(n: int) -> str:
    return f"{10**18 + n}"


def ok(result: Result) -> Result:
    assert result.exit_code == 0, result.output + result.stderr
    return result


def changed(call: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return call | fields


def stir(site: Site, wave: int) -> tuple[set[str], set[str]]:
    """Changes of every kind between two runs: an import of new calls, call/put updates (one
    moved to another day), call/delete. (ids upserted, ids deleted)"""
    base = 100 * wave
    load(site.store, site.account, [rich_call(base + n) for n in range(4)])
    updates = [
        changed(rich_call(1), duration=1000 + wave, tags=[f"wave {wave}"]),
        changed(rich_call(2), callTime=f"2021-0{wave + 1}-02 09:00:00", status="fail"),
    ]
    site.put(*updates)
    gone = {uid(3 + wave), uid(10 + wave)}
    for universal_id in sorted(gone):
        site.delete(universal_id)
    return {uid(base + n) for n in range(4)} | {uid(1), uid(2)}, gone


def record_of(change: Change) -> CallRecord:
    assert change.call is not None
    return change.call


# -- Client.changes ----------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [True, False], ids=["ndjson", "json"])
def test_changes_walks_every_change_once_and_resumes_at_its_cursor(
    site: Site, stream: bool
) -> None:
    load(site.store, site.account, [rich_call(n) for n in range(23)])
    with site.client() as client:
        feed = client.changes(limit=5, stream=stream)  # 5 an answer: several answers
        first = list(feed)
        assert [change.op for change in first] == ["upsert"] * 23
        assert len({change.universal_id for change in first}) == 23
        assert len({change.cursor for change in first}) == 23
        assert sorted(map(record_of, first), key=lambda c: c.universalId) == site.calls()
        assert all(isinstance(change.call, CallRecord) for change in first)
        assert feed.cursor is not None

        upserted, deleted = stir(site, 1)
        feed = client.changes(feed.cursor, limit=3, stream=stream)
        second = list(feed)
        ops = {change.universal_id: change.op for change in second}
        assert len(ops) == len(second)  # no call twice (each changed once here)
        assert ops == dict.fromkeys(upserted, "upsert") | dict.fromkeys(deleted, "delete")
        now = {call.universalId: call for call in site.calls()}
        for change in second:
            if change.op == "upsert":
                assert change.call == now[change.universal_id]
                assert change.changed_at[:2] == "20"
                assert len(change.changed_at) == 19
            else:
                assert change.call is None
                assert change.universal_id not in now

        assert list(client.changes(feed.cursor, stream=stream)) == []  # nothing since


def test_a_stream_that_ends_without_its_last_line_is_asked_again_from_its_last_change() -> None:
    lines = [
        msgspec.json.encode(
            {"cursor": f"c{n}", "op": "delete", "universalId": f"id{n}", "changedAt": "x"}
        )
        for n in range(4)
    ]
    trailer = b'{"next":"c3","hasMore":false}'
    ndjson = {"content-type": "application/x-ndjson"}
    # Two lines and half a third, then the connection closes; the retry gets the rest.
    cut = b"\n".join(lines[:2]) + b"\n" + lines[2][:20]
    rest = b"\n".join([*lines[2:], trailer]) + b"\n"
    sleeps = Sleeps()
    with FakeServer() as fake:
        fake.script.extend([Reply(body=cut, headers=ndjson, length=False), Reply(body=rest)])
        fake.script[1].headers = ndjson
        with Client(fake.url, KEY, sleep=sleeps, backoff=0.01) as client:
            feed = client.changes()
            got = [change.universal_id for change in feed]
        assert got == ["id0", "id1", "id2", "id3"]  # each once
        assert feed.cursor == "c3"
        assert len(sleeps) == 1
    assert fake.requests == ["limit=100000", "after=c1&limit=100000"]


def test_a_429_is_retried_after_what_retry_after_asks() -> None:
    sleeps = Sleeps()
    page = b'{"changes":[],"next":"c9","hasMore":false}'
    problem = b'{"type":"x","title":"Too many requests","status":429,"detail":"slow down"}'
    with FakeServer() as fake:
        fake.script.extend([Reply(429, problem, {"Retry-After": "3"}), Reply(body=page)])
        with Client(fake.url, KEY, sleep=sleeps) as client:
            feed = client.changes("c1", stream=False)
            assert list(feed) == []
            assert feed.cursor == "c9"
    assert sleeps == [3.0]
    assert fake.requests == ["after=c1", "after=c1"]


def test_an_expired_cursor_is_a_clear_error_that_says_to_start_over(site: Site) -> None:
    load(site.store, site.account, [rich_call(n) for n in range(3)])
    with site.client() as client:
        old = client.changes()
        list(old)
        site.delete(uid(0))
        site.store.prune_changes(0, now=2**40)  # the delete is forgotten
        with pytest.raises(CursorExpired, match="start over from the beginning"):
            list(client.changes(old.cursor))
        assert len(list(client.changes())) == 2  # from the beginning it works


def test_a_server_without_v4_is_told_apart(v3_site: Site) -> None:
    with v3_site.client() as client, pytest.raises(FeedNotOffered, match="404"):
        next(client.changes())


# -- export --since-last on the feed -----------------------------------------------------------


def jsonl_calls(path: Path) -> list[CallRecord]:
    calls = [msgspec.json.decode(line, type=CallRecord) for line in path.read_bytes().splitlines()]
    return sorted(calls, key=lambda call: call.universalId)


def parquet_rows(path: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    rows: list[dict[str, Any]] = pq.read_table(path).to_pylist()
    return sorted(rows, key=lambda row: str(row["universalId"]))


def parquet_of(calls: list[CallRecord], path: Path) -> list[dict[str, Any]]:
    writer = ParquetWriter(path)
    writer.write(calls)
    writer.close()
    return parquet_rows(path)


def test_since_last_merges_changes_into_jsonl_and_parquet(site: Site, tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    outputs = {kind: tmp_path / f"calls.{kind}" for kind in ("jsonl", "parquet")}
    states = {kind: tmp_path / f"{kind}.state" for kind in outputs}
    load(site.store, site.account, [rich_call(n) for n in range(30)])

    def run_both() -> None:
        for kind, output in outputs.items():
            result = ok(site.export("-o", output, "--since-last", states[kind]))
            assert "merged" in result.stdout
            assert "(the changes feed's cursor)" in result.stdout
            assert "cursor" in json.loads(states[kind].read_text())

    def check() -> None:
        expected = site.calls()
        assert jsonl_calls(outputs["jsonl"]) == expected
        assert parquet_rows(outputs["parquet"]) == parquet_of(expected, tmp_path / "want.pq")
        assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]

    run_both()
    check()
    order = [json.loads(line)["universalId"] for line in outputs["jsonl"].read_text().splitlines()]
    for wave in (1, 2):
        stir(site, wave)
        run_both()
        check()
    lines = outputs["jsonl"].read_text().splitlines()
    now = [json.loads(line)["universalId"] for line in lines]
    kept = [universal_id for universal_id in order if universal_id in set(now)]
    assert now[: len(kept)] == kept  # updated calls stayed where they were, new ones follow
    before = {kind: output.read_bytes() for kind, output in outputs.items()}
    result = ok(site.export("-o", outputs["jsonl"], "--since-last", states["jsonl"]))
    assert "merged 0 changes" in result.stdout
    assert outputs["jsonl"].read_bytes() == before["jsonl"]


def test_since_last_on_the_feed_keeps_the_window_of_its_first_run(
    site: Site, tmp_path: Path
) -> None:
    load(site.store, site.account, [rich_call(n) for n in range(5)])  # 2020-05-01
    load(site.store, site.account, [rich_call(50, "2020-06-01 10:00:00")])
    out, state = tmp_path / "may.jsonl", tmp_path / "may.state"
    may = ("--from", "2020-05-01", "--to", "2020-05-31")
    ok(site.export(*may, "-o", out, "--since-last", state))
    assert [c.universalId for c in jsonl_calls(out)] == [uid(n) for n in range(5)]
    site.put(changed(rich_call(1), callTime="2020-06-02 10:00:00"))  # leaves May
    site.put(changed(rich_call(50), callTime="2020-05-20 10:00:00"))  # comes into May
    ok(site.export("-o", out, "--since-last", state))  # the window is in the state
    assert [c.universalId for c in jsonl_calls(out)] == [uid(n) for n in (0, 2, 3, 4, 50)]


def test_an_expired_cursor_fails_the_export_and_says_what_to_do(site: Site, tmp_path: Path) -> None:
    load(site.store, site.account, [rich_call(n) for n in range(3)])
    out, state = tmp_path / "calls.jsonl", tmp_path / "state"
    ok(site.export("-o", out, "--since-last", state))
    before = (out.read_bytes(), state.read_bytes())
    site.delete(uid(0))
    site.store.prune_changes(0, now=2**40)
    failed = site.export("-o", out, "--since-last", state)
    assert failed.exit_code == 1
    assert f"remove {state} and run again" in failed.stderr
    assert (out.read_bytes(), state.read_bytes()) == before  # nothing half done
    state.unlink()
    ok(site.export("-o", out, "--since-last", state))
    assert jsonl_calls(out) == site.calls()


def test_other_formats_keep_v3_windows_and_a_feed_state_is_not_used_for_them(
    site: Site, tmp_path: Path
) -> None:
    load(site.store, site.account, [rich_call(n) for n in range(3)])
    csv_state = tmp_path / "csv.state"
    ok(site.export("--from", "2020-05-01", "-o", tmp_path / "a.csv", "--since-last", csv_state))
    assert "watermark" in json.loads(csv_state.read_text())
    feed_state = tmp_path / "feed.state"
    ok(site.export("-o", tmp_path / "a.jsonl", "--since-last", feed_state))
    failed = site.export("-o", tmp_path / "b.csv", "--since-last", feed_state)
    assert failed.exit_code == 1
    assert "merges into .jsonl and .parquet outputs only" in failed.stderr


def test_since_last_falls_back_to_v3_windows_on_a_server_without_v4(
    v3_site: Site, tmp_path: Path
) -> None:
    site = v3_site
    state = tmp_path / "state"
    load(site.store, site.account, [rich_call(n) for n in range(5)])
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    result = ok(site.export("--from", "2020-05-01", "-o", first, "--since-last", state))
    assert "exported 5 calls" in result.stdout
    saved = json.loads(state.read_text())
    assert "cursor" not in saved
    assert saved["watermark"]["ids"] == [uid(4)]
    load(site.store, site.account, [rich_call(9, "2020-05-02 10:00:00")])
    ok(site.export("-o", second, "--since-last", state))
    assert [json.loads(line)["universalId"] for line in second.read_text().splitlines()] == [
        uid(9)
    ]  # appended windows: only what is new


# -- the SQLite mirror of docs/api-v4.md -------------------------------------------------------


def run_example(site: Site, database: Path) -> str:
    env = {**os.environ, "CALLTRACK_API_KEY": site.key}
    args = ["--url", site.url, "--db", str(database), "--page-size", "50"]
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def mirrored(database: Path) -> dict[str, dict[str, Any]]:
    import sqlite3

    with sqlite3.connect(database) as db:
        rows = db.execute("SELECT universal_id, record, call_time FROM calls").fetchall()
        cursor = db.execute("SELECT value FROM mirror_state WHERE name = 'cursor'").fetchone()
    assert cursor is not None
    assert cursor[0]
    records = {}
    for universal_id, record, call_time in rows:
        parsed = json.loads(record)
        assert (parsed["universalId"], parsed["callTime"]) == (universal_id, call_time)
        records[universal_id] = parsed
    return records


def source(site: Site) -> dict[str, dict[str, Any]]:
    records = {}
    for call in site.calls():
        record = msgspec.to_builtins(call)
        del record["page"]
        records[call.universalId] = record
    return records


def test_the_sqlite_mirror_example_equals_the_source_after_each_run(
    site: Site, tmp_path: Path
) -> None:
    database = tmp_path / "mirror.db"
    load(site.store, site.account, [rich_call(n) for n in range(120)])  # pages of 50
    assert "mirrored 120 upserts and 0 deletes" in run_example(site, database)
    assert mirrored(database) == source(site)
    for wave in (1, 2):
        stir(site, wave)
        run_example(site, database)
        assert mirrored(database) == source(site)
    assert "mirrored 0 upserts and 0 deletes" in run_example(site, database)


def test_the_test_of_the_mirror_can_fail(site: Site, tmp_path: Path) -> None:
    """The comparison above sees a call the mirror missed."""
    database = tmp_path / "mirror.db"
    load(site.store, site.account, [rich_call(n) for n in range(3)])
    run_example(site, database)
    load(site.store, site.account, [rich_call(7)])
    assert mirrored(database) != source(site)
