"""A PBX that retries while `calltrack serve` is killed mid-call: each ended call one record,
complete.

A real server (two workers; one with ``--quick``, as it starts again in a third of the time)
gets an account, a campaign with a pool of tracking numbers, one visit per number (a hit
posted to ``/t/hit`` as the page snippet would, with the campaign's site as ``Origin`` and utm
tags of its own, so each number is held by a known visit) and a generic telephony endpoint
(``calltrack telephony add``). A simulated PBX then posts the events
of many calls (``call.started``, ``call.answered`` unless nobody picked up, ``call.ended``,
``call.recording`` for half the answered ones), one event a request, from several threads,
each event when its moment in the call comes. Meanwhile the service is killed with SIGKILL
(every process of it) at random moments, each while requests are in flight, and started again.
As real PBXs do, the PBX retries every event that did not get a 200 (no answer, a reset
connection, a 503), with growing pauses, and sends again some that did (duplicates).

The service runs with ``CALLTRACK_SWEEP_SECONDS=1``: what a killed request left undone (the
events merged, the record not yet written) is the sweeper's to finish. Once every event has
been answered 200, the v3 export (``call/get``, every page) is read until it holds what the
PBX told, and read again a few sweeps later. The checks:

- every call the PBX ended has exactly one record (by its caller, each call's own), and no
  other record exists;
- each is complete: the number called, ``duration`` (the talk), ``status`` (``success`` when
  answered with talk, else ``fail``), ``recordUrl`` for those with a recording (empty for the
  others), and the utm tags of the visit that held the number;
- every answer was 200 or what a dying or restarting server gives (no answer, 503); never a
  4xx or 500 for an event the PBX had right;
- the export holds it within seconds of the last event (a few sweeper turns) and stays so;
- kills landed while requests were in flight, and retries happened (else nothing was tested).

The checks bite: with the sweeper writing no records, a quick run finds calls without a
record (their request was killed between merging and writing, or found the write lock taken);
with records built from the facts before a request's events but marked as built from the
merged ones, it finds late recordings missing. A record merely written before merging is not
caught, and rightly: it is behind its events, and the sweeper rewrites it within its turn.

The calls' times are simulated (they start within minutes after the visits, well within the
numbers' holds) and every call's caller is its own, so each record is found by its caller and
unique/target flags play no part. The restarted server listens on a new port (a PBX would keep
its URL; here the next free port avoids waiting for the old one).

With ``--bare-events`` only ``call.started`` carries the caller and the number called (the
shape of tests/test_telephony.py). A start that failed and is retried after its call's end
arrived is then dropped ("once a call has ended, only call.recording changes it",
docs/tracking.md), so the record has neither number nor visit: such runs fail today.

    .venv/bin/python tests/faults/pbx_retry.py                # full: 60 s of calls, 8 kills
    .venv/bin/python tests/faults/pbx_retry.py --quick        # what CI runs: 8 s, 3 kills
    .venv/bin/python tests/faults/pbx_retry.py --postgres     # on a private PostgreSQL

Prints the measurements as JSON; exits 1 if an expectation failed. Bounded in time; the
server (and the cluster) are stopped and the temp dir removed on any exit.
"""

from __future__ import annotations

import contextlib
import heapq
import http.client
import json
import os
import random
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

try:
    from tests.faults import _common as common
except ModuleNotFoundError:  # run as a file: python tests/faults/pbx_retry.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root
    from tests.faults import _common as common

SITE = "https://shop.example"
PBX_THREADS = 8
REQUEST_TIMEOUT = 5.0  # seconds a PBX waits for an answer before it counts as failed
DUPLICATES = 0.15  # the share of answered events the PBX sends once more
MAX_BACKOFF = 2.0
SWEEP_SECONDS = 1
MAX_SECONDS_TO_CONSISTENT = 15.0  # from the last event answered to the export holding it all
SETTLE_SECONDS = 3.0  # a few more sweeps: the export must not change after it was complete
# What a server being killed or started answers: no answer at all, or its documented 503.
TRANSIENT = {0, 503}


