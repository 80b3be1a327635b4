"""Walking every page of a fixed past window while new calls are imported into and around it.

The spec's stability rule (API.md section 4): with a fixed ``to`` in the past, walking pages
0, 1, 2 ... returns every call of the window exactly once, even while other calls are being
imported. Here a reader walks the pages of April 2020 over real HTTP (`calltrack serve`, two
workers, small pages) while another process after another runs `calltrack import` with new
calls: before, inside and after the window, on its first and last second, and on the very
second of calls already there (ties broken by the internal order).

Imports are paused only while page 0 is read, so the calls that "existed at the start" are
known exactly; they run between all other pages. Every walk must return exactly those calls,
each once, in callTime order.

    .venv/bin/python tests/faults/export_while_import.py              # full: walks for 60 s
    .venv/bin/python tests/faults/export_while_import.py --quick      # what CI runs
    .venv/bin/python tests/faults/export_while_import.py --postgres   # on a private PostgreSQL

Prints the measurements as JSON; exits 1 if an expectation failed. Bounded in time; the
server, the importer and any cluster are stopped and the temp dir removed on any exit.
"""

from __future__ import annotations

import contextlib
import json
import random
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

try:
    from tests.faults import _common as common
except ModuleNotFoundError:  # run as a file: python tests/faults/export_while_import.py
    import _common as common  # type: ignore[no-redef, import-not-found]

from calltrack.demo_data import generate_calls

PAGE_SIZE = 50
FIRST, LAST = "2020-04-01 00:00:00", "2020-04-30 23:59:59"  # the window, in the service zone
WINDOW = "2020-04-01/2020-04-30"
MAX_PAGES = 10_000  # a walk that never ends is a failure, not a hang


