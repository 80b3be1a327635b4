"""Webhooks through a misbehaving receiver while `calltrack serve` is killed: nothing lost,
each webhook-id once after deduplication, in order per call, never one attempt twice at once.

A real receiver (an HTTP server on 127.0.0.1, in this process) verifies every delivery with
``standardwebhooks.Webhook(secret).verify`` and misbehaves in phases: down (nothing listens,
its open connections cut), slow (no answer until the sender gives up, past
``CALLTRACK_HOOKS_TIMEOUT``), 500, 429 with ``Retry-After: 1``, the connection closed without
an answer, and healthy spells between them. Once in the run it answers 410 Gone: the endpoint
is disabled, its pending deliveries wait, and ``calltrack hook enable`` (run as an operator
would) sends them. The endpoint takes BEFORE_CALL_START, AFTER_CALL_FINISH and CALL_UPDATED.

`calltrack serve` runs with a shrunk retry schedule (``CALLTRACK_HOOKS_SCHEDULE``, long enough
to outlast the bad phases), a 1 s attempt timeout and a 1 s store timeout (a lease of 8 s: a
delivery whose attempt was killed goes again when it ends): one server with two workers on
SQLite, each worker a deliverer; with ``--postgres`` two servers on one private PostgreSQL
cluster. A PBX posts live calls to ``/telephony/generic`` (each call's events in turn, the
next once the previous got a 200; ``call.recording`` for some answered calls once their
AFTER_CALL_FINISH has arrived, so that it changes a record that exists: CALL_UPDATED), retries
what got no 200 and sends again some that did. Meanwhile a server is killed with SIGKILL (its
whole process group) at random moments, each while the receiver has a request in flight when
one comes within two seconds, and started again; once while the endpoint is disabled.

While the endpoint is disabled the PBX holds its events (having waited until every request
was answered and every ended call's record was written), so that no change happens then:
disabled endpoints get no new deliveries, and every change of the run must be delivered.

The checks, once the receiver has been healthy long enough:

- every delivery that should arrive did, answered 200: BEFORE_CALL_START and
  AFTER_CALL_FINISH of every call, CALL_UPDATED of every call whose recording came later;
  none other (no CALL_UPDATED without a change);
- each is one webhook-id (sent again with the same id; counted once after deduplication);
- in order per call: a call's next delivery arrives only after the previous one was answered
  200 (first arrivals, and first 200s, in event order);
- no webhook-id was in flight twice at once (a second request of an id while the sender was
  still waiting for the answer to the first: its connection still open);
- every signature verified; no retry of a 429 came before its Retry-After;
- the v3 export shows each call's BEFORE_CALL_START and AFTER_CALL_FINISH with status 200;
- kills landed while attempts were in flight, and every misbehaviour was met (else nothing
  was tested); no traceback in the server logs.

The checks bite: with ``record_attempts`` writing nothing, a quick run finds most
deliveries lost (each call's first one is sent again at every lease's end, the others wait
behind it); with claims taking no lease, attempts of one webhook-id in flight twice at once
(and retries before Retry-After); without the order condition of the claim, calls whose
AFTER_CALL_FINISH came before their BEFORE_CALL_START was answered; and it found CALL_UPDATED
deliveries of no change (a record written twice from one version, by the request and the
sweeper, whose ``hooks`` differed in order only), fixed since.

    .venv/bin/python tests/faults/hooks_kill.py                 # full: 25 s of calls, 8 kills
    .venv/bin/python tests/faults/hooks_kill.py --quick         # what CI runs: 10 s, 4 kills
    .venv/bin/python tests/faults/hooks_kill.py --postgres      # two servers on PostgreSQL

Prints the measurements as JSON; exits 1 if an expectation failed. Bounded in time; the
servers, the cluster and the receiver are stopped and the temp dir removed on any exit.
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import http.client
import itertools
import json
import os
import random
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import standardwebhooks
from standardwebhooks.webhooks import WebhookVerificationError

try:
    from tests.faults import _common as common
except ModuleNotFoundError:  # run as a file: python tests/faults/hooks_kill.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root
    from tests.faults import _common as common

from calltrack.config import Settings
from calltrack.store import Store, open_store

# The service's settings for the run: enough tries (about 50 s) to outlast the bad phases.
SCHEDULE = "0.2,0.5,1,1,1,1,2,2,2,3,3,3,5,5,5,5,5,5"
HOOKS_TIMEOUT = 1.0
DB_TIMEOUT = 1.0
LEASE_SECONDS = HOOKS_TIMEOUT + 2 * DB_TIMEOUT + 5  # the deliverer's lease
SWEEP_SECONDS = 1
RETRY_AFTER = 1  # what the receiver's 429 asks
SLOW_LIMIT = 3 * HOOKS_TIMEOUT + 2  # a slow answer waits this long for the sender to give up
BAD = ("down", "slow", "500", "429", "close")
EVENTS = ("BEFORE_CALL_START", "AFTER_CALL_FINISH", "CALL_UPDATED")
PBX_THREADS = 6
# Longer than a restarted server takes to answer (several seconds on a slow machine): a
# request the PBX gave up on could still be served after the PBX paused for the 410 episode,
# while the endpoint is disabled, and its webhooks would rightly go nowhere (seen: 0-8
# deliveries "lost" in 3 runs of 6 on a machine twice as slow).
PBX_TIMEOUT = 30.0
DUPLICATES = 0.15
MAX_SECONDS_TO_DELIVER = 2 * LEASE_SECONDS + 15  # from the PBX's last 200 and a healthy receiver
MAX_SECONDS_TO_EXPORT = 10.0
# A bad phase lasts until a request has met it, up to this long more (a server may be
# starting again after a kill, two workers take seconds on a busy machine).
PHASE_WAIT = 12.0
TRANSIENT = {0, 503}


# -- the receiver ----------------------------------------------------------------------------


@dataclass(slots=True)
class Arrival:
    """One request the receiver got."""

    message_id: str
    event: str
    universal_id: str
    caller: str
    at: float  # monotonic, when its headers were read
    behaviour: str
    verified: bool
    call: dict[str, Any]  # the record it carried
    status: int = 0  # what it answered (0: nothing)
    answered: float = 0.0  # monotonic, when the answer began to be written


class _Http(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    receiver: Receiver

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a sender killed or gone mid-request: expected here


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a real receiver
    server: _Http

    def setup(self) -> None:
        super().setup()
        self.server.receiver.opened(self.connection)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        self.server.receiver.closed(self.connection)

    def do_POST(self) -> None:
        self.server.receiver.handle(self)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Receiver:
    """A webhook receiver that misbehaves as ``phase`` says; everything it got, kept."""

    def __init__(self, secret: str) -> None:
        self.port = common.free_port()
        self.webhook = standardwebhooks.Webhook(secret)
        self.lock = threading.Lock()
        self.phase = "ok"
        self.arrivals: list[Arrival] = []
        self.in_flight: dict[str, socket.socket] = {}
        self.overlaps: list[str] = []  # an id sent while its earlier request still waited
        self.bad_signatures: list[str] = []
        self.early_retries: list[str] = []  # retries of a 429 before its Retry-After
        self.last_429: dict[str, float] = {}
        self.kept_waiting = 0  # slow answers whose sender had not given up within SLOW_LIMIT
        self.cut = 0  # requests whose body ended early: their sender was killed
        self.connections: set[socket.socket] = set()
        self.httpd: _Http | None = None
        self.thread: threading.Thread | None = None
        self.accepted: dict[tuple[str, str], set[str]] = defaultdict(set)  # (caller, event): ids

    # the listening socket

    def up(self) -> None:
        if self.httpd is not None:
            return
        for _ in range(50):  # the port is ours; rebinding may need a moment
            try:
                httpd = _Http(("127.0.0.1", self.port), _Handler)
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError(f"the receiver cannot listen on port {self.port} again")
        httpd.receiver = self
        self.httpd = httpd
        self.thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def down(self) -> None:
        """Nothing listens, and the open connections are cut."""
        httpd, self.httpd = self.httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        with self.lock:
            open_now = list(self.connections)
        for conn in open_now:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def set_phase(self, phase: str) -> None:
        if phase == "down":
            self.phase = phase
            self.down()
        else:
            self.up()
            self.phase = phase

    def opened(self, conn: socket.socket) -> None:
        with self.lock:
            self.connections.add(conn)

    def closed(self, conn: socket.socket) -> None:
        with self.lock:
            self.connections.discard(conn)

    # one request

    def handle(self, request: _Handler) -> None:
        length = int(request.headers.get("content-length") or 0)
        body = request.rfile.read(length)
        now = time.monotonic()
        message_id = request.headers.get("webhook-id", "")
        behaviour = self.phase
        conn = request.connection
        with self.lock:
            earlier = self.in_flight.get(message_id)
            if earlier is not None and _still_open(earlier):
                self.overlaps.append(f"{message_id} sent again while its attempt was in flight")
            self.in_flight[message_id] = conn
            since = self.last_429.pop(message_id, None)
            if since is not None and now - since < RETRY_AFTER - 0.01:
                self.early_retries.append(
                    f"{message_id} came again {now - since:.2f} s after a 429 asking {RETRY_AFTER}"
                )
        try:
            if len(body) < length:  # the sender died while sending it: nothing to answer
                with self.lock:
                    self.cut += 1
                return
            verified = True
            try:
                decoded = self.webhook.verify(body, dict(request.headers.items()))
            except WebhookVerificationError as exc:
                verified = False
                decoded = _decoded(body)
                with self.lock:
                    self.bad_signatures.append(f"{message_id}: {exc}")
            call = decoded.get("call") if isinstance(decoded, dict) else None
            call = call if isinstance(call, dict) else {}
            arrival = Arrival(
                message_id,
                str(decoded.get("event") if isinstance(decoded, dict) else ""),
                str(call.get("universalId", "")),
                str(call.get("clientNumber", "")),
                now,
                behaviour,
                verified,
                call,
            )
            with self.lock:
                self.arrivals.append(arrival)
            self._answer(request, arrival)
        finally:
            with self.lock:
                if self.in_flight.get(message_id) is conn:
                    del self.in_flight[message_id]

    def _answer(self, request: _Handler, arrival: Arrival) -> None:
        behaviour = arrival.behaviour if arrival.verified else "400"
        if behaviour in ("close", "down"):  # "down": came as the socket was being closed
            request.close_connection = True
            with contextlib.suppress(OSError):
                request.connection.shutdown(socket.SHUT_RDWR)
            return
        if behaviour == "slow":
            request.close_connection = True
            if not _wait_closed(request.connection, SLOW_LIMIT):
                with self.lock:
                    self.kept_waiting += 1
            return
        status = {"ok": 200, "500": 500, "429": 429, "410": 410, "400": 400}.get(behaviour, 500)
        text = b'{"ok":true}' if status == 200 else b"no"
        answering = time.monotonic()  # no sender can have the answer before
        try:
            request.send_response(status)
            if status == 429:
                request.send_header("retry-after", str(RETRY_AFTER))
            request.send_header("content-type", "application/json")
            request.send_header("content-length", str(len(text)))
            request.end_headers()
            request.wfile.write(text)
            request.wfile.flush()
        except OSError:
            return  # the sender gave up (or was killed) first: no answer arrived
        with self.lock:
            arrival.status = status
            arrival.answered = answering
            if status == 429:
                self.last_429[arrival.message_id] = arrival.answered
            if status == 200:
                self.accepted[(arrival.caller, arrival.event)].add(arrival.message_id)

    # reading what arrived

    def snapshot(self) -> list[Arrival]:
        with self.lock:
            return list(self.arrivals)

    def has(self, caller: str, event: str) -> bool:
        """Whether a delivery of ``event`` for the call of ``caller`` was answered 200."""
        with self.lock:
            return bool(self.accepted.get((caller, event)))

    def met(self, behaviour: str) -> bool:
        """Whether a request has met ``behaviour``."""
        with self.lock:
            return any(a.behaviour == behaviour for a in self.arrivals)

    def busy(self) -> int:
        with self.lock:
            return len(self.in_flight)


def _decoded(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return {}


def _still_open(conn: socket.socket) -> bool:
    """Whether the peer still holds ``conn`` open (it has not closed or reset it)."""
    try:
        return conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def _wait_closed(conn: socket.socket, limit: float) -> bool:
    """Wait (at most ``limit`` s) for the peer to close ``conn``; whether it did."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            readable, _, _ = select.select([conn], [], [], 0.02)
        except (OSError, ValueError):
            return True
        if readable and not _still_open(conn):
            return True
    return False


