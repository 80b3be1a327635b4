"""Lending under concurrent hits from two `calltrack serve` processes on one PostgreSQL.

The contract's invariant: at no instant is one pool number held by two sessions, with any
number of workers and hosts serving hits at once. Here two servers (two workers each) share a
private PostgreSQL cluster and a campaign with a small pool; many visitors (threads) each post
a hit, then pings, every request to a random one of the two servers. Most visitors vanish
after a few pings, so their holds expire and their numbers are lent again; a few stay and ping
within the hold until the end. Busy phases (every thread: the pool exhausted, each freed number
raced for) take turns with calm ones (a few new visitors: numbers stay free). Then the
answers and the database's `holds` and `phones` tables are checked:

- every answer is a 200, and both servers answered hits;
- no two holds of different sessions on one number overlap (a hold spans the half-open
  [held_from, held_until): at held_until the number is free);
- as the clients saw it: while one session was certainly holding a number (from the answer
  that gave it to the last answer's send time plus the hold), no other session was answered
  that number; a visitor that pinged within the hold kept its session and its number;
- every answer naming a pool number is backed by a hold of that session that lasts at least
  the hold time past the request (no hold ends early);
- the stub is answered only while every pool number was held;
- each number's current holder in `phones` is its latest hold.

The checks bite: with the lend's SELECT taking no row lock (no FOR UPDATE SKIP LOCKED), a quick
run finds dozens of overlapping holds, numbers answered to two sessions and pinging visits that
lose their number; with extensions a little short of the hold, answers with no hold behind them;
with a lend that gives the stub one time in ten, a full run catches a stub while a number was
free (the quick run's calm phase is too short to be sure to).

Server time is whole seconds of the wall clock (the clients run on the same machine and stamp
each request with the wall clock when sent and when answered), so every client-side check
uses only what the two stamps make certain, never a guess at when the server decided.

The campaign is set up with the CLI (a 600 s hold); the run then shortens the hold straight in
the database (the CLI rightly refuses holds of seconds), so that holds run out and numbers are
lent again many times within a bounded run.

    .venv/bin/python tests/faults/hits_two_servers.py            # full: 60 s, 10 s holds
    .venv/bin/python tests/faults/hits_two_servers.py --quick    # what CI runs: 12 s, 3 s holds

Prints the measurements as JSON; exits 1 if an expectation failed. Bounded in time; the
servers and the cluster are stopped and the temp dir removed on any exit.
"""

from __future__ import annotations

import bisect
import contextlib
import http.client
import itertools
import json
import random
import sys
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

try:
    from tests.faults import _common as common
except ModuleNotFoundError:  # run as a file: python tests/faults/hits_two_servers.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root
    from tests.faults import _common as common

SITE = "https://shop.example"
POOL = tuple(f"7495000{i:04d}" for i in range(8))
STUB = "74959999999"
VISITORS = 48  # threads, each one visitor after another
LOYAL = 2  # of them keep one visitor pinging within the hold to the end (fewer than POOL)
CALM = LOYAL  # the thread that still brings new visitors in calm phases; the rest is the crowd
MAX_PINGS = 2  # a vanishing visitor pings 0..MAX_PINGS times, then is gone
CLI_HOLD = 600  # what the campaign is set up with, as a real one would be
HOLD_QUICK, HOLD_FULL = 3, 10  # seconds: what the run shortens it to, in the database


@dataclass(frozen=True, slots=True)
class Reply:
    """One hit or ping as its visitor saw it, stamped with the wall clock (the server's too)."""

    thread: int
    visitor: int  # the thread's n-th visitor
    server: int
    kind: str  # "hit" or "ping"
    sent: float
    received: float
    status: int
    visitor_id: str
    session: str
    number: str
    error: str = ""

    @property
    def first_second(self) -> int:
        """The earliest server second the answer can have been decided in."""
        return int(self.sent)

    @property
    def last_second(self) -> int:
        return int(self.received)


@dataclass(frozen=True, slots=True)
class Hold:
    id: int
    number: str
    session: str
    held_from: int
    held_until: int


