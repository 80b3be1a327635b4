"""Many concurrent connections against `calltrack serve` for a bounded time: every answer right.

Two workers serve a database of three accounts (one shares its calls with another through a
role). Before the load, every request of the mix is asked once, alone, and its answer checked
against the contract: pages against a model of the imported files (each group of pages holds
exactly the scope's calls of the window, once each, in callTime order), errors against their
documented message. Then ``connections`` clients (an async httpx2 client on loopback) send
random requests of the mix for ``seconds``: valid pages of get/getByRole/getWithRole, HEAD,
every documented error, an oversized URL (400) and an unknown path (404). Under load, each
answer must be byte for byte the one it was alone; no 5xx, no timeout, no dropped connection.
The server's resident memory (master and workers) is sampled every second: the last sample
must not have grown much over the first.

Afterwards the database files and the server's log are searched for every API key used:
keys are kept only as hashes and logged redacted, so none may be found.

    .venv/bin/python tests/faults/load.py                 # full: 64 connections, 60 s
    .venv/bin/python tests/faults/load.py --quick         # what CI runs: 32 connections, 5 s
    .venv/bin/python tests/faults/load.py --postgres      # on a private PostgreSQL

Prints the measurements as JSON; exits 1 if an expectation failed. Loopback only, bounded in
connections and time; the server (and any cluster) is stopped and the temp dir removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx2
import msgspec

try:
    from tests.faults import _common as common
except ModuleNotFoundError:  # run as a file: python tests/faults/load.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root
    from tests.faults import _common as common

from calltrack.demo_data import generate_calls

PAGE_SIZE = 100
WINDOW = "2020-03-01/2020-05-31"
FIRST, LAST = "2020-03-01 00:00:00", "2020-05-31 23:59:59"
# Memory may settle after the first second; more than this growth is a leak worth a look.
MAX_RSS_GROWTH_KB = 48 * 1024
MAX_RSS_GROWTH_RATIO = 1.25
NO_FORMAT = "Type to return is not available"
WRONG_VERSION = "It is wrong API version"
NOT_RECOGNIZED = "User is not recognized"
BAD_PAGE = "Incorrect page is set"
BAD_START = "Start date has wrong type. Possible format is 'Y-m-d' or timestamp"
BAD_END = "End date has wrong type. Possible format is 'Y-m-d' or timestamp"


@dataclass(frozen=True, slots=True)
class Probe:
    """One request of the mix and what it must get."""

    name: str
    target: str
    method: str = "GET"
    status: int = 200
    message: str | None = None  # the documented error, for error probes
    body: bytes = b""  # filled from the lone answer (checked) before the load


def check(
    probe: Probe, status: int, content_type: str | None, length: str | None, body: bytes
) -> str | None:
    """None if the answer is the probe's; else what is wrong."""
    if status != probe.status:
        return f"{probe.name}: HTTP {status}, want {probe.status}"
    if probe.status != 200:
        return None  # a 400/404 of the HTTP layer: its body is not the contract's
    if content_type != common.CONTENT_TYPE:
        return f"{probe.name}: content-type {content_type!r}"
    if probe.method == "HEAD":
        if body or length != str(len(probe.body)):
            return f"{probe.name}: HEAD with a body or a wrong content-length ({length})"
        return None
    if body != probe.body:
        return f"{probe.name}: another body than alone ({body[:100]!r})"
    return None


