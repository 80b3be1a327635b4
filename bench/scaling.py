"""How the v3 pages scale on one PostgreSQL (issue 15): `calltrack serve` with 1, 2 and 4
workers, and two `serve` processes on different ports behind a round-robin client.

One database ``calltrack_scaling_bench`` (created and dropped here) holds N calls (100,000;
``bench/run.py``'s cached file of seed 1), imported with ``calltrack import``. For each
arrangement of servers and workers, nothing pinned (the workers, PostgreSQL and the client
share the machine's cores, as in production):

- **Throughput**: ``--connections`` keep-alive connections (split evenly over the servers,
  one wrk per server, all at once) cycle the N/1000 full pages of
  ``/api/?json/v3/KEY/call/get/{page}/FROM/TO`` for ``--duration`` s. Pages/s in all, per
  worker, per CPU-second of the workers, and per CPU-second of the workers and PostgreSQL
  together (the machine's busy time minus the clients').
- **Walks**: ``--walks`` concurrent walks of the whole window, each page asked on a new
  connection of the next server in turn, so a walk hops between servers and between their
  workers; every walk must return every call once (each ``universalId`` once, N in all).

    .venv/bin/python bench/scaling.py                 # N = 100k, about 4 min
    .venv/bin/python bench/scaling.py --quick         # N = 10k, 2 s loads, about 1 min

Writes ``--out``/scaling.json and scaling.md and prints the Markdown.
"""

from __future__ import annotations

import argparse
import http.client
import re
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import data
import export
import load
import procs
import servers

HERE = Path(__file__).resolve().parent
PG_NAME = "calltrack_scaling_bench"
DATASET = "n"
# (serve processes, workers each): one process growing, then two behind the client.
ARRANGEMENTS = [(1, 1), (1, 2), (1, 4), (2, 1), (2, 2)]
_UNIVERSAL_ID = re.compile(rb'"universalId":"([^"]+)"')


@dataclass(frozen=True, slots=True)
class Arrangement:
    processes: int
    workers: int

    @property
    def name(self) -> str:
        each = f"{self.workers} worker{'s' if self.workers > 1 else ''}"
        return (
            f"1 serve, {each}" if self.processes == 1 else f"{self.processes} serves, {each} each"
        )

    @property
    def total_workers(self) -> int:
        return self.processes * self.workers


def postgres_cpu_seconds() -> float:
    """utime + stime of every PostgreSQL process of the machine."""
    pids = [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and _comm(entry) == "postgres"
    ]
    return procs.cpu_seconds(pids)


def _comm(entry: Path) -> str:
    try:
        return (entry / "comm").read_text().strip()
    except OSError:
        return ""


def throughput(
    running: list[servers.Running], pages: int, connections: int, seconds: float
) -> dict[str, Any]:
    """Every server loaded at once, its share of the connections each; the sums."""
    shares = [connections // len(running)] * len(running)
    shares[0] += connections - sum(shares)
    workers = [pid for server in running for pid in server.workers]
    cpu0, pg0, busy0 = (
        procs.cpu_seconds(workers),
        postgres_cpu_seconds(),
        procs.machine_busy_seconds(),
    )
    with ThreadPoolExecutor(len(running)) as pool:
        results = list(
            pool.map(
                lambda pair: load.measure(
                    pair[0].server.target(DATASET, pair[0].port, pages),
                    pair[1],
                    seconds,
                    cpus=None,
                    server_pids=pair[0].workers,
                ),
                zip(running, shares, strict=True),
            )
        )
    server_cpu = procs.cpu_seconds(workers) - cpu0
    pg_cpu = postgres_cpu_seconds() - pg0
    busy = procs.machine_busy_seconds() - busy0
    elapsed = max(result.seconds for result in results)
    served = sum(result.pages_per_s * result.seconds for result in results)
    return {
        "connections": connections,
        "seconds": elapsed,
        "pages": served,
        "pages_per_s": served / elapsed,
        "errors": sum(result.errors for result in results),
        "p50_ms": max(result.p50_ms for result in results),
        "p99_ms": max(result.p99_ms for result in results),
        "server_cpu_s": server_cpu,
        "postgres_cpu_s": pg_cpu,
        "machine_busy_s": busy,
        "pages_per_server_cpu_s": served / server_cpu if server_cpu else 0.0,
        "pages_per_server_and_pg_cpu_s": served / (server_cpu + pg_cpu)
        if server_cpu + pg_cpu
        else 0.0,
    }


def hopping_walk(
    ports: list[int], path_of: Callable[[int], str], expected: int, start: int
) -> dict[str, Any]:
    """One walk of every page, each on a new connection to the next server in turn."""
    seen: list[bytes] = []
    page = 0
    started = time.perf_counter()
    while page <= expected // 1000 + 2:
        port = ports[(start + page) % len(ports)]
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        try:
            conn.request("GET", path_of(page))
            answer = conn.getresponse()
            body = answer.read()
        finally:
            conn.close()
        if export.calltrack_end(answer.status, body):
            break
        if answer.status != 200 or not body.startswith(b"["):
            raise RuntimeError(f"page {page} on port {port}: {answer.status} {body[:200]!r}")
        seen += _UNIVERSAL_ID.findall(body)
        page += 1
    return {
        "pages": page,
        "calls": len(seen),
        "distinct": len(set(seen)),
        "seconds": time.perf_counter() - started,
        "every_call_once": len(seen) == len(set(seen)) == expected,
    }


def walks(running: list[servers.Running], expected: int, count: int) -> list[dict[str, Any]]:
    target = running[0].server.target(DATASET, running[0].port, 1)
    ports = [server.port for server in running]
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(lambda n: hopping_walk(ports, target.path, expected, n), range(count)))