class Visitors:
    """The visitors' threads, each with a kept-alive connection to each server."""

    def __init__(self, ports: list[int], site_key: str, hold: int, seed: int, seconds: float):
        self.ports, self.site_key, self.hold, self.seed = ports, site_key, hold, seed
        self.started = time.time()
        self.ends = self.started + seconds
        self.replies: list[Reply] = []
        self._lock = threading.Lock()

    def run(self) -> None:
        threads = [
            threading.Thread(target=self._visit, args=(n,), daemon=True) for n in range(VISITORS)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=max(0.0, self.ends - time.time()) + 120)

    def busy(self, at: float) -> bool:
        """Busy and calm phases take turns, each two holds long. Busy: every thread, the pool
        always exhausted, each freed number wanted by many hits at once (where lending races).
        Calm: the crowd is gone and its holds run out, so numbers stay free for seconds, and a
        stub answered then would be seen as wrong."""
        return (at - self.started) % (4 * self.hold) < 2 * self.hold

    def _visit(self, thread: int) -> None:
        rng = random.Random(self.seed * 1000 + thread)
        conns: dict[int, http.client.HTTPConnection] = {}
        visitor = 0
        try:
            while time.time() < self.ends:
                busy = self.busy(time.time())
                if not busy and thread > CALM:  # the crowd waits for the next busy phase
                    time.sleep(0.1)
                    continue
                visitor += 1
                reply = self._post(conns, rng, thread, visitor, None)
                pings = 10**9 if thread < LOYAL else rng.randint(0, MAX_PINGS if busy else 0)
                while reply.status == 200 and pings > 0 and time.time() < self.ends:
                    pings -= 1
                    # Well within the hold: a visitor that pings must keep its number.
                    time.sleep(rng.uniform(0.05, self.hold / 5))
                    reply = self._post(conns, rng, thread, visitor, reply)
                # Gone: its hold runs out by itself. Calm: three new visitors a hold, so about
                # three numbers held by them and the loyal ones' two, and the rest free.
                time.sleep(rng.uniform(0, 0.1) if busy else self.hold / 3)
        finally:
            for conn in conns.values():
                conn.close()

    def _post(
        self,
        conns: dict[int, http.client.HTTPConnection],
        rng: random.Random,
        thread: int,
        visitor: int,
        last: Reply | None,
    ) -> Reply:
        """A hit (``last`` None) or a ping of ``last``'s session, to a random server."""
        server = rng.randrange(len(self.ports))
        body = {"k": self.site_key, "t": "hit", "u": f"{SITE}/?utm_source=yandex"}
        if last is not None:
            body.update(t="ping", v=last.visitor_id, s=last.session)
        payload = json.dumps(body).encode()
        headers = {"content-type": "text/plain", "origin": SITE}
        sent = time.time()
        status, error = 0, ""
        answer: dict[str, Any] = {}
        for attempt in range(2):  # a kept-alive connection the server closed: once more, anew
            if server not in conns:
                conns[server] = http.client.HTTPConnection(
                    "127.0.0.1", self.ports[server], timeout=30
                )
            try:
                conns[server].request("POST", "/t/hit", body=payload, headers=headers)
                response = conns[server].getresponse()
                raw = response.read()
                status = response.status
                answer = json.loads(raw) if status == 200 else {}
                error = "" if status == 200 else raw[:200].decode(errors="replace")
                break
            except (OSError, http.client.HTTPException, ValueError) as exc:
                conns.pop(server).close()
                status, error = 0, repr(exc)
                if attempt or time.time() - sent > 1:
                    break
        reply = Reply(
            thread,
            visitor,
            server,
            body["t"],
            sent,
            time.time(),
            status,
            str(answer.get("v", "")),
            str(answer.get("s", "")),
            str(answer.get("n", "")),
            error,
        )
        with self._lock:
            self.replies.append(reply)
        return reply


# -- the checks: pure functions of the replies and the database's rows -------------------------


def overlapping_holds(holds: list[Hold]) -> list[str]:
    """Pairs of holds of different sessions on one number whose spans share a second."""
    found = []
    by_number: dict[str, list[Hold]] = defaultdict(list)
    for hold in holds:
        if hold.held_until < hold.held_from:
            found.append(f"hold {hold.id} of {hold.number} ends before it starts")
        by_number[hold.number].append(hold)
    for number, spans in by_number.items():
        spans.sort(key=lambda h: (h.held_from, h.id))
        for j, later in enumerate(spans):
            for earlier in spans[:j]:  # earlier.held_from <= later.held_from
                if earlier.session != later.session and later.held_from < earlier.held_until:
                    found.append(
                        f"{number} held by {earlier.session[:8]} over "
                        f"[{earlier.held_from}, {earlier.held_until}] and by "
                        f"{later.session[:8]} over [{later.held_from}, {later.held_until}]"
                    )
    return found


