"""Telephony under load, and who held a number a year ago.

1. A PBX's calls posted to ``POST /telephony/generic`` of a real ``calltrack serve`` (workers =
   cores), three requests a call (``call.started``, ``call.answered``, ``call.ended``), from
   ``--lines`` concurrent PBX lines driven by wrk (a Lua script; one wrk thread a line, so each
   line sends its call's next event when the answer to the previous one is back): calls per
   second, p50/p99 of a request, the server's CPU per call, and the records counted in the
   store afterwards (every ended call is one record). Twice on the same server: pinned (the
   server on CPU 0, wrk on CPU 1: the cost of a call, clean of the client) and on every core
   ("on this machine", the goal). On SQLite and PostgreSQL, each from a store with
   ``--history`` calls (20,000) merged in process beforehand, with PostgreSQL's statistics
   gathered as autovacuum would: a store in use, not one in its first minute.
2. The attribution lookup (``store.holder_at``) over a year of holds: the median time for
   calls of a year ago against calls of today (goal: no slower).

    .venv/bin/python bench/telephony.py                 # both stores, 10 s a run
    .venv/bin/python bench/telephony.py --seconds 3 --no-postgres

Prints JSON, and writes it to ``--out`` (default bench/out/telephony.json).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import data
import load
import procs

from calltrack.config import Settings
from calltrack.store import open_store
from calltrack.store.core import unix_now
from calltrack.telephony.events import TelephonyEvent
from calltrack.telephony.service import Delivery, receive_batch

HERE = Path(__file__).resolve().parent
POOL = 20
HISTORY = 20_000
ADMIN_PG = os.environ.get(
    "CALLTRACK_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def setup(url: str) -> str:
    """An account with a campaign, a pool and a generic endpoint; the endpoint's secret."""
    data.calltrack(url, "account", "add", "pbx")
    data.calltrack(url, "campaign", "add", "pbx", "1", "Shop", "--site", "shop.example")
    for index in range(POOL):
        data.calltrack(url, "phone", "add", "pbx", f"7495100{index:04d}", "--campaign", "1",
                       "--dynamic")  # fmt: skip
    return str(data.calltrack(url, "telephony", "add", "pbx")["secret"])


# One wrk thread per PBX line, each with one connection: a thread's Lua state is its line's,
# so the line posts its call's events one after the other (the next when the answer to the
# previous is back), and a call id never repeats (run tag, line, serial). An answer other
# than 200 makes the line post the same event again, as a PBX retries.
_LUA = """
local secret, run, pool, out = %(secret)s, %(run)s, %(pool)d, %(out)s
local threads, lines = {}, 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. secret
function setup(thread)
  thread:set("line", lines); lines = lines + 1
  table.insert(threads, thread)
end
function init(args)
  serial, step, ended_ok, ended_sent, non200, sent_end = 0, 0, 0, 0, 0, false
  statuses = {}
end
function request()
  if step == 0 then serial = serial + 1; sent_end = false end
  local id = run .. "-" .. line .. "-" .. serial
  local now = os.time()
  local body
  if step == 0 then
    body = string.format('{"event":"call.started","call_id":"%%s","at":%%d,' ..
      '"caller":"7916%%03d%%04d","called":"7495100%%04d"}',
      id, now - 140, line %% 1000, serial %% 10000, (line + serial) %% pool)
  elseif step == 1 then
    body = string.format('{"event":"call.answered","call_id":"%%s","at":%%d}', id, now - 130)
  else
    if not sent_end then ended_sent = ended_sent + 1; sent_end = true end
    body = string.format('{"event":"call.ended","call_id":"%%s","at":%%d,' ..
      '"talk_seconds":130,"disposition":"answered"}', id, now)
  end
  return wrk.format(nil, "/telephony/generic", nil, body)
end
function response(status, headers, body)
  if status ~= 200 then
    non200 = non200 + 1
    statuses[tostring(status)] = (statuses[tostring(status)] or 0) + 1
    return
  end
  if step == 2 then ended_ok = ended_ok + 1; step = 0 else step = step + 1 end
end
function done(summary, latency, requests)
  local t = {ended_ok = 0, ended_sent = 0, non200 = 0}
  local statuses = {}
  for _, thread in ipairs(threads) do
    for name, _ in pairs(t) do t[name] = t[name] + thread:get(name) end
    for code, count in pairs(thread:get("statuses")) do
      statuses[code] = (statuses[code] or 0) + count
    end
  end
  local codes = {}
  for code, count in pairs(statuses) do table.insert(codes, '"' .. code .. '":' .. count) end
  local e = summary.errors
  local f = io.open(out, "w")
  f:write(string.format('{"requests":%%d,"duration_us":%%d,"errors":%%d,"p50_us":%%d,' ..
    '"p90_us":%%d,"p99_us":%%d,"max_us":%%d,"ended_ok":%%d,"ended_sent":%%d,"non200":%%d,' ..
    '"statuses":{%%s}}',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    t.ended_ok, t.ended_sent, t.non200, table.concat(codes, ",")))
  f:close()
end
"""


