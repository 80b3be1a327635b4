"""Several clients walk the pages of overlapping windows at once while calls are written.

The paging rules (docs/api.md, "Paging"): every walk (page 0 until `Incorrect page is set`)
returns each call that existed, unchanged, from its first page to its last exactly once; a call
written during the walk at most once, in a state it had; callTimes never go back. Here walkers
run in threads over real HTTP (`calltrack serve`, small pages; with --postgres two `serve`
processes on one private PostgreSQL, each page sent to either): two of them walk the same key and
window, one a second key of the same account, one `getWithRole` of an account granted a role over
the first, one a role key, one a window inside the others. Meanwhile `calltrack import`
subprocesses add batches (before, inside and after the window, on its first and last second, and
on seconds of calls already there), and `call/put` and `call/delete` change and remove calls.

Every write is timed (from before it is sent to after it is answered), so for each walk the calls
that existed unchanged through it are known exactly; writes in flight count as changes.

    .venv/bin/python tests/faults/export_while_import.py              # full: walks for 60 s
    .venv/bin/python tests/faults/export_while_import.py --quick      # what CI runs
    .venv/bin/python tests/faults/export_while_import.py --postgres   # on a private PostgreSQL

Prints the measurements as JSON; exits 1 if an expectation failed. Bounded in time; the
servers, the writers and any cluster are stopped and the temp dir removed on any exit.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

try:
    from tests.faults import _common as common
except ModuleNotFoundError:  # run as a file: python tests/faults/export_while_import.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root
    from tests.faults import _common as common

from calltrack.demo_data import generate_calls

PAGE_SIZE = 50
FIRST, LAST = "2020-04-01 00:00:00", "2020-04-30 23:59:59"  # the outer window, service zone
INNER_FIRST, INNER_LAST = "2020-04-10 00:00:00", "2020-04-20 23:59:59"
MAX_PAGES = 10_000  # a walk that never ends is a failure, not a hang


@dataclass
class Write:
    """One write of one call, timed on the monotonic clock around its request."""

    uid: str
    kind: str  # "insert", "update" or "delete"
    started: float
    ended: float
    call_time: str
    ok: bool = False


@dataclass
class History:
    """Every write of the run, shared by the writers and read by the checks."""

    writes: list[Write] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, writes: list[Write]) -> None:
        with self.lock:
            self.writes += writes

    def of(self) -> dict[str, list[Write]]:
        with self.lock:
            done = [w for w in self.writes if w.ok]
        by_uid: dict[str, list[Write]] = {}
        for write in sorted(done, key=lambda w: w.started):
            by_uid.setdefault(write.uid, []).append(write)
        return by_uid


def request(port: int, method: str, target: str, body: bytes | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, target, body=body)
        response = conn.getresponse()
        return response.status, response.read()
    except (OSError, http.client.HTTPException) as exc:
        return 0, repr(exc).encode()
    finally:
        conn.close()


class Writers:
    """Imports in subprocesses, and puts and deletes over HTTP, back to back until closed."""

    def __init__(
        self, database: str, work: Path, ports: list[int], key: str, seed: int, history: History
    ) -> None:
        self.database, self.work, self.ports, self.key = database, work, ports, key
        self.rng = random.Random(seed)
        self.history = history
        self.records: dict[str, dict[str, Any]] = {}  # the current state of every live call
        self.failures: list[str] = []
        self.counts: Counter[str] = Counter()
        self._closed = threading.Event()
        self._process: subprocess.Popen[bytes] | None = None
        self._threads = [
            threading.Thread(target=self._imports, daemon=True),
            threading.Thread(target=self._changes, daemon=True),
        ]

    def seed_with(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            self.records[str(record["universalId"])] = record
        self.history.add(
            [
                Write(str(r["universalId"]), "insert", 0.0, 0.0, str(r["callTime"]), True)
                for r in records
            ]
        )

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def close(self) -> None:
        self._closed.set()
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
        for thread in self._threads:
            thread.join(timeout=150)

    def _batch(self, number: int) -> list[dict[str, Any]]:
        records = list(
            generate_calls(
                40,
                seed=1000 + number,
                id_prefix=f"9{number:05d}",
                now=datetime(2020, 5, 20),
                days=60,
            )
        )
        existing = [str(r["callTime"]) for r in list(self.records.values())[:500]]
        for record in records:
            r = self.rng.random()
            if r < 0.3 and existing:  # the same second as a call already there
                record["callTime"] = self.rng.choice(existing)
            elif r < 0.4:
                record["callTime"] = self.rng.choice((FIRST, LAST, INNER_FIRST, INNER_LAST))
        return records

    def _imports(self) -> None:
        number = 0
        while not self._closed.is_set():
            number += 1
            records = self._batch(number)
            path = self.work / f"batch-{number}.jsonl"
            path.write_bytes(b"\n".join(msgspec.json.encode(r) for r in records) + b"\n")
            command = [common.CALLTRACK, "--database", self.database]
            command += ["import", str(path), "--account", "walker"]
            started = time.monotonic()
            self._process = subprocess.Popen(
                command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
            try:
                _, err = self._process.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                self._process.kill()
                _, err = self._process.communicate()
            ok = self._process.returncode == 0
            # A killed or failed import may still have committed: its calls count as changed
            # from its start on, whatever came of it.
            writes = [
                Write(
                    str(r["universalId"]),
                    "insert",
                    started,
                    time.monotonic(),
                    str(r["callTime"]),
                    True,
                )
                for r in records
            ]
            self.history.add(writes)
            if ok:
                self.counts["imports"] += 1
                for record in records:
                    self.records[str(record["universalId"])] = record
            elif not self._closed.is_set():  # killed by close() is not a failure
                self.failures.append(err.decode(errors="replace").strip()[-300:])

    def _changes(self) -> None:
        while not self._closed.is_set():
            time.sleep(0.02)
            uids = sorted(self.records)
            if not uids:
                continue
            uid = self.rng.choice(uids)
            record = self.records[uid]
            port = self.rng.choice(self.ports)
            started = time.monotonic()
            if self.rng.random() < 0.7:  # call/put: the same call, another duration
                changed = {**record, "duration": self.rng.randrange(10_000)}
                body = msgspec.json.encode([changed])
                status, answer = request(port, "POST", f"/api/?json/v3/{self.key}/call/put", body)
                kind = "update"
            else:
                status, answer = request(
                    port, "DELETE", f"/api/?json/v3/{self.key}/call/delete/{uid}"
                )
                kind = "delete"
            write = Write(uid, kind, started, time.monotonic(), str(record["callTime"]), True)
            self.history.add([write])  # in flight counts as a change, whatever the answer
            if status != 200 or b'"error"' in answer:
                self.failures.append(f"{kind} {uid}: HTTP {status} {answer[:200]!r}")
                continue
            self.counts[kind + "s"] += 1
            if kind == "update":
                self.records[uid] = changed
            else:
                del self.records[uid]


@dataclass
class Walker:
    name: str
    key: str
    method: str  # every walker's key sees the calls of "walker" (and no other)
    first: str
    last: str

    def target(self, page: int) -> str:
        return (
            f"/api/?json/v3/{self.key}/call/{self.method}/{page}/{self.first[:10]}/{self.last[:10]}"
        )


def walk(walker: Walker, ports: list[int], rng: random.Random, pause: float) -> dict[str, Any]:
    """Every page of the walker's window in order, hopping between servers."""
    calls: list[dict[str, Any]] = []
    started = time.monotonic()
    ended = "the walk did not end"
    for page in range(MAX_PAGES):
        status, body = request(rng.choice(ports), "GET", walker.target(page))
        if status != 200:
            ended = f"HTTP {status} on page {page}"
            break
        answer = json.loads(body)
        if isinstance(answer, dict):
            ended = str(answer.get("inbound", {}).get("error"))
            break
        calls += answer
        time.sleep(rng.uniform(0, pause))
    return {
        "walker": walker.name,
        "started": started,
        "ended_at": time.monotonic(),
        "ended": ended,
        "calls": calls,
    }