def run_arrangement(
    arrangement: Arrangement, url: str, key: str, work: Path, args: argparse.Namespace
) -> dict[str, Any]:
    server = servers.calltrack_server(
        f"calltrack-{arrangement.processes}x{arrangement.workers}",
        url,
        {DATASET: key},
        arrangement.workers,
    )
    running: list[servers.Running] = []
    try:
        for index in range(arrangement.processes):
            log = work / f"serve-{arrangement.processes}x{arrangement.workers}-{index}.log"
            running.append(servers.launch(server, arrangement.workers, None, log))
        pages = args.calls // 1000
        for each in running:  # warm: every worker's connections and the page bounds
            load.measure(
                each.server.target(DATASET, each.port, pages), 2, 1, cpus=None, server_pids=[]
            )
        procs.wait_for_quiet()
        loads = [throughput(running, pages, c, args.duration) for c in args.connections]
        walked = walks(running, args.calls, args.walks)
    finally:
        for each in running:
            procs.stop(each.proc)
    return {
        "arrangement": arrangement.name,
        "processes": arrangement.processes,
        "workers": arrangement.total_workers,
        "loads": loads,
        "walks": walked,
    }


def markdown(results: dict[str, Any]) -> str:
    lines = [
        f"Run {results['started']} on {results['cores']} cores, code {results['source']}, "
        f"PostgreSQL {results['postgres_version']}, N = {results['calls']:,} calls; nothing "
        f"pinned; load average {results['load_before']} before, {results['load_after']} after.",
        "",
        "| serve processes x workers | workers | conns | pages/s | per worker | p50 / p99 ms | "
        "workers' CPU % | PostgreSQL CPU % | pages per workers' CPU-s | "
        "pages per CPU-s (workers + PostgreSQL) | errors | walks: every call once |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in results["arrangements"]:
        walked = row["walks"]
        good = sum(1 for walk in walked if walk["every_call_once"])
        for entry in row["loads"]:
            seconds = entry["seconds"]
            lines.append(
                f"| {row['arrangement']} | {row['workers']} | {entry['connections']} | "
                f"{entry['pages_per_s']:.1f} | {entry['pages_per_s'] / row['workers']:.1f} | "
                f"{entry['p50_ms']:.1f} / {entry['p99_ms']:.1f} | "
                f"{100 * entry['server_cpu_s'] / seconds:.0f} | "
                f"{100 * entry['postgres_cpu_s'] / seconds:.0f} | "
                f"{entry['pages_per_server_cpu_s']:.0f} | "
                f"{entry['pages_per_server_and_pg_cpu_s']:.0f} | {entry['errors']} | "
                f"{good} of {len(walked)} ({walked[0]['calls']:,} calls each) |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=100_000, help="N (100,000)")
    parser.add_argument("--quick", action="store_true", help="N = 10,000, 2 s loads")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds a load (5)")
    parser.add_argument(
        "--connections", type=int, nargs="+", default=[2, 16], help="per load (2 16)"
    )
    parser.add_argument("--walks", type=int, default=4, help="concurrent hopping walks (4)")
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--out", type=Path, default=HERE / "out")
    args = parser.parse_args()
    if args.quick:
        args.calls, args.duration = 10_000, 2.0
    if not load.have_wrk():
        sys.exit("wrk is needed (apt-get install wrk)")
    if not data.pg_reachable(args.postgres_url):
        sys.exit(f"PostgreSQL does not answer at {args.postgres_url}")
    dataset = data.Dataset(DATASET, args.calls, 1)
    data.ensure_file(dataset, args.out / "data")
    results: dict[str, Any] = {**servers.run_facts(no_pin=True), "calls": args.calls}
    results["arrangements"] = []
    with servers.bench_run("bench-scaling-", args.postgres_url, PG_NAME) as run:
        url = run.create_postgres()
        results["postgres_version"] = data.pg_server_version(url)
        loaded = data.load("postgres", url, [dataset], args.out / "data")
        results["import"] = loaded.imports[DATASET]
        for processes, workers in ARRANGEMENTS:
            arrangement = Arrangement(processes, workers)
            print(f"== {arrangement.name}", file=sys.stderr, flush=True)
            row = run_arrangement(arrangement, url, loaded.keys[DATASET], run.work, args)
            results["arrangements"].append(row)
            for entry in row["loads"]:
                print(
                    f"   {entry['connections']} conns: {entry['pages_per_s']:.1f} pages/s",
                    file=sys.stderr,
                    flush=True,
                )
    args.out.mkdir(parents=True, exist_ok=True)
    servers.write_results(args.out, "scaling", results, markdown)
    if not all(walk["every_call_once"] for row in results["arrangements"] for walk in row["walks"]):
        sys.exit("a walk did not return every call once")


if __name__ == "__main__":
    main()