class Importer:
    """Runs `calltrack import` of new batches back to back in subprocesses, until closed.

    ``pause()`` returns once no import is running; ``resume()`` lets them go on.
    """

    def __init__(self, database: str, work: Path, existing: list[str], seed: int) -> None:
        self.database = database
        self.work = work
        self.rng = random.Random(seed)
        self.times = existing  # callTimes new calls may share
        self.imported: list[dict[str, Any]] = []  # records of imports that succeeded
        self.failures: list[str] = []
        self.batches = 0  # started
        self.done = 0  # succeeded
        self._pending: list[dict[str, Any]] = []
        self._go = threading.Event()
        self._idle = threading.Event()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._process: subprocess.Popen[bytes] | None = None

    def _batch(self) -> Path:
        self.batches += 1
        records = list(
            generate_calls(
                40,
                seed=1000 + self.batches,
                id_prefix="9",
                now=datetime(2020, 5, 20),
                days=60,
            )
        )
        for record in records:
            r = self.rng.random()
            if r < 0.3:  # the same second as a call already there
                record["callTime"] = self.rng.choice(self.times)
            elif r < 0.4:
                record["callTime"] = self.rng.choice((FIRST, LAST))
        path = self.work / f"batch-{self.batches}.jsonl"
        path.write_bytes(b"\n".join(msgspec.json.encode(r) for r in records) + b"\n")
        self._pending = records
        return path

    def _loop(self) -> None:
        while not self._closed.is_set():
            self._idle.set()
            self._go.wait()
            if self._closed.is_set():
                return
            self._idle.clear()
            path = self._batch()
            command = [common.CALLTRACK, "--database", self.database]
            command += ["import", str(path), "--account", "walker"]
            self._process = subprocess.Popen(
                command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
            try:
                _, err = self._process.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                self._process.kill()
                _, err = self._process.communicate()
            if self._process.returncode == 0:
                with self._lock:
                    self.imported += self._pending
                    self.done += 1
            elif not self._closed.is_set():  # killed by close() is not a failure
                self.failures.append(err.decode(errors="replace").strip()[-300:])

    def start(self) -> None:
        self._thread.start()

    def pause(self) -> None:
        self._go.clear()
        self._idle.wait(timeout=150)

    def resume(self) -> None:
        self._go.set()

    def close(self) -> None:
        self._closed.set()
        self._go.set()
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
        self._thread.join(timeout=150)

    def records(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.imported)


def in_window(records: list[dict[str, Any]]) -> set[str]:
    # Same zone and the same fixed-width format: text order is time order.
    return {str(r["universalId"]) for r in records if FIRST <= str(r["callTime"]) <= LAST}


def walk(
    port: int, key: str, pause: float, after_page_0: Callable[[], None]
) -> tuple[list[dict[str, Any]], str]:
    """Every page of the window in order: the calls, and the error that ended the walk."""
    calls: list[dict[str, Any]] = []
    for page in range(MAX_PAGES):
        answer = common.get(port, f"/api/?json/v3/{key}/call/get/{page}/{WINDOW}")
        if page == 0:
            after_page_0()
        if answer.status != 200:
            return calls, f"HTTP {answer.status} on page {page}"
        body = json.loads(answer.body)
        if isinstance(body, dict):
            return calls, str(common.error_of(answer.body))
        calls += body
        if len(body) != PAGE_SIZE:  # the last page: the next one must be past the end
            answer = common.get(port, f"/api/?json/v3/{key}/call/get/{page + 1}/{WINDOW}")
            return calls, str(common.error_of(answer.body) or answer.body[:100])
        time.sleep(pause)
    return calls, "the walk did not end"


def run(quick: bool, postgres: bool = False, seed: int | None = None) -> dict[str, Any]:
    """Walk while importing; the result holds each walk's findings, ``problems`` and ``ok``."""
    seed = random.randrange(10**6) if seed is None else seed
    duration = 4.0 if quick else 60.0  # seconds of walking (the last walk is finished)
    pause = 0.1 if quick else 0.2  # seconds between pages, so imports land between them
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
        first = list(generate_calls(2500, seed=31, id_prefix="3", now=datetime(2020, 6, 1)))
        initial = work / "initial.jsonl"
        initial.write_bytes(b"\n".join(msgspec.json.encode(r) for r in first) + b"\n")
        common.cli(database, "import", str(initial), "--account", "walker")
        existing = sorted(str(r["callTime"]) for r in first if FIRST <= str(r["callTime"]) <= LAST)
        server = common.Server(
            database, work / "server.log", env={"CALLTRACK_PAGE_SIZE": str(PAGE_SIZE)}
        )
        stack.callback(server.stop)
        importer = Importer(database, work, existing, seed)
        importer.start()
        stack.callback(importer.close)

        ends = time.monotonic() + duration
        while time.monotonic() < ends or not walks:
            importer.pause()
            expected = in_window(first) | in_window(importer.records())
            batches = importer.batches
            calls, ended = walk(server.port, key, pause, importer.resume)
            walks.append(check_walk(calls, ended, expected, importer.batches - batches))
        importer.close()
        failures = importer.failures

    problems = [f"walk {i}: {p}" for i, w in enumerate(walks) for p in w.pop("problems")]
    if failures:
        problems.append(f"{len(failures)} imports failed: {failures[0]}")
    result.update(walks=walks, imports=importer.done, import_failures=failures)
    result["problems"] = problems
    result["ok"] = not problems
    return result


def check_walk(
    calls: list[dict[str, Any]], ended: str, expected: set[str], imports: int
) -> dict[str, Any]:
    ids = [str(c["universalId"]) for c in calls]
    times = [str(c["callTime"]) for c in calls]
    problems = []
    if ended != "Incorrect page is set":
        problems.append(f"the walk ended with {ended!r}, not the past-the-end error")
    if len(set(ids)) != len(ids):
        problems.append(f"{len(ids) - len(set(ids))} calls returned twice")
    if missing := expected - set(ids):
        problems.append(f"{len(missing)} calls of the window never returned")
    if extra := set(ids) - expected:
        problems.append(f"{len(extra)} calls returned that were not there at the start")
    if times != sorted(times):
        problems.append("calls not in callTime order")
    if imports < 2:
        problems.append(f"only {imports} imports ran during the walk: nothing was tested")
    return {
        "calls_expected": len(expected),
        "calls_returned": len(ids),
        "pages": -(-len(ids) // PAGE_SIZE),
        "imports_during_walk": imports,
        "problems": problems,
    }


if __name__ == "__main__":
    common.main(
        run,
        __doc__,
        postgres=(bool, "on a private PostgreSQL"),
        seed=(int, "repeat the imported batches of a run"),
    )
