"""The console (issue 16) over 1M calls: the overview and the calls page against a v3 page.

One account of N calls (1,000,000; seed 3) from ``calltrack.demo_data``, spread over the 90
days up to the end of today in the service zone, so "today", "7 days" and "30 days" hold their
real shares (about 1/90, 7/90 and 30/90 of the calls). The file is cached in ``--out``/data,
one per day (the calls move with the date), and imported with ``calltrack import`` into SQLite
and PostgreSQL. One ``calltrack serve --workers 2`` pinned to CPU 0, this client pinned to
CPU 1, signed in to the console with the account's key (the sign-in form's CSRF token and
nonce cookie, then the session cookie).

Pages, asked in turns on one keep-alive connection (so a disturbance hits every page alike),
``--warmup`` times each, then ``--requests`` times each; the latency of each request from the
client (request sent to body read, loopback), p50 and p99, and p50 over the v3 page's p50:

- the overview: ``/console/?period=today``, ``7d``, ``30d``;
- the calls page: ``/console/calls`` unfiltered, filtered (``status=success&utm_source=
  yandex``), and a later page (the ``--later``-th, reached through the pages' cursor links);
- one v3 export page: ``/api/?json/v3/KEY/call/get/0/FROM/TO`` over the data's window, as
  ``bench/run.py`` asks (1000 calls; the window's first request, which learns its page
  bounds, is part of the warm-up).

And in this process, against the same database, the store work of each console page
(``overview.gather``; ``count_filtered`` + ``filtered_calls`` of the calls page): median and
p99 of ``--requests`` runs. Goal: every page under 100 ms, of the order of the v3 page.

    .venv/bin/python bench/console.py                       # 1M calls, both stores
    .venv/bin/python bench/console.py --quick --no-postgres  # 10k calls, about 1 min

Writes ``--out``/console.json and console.md and prints the Markdown.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import html
import http.client
import re
import shutil
import statistics
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import data
import procs
import servers
import v4

from calltrack.config import Settings
from calltrack.demo_data import generate_calls
from calltrack.store import open_store

HERE = Path(__file__).resolve().parent
PG_NAME = "calltrack_console_bench"
SEED = 3
DAYS = 90
GOAL_MS = 100.0
FILTER = "status=success&utm_source=yandex"
CALLS_PAGE_SIZE = 50  # console/calls.py's default page
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')
_CURSOR_LINK = re.compile(r'href="([^"]*[?&](?:amp;)?cursor=[^"]*)"')
step = v4.step


# -- the data ----------------------------------------------------------------------------------


def today() -> date:
    return datetime.now(data.ZONE).date()


def data_file(folder: Path, count: int, day: date) -> Path:
    return folder / f"console-calls-{count}-seed{SEED}-to{day.isoformat()}.jsonl"


def ensure_file(folder: Path, count: int, day: date) -> tuple[Path, float]:
    """N calls over the ``DAYS`` days up to the end of ``day`` (service zone), generated
    unless today's file is complete; older days' files of the same size are removed."""
    path = data_file(folder, count, day)
    done = path.with_suffix(".done")
    if path.exists() and done.exists():
        return path, 0.0
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob(f"console-calls-{count}-seed{SEED}-to*"):
        old.unlink()
    started = time.perf_counter()
    end = datetime(day.year, day.month, day.day, tzinfo=data.ZONE) + timedelta(days=1)
    data.write_jsonl(
        path, generate_calls(count, seed=SEED, days=DAYS, now=end - timedelta(seconds=1))
    )
    done.write_text(f"{count}\n")
    return path, time.perf_counter() - started


def load(url: str, path: Path, count: int) -> tuple[str, int, float]:
    """One account ``console`` with the file imported: (its key, its id, import seconds)."""
    account = data.calltrack(url, "account", "add", "console")
    started = time.perf_counter()
    result = data.calltrack(url, "import", str(path), "--account", "console", timeout=120 + count)
    seconds = time.perf_counter() - started
    if result.get("imported") != count:
        raise RuntimeError(f"imported {result} of {count} calls")
    return str(account["api_key"]), int(str(account["id"])), seconds


# -- the client --------------------------------------------------------------------------------


@dataclass(slots=True)
class Client:
    """One keep-alive connection with the cookies the server set."""

    port: int
    cookies: dict[str, str] = field(default_factory=dict)
    conn: http.client.HTTPConnection | None = None

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        sent = dict(headers or {})
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        self.conn.request(method, path, body=body, headers=sent)
        answer = self.conn.getresponse()
        content = answer.read()
        for name, value in answer.getheaders():
            if name.lower() == "set-cookie":
                pair = value.split(";", 1)[0]
                key, _, text = pair.partition("=")
                expired = "max-age=0" in value.lower() or text in ("", '""')
                if expired:
                    self.cookies.pop(key.strip(), None)
                else:
                    self.cookies[key.strip()] = text
        if answer.getheader("connection", "").lower() == "close":
            self.close()
        return answer.status, {k.lower(): v for k, v in answer.getheaders()}, content

    def get(self, path: str) -> tuple[int, bytes]:
        status, _, content = self.request("GET", path)
        return status, content

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def sign_in(client: Client, key: str) -> None:
    """The console's sign-in, as a browser does it: the form, then the POST with its token."""
    status, form = client.get("/console/sign-in")
    found = _CSRF.search(form.decode())
    if status != 200 or not found:
        raise RuntimeError(f"sign-in form: {status} {form[:300]!r}")
    body = urllib.parse.urlencode({"csrf": found.group(1), "key": key, "next": "/console/"})
    status, _, answer = client.request(
        "POST",
        "/console/sign-in",
        body.encode(),
        {"Content-Type": "application/x-www-form-urlencoded"},
    )
    if status != 303:
        raise RuntimeError(f"sign-in: {status} {answer[:300]!r}")
    status, page = client.get("/console/")
    if status != 200:
        raise RuntimeError(f"signed in, yet the overview answers {status}: {page[:300]!r}")