def by_visitor(replies: list[Reply]) -> list[list[Reply]]:
    """Each visitor's answered requests in the order it sent them."""
    visits: dict[tuple[int, int], list[Reply]] = defaultdict(list)
    for reply in sorted(replies, key=lambda r: r.sent):
        if reply.status == 200:
            visits[(reply.thread, reply.visitor)].append(reply)
    return list(visits.values())


def certainly_kept(before: Reply, after: Reply, hold: int) -> bool:
    """Whether ``after`` was decided while ``before``'s hold certainly lasted: its hold runs at
    least to the second ``before`` was sent plus the hold, exclusive."""
    return before.number in POOL and after.last_second < before.first_second + hold


def client_view(replies: list[Reply], hold: int) -> tuple[list[str], dict[str, int]]:
    """What the clients alone prove: sessions kept, numbers kept within the hold, and no
    number answered to two sessions while one certainly held it."""
    problems: list[str] = []
    kinds = ("sessions_changed", "numbers_lost_within_hold", "answers_to_a_held_number")
    counts: Counter[str] = Counter(dict.fromkeys(kinds, 0))
    # number: (session, lo, hi), the seconds it certainly held the number, both ends included
    runs: dict[str, list[tuple[str, int, int]]] = defaultdict(list)
    for visit in by_visitor(replies):
        if visit[0].kind != "hit":
            continue  # its hit failed: the failure is reported elsewhere
        start = visit[0]
        for before, after in itertools.pairwise(visit):
            if after.session != before.session and not midnight_between(before, after):
                counts["sessions_changed"] += 1
                problems.append(
                    f"a ping of session {before.session[:8]} was answered another session "
                    f"({after.session[:8]}) before midnight"
                )
            if certainly_kept(before, after, hold):
                counts["pings_within_hold_checked"] += 1
                if after.number != before.number:
                    counts["numbers_lost_within_hold"] += 1
                    problems.append(
                        f"session {before.session[:8]} lost {before.number} to "
                        f"{after.number or 'nothing'} within its hold"
                    )
            elif before.number in POOL:
                counts["pings_late"] += 1  # a slow answer: keeping is not certain, not checked
            if (
                after.number != before.number
                or after.session != before.session
                or not certainly_kept(before, after, hold)
            ):
                if start.number in POOL:
                    runs[start.number].append(
                        (start.session, start.last_second, before.first_second + hold - 1)
                    )
                start = after
        last = visit[-1]
        if start.number in POOL:
            span = (start.session, start.last_second, last.first_second + hold - 1)
            runs[start.number].append(span)
    for reply in replies:
        if reply.status != 200 or reply.number not in POOL:
            continue
        for session, lo, hi in runs[reply.number]:
            if session != reply.session and lo <= reply.first_second and reply.last_second <= hi:
                counts["answers_to_a_held_number"] += 1
                if len(problems) < 20:
                    problems.append(
                        f"{reply.number} answered to {reply.session[:8]} in "
                        f"[{reply.first_second}, {reply.last_second}] while {session[:8]} "
                        f"certainly held it over [{lo}, {hi}]"
                    )
    counts["client_runs"] = sum(len(r) for r in runs.values())
    return problems, dict(counts)


def midnight_between(before: Reply, after: Reply) -> bool:
    """The service's zone is UTC here: a session ends at its midnight."""
    day = datetime.fromtimestamp(before.sent, UTC).date()
    return datetime.fromtimestamp(after.received, UTC).date() != day