@dataclass(frozen=True, slots=True)
class Call:
    """One call as the PBX saw it."""

    call_id: str
    caller: str
    called: str
    start: int
    ring: int
    talk: int  # 0: nobody picked up
    recording: str  # "" when none

    def events(self, bare: bool) -> list[dict[str, Any]]:
        """Its events in the order they happen, in the generic format: each with the call's
        numbers (as Zadarma's notifications have them), or (``bare``) only the start."""
        numbers = {"caller": self.caller, "called": self.called}
        started = {"event": "call.started", "call_id": self.call_id, "at": self.start, **numbers}
        events = [started]
        end = self.start + self.ring + self.talk
        if self.talk:
            events.append({"event": "call.answered", "call_id": self.call_id,
                           "at": self.start + self.ring})  # fmt: skip
        ended = {"event": "call.ended", "call_id": self.call_id, "at": end}
        ended.update(talk_seconds=self.talk, forwarded_to="74957654321",
                     disposition="answered" if self.talk else "no_answer")  # fmt: skip
        events.append(ended)
        if self.recording:
            events.append({"event": "call.recording", "call_id": self.call_id, "at": end + 3,
                           "recording_url": self.recording})  # fmt: skip
        return events if bare else [{**numbers, **event} for event in events]


def make_calls(rng: random.Random, count: int, numbers: list[str], first: int) -> list[Call]:
    """``count`` calls to ``numbers``, starting within minutes from ``first``."""
    calls = []
    for i in range(count):
        talk = 0 if rng.random() < 0.2 else rng.randint(1, 600)
        recording = f"https://pbx.example/rec/{i}.mp3" if talk and rng.random() < 0.5 else ""
        calls.append(
            Call(
                call_id=f"pbx-{i}-{rng.randrange(10**9)}",
                caller=f"7499{1000000 + i:07d}",  # each call its own caller
                called=rng.choice(numbers),
                start=first + rng.randint(0, 300),  # within the 600 s holds
                ring=rng.randint(1, 30),
                talk=talk,
                recording=recording,
            )
        )
    return calls


@dataclass(slots=True)
class Delivery:
    call: int
    event: int
    attempt: int = 0
    duplicate: bool = False