def postgres_pids() -> list[int]:
    """Every PostgreSQL process of the machine (others' sessions included)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if Path(f"/proc/{entry}/comm").read_text().strip() == "postgres":
                    found.append(int(entry))
            except OSError:
                continue
    return found


def pbx_lines(
    port: int, secret: str, lines: int, seconds: float, *, run: str, cpus: str | None,
    server_pids: list[int], cores: str,
) -> dict[str, Any]:  # fmt: skip
    """``lines`` PBX lines posting the three events of call after call for ``seconds``."""
    script = _LUA % {
        "secret": load.lua_string(secret),
        "run": load.lua_string(run),
        "pool": POOL,
        "out": '"{out}"',
    }
    pg0 = {pid: procs.cpu_seconds([pid]) for pid in postgres_pids()}
    cpu0, busy0 = procs.cpu_seconds(server_pids), _busy()
    # -t = -c: a thread per line (run_wrk gives one per client core; lines need their own).
    raw, client_cpu = _run_wrk(script, port, lines, seconds, cpus)
    server_cpu = procs.cpu_seconds(server_pids) - cpu0
    # PostgreSQL processes that lived through the run (a session that ended meanwhile has no
    # after, and one that began has no before: others' short sessions are left out).
    pg1 = {pid: procs.cpu_seconds([pid]) for pid in postgres_pids()}
    pg_cpu = sum(max(0.0, pg1[pid] - before) for pid, before in pg0.items() if pid in pg1)
    busy = _busy() - busy0
    elapsed = raw["duration_us"] / 1e6
    calls = raw["ended_ok"]
    return {
        "server_cores": cores,
        "client_cores": cpus or "all",
        "lines": lines,
        "seconds": round(elapsed, 2),
        "calls": calls,
        "calls_per_s": round(calls / elapsed, 1),
        "requests_per_s": round(raw["requests"] / elapsed, 1),
        "p50_ms": raw["p50_us"] / 1000,
        "p90_ms": raw["p90_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "non_200": raw["non200"],
        "statuses": raw["statuses"],
        "socket_errors": raw["errors"],
        "ended_sent": raw["ended_sent"],
        "server_cpu_ms_per_call": round(1000 * server_cpu / max(1, calls), 2),
        "server_cpu_pct": round(100 * server_cpu / elapsed, 1),
        "client_cpu_pct": round(100 * client_cpu / elapsed, 1),
        "postgres_cpu_pct": round(100 * pg_cpu / elapsed, 1),
        "other_cpu_pct": round(100 * max(0.0, busy - server_cpu - client_cpu - pg_cpu) / elapsed,
                               1),
    }  # fmt: skip


def _busy() -> float:
    return procs.machine_busy_seconds()


def _run_wrk(
    script: str, port: int, lines: int, seconds: float, cpus: str | None
) -> tuple[dict[str, Any], float]:
    import subprocess

    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        out, path = Path(tmp) / "out.json", Path(tmp) / "script.lua"
        path.write_text(script.replace('"{out}"', load.lua_string(str(out))))
        cmd = ["wrk", f"-t{lines}", f"-c{lines}", f"-d{max(1, round(seconds))}s",
               "--timeout", "10s", "-s", str(path), f"http://127.0.0.1:{port}"]  # fmt: skip
        before = os.times()
        subprocess.run(procs.pinned(cmd, cpus), capture_output=True, timeout=seconds + 30,
                       check=True)  # fmt: skip
        after = os.times()
        client_cpu = after.children_user + after.children_system
        client_cpu -= before.children_user + before.children_system
        return json.loads(out.read_text()), client_cpu


def add_history(url: str, secret: str, calls: int, batch: int = 64) -> float:
    """``calls`` earlier calls of the PBX's callers, merged through the service in process
    (the path a request takes, in batches of ``batch`` requests), with the statistics
    autovacuum gathers as tables grow (PostgreSQL): the store a busy PBX posts to, not one in
    its first minute. The seconds it took."""
    started = time.monotonic()
    settings = Settings.from_env(env={}, database_url=url)
    store = open_store(settings)
    try:
        at = unix_now() - 86400
        pending: list[Delivery] = []
        for serial in range(calls):
            line, call_id = serial % 32, f"history-{serial}"
            caller = f"7916{line:03d}{(serial // 32) % 10000:04d}"  # the lines' callers
            called = f"7495100{serial % POOL:04d}"
            start = at + serial * 4  # a call every 4 s over the day before
            events = [
                TelephonyEvent("call.started", call_id, start, caller=caller, called=called),
                TelephonyEvent("call.answered", call_id, start + 10),
                TelephonyEvent("call.ended", call_id, start + 140, talk_seconds=130,
                               disposition="answered"),
            ]  # fmt: skip
            pending += [Delivery([event], secret=secret) for event in events]
            if len(pending) >= batch or serial == calls - 1:
                outcomes = receive_batch(store, settings, pending, start + 140)
                if not all(outcome is True for outcome in outcomes):
                    raise RuntimeError(f"history not merged: {outcomes[:3]}")
                pending = []
            if serial % 2000 == 1999 or serial == calls - 1:
                _analyze(url)
    finally:
        store.close()
    return time.monotonic() - started


def _analyze(url: str) -> None:
    """What autovacuum does on PostgreSQL once a table grew by a tenth (here without waiting
    for its next round); SQLite's planner keeps no statistics unless told to."""
    if url.startswith("postgresql"):
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ANALYZE")