def database_view(
    replies: list[Reply],
    holds: list[Hold],
    phones: dict[str, tuple[str | None, int | None]],
    hold: int,
) -> tuple[list[str], dict[str, int]]:
    """Answers against the rows: each pool number answered is backed by a hold of its session
    lasting the hold time past the request; the stub only while every number was held; each
    number's holder in `phones` is its latest hold."""
    problems: list[str] = []
    kinds = ("answers_without_a_hold", "stubs_while_a_number_was_free", "phones_not_latest_hold")
    counts: Counter[str] = Counter(dict.fromkeys(kinds, 0))
    of_session: dict[tuple[str, str], list[Hold]] = defaultdict(list)
    by_number: dict[str, list[Hold]] = defaultdict(list)
    for row in holds:
        of_session[(row.session, row.number)].append(row)
        by_number[row.number].append(row)
    # For "was the number held at some second of [lo, hi]": holds by start, the latest end so far.
    starts: dict[str, list[int]] = {}
    reach: dict[str, list[int]] = {}
    for number in POOL:
        spans = sorted(by_number[number], key=lambda h: h.held_from)
        starts[number] = [h.held_from for h in spans]
        reach[number] = list(itertools.accumulate((h.held_until for h in spans), max))
    for reply in replies:
        if reply.status != 200:
            continue
        if reply.number in POOL:
            counts["answers_backed_checked"] += 1
            if not any(
                h.held_from <= reply.last_second and h.held_until >= reply.first_second + hold
                for h in of_session[(reply.session, reply.number)]
            ):
                counts["answers_without_a_hold"] += 1
                problems.append(
                    f"{reply.number} answered to {reply.session[:8]} at {reply.sent:.3f} has no "
                    f"hold lasting to {reply.first_second + hold}"
                )
        elif reply.number == STUB:
            counts["stub_answers"] += 1
            free = [
                number
                for number in POOL
                if not (
                    (i := bisect.bisect_right(starts[number], reply.last_second))
                    and reach[number][i - 1] > reply.first_second
                )
            ]
            if free:
                counts["stubs_while_a_number_was_free"] += 1
                problems.append(
                    f"the stub answered at {reply.sent:.3f} while {free[0]} was free throughout"
                )
        else:
            problems.append(f"answered {reply.number!r}: neither a pool number nor the stub")
    for number in POOL:
        latest = max(by_number[number], key=lambda h: (h.held_from, h.id), default=None)
        now = phones.get(number)
        expected = (latest.session, latest.held_until) if latest else (None, None)
        if now != expected:
            counts["phones_not_latest_hold"] += 1
            problems.append(f"phones says {number} is held {now}, its latest hold {expected}")
    return problems, dict(counts)


# -- the run ----------------------------------------------------------------------------------


def read_rows(
    database: str, site_key: str
) -> tuple[list[Hold], dict[str, tuple[str | None, int | None]]]:
    """The campaign's holds and its numbers' current holders, straight from PostgreSQL."""
    import psycopg

    with psycopg.connect(database) as conn:
        account = conn.execute(
            "SELECT account_id FROM campaigns WHERE site_key = %s", (site_key,)
        ).fetchone()
        common.require(account, "the campaign is gone")
        holds = [
            Hold(int(row[0]), str(row[1]), str(row[2]), int(row[3]), int(row[4]))
            for row in conn.execute(
                "SELECT id, number, session_id, held_from, held_until FROM holds "
                "WHERE account_id = %s",
                account,
            )
        ]
        phones = {
            str(row[0]): (row[1], row[2])
            for row in conn.execute(
                "SELECT number, held_by, held_until FROM phones WHERE account_id = %s "
                "AND kind = 'dynamic'",
                account,
            )
        }
    return holds, phones


def set_hold(database: str, site_key: str, hold: int) -> None:
    """A hold shorter than the CLI allows, so that holds run out within the run."""
    import psycopg

    with psycopg.connect(database) as conn:
        conn.execute("UPDATE campaigns SET hold_seconds = %s WHERE site_key = %s", (hold, site_key))


