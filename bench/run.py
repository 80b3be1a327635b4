"""calltrack's benchmark suite: our server against a floor and a peer, in one run.

    .venv/bin/python bench/run.py [--calls N] [--big] [--quick] [--no-postgres] [--out bench/out]

See bench/RESULTS.md for what it measures and how to read the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import data
import export
import floor
import hits
import load
import peer
import procs
import report
import servers

CONNECTIONS = [1, 2, 16]
HIT_VISITORS = 64  # concurrent visitors of the hits rows
HIT_POOL = 50  # dynamic numbers in the measured campaign
HIT_RATE = 1000  # hits a second the paced rows offer (issue 11's goal)
HIT_LONG_POOL = 160  # numbers of the long visits campaign: one for each visitor of both placements
KB_PER_CALL = {"jsonl": 1.75, "sqlite": 2.0, "floor": 1.75, "peer": 1.6, "postgres": 2.3}


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--calls", type=int, default=100_000, help="N (default 100,000)")
    ap.add_argument("--big", action="store_true", help="N = 1,000,000")
    ap.add_argument("--quick", action="store_true", help="smoke run: N = 10,000, 2 s loads")
    ap.add_argument("--scale", type=int, default=10, help="the big export is scale x N (10)")
    ap.add_argument("--no-postgres", action="store_true", help="SQLite only")
    ap.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/test")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per load run (5)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="(cores)")
    ap.add_argument("--no-pin", action="store_true", help="do not pin servers and client")
    ap.add_argument("--python-client", action="store_true", help="asyncio client, not wrk")
    ap.add_argument("--profile", action="store_true", help="py-spy a calltrack-sqlite worker")
    ap.add_argument("--keep", action="store_true", help="keep the databases in OUT/work")
    ap.add_argument(
        "--only-hits", action="store_true", help="only the hits rows, on empty databases"
    )
    args = ap.parse_args()
    if args.quick:
        args.calls, args.duration = 10_000, 2.0
    elif args.big:
        args.calls = 1_000_000
    if args.calls < 1000 or args.scale < 2:
        ap.error("--calls must be at least 1000 and --scale at least 2")
    return args


def pinning(cores: int, off: bool) -> tuple[str | None, str | None, str]:
    """(server cpus, client cpus, description): the client gets the last core to itself."""
    if off or cores < 2:
        return None, None, "nothing pinned: servers and client share every core"
    last = cores - 1
    server = "0" if last == 1 else f"0-{last - 1}"
    return (
        server,
        str(last),
        f"servers pinned to CPU {server}, load client to CPU {last} (taskset)",
    )


def estimate(args: argparse.Namespace, postgres: bool, cached: bool) -> tuple[float, float]:
    """(minutes, GB of disk) this run will take, roughly (measured on 2 EPYC cores)."""
    total = args.calls * (1 + args.scale)
    stores = ["sqlite", "floor", "peer"] + (["postgres"] if postgres else [])
    gb = total * sum(KB_PER_CALL[s] for s in ["jsonl", *stores]) / 1e6
    us_per_call = (0 if cached else 20) + 55 + (70 if postgres else 0) + 60  # gen, load
    us_per_call += 12 + (20 if postgres else 0) + 6 + 50  # exports
    runs = len(CONNECTIONS) * (2 + 2 * postgres + 2) + 4
    hit_s = (1 + postgres) * (HIT_POOL * 0.4 + 6 * (args.duration + 1) + 12)  # CLI, 6 runs
    return (total * us_per_call / 1e6 + runs * (args.duration + 1.5) + hit_s + 60) / 60, gb


def bench_server(
    server: servers.Server,
    datasets: list[data.Dataset],
    args: argparse.Namespace,
    cpus: tuple[str | None, str | None],
) -> dict[str, Any]:
    server_cpus, client_cpus = cpus
    running = servers.launch(server, args.workers, server_cpus, args.out / "logs" / "servers.log")
    try:
        result: dict[str, Any] = {
            "worker_pids": running.workers,
            "rss_idle": procs.memory(running.workers),
        }
        targets = {
            ds.name: server.target(ds.name, running.port, ds.count // 1000) for ds in datasets
        }
        walks: dict[str, Any] = {}
        for ds in datasets:  # cold walks; the first also remembers the throughput pages
            step(f"{server.name}: export of {ds.count:,} calls")
            walked = export.walk(
                targets[ds.name], server.is_end, ds.count, workers=running.workers, cpus=client_cpus
            )
            walks[ds.name] = walked.as_dict()
        result["export"] = walks
        page_bytes = walks["n"]["megabytes"] * 1e6 / walks["n"]["pages"]
        load.measure(targets["n"], 2, 1, cpus=client_cpus, server_pids=running.workers)  # warm
        if server.gzip:
            result["gzip_check"] = servers.gzip_check(running, targets["n"])
        kinds = [False, True] if result.get("gzip_check", {}).get("served") else [False]
        for packed in kinds:
            runs = []
            for conns in CONNECTIONS:
                step(f"{server.name}: load, {conns} connections{', gzip' if packed else ''}")
                procs.wait_for_quiet()
                measured = load.measure(
                    targets["n"],
                    conns,
                    args.duration,
                    cpus=client_cpus,
                    server_pids=running.workers,
                    gzip=packed,
                    use_wrk=not args.python_client,
                ).as_dict()
                if not packed and measured["bytes_per_page"] < 0.95 * page_bytes:
                    raise RuntimeError(f"{server.name}: short pages under load: {measured}")
                runs.append(measured)
            result["gzip" if packed else "throughput"] = runs
        if args.profile and server.name == "calltrack-sqlite":
            step("profile: py-spy on calltrack-sqlite workers under 16 connections")
            result["profile"] = servers.profile(running, targets["n"], args.out, 10, client_cpus)
        result["rss_final"] = procs.memory(running.workers)
        return result
    finally:
        procs.stop(running.proc)


def bench_hits(
    name: str, url: str, args: argparse.Namespace, cpus: tuple[str | None, str | None]
) -> dict[str, Any]:
    """``POST /t/hit`` under HIT_VISITORS visitors on ``calltrack serve`` (workers = cores):
    a closed loop (capacity) and HIT_RATE hits/s offered (the goal's latency), first with
    the server pinned like the page servers, then on every core."""
    server_cpus, client_cpus = cpus
    step(f"{name}: hits: campaigns and {HIT_POOL} + 2 dynamic numbers with the CLI")
    warm, campaign = hits.setup(url, HIT_POOL)
    history = hits.add_history(url, campaign)
    step(f"{name}: hits: {history:,} holds of a year before added to the pool's history")
    long_visits = hits.setup_long_visits(url, HIT_LONG_POOL)
    server = servers.calltrack_server(name, url, {}, args.workers)
    server.env = dict(hits.ENV)
    running = servers.launch(server, args.workers, server_cpus, args.out / "logs" / "servers.log")
    runs: list[dict[str, Any]] = []
    try:
        pids = running.workers
        hits.measure(running.port, warm, HIT_VISITORS, 1, cpus=client_cpus, server_pids=pids)
        placements = [(server_cpus or "all", client_cpus)]
        if server_cpus:  # then the same server on every core, wrk too: "on this machine"
            placements.append(("all", None))
        for cores, client in placements:
            if cores == "all" and server_cpus:
                procs.unpin([running.proc.pid, *pids])
            # A closed loop and the goal's rate, new visitors arriving all along (a pool
            # held), then the goal's rate of long visits keeping their numbers.
            for rate, measured_campaign, life in (
                (None, campaign, hits.LIFE),
                (HIT_RATE, campaign, hits.LIFE),
                (HIT_RATE, long_visits, hits.LONG_LIFE),
            ):
                procs.wait_for_quiet()
                measured = hits.measure(
                    running.port,
                    measured_campaign,
                    HIT_VISITORS,
                    args.duration,
                    cpus=client,
                    server_pids=pids,
                    server_cores=cores,
                    rate=rate,
                    life=life,
                ).as_dict()
                step(f"{name}: hits, {HIT_VISITORS} visitors: {hits.summary(measured)}")
                runs.append(measured)
    finally:
        procs.stop(running.proc)
    # "load": the closed loop as the page servers are pinned, the row earlier runs reported
    pool = hits.pool_state(url, campaign)
    return {"load": runs[0], "runs": runs, "pool": pool, "env": hits.ENV, "history": history}


def only_hits(args: argparse.Namespace) -> None:
    """The hits rows alone, on a fresh SQLite file and a fresh PostgreSQL database."""
    out, work = args.out.resolve(), args.out.resolve() / "work"
    args.out = out
    (out / "logs").mkdir(parents=True, exist_ok=True)
    work.mkdir(exist_ok=True)
    server_cpus, client_cpus, pin = pinning(os.cpu_count() or 1, args.no_pin)
    postgres = not args.no_postgres and data.pg_reachable(args.postgres_url)
    step(f"hits only; {pin}; PostgreSQL: {'yes' if postgres else 'no'}")
    db, pg_db = work / "hits.db", "calltrack_bench_hits"
    results: dict[str, Any] = {}
    try:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        backends = [("calltrack-sqlite", f"sqlite:///{db}")]
        if postgres:
            backends.append(("calltrack-postgres", data.pg_create(args.postgres_url, pg_db)))
        for name, url in backends:
            results[name] = bench_hits(name, url, args, (server_cpus, client_cpus))
    finally:
        procs.stop_all()
        if postgres:
            data.pg_drop(args.postgres_url, pg_db)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    path = out / "hits.json"
    path.write_text(json.dumps(results, indent=1) + "\n")
    print("\n".join(report.hit_lines({"hits": results})))
    step(f"done: {path}")


STARTED = time.monotonic()


def step(text: str) -> None:
    print(f"[{time.monotonic() - STARTED:6.0f}s] {text}", flush=True)


def meta(args: argparse.Namespace, pin: str, pg_version: str | None) -> dict[str, Any]:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    model = next(
        (ln.split(":", 1)[1].strip() for ln in lscpu.splitlines() if "Model name" in ln), ""
    )
    wrk = "wrk" if load.have_wrk() and not args.python_client else "python asyncio client"
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{model or platform.processor()} x {os.cpu_count()} cores, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GB",
        "calls": args.calls,
        "scale": args.scale,
        "workers": args.workers,
        "connections": CONNECTIONS,
        "duration": args.duration,
        "pinning": pin,
        "client": wrk,
        "versions": {
            "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version,
            "postgres": pg_version,
            **{pkg: version(pkg) for pkg in ("calltrack", "uvicorn", "starlette", "datasette")},
        },
        "source": _git_state(),
        "notes": [
            f"All servers run {args.workers} uvicorn workers; {pin}. With 2 cores this means "
            "each server's 2 workers share CPU 0 while the client has CPU 1.",
            "PostgreSQL's own processes are not pinned: they use both cores, and their CPU "
            "shows as 'other CPU' in the calltrack-postgres rows (so its 'pages per CPU-s' "
            "counts calltrack's workers only).",
            "The floor and the peer read SQLite; their ratios to calltrack-postgres compare "
            "across databases.",
        ],
    }


def _git_state() -> str:
    """The commit measured, and whether src/ had uncommitted changes."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    dirty = git("status", "--porcelain", "--", "src")
    return git("rev-parse", "--short", "HEAD") + (" + uncommitted changes in src/" if dirty else "")


def run(args: argparse.Namespace) -> Path:
    out, work = args.out.resolve(), args.out.resolve() / "work"
    args.out = out
    for folder in (out / "logs", out / "data"):
        folder.mkdir(parents=True, exist_ok=True)
    server_cpus, client_cpus, pin = pinning(os.cpu_count() or 1, args.no_pin)
    postgres = not args.no_postgres and data.pg_reachable(args.postgres_url)
    datasets = [data.Dataset("n", args.calls, 1), data.Dataset("n10", args.calls * args.scale, 2)]
    cached = all(ds.path(out / "data").with_suffix(".done").exists() for ds in datasets)
    minutes, gb = estimate(args, postgres, cached)
    free = shutil.disk_usage(out).free / 1e9
    step(f"N = {args.calls:,}, {args.scale}xN = {args.calls * args.scale:,}; PostgreSQL: "
         f"{'yes' if postgres else 'no'}; estimate ~{minutes:.0f} min, ~{gb:.0f} GB disk "
         f"({free:.0f} GB free)")  # fmt: skip
    if gb > free * 0.9:
        raise SystemExit(f"not enough disk: ~{gb:.0f} GB needed, {free:.0f} GB free")
    work.mkdir(exist_ok=True)
    pg_db, pg_version = "calltrack_bench", None
    results: dict[str, Any] = {"imports": {}, "servers": {}, "generate_s": {}, "hits": {}}
    try:
        for ds in datasets:
            step(f"generate {ds.count:,} calls (cached in {out / 'data'})")
            results["generate_s"][ds.name] = data.ensure_file(ds, out / "data")[1]
        db = work / "calltrack.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        step("import into SQLite")
        lite = data.load("sqlite", f"sqlite:///{db}", datasets, out / "data")
        results["imports"]["sqlite"] = lite.imports
        backends = [("calltrack-sqlite", lite)]
        if postgres:
            step("import into PostgreSQL")
            url = data.pg_create(args.postgres_url, pg_db)
            pg = data.load("postgres", url, datasets, out / "data")
            results["imports"]["postgres"] = pg.imports
            backends.append(("calltrack-postgres", pg))
            pg_version = data.pg_server_version(url)
        results["meta"] = meta(args, pin, pg_version)
        tables = {ds.name: lite.account_ids[ds.name] for ds in datasets}
        step("build the floor's and the peer's databases")
        floor.build(db, work / "floor.db", tables)
        peer.build(db, work / "peer.db", tables)
        names = [ds.name for ds in datasets]
        pragmas = floor.calltrack_pragmas(db)  # the floor reads SQLite with calltrack's cache
        results["meta"]["sqlite_pragmas"] = pragmas
        candidates = [servers.calltrack_server(n, b.url, b.keys, args.workers) for n, b in backends]
        candidates += [
            servers.floor_server(work / "floor.db", names, args.workers, pragmas),
            servers.peer_server(work / "peer.db", names, args.workers),
        ]
        cpus = (server_cpus, client_cpus)
        for server in candidates:
            results["servers"][server.name] = bench_server(server, datasets, args, cpus)
            (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")  # progress
        if load.have_wrk():
            for name, backend in backends:
                results["hits"][name] = bench_hits(name, backend.url, args, cpus)
        else:
            step("hits: skipped, they need wrk (apt-get install -y wrk)")
        results["meta"]["quiet_wait_s"] = procs.QUIET["waited"]
        if "profile" in results["servers"].get("calltrack-sqlite", {}):
            results["profile"] = results["servers"]["calltrack-sqlite"].pop("profile")
        path = report.write(results, out)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)  # let the bounded cleanup finish
        procs.stop_all()
        if postgres:
            data.pg_drop(args.postgres_url, pg_db)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    step(f"done: {path} and {out / 'results.json'}")
    return path


def main() -> None:
    def terminate(signum: int, _frame: object) -> None:
        print(f"signal {signum}: stopping every server", file=sys.stderr, flush=True)
        raise SystemExit(128 + signum)

    # Explicit, so Ctrl-C works even where SIGINT arrives ignored (a background job).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGHUP, terminate)
    args = parse_args()
    if args.only_hits:
        only_hits(args)
        return
    try:
        path = run(args)
    except KeyboardInterrupt:
        print("interrupted: servers stopped, bench databases removed", file=sys.stderr)
        raise SystemExit(130) from None
    print(path.read_text())


if __name__ == "__main__":
    main()
