"""The SQLite file locked, then moved away, under a running `calltrack serve`.

What "locked" means in WAL mode: readers never wait for a writer, so a lock cannot stop
plain reads. What another process can hold is the write lock (``BEGIN EXCLUSIVE``, the same as
``BEGIN IMMEDIATE`` in WAL; ``PRAGMA locking_mode=EXCLUSIVE`` cannot even be taken while the
server has the file open). An API read records page marks (where a walk's pages start), but
those writes are optional: while another process holds the write lock the server goes without
them. So during the lock every answer must still be the right page, and quickly (a documented
503 would be allowed, but should not be needed).

"Missing" means the database file (and its -wal and -shm) renamed away under the server; the
server must answer 503 (not pages from a file that is no longer there, not empty pages), and
serve again by itself once the files are back.

Two threads send requests back to back: page 0 of a window that is new each time (so it
needs the write lock) and page 0/1 of a window walked before (which may not). Every answer
must be the page it was before the fault, byte for byte, or the documented 503.

    .venv/bin/python tests/faults/sqlite_faults.py            # full: each fault held 10 s
    .venv/bin/python tests/faults/sqlite_faults.py --quick    # what CI runs

Prints the measurements as JSON; exits 1 if an expectation failed. Bounded (about a minute
quick); the server and the lock holder are stopped and the temp dir removed on any exit.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

try:
    from tests.faults import _common as common
except ModuleNotFoundError:  # run as a file: python tests/faults/sqlite_faults.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root
    from tests.faults import _common as common

MAX_SECONDS_TO_503 = 1.0
MAX_SECONDS_TO_RECOVER = 5.0
PAGE_SIZE = 50
# Holds the write lock until its stdin closes.
HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()
conn.execute("ROLLBACK")
"""
SIDE_FILES = ("", "-wal", "-shm")
# 2021-01-01 00:00:00 UTC: after every call of the scenario, so every window ending near it
# holds the same calls and its page 0 is the same bytes.
LATE = 1609459200