def run(
    quick: bool, seconds: float | None = None, hold: int | None = None, seed: int | None = None
) -> dict[str, Any]:
    """Visit, then check; the result holds the measurements, ``problems`` and ``ok``."""
    seed = random.randrange(10**6) if seed is None else seed
    duration = seconds or (12.0 if quick else 60.0)  # quick: one busy and one calm phase
    hold = hold or (HOLD_QUICK if quick else HOLD_FULL)
    result: dict[str, Any] = {
        "scenario": "hits_two_servers",
        "quick": quick,
        "seed": seed,
        "seconds": duration,
        "hold_seconds": hold,
        "pool": len(POOL),
        "visitor_threads": VISITORS,
    }
    with contextlib.ExitStack() as stack:
        work = stack.enter_context(common.temp_dir("calltrack-hits-"))
        try:
            database, _ = common.started_database(stack, work, postgres=True)
        except FileNotFoundError as exc:
            return {**result, "ok": False, "skipped": str(exc)}
        common.cli(database, "account", "add", "shop")
        site_key = str(
            common.cli(
                database,
                *("campaign", "add", "shop", "1", "Shop", "--site", SITE),
                *("--hold-seconds", str(CLI_HOLD), "--stub", STUB),
            )["site_key"]
        )
        with ThreadPoolExecutor(len(POOL)) as pool:  # each CLI run takes a second to start
            list(
                pool.map(
                    lambda n: common.cli(
                        database, "phone", "add", "shop", n, "--campaign", "1", "--dynamic"
                    ),
                    POOL,
                )
            )
        set_hold(database, site_key, hold)
        # No per-IP limit: every visitor comes from 127.0.0.1. UTC: sessions end at its midnight.
        env = {"CALLTRACK_HIT_LIMIT": "0", "CALLTRACK_TIMEZONE": "UTC"}
        servers = [common.Server(database, work / f"server{n}.log", env=env) for n in (1, 2)]
        for server in servers:
            stack.callback(server.stop)
        visitors = Visitors([s.port for s in servers], site_key, hold, seed, duration)
        visitors.run()
        elapsed = time.time() - visitors.started
        holds, phones = read_rows(database, site_key)
        for server in servers:
            server.stop()
        tracebacks = sum(s.log.read_text(errors="replace").count("Traceback") for s in servers)

    replies = visitors.replies
    problems: list[str] = []
    failed = [r for r in replies if r.status != 200]
    if failed:
        problems.append(
            f"{len(failed)} answers were not 200, e.g. {failed[0].status} {failed[0].error}"
        )
    per_server = Counter(r.server for r in replies if r.status == 200)
    if len(per_server) < len(servers):
        problems.append(f"not every server answered: {dict(per_server)}")
    overlaps = overlapping_holds(holds)
    if overlaps:
        problems.append(f"{len(overlaps)} pairs of holds overlap, e.g. {overlaps[0]}")
    seen, client_counts = client_view(replies, hold)
    backed, database_counts = database_view(replies, holds, phones, hold)
    problems += seen[:10] + backed[:10]
    sessions_per_number = Counter(n for n, _ in {(h.number, h.session) for h in holds})
    lent_again = sum(1 for n in POOL if sessions_per_number.get(n, 0) > 1)
    if not lent_again:
        problems.append("no number was lent to a second session: nothing was tested")
    if not database_counts.get("stub_answers") or not client_counts.get(
        "pings_within_hold_checked"
    ):
        problems.append("no stub or no ping within a hold was answered: nothing was tested")
    if tracebacks:
        problems.append(f"{tracebacks} tracebacks in the server logs")
    latencies = sorted(r.received - r.sent for r in replies)
    result.update(
        answers=len(replies),
        answers_per_second=round(len(replies) / elapsed, 1),
        hits=sum(1 for r in replies if r.kind == "hit"),
        pings=sum(1 for r in replies if r.kind == "ping"),
        p50_ms=round(latencies[len(latencies) // 2] * 1000, 1) if latencies else None,
        p99_ms=round(latencies[len(latencies) * 99 // 100] * 1000, 1) if latencies else None,
        statuses={str(k): v for k, v in Counter(r.status for r in replies).items()},
        answers_per_server={f"server{k + 1}": v for k, v in sorted(per_server.items())},
        sessions=len({r.session for r in replies if r.status == 200}),
        holds_checked=len(holds),
        sessions_per_number=dict(sorted(sessions_per_number.items())),
        numbers_lent_again=lent_again,
        overlapping_hold_pairs=len(overlaps),
        calm_answers=sum(1 for r in replies if not visitors.busy(r.sent)),
        calm_stub_answers=sum(1 for r in replies if r.number == STUB and not visitors.busy(r.sent)),
        **client_counts,
        **database_counts,
        tracebacks_in_logs=tracebacks,
        problems=problems,
        ok=not problems,
    )
    return result


if __name__ == "__main__":
    common.main(
        run,
        __doc__,
        seconds=(float, "how long visitors come (default 60, quick 12)"),
        hold=(int, f"the hold in seconds (default {HOLD_FULL}, quick {HOLD_QUICK})"),
        seed=(int, "repeat a run's visitors"),
    )