def bench_events(
    name: str, url: str, lines: int, seconds: float, work: Path, history: int
) -> dict[str, Any]:
    """``history`` calls in the store, a warm-up, then ``seconds`` pinned (server CPU 0, wrk
    CPU 1) and on every core."""
    secret = setup(url)
    history_seconds = add_history(url, secret, history) if history else 0.0
    port = procs.free_port()
    workers = os.cpu_count() or 2
    pin = workers > 1
    cmd = [data.CALLTRACK, "--database", url, "serve", "--port", str(port), "--workers",
           str(workers)]  # fmt: skip
    server = procs.start(
        procs.pinned(cmd, "0" if pin else None),
        work / f"telephony-{name}.log",
        env={"CALLTRACK_SWEEP_SECONDS": "5"},
    )
    runs = []
    try:
        procs.wait_http(f"http://127.0.0.1:{port}/healthz", server)
        deadline = time.monotonic() + 30
        while len(pids := procs.worker_pids(server.pid)) < workers:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(pids)} of {workers} workers started")
            time.sleep(0.2)
        common = {"server_pids": pids}
        warm = pbx_lines(port, secret, lines, 2, run="warm", cpus="1" if pin else None,
                         cores="0" if pin else "all", **common)  # fmt: skip
        placements = [("0", "1"), ("all", None)] if pin else [("all", None)]
        for cores, client in placements:
            if cores == "all" and pin:
                procs.unpin([server.pid, *pids])
            procs.wait_for_quiet()
            measured = pbx_lines(port, secret, lines, seconds, run=f"cores{cores}",
                                 cpus=client, cores=cores, **common)  # fmt: skip
            print(f"{name}: server CPU {cores}: {measured['calls_per_s']} calls/s, "
                  f"p50 {measured['p50_ms']} ms, p99 {measured['p99_ms']} ms, "
                  f"{measured['server_cpu_ms_per_call']} server CPU ms/call",
                  flush=True)  # fmt: skip
            runs.append(measured)
    finally:
        procs.stop(server)
    store = open_store(Settings.from_env(env={}, database_url=url))
    try:
        records = store.count_calls()
        with store._connect() as conn:
            ended, behind = conn.execute(
                "SELECT count(*), coalesce(sum(CASE WHEN built < version THEN 1 ELSE 0 END), 0) "
                "FROM telephony_calls WHERE ended = 1"
            ).fetchone()
    finally:
        store.close()
    answered = history + sum(run["calls"] for run in [warm, *runs])
    sent = history + sum(run["ended_sent"] for run in [warm, *runs])
    return {
        "runs": runs,
        "history_calls": history,
        "history_seconds": round(history_seconds, 1),
        "records": records,
        "ended_calls": int(ended),
        "records_behind": int(behind),
        # Every ended call is one record, none behind; every call whose call.ended was
        # answered 200 is among them, and none whose call.ended was never sent (a call.ended
        # cut off at wrk's end may still have been stored). The history's and the warm-up's
        # calls count too.
        "every_call_one_record": int(ended) == records
        and int(behind) == 0
        and answered <= records <= sent,
        "ended_answered": answered,
        "ended_sent": sent,
    }


