"""PostgreSQL stopped under a running `calltrack serve`: 503 with Retry-After, then recovery.

A PRIVATE cluster is created for the run (initdb into a temp dir, its own port and socket
dir; as root its commands run as the ``postgres`` user). The machine's own PostgreSQL is never
touched. `calltrack serve --workers 2` runs on it while two threads send page requests back to
back. Then ``pg_ctl stop -m fast``; the scenario measures how long until answers are 503 with
``Retry-After`` (and how long a 503 takes), keeps the database down a while, starts it again,
and measures how long until pages come back, with no restart of the service.

Every answer is judged: the page it was before the outage, byte for byte, or the documented
503. The service must not need a restart.

    .venv/bin/python tests/faults/pg_outage.py            # full: 15 s outage
    .venv/bin/python tests/faults/pg_outage.py --quick    # what CI runs (tests/test_faults.py)
    .venv/bin/python tests/faults/pg_outage.py --down 60  # a longer outage

Prints the measurements as JSON; exits 1 if an expectation failed. Bounded: at most about a
minute (quick) or two (full); the server and the cluster are stopped and deleted on any exit.
"""

from __future__ import annotations

import contextlib
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

try:
    from tests.faults import _common as common
except ModuleNotFoundError:  # run as a file: python tests/faults/pg_outage.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root
    from tests.faults import _common as common

# What the issue asks for.
MAX_SECONDS_TO_503 = 1.0
MAX_SECONDS_TO_RECOVER = 5.0
PAGE_SIZE = 50


def run(quick: bool, down: float | None = None) -> dict[str, Any]:
    """Run the scenario; the result holds the measurements, ``problems`` and ``ok``.

    ``down``: seconds the database stays down after the first 503 (2 quick, 15 full).
    """
    steady = 1.0 if quick else 5.0  # seconds of normal traffic before and after
    down = down if down is not None else 2.0 if quick else 15.0
    result: dict[str, Any] = {"scenario": "pg_outage", "quick": quick}
    with contextlib.ExitStack() as stack:
        try:
            pg = common.PrivatePostgres()
        except FileNotFoundError as exc:
            return {**result, "ok": False, "skipped": str(exc)}
        stack.callback(pg.close)
        pg.start()
        work = stack.enter_context(common.temp_dir("calltrack-outage-"))
        key = str(common.cli(pg.url, "account", "add", "outage")["api_key"])
        calls = work / "calls.jsonl"
        common.write_calls(calls, 200, seed=11, prefix="7", now=datetime(2020, 6, 1), days=60)
        common.cli(pg.url, "import", str(calls), "--account", "outage")
        server = common.Server(
            pg.url, work / "server.log", workers=2, env={"CALLTRACK_PAGE_SIZE": str(PAGE_SIZE)}
        )
        stack.callback(server.stop)

        targets = [f"/api/?json/v3/{key}/call/get/{page}/2020-04-01/2020-05-31" for page in (0, 1)]
        expected = {target: common.get(server.port, target).body for target in targets}
        for body in expected.values():
            common.require(body.startswith(b'[{"page":'), f"no page before the fault: {body!r}")

        def pick(i: int) -> tuple[str, bytes | None]:
            target = targets[i % len(targets)]
            return target, expected[target]

        with common.Driver(server.port, pick, threads=2) as driver:
            time.sleep(steady)
            stop_began = time.monotonic()
            pg.stop("fast")
            stopped = time.monotonic()
            to_503 = driver.wait_for(lambda a: a.status == 503, since=stopped, limit=15)
            time.sleep(down)
            start_began = time.monotonic()
            pg.start()
            started = time.monotonic()
            to_200 = driver.wait_for(lambda a: a.status == 200, since=started, limit=30)
            time.sleep(steady)
        answers = driver.snapshot()
        server.stop()
        log = server.log.read_text(errors="replace")

    wrong = [f"{a.target}: {w}" for a, e in answers if (w := common.judge(a, e)) is not None]
    # Sent once the database had been down a second, answered before it came back.
    outage = [
        a
        for a, _ in answers
        if stopped + MAX_SECONDS_TO_503 <= a.sent and a.received <= start_began
    ]
    unavailable = [a for a, _ in answers if a.status == 503]
    recovered_at = None if to_200 is None else started + to_200
    after = [a for a, _ in answers if recovered_at is not None and a.sent >= recovered_at]
    # Each worker reconnects on its own, so a few 503s may follow the first 200: "back" is
    # from the last failure on, and that must come within seconds too.
    failed_since_start = [a.received for a, _ in answers if a.sent >= started and a.status != 200]
    back_for_good = max(failed_since_start, default=started) - started
    if to_200 is not None:
        back_for_good = max(back_for_good, to_200)
    result.update(
        requests=len(answers),
        statuses=common.summary(answers),
        seconds_to_stop_postgres=round(stopped - stop_began, 3),
        seconds_to_first_503=None if to_503 is None else round(to_503, 3),
        slowest_503_seconds=round(max((a.latency for a in unavailable), default=0.0), 3),
        answers_during_outage=len(outage),
        non_503_during_outage=sum(a.status != 503 for a in outage),
        seconds_to_start_postgres=round(started - start_began, 3),
        seconds_to_recover=None if to_200 is None else round(to_200, 3),
        non_200_after_first_200=sum(a.status != 200 for a in after),
        seconds_to_recover_for_good=round(back_for_good, 3),
        wrong_answers=len(wrong),
        wrong_examples=wrong[:5],
        tracebacks_in_log=log.count("Traceback"),
    )
    problems = []
    if wrong:
        problems.append(f"{len(wrong)} answers neither the page nor a documented 503")
    if to_503 is None or to_503 > MAX_SECONDS_TO_503:
        problems.append(f"first 503 after {to_503} s (want <= {MAX_SECONDS_TO_503})")
    if result["slowest_503_seconds"] > MAX_SECONDS_TO_503:
        problems.append(f"a 503 took {result['slowest_503_seconds']} s")
    if to_200 is None or to_200 > MAX_SECONDS_TO_RECOVER:
        problems.append(f"pages back after {to_200} s (want <= {MAX_SECONDS_TO_RECOVER})")
    if back_for_good > MAX_SECONDS_TO_RECOVER:
        problems.append(
            f"answers failed until {back_for_good:.3f} s after the restart "
            f"(want <= {MAX_SECONDS_TO_RECOVER})"
        )
    if result["tracebacks_in_log"]:
        problems.append(f"{result['tracebacks_in_log']} tracebacks in the server log")
    result["problems"] = problems
    result["ok"] = not problems
    return result


if __name__ == "__main__":
    common.main(run, __doc__, down=(float, "seconds down after the first 503"))