def phase_plan(rng: random.Random, seconds: float) -> list[tuple[float, str]]:
    """(offset, phase): every bad phase in turn, in random order, a healthy spell after
    each; all of them at least once, more until ``seconds``; then healthy."""
    plan: list[tuple[float, str]] = []
    at = 0.5
    while not plan or at < seconds:
        for phase in rng.sample(BAD, len(BAD)):
            plan.append((at, phase))
            at += rng.uniform(0.8, 1.4)
            plan.append((at, "ok"))
            at += rng.uniform(0.2, 0.6)
            if at >= seconds and len(plan) >= 2 * len(BAD):
                break
    return plan


# -- the PBX ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Call:
    call_id: str
    caller: str
    called: str
    start: int
    ring: int
    talk: int  # 0: nobody picked up
    recording: str  # "" when none

    def events(self) -> list[dict[str, Any]]:
        """Its events in order, each with the call's numbers."""
        numbers = {"caller": self.caller, "called": self.called, "call_id": self.call_id}
        events = [{"event": "call.started", "at": self.start, **numbers}]
        end = self.start + self.ring + self.talk
        if self.talk:
            events.append({"event": "call.answered", "at": self.start + self.ring, **numbers})
        events.append(
            {"event": "call.ended", "at": end, "talk_seconds": self.talk,
             "disposition": "answered" if self.talk else "no_answer", **numbers}
        )  # fmt: skip
        if self.recording:
            events.append(
                {"event": "call.recording", "at": end + 3, "recording_url": self.recording,
                 **numbers}
            )  # fmt: skip
        return events