def run(quick: bool) -> dict[str, Any]:
    """Run both faults; the result holds the measurements per fault, ``problems`` and ``ok``."""
    hold = 1.0 if quick else 10.0  # seconds each fault is kept after the first 503
    result: dict[str, Any] = {"scenario": "sqlite_faults", "quick": quick}
    with contextlib.ExitStack() as stack:
        work = stack.enter_context(common.temp_dir("calltrack-sqlite-faults-"))
        path = work / "served.db"
        database = f"sqlite:///{path}"
        key = str(common.cli(database, "account", "add", "faults")["api_key"])
        calls = work / "calls.jsonl"
        common.write_calls(calls, 200, seed=5, prefix="5", now=datetime(2020, 6, 1), days=60)
        common.cli(database, "import", str(calls), "--account", "faults")
        server = common.Server(
            database, work / "server.log", env={"CALLTRACK_PAGE_SIZE": str(PAGE_SIZE)}
        )
        stack.callback(server.stop)

        walked = [f"/api/?json/v3/{key}/call/get/{page}/2020-01-01/{LATE}" for page in (0, 1)]
        expected = {target: common.get(server.port, target).body for target in walked}
        for body in expected.values():
            common.require(body.startswith(b'[{"page":'), f"no page before the fault: {body!r}")

        def pick(i: int) -> tuple[str, bytes | None]:
            if i % 2:
                target = walked[i // 2 % 2]
                return target, expected[target]
            # A window never asked before: its page 0 has to record a new walk.
            return f"/api/?json/v3/{key}/call/get/0/2020-01-01/{LATE - i}", expected[walked[0]]

        with common.Driver(server.port, pick, threads=2) as driver:
            time.sleep(1.0)
            holder = subprocess.Popen(
                [sys.executable, "-c", HOLDER, str(path)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                start_new_session=True,
            )
            stack.callback(common.stop_group, holder, 5)
            assert holder.stdout is not None
            stack.callback(holder.stdout.close)
            assert holder.stdin is not None
            common.require(holder.stdout.readline().strip() == b"locked", "no lock taken")
            locked = fault(driver, time.monotonic(), hold, expect_503=False)
            holder.stdin.close()
            holder.wait(timeout=30)
            released = time.monotonic()
            locked["seconds_to_recover"] = recover(driver, released, walked)

            time.sleep(1.0)
            moved = time.monotonic()
            for suffix in SIDE_FILES:
                source = Path(f"{path}{suffix}")
                if source.exists():
                    source.rename(f"{path}{suffix}.away")
            missing = fault(driver, moved, hold)
            for suffix in SIDE_FILES:
                away = Path(f"{path}{suffix}.away")
                if away.exists():
                    away.rename(f"{path}{suffix}")
            restored = time.monotonic()
            missing["seconds_to_recover"] = recover(driver, restored, walked)
            time.sleep(1.0)
        answers = driver.snapshot()
        server.stop()
        log = server.log.read_text(errors="replace")

    gone = [a for a, _ in answers if moved + MAX_SECONDS_TO_503 <= a.sent and a.received < restored]
    missing["pages_served_while_the_file_was_gone"] = sum(a.status == 200 for a in gone)
    wrong = [f"{a.target}: {w}" for a, e in answers if (w := common.judge(a, e)) is not None]
    result.update(
        requests=len(answers),
        statuses=common.summary(answers),
        locked=locked,
        missing=missing,
        wrong_answers=len(wrong),
        wrong_examples=wrong[:5],
        tracebacks_in_log=log.count("Traceback"),
    )
    problems = []
    if wrong:
        problems.append(f"{len(wrong)} answers neither the page nor a documented 503")
    for name, phase in (("locked", locked), ("missing", missing)):
        problems += [f"{name}: {p}" for p in judge_phase(phase)]
    if missing["pages_served_while_the_file_was_gone"]:
        problems.append(
            f"missing: {missing['pages_served_while_the_file_was_gone']} pages served from a "
            "database file that had been moved away"
        )
    if result["tracebacks_in_log"]:
        problems.append(f"{result['tracebacks_in_log']} tracebacks in the server log")
    result["problems"] = problems
    result["ok"] = not problems
    return result


def fault(
    driver: common.Driver, began: float, hold: float, *, expect_503: bool = True
) -> dict[str, Any]:
    """Measure a fault that began at ``began``: the first 503, then ``hold`` more seconds."""
    if not expect_503:  # hold the fault, then note any 503 that came anyway
        time.sleep(hold)
    limit = 15.0 if expect_503 else time.monotonic() - began + 0.05
    to_503 = driver.wait_for(lambda a: a.status == 503, since=began, limit=limit)
    if expect_503:
        time.sleep(hold)
    during = [a for a, _ in driver.snapshot() if a.sent >= began]
    return {
        "seconds_to_first_503": None if to_503 is None else round(to_503, 3),
        "slowest_answer_seconds": round(max((a.latency for a in during), default=0.0), 3),
        "statuses": common.summary((a, None) for a in during),
        "expect_503": expect_503,
    }


def recover(driver: common.Driver, since: float, walked: list[str]) -> float | None:
    """Seconds until a page of a new walk (which needs to write) is served again."""
    to_200 = driver.wait_for(
        lambda a: a.status == 200 and a.target not in walked, since=since, limit=30
    )
    return None if to_200 is None else round(to_200, 3)


def judge_phase(phase: dict[str, Any]) -> list[str]:
    problems = []
    to_503 = phase["seconds_to_first_503"]
    if phase["expect_503"] and (to_503 is None or to_503 > MAX_SECONDS_TO_503):
        problems.append(f"first 503 after {to_503} s (want <= {MAX_SECONDS_TO_503})")
    if phase["slowest_answer_seconds"] > MAX_SECONDS_TO_503:
        problems.append(f"an answer took {phase['slowest_answer_seconds']} s")
    recovered = phase["seconds_to_recover"]
    if recovered is None or recovered > MAX_SECONDS_TO_RECOVER:
        problems.append(f"pages back after {recovered} s (want <= {MAX_SECONDS_TO_RECOVER})")
    return problems


if __name__ == "__main__":
    common.main(run, __doc__)
