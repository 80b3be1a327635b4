"""Telephony under load, and who held a number a year ago.

1. A PBX's calls posted to ``POST /telephony/generic`` of a real ``calltrack serve`` (workers =
   cores), three requests a call (``call.started``, ``call.answered``, ``call.ended``), from
   ``--lines`` concurrent PBX lines: calls per second, p50/p99 of a request, and the records
   counted in the store afterwards (every ended call is one record). On SQLite and PostgreSQL.
2. The attribution lookup (``store.holder_at``) over a year of holds: the median time for
   calls of a year ago against calls of today (goal: no slower).

    .venv/bin/python bench/telephony.py                 # both stores, 10 s each
    .venv/bin/python bench/telephony.py --seconds 3 --no-postgres

Prints JSON, and writes it to ``--out`` (default bench/out/telephony.json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import data
import procs

from calltrack.config import Settings
from calltrack.store import open_store
from calltrack.store.core import unix_now

HERE = Path(__file__).resolve().parent
POOL = 20
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


async def pbx_lines(port: int, secret: str, lines: int, seconds: float) -> dict[str, Any]:
    """``lines`` PBX lines posting the three events of call after call for ``seconds``."""
    import httpx2

    latencies: list[float] = []
    failures = 0
    calls = 0
    headers = {"authorization": f"Bearer {secret}"}
    ends = time.monotonic() + seconds

    async def line(number: int, client: httpx2.AsyncClient) -> None:
        nonlocal failures, calls
        serial = 0
        while time.monotonic() < ends:
            serial += 1
            call_id = f"line{number}-{serial}"
            now = unix_now()
            called = f"7495100{(number + serial) % POOL:04d}"
            for event in (
                {"event": "call.started", "call_id": call_id, "at": now - 140,
                 "caller": f"7916{number:03d}{serial:04d}", "called": called},
                {"event": "call.answered", "call_id": call_id, "at": now - 130},
                {"event": "call.ended", "call_id": call_id, "at": now, "talk_seconds": 130,
                 "disposition": "answered"},
            ):  # fmt: skip
                began = time.perf_counter()
                answer = await client.post(f"http://127.0.0.1:{port}/telephony/generic",
                                           json=event, headers=headers)  # fmt: skip
                latencies.append(time.perf_counter() - began)
                if answer.status_code != 200:
                    failures += 1
            calls += 1

    started = time.monotonic()
    async with httpx2.AsyncClient(timeout=30) as client:
        await asyncio.gather(*(line(n, client) for n in range(lines)))
    elapsed = time.monotonic() - started
    ordered = sorted(latencies)
    return {
        "calls": calls,
        "seconds": round(elapsed, 2),
        "calls_per_s": round(calls / elapsed, 1),
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(1000 * ordered[len(ordered) // 2], 2),
        "p99_ms": round(1000 * ordered[int(len(ordered) * 0.99)], 2),
        "non_200": failures,
    }


def bench_events(name: str, url: str, lines: int, seconds: float, work: Path) -> dict[str, Any]:
    secret = setup(url)
    port = procs.free_port()
    workers = str(os.cpu_count() or 2)
    cmd = [data.CALLTRACK, "--database", url, "serve", "--port", str(port), "--workers", workers]
    server = procs.start(cmd, work / f"telephony-{name}.log", env={"CALLTRACK_SWEEP_SECONDS": "5"})
    try:
        procs.wait_http(f"http://127.0.0.1:{port}/healthz", server)
        result = asyncio.run(pbx_lines(port, secret, lines, seconds))
    finally:
        procs.stop(server)
    store = open_store(Settings.from_env(env={}, database_url=url))
    try:
        result["records"] = store.count_calls()
    finally:
        store.close()
    result["every_call_one_record"] = result["records"] == result["calls"]
    return result


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

        def median_us(at: int) -> float:
            times = []
            for index in range(300):
                number = f"7495200{index % POOL:04d}"
                began = time.perf_counter()
                store.holder_at(account, number, at + index * 7)
                times.append(time.perf_counter() - began)
            return round(1e6 * statistics.median(times), 1)

        old, today = median_us(first + 3600), median_us(now - 7200)
        return {"holds": len(rows), "year_ago_us": old, "today_us": today,
                "ratio_old_to_new": round(old / today, 2)}  # fmt: skip
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--lines", type=int, default=32)
    parser.add_argument("--no-postgres", action="store_true")
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

        backends = [("sqlite", sqlite)]
        if not args.no_postgres and data.pg_reachable(ADMIN_PG):
            backends.append(("postgres", postgres))
        try:
            for backend, make in backends:
                results[backend] = {
                    "events": bench_events(
                        backend, make("bench_tel"), args.lines, args.seconds, work
                    ),
                    "attribution": bench_attribution(make("bench_attr")),
                }
        finally:
            procs.stop_all()
            for name in created:
                data.pg_drop(ADMIN_PG, name)
    print(json.dumps(results, indent=2))
    (args.out / "telephony.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