class Pbx:
    """Posts each call's events in turn (the next once the previous got a 200), retries
    failures with backoff, sends some answered events again. A recording waits for its
    call's AFTER_CALL_FINISH to arrive (``ready``)."""

    def __init__(
        self,
        calls: list[Call],
        secret: str,
        seconds: float,
        rng: random.Random,
        ports: Callable[[], list[int]],
        ready: Callable[[Call], bool],
    ) -> None:
        self.calls, self.secret, self.rng, self.ports, self.ready = calls, secret, rng, ports, ready
        self.bodies = [[json.dumps(e).encode() for e in call.events()] for call in calls]
        self.names = [[str(e["event"]) for e in call.events()] for call in calls]
        self.lock = threading.Condition()
        self.queue: list[tuple[float, int, int, int, bool]] = []  # due, seq, call, event, dup
        self.seq = 0
        self.pending = sum(len(b) for b in self.bodies)
        self.in_flight = 0
        self.paused = False
        self.paused_at = 0.0
        self.acked: set[tuple[int, int]] = set()
        self.statuses: Counter[str] = Counter()
        self.retries = 0
        self.duplicates = 0
        self.wrong: list[str] = []
        self.last_ack = time.monotonic()
        self.began = time.monotonic()
        self.attempts: dict[tuple[int, int], int] = {}
        for index in range(len(calls)):  # calls begin evenly over the run
            self._push(self.began + seconds * index / len(calls), index, 0, False)

    def _push(self, due: float, call: int, event: int, duplicate: bool) -> None:
        self.seq += 1
        heapq.heappush(self.queue, (due, self.seq, call, event, duplicate))

    def run(self, deadline: float) -> None:
        threads = [
            threading.Thread(target=self._work, args=(deadline,)) for _ in range(PBX_THREADS)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def pause(self) -> None:
        """Hold events until ``resume``; return once no request is in flight."""
        with self.lock:
            self.paused = True
            self.paused_at = time.monotonic()
            while self.in_flight:
                self.lock.wait(0.05)

    def resume(self) -> None:
        """Go on, every event that waited as late as the pause was long."""
        with self.lock:
            if self.paused:
                held = time.monotonic() - self.paused_at
                self.queue = [(d + held, q, c, e, dup) for d, q, c, e, dup in self.queue]
                heapq.heapify(self.queue)
            self.paused = False
            self.lock.notify_all()

    def _work(self, deadline: float) -> None:
        while True:
            with self.lock:
                while True:
                    if time.monotonic() > deadline or (not self.queue and not self.in_flight):
                        self.lock.notify_all()
                        return
                    if self.queue and not self.paused:
                        due, _, call, event, duplicate = self.queue[0]
                        if due <= time.monotonic():
                            heapq.heappop(self.queue)
                            waits = self.names[call][event] == "call.recording" and not duplicate
                            if waits and not self.ready(self.calls[call]):
                                self._push(time.monotonic() + 0.2, call, event, False)
                                continue
                            break
                    self.lock.wait(0.02)
                self.in_flight += 1
                port = self.rng.choice(self.ports())
            status, detail = self._post(port, self.bodies[call][event])
            with self.lock:
                self.in_flight -= 1
                self._answered(call, event, duplicate, status, detail)
                self.lock.notify_all()

    def _answered(self, call: int, event: int, duplicate: bool, status: int, detail: str) -> None:
        self.statuses[str(status)] += 1
        key = (call, event)
        self.attempts[key] = self.attempts.get(key, 0) + 1
        if status == 200:
            if key not in self.acked:
                self.acked.add(key)
                self.pending -= 1
                self.last_ack = time.monotonic()
                if event + 1 < len(self.bodies[call]):  # the call's next event, in a moment
                    self._push(
                        time.monotonic() + self.rng.uniform(0.05, 0.3), call, event + 1, False
                    )
            if not duplicate and self.rng.random() < DUPLICATES:
                self.duplicates += 1
                self._push(time.monotonic() + self.rng.uniform(0, 1.0), call, event, True)
            return
        if status not in TRANSIENT and len(self.wrong) < 10:
            self.wrong.append(f"HTTP {status} for {self.bodies[call][event][:80]!r}: {detail}")
        if key in self.acked:
            return  # a duplicate that failed: it had arrived before
        self.retries += 1
        pause = min(2.0, 0.1 * 2 ** self.attempts[key]) * self.rng.uniform(0.5, 1.5)
        self._push(time.monotonic() + pause, call, event, False)

    def _post(self, port: int, body: bytes) -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=PBX_TIMEOUT)
        headers = {"authorization": f"Bearer {self.secret}", "content-type": "application/json"}
        try:
            conn.request("POST", "/telephony/generic", body=body, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()[:200].decode(errors="replace")
        except (OSError, http.client.HTTPException) as exc:
            return 0, repr(exc)
        finally:
            conn.close()


def make_calls(rng: random.Random, count: int, numbers: list[str], first: int) -> list[Call]:
    calls = []
    for i in range(count):
        talk = 0 if rng.random() < 0.2 else rng.randint(1, 600)
        recording = f"https://pbx.example/rec/{i}.mp3" if talk and rng.random() < 0.4 else ""
        calls.append(
            Call(
                call_id=f"hook-{i}-{rng.randrange(10**9)}",
                caller=f"7499{2000000 + i:07d}",  # each call its own caller
                called=rng.choice(numbers),
                start=first + rng.randint(0, 300),
                ring=rng.randint(1, 30),
                talk=talk,
                recording=recording,
            )
        )
    return calls


# -- the service -----------------------------------------------------------------------------


class Servers:
    """The `calltrack serve` processes of the run; one is killed and started again at will."""

    def __init__(
        self, start: Callable[[int], common.Server], count: int, stack: contextlib.ExitStack
    ) -> None:
        self._start = start
        self._stack = stack
        self.lock = threading.Lock()
        self.killing = threading.Lock()  # one kill at a time
        self.started: list[common.Server] = []
        self.current = [self._new(n) for n in range(count)]

    def _new(self, slot: int) -> common.Server:
        server = self._start(slot)
        self._stack.callback(server.stop)
        with self.lock:
            self.started.append(server)
        return server

    def ports(self) -> list[int]:
        with self.lock:
            return [server.port for server in self.current]

    def kill_and_restart(self, slot: int) -> float:
        """SIGKILL every process of one server at once, then start it again: seconds down."""
        with self.killing:
            server = self.current[slot]
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait(timeout=10)
            down = time.monotonic()
            fresh = self._new(slot)
            with self.lock:
                self.current[slot] = fresh
            return time.monotonic() - down


def cli(database: str, env: dict[str, str], *args: str) -> dict[str, Any]:
    """One `calltrack ... --json` with the run's environment; its output decoded."""
    done = subprocess.run(
        [common.CALLTRACK, "--database", database, *args, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **env},
    )
    if done.returncode != 0:
        raise RuntimeError(f"calltrack {' '.join(args)} failed: {done.stderr.strip()}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


class Timeline:
    """The run's clock: offsets from ``began``, later by ``shift`` (what the 410 episode and
    waits for a phase to be met took), so that phases and kills keep their places."""

    def __init__(self, began: float) -> None:
        self.began = began
        self.shift = 0.0

    def wait(self, at: float) -> None:
        while time.monotonic() < self.began + self.shift + at:
            time.sleep(0.01)


def wait_until(condition: Callable[[], bool], limit: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()


# -- the checks -------------------------------------------------------------------------------


def expected_events(call: Call) -> tuple[str, ...]:
    return EVENTS if call.recording else EVENTS[:2]


def check_deliveries(calls: list[Call], receiver: Receiver) -> tuple[list[str], dict[str, Any]]:
    """What is wrong with what the receiver got; and counts of it."""
    problems: list[str] = []
    arrivals = receiver.snapshot()
    by_caller = {call.caller: call for call in calls}
    uid_of: dict[str, str] = {}
    per_call: dict[str, list[Arrival]] = defaultdict(list)
    strangers = []
    for arrival in arrivals:
        call = by_caller.get(arrival.caller)
        if call is None:
            strangers.append(arrival)
            continue
        per_call[call.caller].append(arrival)
        uid_of.setdefault(call.caller, arrival.universal_id)
        if uid_of[call.caller] != arrival.universal_id:
            problems.append(f"call {call.call_id} came with two universalIds")
    if strangers:
        problems.append(
            f"{len(strangers)} requests of no call the PBX made, e.g. {strangers[0].message_id} "
            f"({strangers[0].event}, caller {strangers[0].caller!r})"
        )
    lost, doubled, unexpected, disorder = [], [], [], []
    for call in calls:
        got = per_call.get(call.caller, [])
        ids: dict[str, set[str]] = defaultdict(set)
        first_arrival: dict[str, float] = {}
        first_200: dict[str, float] = {}
        for arrival in got:
            ids[arrival.event].add(arrival.message_id)
            first_arrival.setdefault(arrival.event, arrival.at)
            if arrival.status == 200:
                first_200[arrival.event] = min(
                    first_200.get(arrival.event, arrival.answered), arrival.answered
                )
        wanted = expected_events(call)
        for event in wanted:
            if event not in first_200:
                lost.append(f"{call.call_id} {event} ({len(ids[event])} ids, never answered 200)")
            if len(ids[event]) > 1:
                doubled.append(f"{call.call_id} {event} {_changes(got, event)}")
        for event in set(ids) - set(wanted):
            unexpected.append(f"{call.call_id} {event} {_changes(got, event)}")
        for before, after in itertools.pairwise(wanted):
            early = first_200.get(before, 0.0) - first_arrival.get(after, float("inf"))
            if before in first_200 and early > 0:
                disorder.append(f"{call.call_id}: {after} came {early:.3f} s before {before}'s 200")
    for name, found in (
        ("deliveries lost (never answered 200)", lost),
        ("deliveries sent as more than one webhook-id", doubled),
        ("deliveries of no change the PBX made", unexpected),
        ("calls whose deliveries went out of order", disorder),
    ):
        if found:
            problems.append(f"{len(found)} {name}, e.g. {'; '.join(found[:3])}")
    if receiver.overlaps:
        problems.append(
            f"{len(receiver.overlaps)} attempts sent while the same webhook-id was in flight, "
            f"e.g. {receiver.overlaps[0]}"
        )
    if receiver.bad_signatures:
        problems.append(
            f"{len(receiver.bad_signatures)} signatures did not verify, "
            f"e.g. {receiver.bad_signatures[0]}"
        )
    if receiver.early_retries:
        problems.append(
            f"{len(receiver.early_retries)} retries before Retry-After, "
            f"e.g. {receiver.early_retries[0]}"
        )
    if receiver.kept_waiting:
        problems.append(
            f"{receiver.kept_waiting} slow answers were still awaited {SLOW_LIMIT} s on"
        )
    behaviours = Counter(a.behaviour for a in arrivals)
    accepted = Counter(a.message_id for a in arrivals if a.status == 200)
    counts = {
        "requests": len(arrivals),
        "requests_by_behaviour": dict(sorted(behaviours.items())),
        "requests_cut_short_by_kills": receiver.cut,
        "webhook_ids": len({a.message_id for a in arrivals}),
        "webhook_ids_answered_200_more_than_once": sum(1 for n in accepted.values() if n > 1),
        "most_requests_of_one_id": max(Counter(a.message_id for a in arrivals).values(), default=0),
        "deliveries_expected": sum(len(expected_events(call)) for call in calls),
        "lost": len(lost),
        "sent_as_two_ids": len(doubled),
        "unexpected": len(unexpected),
        "out_of_order": len(disorder),
        "in_flight_twice": len(receiver.overlaps),
    }
    met = {b for b in behaviours if b != "ok"}
    missing = [b for b in (*BAD[1:], "410") if b not in met]
    if missing:
        problems.append(f"no request met the receiver's {', '.join(missing)}: not tested")
    return problems, counts


def _changes(got: list[Arrival], event: str) -> str:
    """What the records of a call's deliveries of ``event`` changed, each from the record of
    the delivery before it (by first arrival): to tell why a delivery was sent."""
    first: dict[str, Arrival] = {}
    for arrival in sorted(got, key=lambda a: a.at):
        first.setdefault(arrival.message_id, arrival)
    ordered = sorted(first.values(), key=lambda a: a.at)
    told = []
    for before, after in itertools.pairwise(ordered):
        if after.event != event:
            continue
        names = sorted(set(before.call) | set(after.call))
        diff = {n: (before.call.get(n), after.call.get(n)) for n in names
                if before.call.get(n) != after.call.get(n)}  # fmt: skip
        told.append(f"{after.message_id} after {before.event}: {diff}")
    return "; ".join(told)


def export_hooks(records: list[dict[str, Any]], calls: list[Call], url: str) -> list[str]:
    """What is wrong with the export's ``hooks`` (each call: both v3 events, status 200)."""
    problems = []
    by_caller = {str(r.get("clientNumber")): r for r in records}
    want = [
        {"hookEventName": e, "hookAddress": url, "hookMethod": "POST", "hookResponseStatus": 200}
        for e in sorted(EVENTS[:2])
    ]
    for call in calls:
        record = by_caller.get(call.caller)
        if record is None:
            problems.append(f"call {call.call_id} has no record in the export")
            continue
        hooks = sorted(record.get("hooks") or [], key=lambda h: str(h.get("hookEventName")))
        if hooks != want:
            problems.append(f"call {call.call_id} shows hooks {hooks}")
    return problems


# -- the run ----------------------------------------------------------------------------------


def run(
    quick: bool,
    postgres: bool = False,
    calls: int | None = None,
    seconds: float | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """Call, misbehave, kill, check; the result holds the measurements, ``problems``, ``ok``."""
    seed = random.randrange(10**6) if seed is None else seed
    rng = random.Random(seed)
    duration = seconds or (10.0 if quick else 25.0)
    count = calls or int(duration * (6 if quick else 8))
    kills = 2 if quick else 6  # at random moments; and one in a slow phase, one while disabled
    result: dict[str, Any] = {
        "scenario": "hooks_kill",
        "quick": quick,
        "backend": "postgres" if postgres else "sqlite",
        "seed": seed,
        "seconds": duration,
        "schedule": SCHEDULE,
        "lease_seconds": LEASE_SECONDS,
    }
    began = time.monotonic()
    problems: list[str] = []
    with contextlib.ExitStack() as stack:
        work = stack.enter_context(common.temp_dir("calltrack-hooks-"))
        try:
            database, _ = common.started_database(stack, work, postgres)
        except FileNotFoundError as exc:
            return {**result, "ok": False, "skipped": str(exc)}
        env = {
            "CALLTRACK_HOOKS_ALLOW_HOSTS": "127.0.0.1",
            "CALLTRACK_HOOKS_SCHEDULE": SCHEDULE,
            "CALLTRACK_HOOKS_TIMEOUT": str(HOOKS_TIMEOUT),
            "CALLTRACK_DB_TIMEOUT": str(DB_TIMEOUT),
            "CALLTRACK_SWEEP_SECONDS": str(SWEEP_SECONDS),
            "CALLTRACK_TIMEZONE": "UTC",
        }
        key = str(cli(database, env, "account", "add", "shop")["api_key"])
        numbers = [f"7495100{i:04d}" for i in range(4)]
        with ThreadPoolExecutor(len(numbers) + 2) as pool:
            added = [pool.submit(cli, database, env, "phone", "add", "shop", n) for n in numbers]
            telephony = pool.submit(cli, database, env, "telephony", "add", "shop")
            receiver_port = common.free_port()
            url = f"http://127.0.0.1:{receiver_port}/hooks"
            events = [arg for event in EVENTS for arg in ("--event", event)]
            hook = pool.submit(cli, database, env, "hook", "add", "shop", url, *events)
            for future in added:
                future.result()
            pbx_secret = str(telephony.result()["secret"])
            endpoint = hook.result()
        receiver = Receiver(str(endpoint["secret"]))
        receiver.port = receiver_port
        receiver.up()
        stack.callback(receiver.down)
        store = open_store(Settings.from_env(env=env, database_url=database))
        stack.callback(store.close)

        count_servers = 2 if postgres else 1
        workers = 1 if postgres else 2  # two deliverers on SQLite too

        def start(slot: int) -> common.Server:
            log = work / f"server{slot}-{time.monotonic_ns()}.log"
            return common.Server(database, log, workers=workers, env=env)

        servers = Servers(start, count_servers, stack)
        first = int(time.time()) + 1
        call_list = make_calls(rng, count, numbers, first)

        def finished(call: Call) -> bool:
            return receiver.has(call.caller, "AFTER_CALL_FINISH")

        pbx = Pbx(call_list, pbx_secret, duration, rng, servers.ports, finished)
        plan = phase_plan(rng, duration * 0.85)  # within the calls: deliveries to meet them
        gone_at = duration * rng.uniform(0.45, 0.65)  # the 410 episode
        kill_moments = [rng.uniform(0.5, duration) for _ in range(kills)]
        sender = threading.Thread(target=pbx.run, args=(pbx.began + duration + 90,))
        sender.start()
        kill_log: list[dict[str, Any]] = []
        gone: dict[str, Any] = {}

        kill_rng = random.Random(seed + 1)  # its own: kills come from two threads
        timeline = Timeline(pbx.began)

        def kill_one(note: str) -> None:
            waited = time.monotonic()
            while receiver.busy() == 0 and time.monotonic() - waited < 2:
                time.sleep(0.005)
            busy = receiver.busy()
            slot = kill_rng.randrange(count_servers)
            seconds_down = servers.kill_and_restart(slot)
            kill_log.append(
                {
                    "at_seconds": round(time.monotonic() - pbx.began, 2),
                    "server": slot,
                    "attempts_in_flight": busy,
                    "seconds_down": round(seconds_down, 2),
                    "when": note,
                }
            )

        def killer() -> None:
            for at in sorted(kill_moments):
                timeline.wait(at)
                kill_one("")

        killing = threading.Thread(target=killer)
        try:
            killing.start()
            steps: list[tuple[float, str, str]] = [(at, "phase", p) for at, p in plan]
            steps.append((gone_at, "gone", ""))
            planned = "ok"
            killed_in_slow_phase = False
            for at, kind, what in sorted(steps):
                timeline.wait(at)
                step_began = time.monotonic()
                if kind == "phase":
                    if planned in BAD[1:] and not receiver.met(planned):
                        # Until a request has met it: deliveries may all have been waiting.
                        wait_until(functools.partial(receiver.met, planned), PHASE_WAIT)
                        timeline.shift += time.monotonic() - step_began
                    planned = what
                    receiver.set_phase(what)
                    if what == "slow" and not killed_in_slow_phase:
                        # One kill for sure while an attempt is in flight: in this phase
                        # and not at a moment drawn in advance, which a 410 episode or a
                        # quiet spell can move past every attempt (the receiver holds a
                        # slow request until its sender gives up, so it is still open).
                        wait_until(lambda: receiver.busy() > 0, PHASE_WAIT, 0.005)
                        kill_one("slow phase")
                        killed_in_slow_phase = True
                        timeline.shift += time.monotonic() - step_began
                    continue
                gone = disable_and_enable(pbx, receiver, store, database, env, endpoint, kill_one)
                receiver.set_phase(planned)  # the plan goes on
                timeline.shift += time.monotonic() - step_began
            killing.join()
            receiver.set_phase("ok")
            healthy_since = time.monotonic()
            sender.join()
            # Every delivery arrives once the receiver is healthy (a killed attempt's lease
            # runs out, retries come at most a few seconds apart).
            delivered = wait_until(
                lambda: all(
                    receiver.has(call.caller, event)
                    for call in call_list
                    for event in expected_events(call)
                ),
                MAX_SECONDS_TO_DELIVER,
                0.2,
            )
            healthy_for = time.monotonic() - max(pbx.last_ack, healthy_since)
            time.sleep(1.0)  # a late duplicate or a stray delivery would show now
            # The export's hooks follow the attempts in a write of their own.
            records: list[dict[str, Any]] | str = []
            shown: list[str] = ["not read"]
            deadline = time.monotonic() + MAX_SECONDS_TO_EXPORT
            while time.monotonic() < deadline:
                records = pbx_export(servers.ports()[0], key, first)
                shown = (
                    export_hooks(records, call_list, url)
                    if isinstance(records, list)
                    else [records]
                )
                if not shown:
                    break
                time.sleep(0.3)
        finally:
            timeline.shift = -1e9  # the killer's moments have all come
            killing.join(timeout=60)
            pbx.resume()
            receiver.set_phase("ok")
            sender.join(timeout=120)
            for server in servers.current:
                server.stop()
        errors = [error for s in servers.started for error in common.tracebacks_in(s.log)]

    if pbx.pending:
        problems.append(f"{pbx.pending} PBX events never got a 200")
    problems += pbx.wrong
    delivery_problems, counts = check_deliveries(call_list, receiver)
    if not delivered:
        problems.append(
            f"not every delivery arrived within {MAX_SECONDS_TO_DELIVER} s of a healthy receiver"
        )
    problems += delivery_problems
    if shown:
        problems.append(
            f"the export's hooks are not all 200 within {MAX_SECONDS_TO_EXPORT} s: "
            f"{len(shown)} calls, e.g. {shown[0]}"
        )
    problems += gone.get("problems", [])
    if not any(k["attempts_in_flight"] for k in kill_log):
        problems.append("no kill landed while an attempt was in flight: nothing was tested")
    if errors:
        problems.append(f"{len(errors)} tracebacks in the server logs, e.g. {errors[0]}")
    result.update(
        servers=count_servers,
        workers_each=workers,
        calls=len(call_list),
        calls_with_late_recording=sum(1 for c in call_list if c.recording),
        pbx_events=sum(len(b) for b in pbx.bodies),
        pbx_statuses=dict(sorted(pbx.statuses.items())),
        pbx_retries=pbx.retries,
        pbx_duplicates=pbx.duplicates,
        kills=len(kill_log),
        kills_mid_attempt=sum(1 for k in kill_log if k["attempts_in_flight"]),
        kill_log=kill_log,
        gone={k: v for k, v in gone.items() if k != "problems"},
        **counts,
        seconds_healthy_before_all_arrived=round(healthy_for, 1),
        tracebacks_in_logs=len(errors),
        seconds_total=round(time.monotonic() - began, 1),
        problems=problems,
        ok=not problems,
    )
    return result


def disable_and_enable(
    pbx: Pbx,
    receiver: Receiver,
    store: Store,
    database: str,
    env: dict[str, str],
    endpoint: dict[str, Any],
    kill_one: Callable[[str], None],
) -> dict[str, Any]:
    """The 410 episode: the PBX holds its events (no change while the endpoint is disabled),
    the receiver answers 410 until the endpoint is disabled, a server is killed meanwhile,
    then `calltrack hook enable` and the PBX goes on."""
    problems: list[str] = []
    began = time.monotonic()
    receiver.set_phase("500")  # deliveries keep failing meanwhile, and come to be answered
    pbx.pause()
    quiet = wait_until(lambda: not store.calls_behind(), 15, 0.1)
    time.sleep(0.3)
    if not quiet:
        problems.append("records stayed behind their events for 15 s (the sweeper)")
    receiver.set_phase("410")
    hook_id = int(endpoint["id"])
    disabled = wait_until(lambda: not store.hook(hook_id).enabled, 15, 0.05)
    answered_410 = sum(1 for a in receiver.snapshot() if a.status == 410)
    if not disabled:
        problems.append("a 410 did not disable the endpoint within 15 s")
    kill_one("endpoint disabled")
    time.sleep(0.5)
    receiver.set_phase("ok")
    reason = store.hook(hook_id).disabled_reason
    cli(database, env, "hook", "enable", str(hook_id))
    pbx.resume()
    return {
        "answered_410": answered_410,
        "disabled_reason": reason,
        "seconds_paused": round(time.monotonic() - began, 2),
        "problems": problems,
    }


def pbx_export(port: int, key: str, first: int) -> list[dict[str, Any]] | str:
    from tests.faults.pbx_retry import export

    return export(port, key, first)


if __name__ == "__main__":
    common.main(
        run,
        __doc__,
        postgres=(bool, "two servers on a private PostgreSQL cluster (else one on SQLite)"),
        calls=(int, "how many calls the PBX places (default 6 a second of --seconds)"),
        seconds=(float, "how long the PBX places calls (default 25, quick 10)"),
        seed=(int, "repeat a run's calls, phases and kill moments"),
    )