def later_page(client: Client, first: str, pages: int) -> tuple[str | None, int]:
    """The path of the ``pages``-th page after ``first``, following each page's last cursor
    link (the "next" one); (None, pages walked) when the pages end or carry no cursor link."""
    path = first
    for walked in range(pages):
        status, body = client.get(path)
        if status != 200:
            return None, walked
        links = [html.unescape(link) for link in _CURSOR_LINK.findall(body.decode())]
        if not links:
            return None, walked
        path = links[-1]
    return path, pages


def _ms(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {
        "p50_ms": 1000 * statistics.median(ordered),
        "p99_ms": 1000 * p99,
        "min_ms": 1000 * ordered[0],
        "max_ms": 1000 * ordered[-1],
        "n": len(ordered),
    }


def measure_pages(
    client: Client, pages: dict[str, str], warmup: int, requests: int
) -> dict[str, dict[str, Any]]:
    """Each page ``warmup`` then ``requests`` times, in turns; client-side latency."""
    times: dict[str, list[float]] = {name: [] for name in pages}
    sizes: dict[str, int] = {}
    for round_ in range(warmup + requests):
        for name, path in pages.items():
            t0 = time.perf_counter()
            status, body = client.get(path)
            elapsed = time.perf_counter() - t0
            if status != 200:
                raise RuntimeError(f"{name} {path}: {status} {body[:300]!r}")
            if round_ >= warmup:
                times[name].append(elapsed)
            sizes[name] = len(body)
    return {
        name: {"path": path, "bytes": sizes[name], **_ms(times[name])}
        for name, path in pages.items()
    }


# -- the store work, in process -----------------------------------------------------------------


def store_work(url: str, account_id: int, runs: int) -> dict[str, Any]:
    """What each console page asks of the store, timed here (no HTTP, no rendering)."""
    from calltrack.console import overview
    from calltrack.store.changes import CallFilter

    settings = Settings.from_env(env={}, database_url=url)
    store = open_store(settings)
    zone = settings.zone
    owners = (account_id,)
    day = today()
    jobs: dict[str, Callable[[], object]] = {}
    for name in ("today", "7d", "30d"):
        period = overview.period_of({"period": name}, day)
        jobs[f"overview {name}"] = functools.partial(overview.gather, store, owners, period, zone)
    filtered = CallFilter(status="success", utm_source="yandex")

    def calls_page(where: CallFilter) -> object:
        return (
            store.count_filtered(owners, where),
            store.filtered_calls(owners, where, None, CALLS_PAGE_SIZE + 1, descending=True),
        )

    jobs["calls (count + page)"] = lambda: calls_page(CallFilter())
    jobs[f"calls {FILTER} (count + page)"] = lambda: calls_page(filtered)
    newest = store.filtered_calls(owners, CallFilter(), None, 10 * CALLS_PAGE_SIZE, True)
    if newest:  # a later page carries the total in its cursor: no count
        position = newest[-1][0], newest[-1][1]
        jobs["calls, page 11 (page only)"] = lambda: store.filtered_calls(
            owners, CallFilter(), position, CALLS_PAGE_SIZE + 1, True
        )
    result: dict[str, Any] = {}
    try:
        for name, job in jobs.items():
            job()  # warm
            times = []
            for _ in range(runs):
                t0 = time.perf_counter()
                job()
                times.append(time.perf_counter() - t0)
            result[name] = _ms(times)
    finally:
        store.close()
    return result


# -- one store ---------------------------------------------------------------------------------


def run_store(
    backend: str, url: str, path: Path, work: Path, args: argparse.Namespace
) -> dict[str, Any]:
    step(f"{backend}: import {args.calls:,} calls")
    key, account_id, seconds = load(url, path, args.calls)
    result: dict[str, Any] = {"import_s": seconds, "calls_per_s": args.calls / seconds}
    # As v4.py: `calltrack serve --workers 2` alone on CPU 0, this client on CPU 1.
    _server, running, cpus = servers.serve_pinned(
        f"calltrack-{backend}", url, {"console": key}, work / f"serve-{backend}.log", args.no_pin
    )
    client = Client(running.port)
    try:
        with procs.affinity(cpus):
            sign_in(client, key)
            first = datetime.now(data.ZONE).date() - timedelta(days=DAYS + 1)
            last = today() + timedelta(days=1)
            pages = {
                "overview today": "/console/?period=today",
                "overview 7d": "/console/?period=7d",
                "overview 30d": "/console/?period=30d",
            }
            status, _ = client.get("/console/calls")
            later: str | None = None
            if status == 200:
                pages["calls"] = "/console/calls"
                pages[f"calls {FILTER}"] = f"/console/calls?{FILTER}"
                later, walked = later_page(client, "/console/calls", args.later)
                if later is not None:
                    pages[f"calls page {args.later + 1}"] = later
                else:
                    result["calls_later"] = f"no cursor link after {walked} pages"
            else:
                result["calls_page"] = f"/console/calls answered {status}: not measured"
                step(f"  {result['calls_page']}")
            pages["v3 page"] = f"/api/?json/v3/{key}/call/get/0/{first}/{last}"
            procs.wait_for_quiet()
            step(f"{backend}: {len(pages)} pages, {args.warmup} + {args.requests} requests each")
            with contextlib.ExitStack():
                meter_t0 = procs.machine_busy_seconds()
                wall = time.perf_counter()
                result["pages"] = measure_pages(client, pages, args.warmup, args.requests)
                busy = procs.machine_busy_seconds() - meter_t0
                result["machine_busy_pct"] = 100 * busy / (time.perf_counter() - wall)
        v3 = result["pages"]["v3 page"]["p50_ms"]
        for name, page in result["pages"].items():
            page["over_v3"] = page["p50_ms"] / v3
            step(
                f"  {name}: p50 {page['p50_ms']:.1f} ms, p99 {page['p99_ms']:.1f} ms, "
                f"{page['over_v3']:.2f}x v3"
            )
        step(f"{backend}: the store work of each page, in process")
        result["store"] = store_work(url, account_id, args.requests)
        for name, work_ms in result["store"].items():
            step(f"  {name}: p50 {work_ms['p50_ms']:.1f} ms, p99 {work_ms['p99_ms']:.1f} ms")
    finally:
        client.close()
        procs.stop(running.proc)
    return result


# -- the report --------------------------------------------------------------------------------


def markdown(results: dict[str, Any]) -> str:
    stores = [s for s in ("sqlite", "postgres") if s in results]
    out = [
        "### The console (bench/console.py)",
        "",
        f"Run {results['started']} on {results['cores']} cores, code {results['source']}; "
        f"load average {results['load_before']} before, {results['load_after']} after; "
        + (
            "unpinned."
            if results["no_pin"]
            else "`calltrack serve --workers 2` pinned to CPU 0, the client to CPU 1 (taskset)."
        ),
        "",
        f"One account of {results['calls']:,} calls over the {DAYS} days up to "
        f"{results['today']} (service zone). Each page {results['warmup']} times to warm up, "
        f"then {results['requests']} times, pages in turns on one keep-alive connection; "
        "latency seen by the client on the same machine. Goal: under "
        f"{GOAL_MS:.0f} ms, of the order of one v3 page (1000 calls):",
        "",
        "| store | page | p50 ms | p99 ms | min ms | KB | p50 / v3 page | goal |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for s in stores:
        for name, page in results[s].get("pages", {}).items():
            met = "" if name == "v3 page" else ("met" if page["p50_ms"] < GOAL_MS else "NOT met")
            out.append(
                f"| {s} | {name} | {page['p50_ms']:.1f} | {page['p99_ms']:.1f} | "
                f"{page['min_ms']:.1f} | {page['bytes'] / 1024:.0f} | {page['over_v3']:.2f}x | "
                f"{met} |"
            )
    out += [
        "",
        "The store work of each page in the bench's process (`overview.gather`; "
        f"`count_filtered` + `filtered_calls` of {CALLS_PAGE_SIZE} + 1 calls, newest first, as "
        "`console/calls.py` asks them):",
        "",
        "| store | work | p50 ms | p99 ms |",
        "|---|---|---:|---:|",
    ]
    for s in stores:
        for name, work in results[s].get("store", {}).items():
            out.append(f"| {s} | {name} | {work['p50_ms']:.1f} | {work['p99_ms']:.1f} |")
    notes = [
        f"{s}: {results[s][k]}"
        for s in stores
        for k in ("calls_page", "calls_later")
        if k in results[s]
    ]
    if notes:
        out += ["", *(f"- {n}" for n in notes)]
    return "\n".join(out) + "\n"


# -- the run -----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1_000_000, help="N (1,000,000)")
    parser.add_argument("--quick", action="store_true", help="N = 10,000, fewer requests")
    parser.add_argument("--requests", type=int, default=50, help="timed requests a page (50)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed requests a page (5)")
    parser.add_argument("--later", type=int, default=10, help="the later calls page (10)")
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--postgres-url", default=servers.ADMIN_PG, help="an admin database's URL")
    parser.add_argument("--no-pin", action="store_true")
    parser.add_argument("--out", type=Path, default=HERE / "out")
    args = parser.parse_args()
    if args.quick:
        args.calls, args.requests, args.warmup = 10_000, 20, 3
    if args.calls < 1000 or args.requests < 1 or args.warmup < 1 or args.later < 1:
        parser.error("--calls must be at least 1000; --requests, --warmup, --later at least 1")
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    day = today()
    results: dict[str, Any] = {
        **servers.run_facts(args.no_pin),
        "calls": args.calls,
        "today": day.isoformat(),
        "requests": args.requests,
        "warmup": args.warmup,
    }
    with servers.bench_run("calltrack-console-", args.postgres_url, PG_NAME) as run:
        work = run.work
        step(f"generate {args.calls:,} calls up to {day} (cached in {args.out / 'data'})")
        path, results["generate_s"] = ensure_file(args.out / "data", args.calls, day)
        if not args.no_sqlite:
            lite = f"sqlite:///{work / 'console.db'}"
            results["sqlite"] = run_store("sqlite", lite, path, work, args)
            shutil.rmtree(work, ignore_errors=True)  # the SQLite files: disk for PostgreSQL
            work.mkdir(exist_ok=True)
        if not args.no_postgres and data.pg_reachable(args.postgres_url):
            url = run.create_postgres()
            results["postgres"] = run_store("postgres", url, path, work, args)
            results["postgres_version"] = data.pg_server_version(url)
    servers.write_results(args.out, "console", results, markdown)


if __name__ == "__main__":
    main()