def bench_attribution(url: str, days: int = 365, per_day: int = 400) -> dict[str, Any]:
    """A year of holds of a pool; ``holder_at`` for calls of a year ago and of today."""
    store = open_store(Settings.from_env(env={}, database_url=url))
    try:
        account = store.create_account("history").id
        now = unix_now()
        first = now - days * 86400
        step = 86400 // per_day
        with store._transaction() as conn:
            rows = []
            sessions = []
            for index in range(days * per_day):
                start = first + index * step
                session = f"s{index}"
                sessions.append((session, "v", account, 1, start, start, 1, "{}", "", "", "", "",
                                 "", "", "", ""))  # fmt: skip
                rows.append((account, f"7495200{index % POOL:04d}", session, start, start + 600))
            conn.executemany(
                "INSERT INTO sessions (id, visitor_id, account_id, campaign_id, started_at, "
                "last_activity_at, ordinal, source, landing_url, referrer, ga, ym, rs, ip, "
                "user_agent, number) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                sessions,
            )
            conn.executemany(
                "INSERT INTO holds (account_id, number, session_id, held_from, held_until) "
                "VALUES (?, ?, ?, ?, ?)",
                rows,
            )

        with store._connect() as conn:  # as autovacuum would after such a load
            if store.dialect == "postgres":
                conn.execute("ANALYZE holds")
                conn.execute("ANALYZE sessions")

        def lookup_us(at: int, index: int) -> float:
            began = time.perf_counter()
            store.holder_at(account, f"7495200{index % POOL:04d}", at + index * 7)
            return 1e6 * (time.perf_counter() - began)

        # Interleaved, each pair in turn order, after a warm-up (the statements prepared):
        # whatever the machine does meanwhile falls on both alike.
        for index in range(20):
            lookup_us(now - 7200, index)
        olds: list[float] = []
        todays: list[float] = []
        for index in range(300):
            pair = [(first + 3600, olds), (now - 7200, todays)]
            for at, times in pair if index % 2 else pair[::-1]:
                times.append(lookup_us(at, index))
        old = round(statistics.median(olds), 1)
        today = round(statistics.median(todays), 1)
        return {"holds": len(rows), "year_ago_us": old, "today_us": today,
                "ratio_old_to_new": round(old / today, 2)}  # fmt: skip
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--lines", type=int, default=32)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument("--no-attribution", action="store_true")
    parser.add_argument(
        "--history",
        type=int,
        default=HISTORY,
        help="calls in the store before the runs (0: a fresh store)",
    )
    parser.add_argument("--out", type=Path, default=HERE / "out")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"lines": args.lines, "cores": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="calltrack-tel-") as folder:
        work = Path(folder)
        created: list[str] = []

        def sqlite(name: str) -> str:
            return f"sqlite:///{work / name}.db"

        def postgres(name: str) -> str:
            created.append(f"calltrack_{name}")
            return data.pg_create(ADMIN_PG, f"calltrack_{name}")

        backends = [] if args.no_sqlite else [("sqlite", sqlite)]
        if not args.no_postgres and data.pg_reachable(ADMIN_PG):
            backends.append(("postgres", postgres))
        try:
            for backend, make in backends:
                events = bench_events(
                    backend, make("bench_tel"), args.lines, args.seconds, work, args.history
                )
                results[backend] = {"events": events}
                if not args.no_attribution:
                    results[backend]["attribution"] = bench_attribution(make("bench_attr"))
        finally:
            procs.stop_all()
            for name in created:
                data.pg_drop(ADMIN_PG, name)
    print(json.dumps(results, indent=2))
    (args.out / "telephony.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