def check_walk(
    walk: dict[str, Any], walker: Walker, history: dict[str, list[Write]]
) -> dict[str, Any]:
    started, ended_at = walk["started"], walk["ended_at"]
    ids = [str(c["universalId"]) for c in walk["calls"]]
    times = [str(c["callTime"]) for c in walk["calls"]]
    problems = []
    if walk["ended"] != "Incorrect page is set":
        problems.append(f"the walk ended with {walk['ended']!r}, not the past-the-end error")
    counts = Counter(ids)
    if twice := [uid for uid, n in counts.items() if n > 1]:
        problems.append(f"{len(twice)} calls returned twice, e.g. {twice[0]}")
    stable, possible = set(), set()
    for uid, writes in history.items():
        inside = walker.first <= writes[0].call_time <= walker.last  # callTimes never change here
        if not inside:
            continue
        created = writes[0]
        later = writes[1:]
        if created.ended < started and not any(w.started < ended_at for w in later):
            stable.add(uid)
        deleted_before = any(w.kind == "delete" and w.ended < started for w in later)
        if created.started < ended_at and not deleted_before:
            possible.add(uid)
    if missing := stable - set(ids):
        problems.append(f"{len(missing)} calls unchanged through the walk never returned")
    if extra := set(ids) - possible:
        problems.append(f"{len(extra)} calls returned that did not exist during the walk")
    if times != sorted(times):
        problems.append("calls not in callTime order")
    written = sum(
        1 for ws in history.values() for w in ws if started < w.ended and w.started < ended_at
    )
    return {
        "walker": walker.name,
        "calls_unchanged_through": len(stable),
        "calls_returned": len(ids),
        "writes_during_walk": written,
        "problems": problems,
    }