def build(database: str, work: Path) -> tuple[list[Probe], dict[str, list[str]], list[str]]:
    """Accounts, calls, keys; the mix of probes; the model (scope -> ids in window); keys."""
    records: dict[str, list[dict[str, Any]]] = {}
    keys: dict[str, str] = {}
    for seed, (name, count) in enumerate((("alpha", 2500), ("beta", 1200), ("empty", 0))):
        keys[name] = str(common.cli(database, "account", "add", name)["api_key"])
        records[name] = list(
            generate_calls(count, seed=41 + seed, id_prefix=str(seed + 1), now=datetime(2020, 6, 1))
        )
        if count:
            path = work / f"{name}.jsonl"
            path.write_bytes(b"\n".join(msgspec.json.encode(r) for r in records[name]))
            common.cli(database, "import", str(path), "--account", name)
    role = common.cli(database, "role", "add", "beta", "reports")["id"]
    keys["role"] = str(common.cli(database, "role", "grant", str(role), "alpha")["api_key"])
    keys["revoked"] = str(common.cli(database, "key", "issue", "alpha")["api_key"])
    common.cli(database, "key", "revoke", keys["revoked"])

    def ids(*names: str) -> list[str]:
        return [
            str(r["universalId"])
            for n in names
            for r in records[n]
            if FIRST <= str(r["callTime"]) <= LAST
        ]

    model = {
        "get": ids("alpha"),
        "getByRole": ids("beta"),
        "getWithRole": ids("alpha", "beta"),
    }
    api = "/api/?json/v3"
    probes: list[Probe] = []
    for method, key in (("get", "alpha"), ("getByRole", "role"), ("getWithRole", "alpha")):
        pages = -(-len(model[method]) // PAGE_SIZE)
        for page in range(pages):
            target = f"{api}/{keys[key]}/call/{method}/{page}/{WINDOW}"
            probes.append(Probe(f"{method} page {page}", target))
        probes.append(
            Probe(
                f"{method} past the end",
                f"{api}/{keys[key]}/call/{method}/{pages}/{WINDOW}",
                message=BAD_PAGE,
            )
        )
    probes.append(Probe("HEAD of get page 0", probes[0].target, method="HEAD"))
    a, r, v, e = keys["alpha"], keys["role"], keys["revoked"], keys["empty"]
    day = "2020-03-01"
    for name, query, message in (
        ("unknown format", f"yaml/v3/{a}/call/get/0/{day}", NO_FORMAT),
        ("missing format", f"/v3/{a}/call/get/0/{day}", NO_FORMAT),
        ("wrong version", f"json/v2/{a}/call/get/0/{day}", WRONG_VERSION),
        ("unknown key", f"json/v3/0123456789abcdef/call/get/0/{day}", NOT_RECOGNIZED),
        ("revoked key", f"json/v3/{v}/call/get/0/{day}", NOT_RECOGNIZED),
        ("malformed key", f"json/v3/%27%20OR%201%3D1%20--/call/get/0/{day}", NOT_RECOGNIZED),
        ("unknown entity", f"json/v3/{a}/calls/get/0/{day}", "Entity does not exist"),
        ("unknown method", f"json/v3/{a}/call/list/0/{day}", "Method does not exist"),
        ("role key with get", f"json/v3/{r}/call/get/0/{day}", NOT_RECOGNIZED),
        ("user key with getByRole", f"json/v3/{a}/call/getByRole/0/{day}", NOT_RECOGNIZED),
        ("bad page", f"json/v3/{a}/call/get/x/{day}", BAD_PAGE),
        ("ten-digit page", f"json/v3/{a}/call/get/1234567890/{day}", BAD_PAGE),
        ("impossible from", f"json/v3/{a}/call/get/0/2020-02-30", BAD_START),
        ("bad to", f"json/v3/{a}/call/get/0/{day}/yesterday", BAD_END),
        ("no calls", f"json/v3/{e}/call/get/0/{day}", "No rows found"),
        ("from after to", f"json/v3/{a}/call/get/0/2020-05-01/2020-04-01", "No rows found"),
    ):
        probes.append(Probe(name, f"/api/?{query}", message=message))
    alias = f"/api/index.php?json/v2/{a}/call/get/0/{day}"
    probes.append(Probe("index.php alias", alias, message=WRONG_VERSION))
    probes.append(Probe("oversized URL", f"{api}/{a}/call/get/0/{'9' * 9000}", status=400))
    probes.append(Probe("unknown path", "/nope", status=404))
    return probes, model, list(keys.values())


def calibrate(
    port: int, probes: list[Probe], model: dict[str, list[str]]
) -> tuple[list[Probe], list[str]]:
    """Ask each probe alone; check it against the contract; keep its answer."""
    ready: list[Probe] = []
    problems: list[str] = []
    walked: dict[str, list[dict[str, Any]]] = {m: [] for m in model}
    for probe in probes:
        answer = common.get(port, probe.target, method=probe.method)
        if answer.status != probe.status:
            problems.append(f"{probe.name} alone: HTTP {answer.status}")
        elif probe.message is not None and common.error_of(answer.body) != probe.message:
            problems.append(f"{probe.name} alone: {answer.body[:150]!r}")
        elif probe.status == 200 and probe.message is None and probe.method == "GET":
            method = probe.name.split()[0]
            page = json.loads(answer.body)
            walked[method] += page
            if not isinstance(page, list) or len(page) > PAGE_SIZE:
                problems.append(f"{probe.name} alone: not a page")
        body = answer.body
        if probe.method == "HEAD":  # the GET it mirrors
            body = common.get(port, probe.target).body
        ready.append(
            Probe(probe.name, probe.target, probe.method, probe.status, probe.message, body)
        )
    for method, calls in walked.items():
        ids = [str(c["universalId"]) for c in calls]
        times = [str(c["callTime"]) for c in calls]
        if sorted(ids) != sorted(model[method]) or times != sorted(times):
            problems.append(f"{method}: the pages are not the scope's calls once each in order")
    return ready, problems


async def hammer(
    port: int, probes: list[Probe], connections: int, seconds: float
) -> dict[str, Any]:
    """``connections`` clients sending random probes back to back for ``seconds``."""
    wrong: list[str] = []
    failures: list[str] = []
    latencies: list[float] = []
    limits = httpx2.Limits(max_connections=connections, max_keepalive_connections=connections)
    timeout = httpx2.Timeout(10.0)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    async with httpx2.AsyncClient(
        base_url=f"http://127.0.0.1:{port}",
        limits=limits,
        timeout=timeout,
        trust_env=False,
        headers={"accept-encoding": "identity"},  # the bytes the probes were checked with
    ) as client:

        async def one(seed: int) -> None:
            rng = random.Random(seed)
            while loop.time() < deadline:
                probe = rng.choice(probes)
                began = loop.time()
                try:
                    answer = await client.request(probe.method, probe.target)
                except httpx2.HTTPError as exc:
                    failures.append(f"{probe.name}: {exc!r}")
                    continue
                latencies.append(loop.time() - began)
                problem = check(
                    probe,
                    answer.status_code,
                    answer.headers.get("content-type"),
                    answer.headers.get("content-length"),
                    answer.content,
                )
                if problem is not None:
                    (failures if answer.status_code >= 500 else wrong).append(problem)

        await asyncio.gather(*(one(seed) for seed in range(connections)))
    latencies.sort()
    return {
        "requests": len(latencies) + len(failures),
        "requests_per_second": round((len(latencies) + len(failures)) / seconds, 1),
        "latency_p50_ms": round(1000 * latencies[len(latencies) // 2], 1) if latencies else None,
        "latency_p99_ms": round(1000 * latencies[int(len(latencies) * 0.99)], 1)
        if latencies
        else None,
        "wrong_answers": len(wrong),
        "wrong_examples": wrong[:5],
        "server_errors_or_failures": len(failures),
        "failure_examples": failures[:5],
    }


class Sampler:
    """The server's RSS every second, in a thread."""

    def __init__(self, server: common.Server) -> None:
        self.server = server
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self.server.rss_kb())
            self._stop.wait(1.0)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.samples.append(self.server.rss_kb())


def open_files(server: common.Server) -> int:
    """File descriptors open in the server and its workers."""
    total = 0
    for pid in common.process_tree(server.process.pid):
        with contextlib.suppress(OSError):
            total += sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir())
    return total


def idle_gap(server: common.Server, probes: list[Probe]) -> dict[str, Any]:
    """Idle past the thread pool's idle limit (10 s), then a short burst: nothing may pile up
    from one gap to the next (the workers' threads are replaced after a gap)."""
    time.sleep(11.0)
    burst = asyncio.run(hammer(server.port, probes, 8, 1.0))
    return {
        "requests": burst["requests"],
        "wrong_answers": burst["wrong_answers"] + burst["server_errors_or_failures"],
        "open_files": open_files(server),
        "rss_kb": server.rss_kb(),
    }


def leaked_keys(keys: list[str], files: list[Path]) -> list[str]:
    """Files holding any of the keys in clear."""
    found = []
    for path in files:
        if path.exists():
            data = path.read_bytes()
            found += [f"{path.name}: {key[:4]}..." for key in keys if key.encode() in data]
    return found


def run(quick: bool, postgres: bool = False) -> dict[str, Any]:
    """The load run; the result holds throughput, latency, RSS, ``problems`` and ``ok``."""
    connections, seconds = (32, 5.0) if quick else (64, 60.0)
    warmup = 2.0 if quick else 10.0
    idle_cycles = 0 if quick else 4
    result: dict[str, Any] = {
        "scenario": "load",
        "quick": quick,
        "backend": "postgres" if postgres else "sqlite",
        "connections": connections,
        "seconds": seconds,
    }
    with contextlib.ExitStack() as stack:
        work = stack.enter_context(common.temp_dir("calltrack-load-"))
        files: list[Path] = []
        try:
            database, cluster = common.started_database(stack, work, postgres)
        except FileNotFoundError as exc:
            return {**result, "ok": False, "skipped": str(exc)}
        probes, model, keys = build(database, work)
        log = work / "server.log"
        server = common.Server(database, log, env={"CALLTRACK_PAGE_SIZE": str(PAGE_SIZE)})
        stack.callback(server.stop)
        probes, problems = calibrate(server.port, probes, model)
        # Caches fill during the first seconds: memory is compared after this warm-up.
        warm = asyncio.run(hammer(server.port, probes, connections, warmup))
        with Sampler(server) as sampler:
            load = asyncio.run(hammer(server.port, probes, connections, seconds))
        gaps = [idle_gap(server, probes) for _ in range(idle_cycles)]
        server.stop()
        if cluster is not None:
            files = [*sorted((cluster.data / "base").rglob("*")), cluster.root / "postgres.log"]
            files = [f for f in files if f.is_file()]
        else:
            path = work / "calltrack.db"
            files = [Path(f"{path}{suffix}") for suffix in ("", "-wal", "-shm")]
        leaks = leaked_keys(keys, [*files, log])
        tracebacks = log.read_text(errors="replace").count("Traceback")

    first, last = sampler.samples[0], sampler.samples[-1]
    for name in ("wrong_answers", "server_errors_or_failures"):
        load[name] += warm[name]
    result.update(
        load,
        warmup_requests=warm["requests"],
        idle_gaps=gaps,
        probes=len(probes),
        rss_first_kb=first,
        rss_max_kb=max(sampler.samples),
        rss_last_kb=last,
        keys_found_in_clear=leaks,
        tracebacks_in_log=tracebacks,
    )
    if load["wrong_answers"]:
        problems.append(f"{load['wrong_answers']} wrong answers under load")
    if load["server_errors_or_failures"]:
        problems.append(f"{load['server_errors_or_failures']} 5xx, timeouts or dropped connections")
    if last - first > max(MAX_RSS_GROWTH_KB, first * (MAX_RSS_GROWTH_RATIO - 1)):
        problems.append(f"server memory grew from {first} KiB to {last} KiB")
    if gaps and gaps[-1]["open_files"] > gaps[0]["open_files"]:
        problems.append(
            f"open files grew over idle gaps: {[g['open_files'] for g in gaps]} "
            f"(RSS {[g['rss_kb'] for g in gaps]} KiB)"
        )
    if leaks:
        problems.append(f"API keys found in clear: {leaks}")
    if tracebacks:
        problems.append(f"{tracebacks} tracebacks in the server log")
    result["problems"] = problems
    result["ok"] = not problems
    return result


if __name__ == "__main__":
    common.main(run, __doc__, postgres=(bool, "on a private PostgreSQL"))