class Pbx:
    """Posts every event when its moment comes, retries failures with backoff, sends some
    answered events again; counts what it saw."""

    def __init__(
        self,
        calls: list[Call],
        secret: str,
        seconds: float,
        rng: random.Random,
        server: common.Server,
        bare: bool,
    ) -> None:
        self.calls, self.secret, self.rng = calls, secret, rng
        self.server = server  # the one running now: a new one after each kill
        self.bodies = [[json.dumps(e).encode() for e in call.events(bare)] for call in calls]
        self.lock = threading.Condition()
        self.queue: list[tuple[float, int, Delivery]] = []
        self.seq = 0
        self.pending = sum(len(b) for b in self.bodies)  # events not yet answered 200
        self.in_flight = 0
        self.acked: set[tuple[int, int]] = set()
        self.statuses: Counter[str] = Counter()
        self.retries = 0
        self.duplicates = 0
        self.max_attempts = 0
        self.wrong: list[str] = []  # answers no PBX should get for a right event
        self.last_ack = 0.0
        self.began = time.monotonic()
        for index in range(len(calls)):  # calls begin evenly over the run
            at = self.began + seconds * index / len(calls)
            for event in range(len(self.bodies[index])):
                self._push(at + event * rng.uniform(0.05, 0.4), Delivery(index, event))

    def _push(self, due: float, delivery: Delivery) -> None:
        self.seq += 1
        heapq.heappush(self.queue, (due, self.seq, delivery))

    def run(self, deadline: float) -> None:
        threads = [
            threading.Thread(target=self._work, args=(deadline,)) for _ in range(PBX_THREADS)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def _work(self, deadline: float) -> None:
        while True:
            with self.lock:
                while True:
                    if not self.queue or time.monotonic() > deadline:
                        self.lock.notify_all()
                        return
                    due, _, delivery = self.queue[0]
                    wait = due - time.monotonic()
                    if wait <= 0:
                        heapq.heappop(self.queue)
                        break
                    self.lock.wait(min(wait, 0.05))
                self.in_flight += 1
                port = self.server.port
            status, detail = self._post(port, self.bodies[delivery.call][delivery.event])
            with self.lock:
                self.in_flight -= 1
                self._answered(delivery, status, detail)

    def _answered(self, delivery: Delivery, status: int, detail: str) -> None:
        """Count an answer and schedule what a PBX does next (the lock held)."""
        self.statuses[str(status)] += 1
        key = (delivery.call, delivery.event)
        if status == 200:
            if key not in self.acked:
                self.acked.add(key)
                self.pending -= 1
                self.last_ack = time.monotonic()
            if not delivery.duplicate and self.rng.random() < DUPLICATES:
                self.duplicates += 1
                again = Delivery(delivery.call, delivery.event, duplicate=True)
                self._push(time.monotonic() + self.rng.uniform(0, 1.0), again)
            return
        if status not in TRANSIENT and len(self.wrong) < 10:
            self.wrong.append(f"HTTP {status} for {self.bodies[key[0]][key[1]][:80]!r}: {detail}")
        if key in self.acked:
            return  # a duplicate that failed: it had arrived before
        self.retries += 1
        attempt = delivery.attempt + 1
        self.max_attempts = max(self.max_attempts, attempt + 1)
        pause = min(MAX_BACKOFF, 0.1 * 2**attempt) * self.rng.uniform(0.5, 1.5)
        self._push(time.monotonic() + pause, Delivery(delivery.call, delivery.event, attempt))

    def _post(self, port: int, body: bytes) -> tuple[int, str]:
        """One event on a fresh connection: the status (0: no answer) and what went wrong."""
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
        headers = {"authorization": f"Bearer {self.secret}", "content-type": "application/json"}
        try:
            conn.request("POST", "/telephony/generic", body=body, headers=headers)
            response = conn.getresponse()
            text = response.read()
            return response.status, text[:200].decode(errors="replace")
        except (OSError, http.client.HTTPException) as exc:
            return 0, repr(exc)
        finally:
            conn.close()


def kill(server: common.Server) -> None:
    """SIGKILL every process of the server at once: no shutdown, no cleanup."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.process.pid, signal.SIGKILL)
    server.process.wait(timeout=10)


def kill_and_restart(
    pbx: Pbx, start: Callable[[], common.Server], moments: list[float]
) -> list[dict[str, Any]]:
    """At each moment (seconds into the run), once requests are in flight, kill the PBX's
    server and start another on the same database; what each kill found and cost."""
    log = []
    for moment in moments:
        time.sleep(max(0.0, pbx.began + moment - time.monotonic()))
        waited = time.monotonic()
        while pbx.in_flight == 0 and time.monotonic() - waited < 2:
            time.sleep(0.001)
        in_flight = pbx.in_flight
        kill(pbx.server)
        down = time.monotonic()
        pbx.server = start()
        log.append(
            {
                "at_seconds": round(down - pbx.began, 2),
                "requests_in_flight": in_flight,
                "seconds_down": round(time.monotonic() - down, 2),
            }
        )
    return log


# -- the export and the checks ----------------------------------------------------------------


def export(port: int, key: str, first: int) -> list[dict[str, Any]] | str:
    """Every call of the account in the v3 export, walking the pages; or what went wrong."""
    day = datetime.fromtimestamp(first, UTC).date()
    window = f"{day - timedelta(days=1)}/{day + timedelta(days=2)}"
    records: list[dict[str, Any]] = []
    for page in range(1000):
        answer = common.get(port, f"/api/?json/v3/{key}/call/get/{page}/{window}")
        if answer.status != 200:
            return f"page {page}: HTTP {answer.status} {answer.error or answer.body[:120]!r}"
        decoded = json.loads(answer.body)
        if isinstance(decoded, list):
            records += decoded
            continue
        message = common.error_of(answer.body)
        if message == "Incorrect page is set" or (message == "No rows found" and page == 0):
            return records
        return f"page {page}: {answer.body[:200]!r}"
    return "the walk never ended"


def expected_record(call: Call, utm: dict[str, str]) -> dict[str, Any]:
    """What the export must say of ``call`` (the fields the scenario checks)."""
    return {
        "clientNumber": call.caller,
        "callerIdToClient": call.called,
        "duration": call.talk,
        "status": "success" if call.talk else "fail",
        "recordUrl": call.recording,
        **utm,
    }


def compare(
    records: list[dict[str, Any]], calls: list[Call], utms: dict[str, dict[str, str]]
) -> list[str]:
    """What is wrong with the export against the calls; empty when it is exactly right."""
    problems: list[str] = []
    by_caller: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_caller.setdefault(str(record.get("clientNumber")), []).append(record)
    ids = Counter(str(r.get("universalId")) for r in records)
    doubled = [uid for uid, n in ids.items() if n > 1]
    if doubled:
        problems.append(f"{len(doubled)} universalIds appear more than once, e.g. {doubled[0]}")
    for call in calls:
        found = by_caller.pop(call.caller, [])
        if len(found) != 1:
            problems.append(f"call {call.call_id} ({call.caller}) has {len(found)} records")
            continue
        want = expected_record(call, utms[call.called])
        got = {name: found[0].get(name) for name in want}
        if got != want:
            wrong = {n: (got[n], want[n]) for n in want if got[n] != want[n]}
            problems.append(f"call {call.call_id} incomplete (got, wanted): {wrong}")
    extra = sum(len(found) for found in by_caller.values())
    if extra:
        problems.append(f"{extra} records of no call the PBX made, e.g. {next(iter(by_caller))}")
    return problems


def visit(port: int, site_key: str, index: int) -> tuple[str, dict[str, str]]:
    """A visit with utm tags of its own: the pool number it was lent and its utm."""
    utm = {"utm_source": f"src{index}", "utm_medium": "cpc", "utm_campaign": f"camp{index}"}
    query = "&".join(f"{k}={v}" for k, v in utm.items())
    body = json.dumps({"k": site_key, "t": "hit", "u": f"{SITE}/landing?{query}"}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        headers = {"content-type": "text/plain", "origin": SITE}
        conn.request("POST", "/t/hit", body=body, headers=headers)
        response = conn.getresponse()
        answer = json.loads(response.read())
        common.require(response.status == 200, f"a hit was answered {response.status}")
    finally:
        conn.close()
    return str(answer["n"]), utm


# -- the run ----------------------------------------------------------------------------------


def run(
    quick: bool,
    postgres: bool = False,
    seconds: float | None = None,
    seed: int | None = None,
    bare_events: bool = False,
) -> dict[str, Any]:
    """Call, kill, retry, check; the result holds the measurements, ``problems`` and ``ok``."""
    seed = random.randrange(10**6) if seed is None else seed
    rng = random.Random(seed)
    duration = seconds or (8.0 if quick else 60.0)
    pool = 6 if quick else 16
    count = int(duration * (15 if quick else 20))
    kills = 3 if quick else 8
    workers = 1 if quick else 2  # one starts again in 2 s here, two in 6: quick stays quick
    result: dict[str, Any] = {
        "scenario": "pbx_retry",
        "quick": quick,
        "backend": "postgres" if postgres else "sqlite",
        "seed": seed,
        "seconds": duration,
        "pool": pool,
        "workers": workers,
        "bare_events": bare_events,
    }
    with contextlib.ExitStack() as stack:
        work = stack.enter_context(common.temp_dir("calltrack-pbx-"))
        try:
            database, _ = common.started_database(stack, work, postgres)
        except FileNotFoundError as exc:
            return {**result, "ok": False, "skipped": str(exc)}
        key = str(common.cli(database, "account", "add", "shop")["api_key"])
        site_key = str(
            common.cli(database, "campaign", "add", "shop", "1", "Shop", "--site", SITE)["site_key"]
        )
        numbers = [f"7495000{i:04d}" for i in range(pool)]
        with ThreadPoolExecutor(pool) as threads:  # each CLI run takes a second to start
            list(
                threads.map(
                    lambda n: common.cli(
                        database, "phone", "add", "shop", n, "--campaign", "1", "--dynamic"
                    ),
                    numbers,
                )
            )
        secret = str(common.cli(database, "telephony", "add", "shop")["secret"])
        env = {"CALLTRACK_SWEEP_SECONDS": str(SWEEP_SECONDS), "CALLTRACK_TIMEZONE": "UTC"}
        started: list[common.Server] = []

        def start() -> common.Server:
            server = common.Server(
                database, work / f"server{len(started)}.log", workers=workers, env=env
            )
            started.append(server)
            stack.callback(server.stop)
            return server

        server = start()
        lent = [visit(server.port, site_key, i) for i in range(pool)]
        utms = dict(lent)
        common.require(sorted(utms) == numbers, f"the visits were not lent the pool: {utms}")
        first = int(time.time()) + 1  # calls start after every visit holds its number
        calls = make_calls(rng, count, numbers, first)
        pbx = Pbx(calls, secret, duration, rng, server, bare_events)
        moments = sorted(duration * (k + rng.uniform(0.1, 0.9)) / kills for k in range(kills))
        sender = threading.Thread(target=pbx.run, args=(pbx.began + duration + 60,))
        sender.start()
        kill_log = kill_and_restart(pbx, start, moments)
        sender.join()
        # The export, read until it holds what the PBX told (the sweeper finishing what the
        # kills left undone), then once more a few sweeps later: nothing may change after.
        consistent: float | None = None
        found: list[dict[str, Any]] | str = []
        while time.monotonic() < pbx.last_ack + MAX_SECONDS_TO_CONSISTENT:
            found = export(pbx.server.port, key, first)
            if isinstance(found, list) and not compare(found, calls, utms):
                consistent = time.monotonic() - pbx.last_ack
                break
            time.sleep(0.2)
        time.sleep(SETTLE_SECONDS)
        final = export(pbx.server.port, key, first)
        pbx.server.stop()
        errors = [error for s in started for error in common.tracebacks_in(s.log)]

    problems: list[str] = []
    if pbx.pending:
        problems.append(f"{pbx.pending} events never got a 200 within a minute of retries")
    problems += pbx.wrong
    if consistent is None:
        wrong = compare(found, calls, utms) if isinstance(found, list) else [found]
        problems.append(
            f"the export did not hold every call, once and complete, within "
            f"{MAX_SECONDS_TO_CONSISTENT} s of the last event: {len(wrong)} problems"
        )
        problems += wrong[:10]
    settled = compare(final, calls, utms) if isinstance(final, list) else [final]
    if settled:
        when = (
            "changed after it was complete"
            if consistent is not None
            else f"was wrong {SETTLE_SECONDS} s on"
        )
        problems.append(f"the export {when}: {len(settled)} problems, e.g. {settled[0]}")
    if not any(k["requests_in_flight"] for k in kill_log):
        problems.append("no kill landed while requests were in flight: nothing was tested")
    if not pbx.retries:
        problems.append("the PBX never had to retry: nothing was tested")
    if errors:
        problems.append(f"{len(errors)} tracebacks in the server logs, e.g. {errors[0]}")
    result.update(
        calls=len(calls),
        events=sum(len(b) for b in pbx.bodies),
        calls_with_recording=sum(1 for c in calls if c.recording),
        calls_not_answered=sum(1 for c in calls if not c.talk),
        kills=len(kill_log),
        kills_with_requests_in_flight=sum(1 for k in kill_log if k["requests_in_flight"]),
        kill_log=kill_log,
        statuses=dict(sorted(pbx.statuses.items())),
        retries=pbx.retries,
        most_attempts_of_one_event=pbx.max_attempts,
        duplicates_sent=pbx.duplicates,
        records=len(final) if isinstance(final, list) else None,
        seconds_to_consistent=None if consistent is None else round(consistent, 2),
        problems_after_settling=len(settled),
        tracebacks_in_logs=len(errors),
        problems=problems,
        ok=not problems,
    )
    return result


if __name__ == "__main__":
    common.main(
        run,
        __doc__,
        postgres=(bool, "run on a private PostgreSQL cluster"),
        seconds=(float, "how long the PBX places calls (default 60, quick 8)"),
        seed=(int, "repeat a run's calls and kill moments"),
        bare_events=(bool, "only call.started carries the numbers (see the docstring)"),
    )