def run(quick: bool, postgres: bool = False, seed: int | None = None) -> dict[str, Any]:
    """Walk while writing; the result holds each walk's findings, ``problems`` and ``ok``."""
    seed = random.randrange(10**6) if seed is None else seed
    duration = 6.0 if quick else 60.0  # seconds of walking (walks under way are finished)
    pause = 0.05 if quick else 0.2  # at most this many seconds between pages
    result: dict[str, Any] = {
        "scenario": "export_while_import",
        "quick": quick,
        "backend": "postgres" if postgres else "sqlite",
        "seed": seed,
    }
    walks: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        work = stack.enter_context(common.temp_dir("calltrack-walk-"))
        try:
            database, _ = common.started_database(stack, work, postgres)
        except FileNotFoundError as exc:
            return {**result, "ok": False, "skipped": str(exc)}
        key = str(common.cli(database, "account", "add", "walker")["api_key"])
        second_key = str(common.cli(database, "key", "issue", "walker")["api_key"])
        agency_key = str(common.cli(database, "account", "add", "agency")["api_key"])
        role = str(common.cli(database, "role", "add", "walker", "export")["id"])
        role_key = str(common.cli(database, "role", "grant", role, "agency")["api_key"])
        first = list(generate_calls(2500, seed=31, id_prefix="3", now=datetime(2020, 6, 1)))
        initial = work / "initial.jsonl"
        initial.write_bytes(b"\n".join(msgspec.json.encode(r) for r in first) + b"\n")
        common.cli(database, "import", str(initial), "--account", "walker")
        env = {"CALLTRACK_PAGE_SIZE": str(PAGE_SIZE)}
        servers = [common.Server(database, work / "server.log", env=env)]
        if postgres:  # two services on one database; a walk hops between them
            servers.append(common.Server(database, work / "server2.log", env=env))
        for server in servers:
            stack.callback(server.stop)
        ports = [server.port for server in servers]
        history = History()
        writers = Writers(database, work, ports, key, seed, history)
        writers.seed_with(first)
        walkers = [
            Walker("key A, get", key, "get", FIRST, LAST),
            Walker("key A again, get", key, "get", FIRST, LAST),
            Walker("key B of the same account", second_key, "get", FIRST, LAST),
            Walker("agency, getWithRole", agency_key, "getWithRole", FIRST, LAST),
            Walker("agency's role key, getByRole", role_key, "getByRole", FIRST, LAST),
            Walker("key A, a window inside", key, "get", INNER_FIRST, INNER_LAST),
        ]
        writers.start()
        stack.callback(writers.close)
        ends = time.monotonic() + duration
        lock = threading.Lock()

        def loop(walker: Walker, number: int) -> None:
            rng = random.Random(seed * 100 + number)
            while True:
                done = walk(walker, ports, rng, pause)
                with lock:
                    walks.append(done)
                if time.monotonic() >= ends:
                    return

        threads = [
            threading.Thread(target=loop, args=(w, n), daemon=True) for n, w in enumerate(walkers)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=600)
        writers.close()
        by_uid = history.of()
        by_name = {w.name: w for w in walkers}
        checked = [check_walk(w, by_name[w["walker"]], by_uid) for w in walks]

    problems = [
        f"walk {i} ({w['walker']}): {p}" for i, w in enumerate(checked) for p in w.pop("problems")
    ]
    if writers.failures:
        problems.append(f"{len(writers.failures)} writes failed: {writers.failures[0]}")
    if sum(1 for w in checked if w["writes_during_walk"] > 0) < len(walkers):
        problems.append("too few walks ran while calls were written: nothing was tested")
    result.update(
        servers=len(ports),
        walks=len(checked),
        walks_per_walker=dict(Counter(w["walker"] for w in checked)),
        calls_returned=sum(w["calls_returned"] for w in checked),
        writes=dict(writers.counts),
        problems=problems,
        ok=not problems,
    )
    return result


if __name__ == "__main__":
    common.main(
        run,
        __doc__,
        postgres=(bool, "on a private PostgreSQL, with two servers"),
        seed=(int, "repeat the written batches of a run"),
    )
