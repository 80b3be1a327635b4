"""Webhook deliveries (issue 13): how fast a backlog drains, how soon a call reaches its
receiver, and what deliveries cost the v3 pages. On SQLite and PostgreSQL.

1. Deliveries per second: N ``CALL_UPDATED`` deliveries pending (a call/put's import of N
   changed calls, written in the bench process before ``calltrack serve`` starts; the first
   deliveries are answered 410 so the endpoint is disabled and the rest wait), then
   ``calltrack hook enable`` and the time until every delivery arrived at a local receiver
   (its own process: a raw asyncio HTTP/1.1 server on uvloop that answers 200 and verifies
   every signature with ``standardwebhooks``). Server and receiver CPU.
2. Latency when idle: PBX calls posted one at a time to ``/telephony/generic``; from the
   POST of ``call.ended`` to the arrival of its ``AFTER_CALL_FINISH`` (both clocks are the
   machine's CLOCK_MONOTONIC): p50/p99.
3. v3 pages/s (``call/get``, wrk) with no delivery running, then while a backlog drains.
4. ``--clients``: signed POSTs at concurrency 16 to the receiver with httpcore2 (what the
   deliverer uses), httpx2.AsyncClient and aiohttp (if installed): requests per CPU-second.

    .venv/bin/python bench/hooks.py                   # both stores, ~4 min
    .venv/bin/python bench/hooks.py --no-postgres --backlog 2000 --clients

Writes ``--out``/hooks.json and hooks.md and prints the Markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import signal
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import data
import load
import procs
import servers

HERE = Path(__file__).resolve().parent
ADMIN_PG = os.environ.get(
    "CALLTRACK_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
PG_NAME = "calltrack_hooks_bench"
ACCOUNT = "hooks"
POOL = 5
SERVER_CPUS, CLIENT_CPUS = "0", "1"  # the page bench's pinning: server alone on CPU 0
GOAL_PER_S = 300.0
GOAL_P99_S = 1.0


# -- the receiver (its own process: ``hooks.py --receiver PORT``) -----------------------------


class _Receiver:
    """What arrived: per path, the answer it gets and the secret that signs for it."""

    def __init__(self) -> None:
        self.status = 200
        self.verifiers: dict[str, Any] = {}  # path -> standardwebhooks.Webhook
        self.reset()

    def reset(self) -> None:
        self.ok_times: list[float] = []  # arrivals answered 2xx, new webhook-ids only
        self.ids: set[str] = set()
        self.duplicates = 0
        self.refused = 0  # answered with a non-2xx status
        self.verified = 0
        self.bad_signatures = 0
        self.live: list[tuple[float, str]] = []  # (arrival, the call's clientNumber)

    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> bytes:
        now = time.monotonic()
        path = target.split("?", 1)[0]
        if path == "/_stats":
            return _answer(200, json.dumps(self.stats()).encode())
        if path == "/_control":
            asked = json.loads(body or b"{}")
            if "status" in asked:
                self.status = int(asked["status"])
            if asked.get("reset"):
                self.reset()
            if "secrets" in asked:
                from standardwebhooks import Webhook

                self.verifiers = {p: Webhook(s) for p, s in asked["secrets"].items()}
            return _answer(200, b"{}")
        verifier = self.verifiers.get(path)
        message_id = headers.get("webhook-id", "")
        parsed: Any = None
        if verifier is not None:
            try:
                parsed = verifier.verify(body, headers, json_parse=path == "/live")
                self.verified += 1
            except Exception:
                self.bad_signatures += 1
                return _answer(400, b"")
        if self.status != 200:
            self.refused += 1
            return _answer(self.status, b"")
        if message_id in self.ids:
            self.duplicates += 1
        else:
            self.ids.add(message_id)
            self.ok_times.append(now)
            if path == "/live" and isinstance(parsed, dict):
                self.live.append((now, str(parsed["call"].get("clientNumber", ""))))
        return _answer(200, b"")

    def stats(self) -> dict[str, Any]:
        return {
            "ok": len(self.ok_times),
            "times": self.ok_times,
            "duplicates": self.duplicates,
            "refused": self.refused,
            "verified": self.verified,
            "bad_signatures": self.bad_signatures,
            "live": self.live,
        }


def _answer(status: int, body: bytes) -> bytes:
    return b"HTTP/1.1 %d X\r\ncontent-length: %d\r\n\r\n%s" % (status, len(body), body)


class _Connection(asyncio.Protocol):
    """HTTP/1.1 with keep-alive and Content-Length bodies: all the deliverer sends."""

    def __init__(self, receiver: _Receiver) -> None:
        self.receiver = receiver
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def data_received(self, chunk: bytes) -> None:
        self.buffer += chunk
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            lines = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            size = int(headers.get("content-length", "0"))
            if len(self.buffer) < end + 4 + size:
                return
            body = bytes(self.buffer[end + 4 : end + 4 + size])
            del self.buffer[: end + 4 + size]
            method, target, _ = lines[0].split(" ", 2)
            assert self.transport is not None
            self.transport.write(self.receiver.handle(method, target, headers, body))


def serve_receiver(port: int) -> None:
    import uvloop

    async def main() -> None:
        receiver = _Receiver()
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Connection(receiver), "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    uvloop.run(main())


def control(port: int, **asked: Any) -> None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/_control", data=json.dumps(asked).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        answer.read()


def receiver_stats(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stats", timeout=10) as answer:
        result: dict[str, Any] = json.loads(answer.read())
    return result


# -- setup --------------------------------------------------------------------------------------


class Bench:
    """One store: its database, the receiver, the server of the moment."""

    def __init__(self, backend: str, url: str, work: Path, args: argparse.Namespace) -> None:
        self.backend, self.url, self.work, self.args = backend, url, work, args
        self.rport = procs.free_port()
        self.receiver = procs.start(
            procs.pinned(
                [sys.executable, str(Path(__file__)), "--receiver", str(self.rport)],
                None if args.no_pin else CLIENT_CPUS,
            ),
            work / f"receiver-{backend}.log",
        )
        procs.wait_http(f"http://127.0.0.1:{self.rport}/_stats", self.receiver)
        self.dataset = data.Dataset(ACCOUNT, args.calls, seed=1)
        path, _ = data.ensure_file(self.dataset, args.out / "data")
        self.lines = path.read_bytes().splitlines()
        loaded = data.load(backend, url, [self.dataset], args.out / "data")
        self.key = loaded.keys[ACCOUNT]
        self.account_id = loaded.account_ids[ACCOUNT]
        self.secrets: dict[str, str] = {}
        self.hooks: dict[str, int] = {}
        self.running: servers.Running | None = None
        self.round = 0

    def hook(self, path: str, event: str) -> None:
        added = _calltrack(
            self.url, "hook", "add", ACCOUNT, f"http://127.0.0.1:{self.rport}{path}",
            "--event", event, env=ENV,
        )  # fmt: skip
        self.hooks[path] = int(str(added["id"]))
        self.secrets[path] = str(added["secret"])
        control(self.rport, secrets=self.secrets)

    def endpoint(self, path: str) -> dict[str, Any]:
        listed = _calltrack(self.url, "hook", "list", ACCOUNT, env=ENV)
        endpoints: list[dict[str, Any]] = listed["endpoints"]  # type: ignore[assignment]
        return next(e for e in endpoints if e["id"] == self.hooks[path])

    def start_server(self) -> servers.Running:
        server = servers.calltrack_server(f"calltrack-{self.backend}", self.url, {}, 2)
        # `serve` delivers from one process beside its workers (its default), or from
        # inside each worker (--deliverer workers).
        server.env = {**ENV, "CALLTRACK_HOOKS_DELIVERER": self.args.deliverer}
        cpus = None if self.args.no_pin else SERVER_CPUS
        self.running = servers.launch(server, 2, cpus, self.work / f"serve-{self.backend}.log")
        return self.running

    def stop_server(self) -> None:
        if self.running is not None:
            procs.stop(self.running.proc)
            self.running = None

    def backlog(self, count: int) -> int:
        """``count`` pending CALL_UPDATED deliveries, held by a disabled endpoint, on a fresh
        server; how many are pending."""
        from calltrack.config import Settings
        from calltrack.importer import import_bytes
        from calltrack.store import open_store

        self.stop_server()
        self.round += 1
        tag = b'"tags":["bench%d"' % self.round
        changed = [
            line.replace(b'"tags":[]', tag + b"]", 1).replace(b'"tags":["', tag + b',"', 1)
            for line in self.lines[:count]
        ]
        control(self.rport, status=410, reset=True)
        store = open_store(Settings.from_env(env={}, database_url=self.url))
        try:  # what call/put does with its body (api/writes.py), without the HTTP
            import_bytes(store, self.account_id, b"\n".join(changed), store.settings.zone, "put")
        finally:
            store.close()
        self.start_server()  # its deliverers get 410 and disable the endpoint
        deadline = time.monotonic() + 60
        while (endpoint := self.endpoint("/bulk"))["enabled"]:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the endpoint is still enabled: {endpoint}")
            time.sleep(0.2)
        control(self.rport, status=200, reset=True)
        return int(endpoint["pending"])

    def pids(self) -> list[int]:
        """The server's processes that work: its workers, and its deliverer process."""
        assert self.running is not None
        master = self.running.proc.pid
        return self.running.workers + [
            pid for pid in procs.group_pids(master) if b"hooks" in _cmdline(pid)
        ]

    def close(self) -> None:
        self.stop_server()
        procs.stop(self.receiver)


ENV = {"CALLTRACK_HOOKS_ALLOW_HOSTS": "127.0.0.1"}


def _cmdline(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:  # gone
        return []


def _calltrack(url: str, *args: str, env: dict[str, str] | None = None) -> dict[str, object]:
    import subprocess

    cmd = [data.CALLTRACK, "--database", url, *args, "--json"]
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[3:])} failed: {done.stderr.strip()[-2000:]}")
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# -- 1. deliveries per second -----------------------------------------------------------------


def enable_and_drain(
    bench: Bench,
    expected: int,
    during: Callable[[], Any] | None = None,
    profile: list[tuple[int, Path, bool, float]] | None = None,
) -> dict[str, Any]:
    """``hook enable``, then wait until ``expected`` deliveries arrived (running ``during``
    meanwhile, if given; py-spy on (pid, output, idle too, seconds) of ``profile``); the
    arrivals, CPU and timings."""
    workers, receiver = bench.pids(), [bench.receiver.pid]
    cpu_s, cpu_r = procs.cpu_seconds(workers), procs.cpu_seconds(receiver)
    busy, mine = procs.machine_busy_seconds(), _own_cpu()
    asked = time.monotonic()
    _calltrack(bench.url, "hook", "enable", str(bench.hooks["/bulk"]), env=ENV)
    enabled = time.monotonic()  # the CLI committed and exited (Python's start: ~1 s)
    spies = [spy(*args) for args in profile] if profile else []
    during_result = during() if during is not None else None
    deadline = time.monotonic() + 120 + expected / 20
    while (stats := receiver_stats(bench.rport))["ok"] < expected:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{stats['ok']} of {expected} deliveries arrived in time")
        time.sleep(0.2)
    for proc in spies:
        try:
            proc.wait(timeout=60)
        finally:
            procs.stop(proc)
    times: list[float] = stats["times"]
    last = max(times)
    elapsed = last - enabled
    server_cpu = procs.cpu_seconds(workers) - cpu_s
    receiver_cpu = procs.cpu_seconds(receiver) - cpu_r
    others = procs.machine_busy_seconds() - busy - server_cpu - receiver_cpu
    others -= _own_cpu() - mine
    first = min(times)
    return {
        "backlog": expected,
        "arrived": stats["ok"],
        "duplicates": stats["duplicates"],
        "verified": stats["verified"],
        "bad_signatures": stats["bad_signatures"],
        "cli_to_last_s": round(last - asked, 2),
        "enable_to_last_s": round(elapsed, 2),
        "enable_to_first_s": round(first - enabled, 2),
        "first_to_last_s": round(last - first, 2),
        "per_s": round(expected / elapsed, 1),
        "per_s_flowing": round((expected - 1) / max(last - first, 1e-6), 1),
        "server_cpu_pct": round(100 * server_cpu / elapsed, 1),
        "server_cpu_ms_per_delivery": round(1000 * server_cpu / expected, 2),
        "receiver_cpu_pct": round(100 * receiver_cpu / elapsed, 1),
        "other_cpu_pct": round(max(0.0, 100 * others / elapsed), 1),
        "times": times,
        "enabled_at": enabled,
        "during": during_result,
    }


def spy(pid: int, out: Path, idle: bool, seconds: float) -> Any:
    """py-spy recording a worker's collapsed stacks (``idle``: waiting threads too)."""
    tool = Path(sys.executable).with_name("py-spy")
    cmd = [str(tool), "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))),
           "--rate", "200", "--nonblocking", "--format", "raw", "-o", str(out)]  # fmt: skip
    return procs.start([*cmd, "--idle"] if idle else cmd, out.with_suffix(".log"))


def profiled(bench: Bench, backlog: int) -> dict[str, Any]:
    """Another backlog drained under py-spy: worker 1 on CPU (where the CPU goes), worker 2
    with idle samples (where the wall time goes, waits included)."""
    import servers as s

    pending = bench.backlog(backlog)
    seconds = pending / 300 + 2
    outs = [bench.work / f"spy-{bench.backend}-{kind}.txt" for kind in ("cpu", "wall")]
    pids = bench.pids()
    plan = [(pids[0], outs[0], False, seconds), (pids[-1], outs[1], True, seconds)]
    drained = enable_and_drain(bench, pending, profile=plan)
    result: dict[str, Any] = {"per_s": drained["per_s"], "seconds": round(seconds, 1)}
    for kind, out in zip(("cpu", "wall"), outs, strict=True):
        if out.exists():
            text = out.read_text()
            result[kind] = s.summarize_stacks(text, top=25)
            result[kind]["roots"] = _roots(text)
            (bench.args.out / out.name).write_text(text)
    return result


def _roots(text: str) -> dict[str, int]:
    """Samples per stack root: ``<module>`` is the event loop's thread, ``Thread._bootstrap``
    the thread pool's (the store's calls)."""
    found: dict[str, int] = {}
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if count.isdigit():
            head = stack.split(";", 1)[0]
            found[head] = found.get(head, 0) + int(count)
    return dict(sorted(found.items(), key=lambda item: -item[1])[:8])


def _own_cpu() -> float:
    """This process's CPU and its finished children's (the CLI commands, wrk)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


# -- 2. latency -------------------------------------------------------------------------------


async def _pbx(
    port: int, secret: str, calls: int, pause: float
) -> tuple[dict[str, float], dict[str, float]]:
    """Calls one at a time; by caller, the monotonic time each ``call.ended`` was sent, and
    the time its answer came."""
    import httpx2

    sent: dict[str, float] = {}
    answered: dict[str, float] = {}
    headers = {"authorization": f"Bearer {secret}"}
    url = f"http://127.0.0.1:{port}/telephony/generic"
    async with httpx2.AsyncClient(timeout=30) as client:
        for serial in range(calls):
            call_id, caller = f"lat-{serial}", f"7916555{serial:04d}"
            now = int(time.time())
            events: list[dict[str, Any]] = [
                {"event": "call.started", "call_id": call_id, "at": now - 40, "caller": caller,
                 "called": f"7495300{serial % POOL:04d}"},
                {"event": "call.answered", "call_id": call_id, "at": now - 30},
                {"event": "call.ended", "call_id": call_id, "at": now, "talk_seconds": 30,
                 "disposition": "answered"},
            ]  # fmt: skip
            for event in events:
                began = time.monotonic()
                answer = await client.post(url, json=event, headers=headers)
                if answer.status_code != 200:
                    raise RuntimeError(f"{event['event']}: {answer.status_code} {answer.text}")
            sent[caller], answered[caller] = began, time.monotonic()
            await asyncio.sleep(pause)
    return sent, answered


def latency(bench: Bench, calls: int, pause: float) -> dict[str, Any]:
    url = bench.url
    _calltrack(url, "campaign", "add", ACCOUNT, "1", "Shop", "--site", "shop.example")
    for index in range(POOL):
        _calltrack(url, "phone", "add", ACCOUNT, f"7495300{index:04d}", "--campaign", "1")
    secret = str(_calltrack(url, "telephony", "add", ACCOUNT)["secret"])
    bench.hook("/live", "AFTER_CALL_FINISH")
    control(bench.rport, status=200, reset=True)
    assert bench.running is not None
    warmup = bench.args.warmup
    sent, answered = asyncio.run(_pbx(bench.running.port, secret, warmup + calls, pause))
    deadline = time.monotonic() + 30
    while len((stats := receiver_stats(bench.rport))["live"]) < warmup + calls:
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    arrived = {caller: at for at, caller in stats["live"]}
    everything = [arrived.get(c, float("inf")) - t for c, t in sent.items()]
    posts = [answered[c] - t for c, t in sent.items()]
    in_order = everything[warmup:]
    delays = sorted(d for d in in_order if d != float("inf"))
    after_answer = sorted(arrived[c] - answered[c] for c in list(sent)[warmup:] if c in arrived)
    if not delays:
        raise RuntimeError("no AFTER_CALL_FINISH arrived")
    return {
        "calls": calls,
        "warmup_calls": warmup,
        "warmup_ms": [round(1000 * d, 1) for d in everything[:warmup]],
        "warmup_post_ms": [round(1000 * d, 1) for d in posts[:warmup]],
        "arrived": len(delays),
        "post_p50_ms": round(1000 * _pct(sorted(posts[warmup:]), 0.50), 1),
        "post_p99_ms": round(1000 * _pct(sorted(posts[warmup:]), 0.99), 1),
        "after_answer_p50_ms": round(1000 * _pct(after_answer, 0.50), 1),
        "after_answer_p99_ms": round(1000 * _pct(after_answer, 0.99), 1),
        "pause_s": pause,
        "p50_ms": round(1000 * _pct(delays, 0.50), 1),
        "p90_ms": round(1000 * _pct(delays, 0.90), 1),
        "p99_ms": round(1000 * _pct(delays, 0.99), 1),
        "max_ms": round(1000 * delays[-1], 1),
        "mean_ms": round(1000 * statistics.fmean(delays), 1),
        "verified": stats["verified"],
        "bad_signatures": stats["bad_signatures"],
        "delays_ms_in_order": [round(1000 * d, 1) for d in in_order],
        "ended_post_ms_in_order": [round(1000 * d, 1) for d in posts[warmup:]],
    }


def _pct(ordered: list[float], share: float) -> float:
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


# -- 3. pages ----------------------------------------------------------------------------------


def pages(bench: Bench, seconds: float, conns: int, backlog: int) -> dict[str, Any]:
    assert bench.running is not None
    start, end = data.WINDOW
    target = load.Target(
        "calltrack", bench.running.port, f"/api/?json/v3/{bench.key}/call/get/{{page}}/{start}/"
        f"{end}", 1, bench.args.calls // 1000,
    )  # fmt: skip
    cpus = None if bench.args.no_pin else CLIENT_CPUS

    def run() -> load.LoadResult:
        return load.measure(target, conns, seconds, cpus=cpus, server_pids=bench.pids())

    load.measure(target, conns, 1, cpus=cpus, server_pids=bench.pids())  # warm-up walk
    procs.wait_for_quiet()
    idle = run()
    box: dict[str, Any] = {}

    def during() -> load.LoadResult:
        box["from"] = time.monotonic()
        result = run()
        box["to"] = time.monotonic()
        return result

    drained = enable_and_drain(bench, backlog, during)
    busy: load.LoadResult = drained["during"]
    inside = [t for t in drained["times"] if box["from"] <= t <= box["to"]]
    still = max(drained["times"]) > box["to"]
    return {
        "conns": conns,
        "idle": idle.as_dict(),
        "draining": busy.as_dict(),
        "ratio": round(busy.pages_per_s / idle.pages_per_s, 3),
        "deliveries_during": len(inside),
        "deliveries_per_s_during": round(len(inside) / (box["to"] - box["from"]), 1),
        "backlog_outlasted_pages": still,
        "drain": {k: v for k, v in drained.items() if k not in ("times", "during")},
    }


# -- 4. HTTP clients ---------------------------------------------------------------------------


async def _client_loop(kind: str, url: str, secret: str, seconds: float, body: bytes) -> int:
    from calltrack.hooks.signing import secret_key, sign

    key = [secret_key(secret)]
    count = 0
    ends = time.monotonic() + seconds

    def headers(n: int) -> list[tuple[str, str]]:
        message_id, stamp = f"msg_{kind}{n}", int(time.time())
        return [
            ("webhook-id", message_id),
            ("webhook-timestamp", str(stamp)),
            ("webhook-signature", sign(key, message_id, stamp, body)),
            ("user-agent", "calltrack-webhooks/bench"),
            ("content-type", "application/json"),
        ]

    async def worker(send: Callable[[list[tuple[str, str]]], Any]) -> None:
        nonlocal count
        while time.monotonic() < ends:
            count += 1
            status = await send(headers(count))
            if status != 200:
                raise RuntimeError(f"{kind}: answered {status}")

    if kind == "httpcore2":
        import httpcore2

        async with httpcore2.AsyncConnectionPool(max_connections=32) as pool:

            async def send_core(h: list[tuple[str, str]]) -> int:
                raw = [(n.encode(), v.encode()) for n, v in h]
                async with pool.stream("POST", url, headers=raw, content=body) as response:
                    async for _ in response.aiter_stream():
                        pass
                    return int(response.status)

            await asyncio.gather(*(worker(send_core) for _ in range(16)))
    elif kind == "httpx2":
        import httpx2

        async with httpx2.AsyncClient(follow_redirects=False) as client:

            async def send_x(h: list[tuple[str, str]]) -> int:
                answer = await client.post(url, content=body, headers=h)
                return int(answer.status_code)

            await asyncio.gather(*(worker(send_x) for _ in range(16)))
    else:
        import aiohttp  # type: ignore[import-not-found,unused-ignore]

        async with aiohttp.ClientSession() as session:

            async def send_a(h: list[tuple[str, str]]) -> int:
                async with session.post(url, data=body, headers=h, allow_redirects=False) as answer:
                    await answer.read()
                    return int(answer.status)

            await asyncio.gather(*(worker(send_a) for _ in range(16)))
    return count


def clients(bench: Bench, seconds: float) -> list[dict[str, Any]]:
    """The same signed POSTs (a stored payload) from this process, pinned to CPU 0."""
    import importlib.util

    from calltrack.hooks.payload import record_json, render

    body = render("CALL_UPDATED", record_json(bench.lines[0]), "POST")
    bench.hook("/clients", "CALL_UPDATED")
    url = f"http://127.0.0.1:{bench.rport}/clients"
    rows = []
    kinds = ["httpcore2", "httpx2"]
    if importlib.util.find_spec("aiohttp") is not None:
        kinds.append("aiohttp")
    with procs.affinity(None if bench.args.no_pin else SERVER_CPUS):
        for kind in kinds:
            control(bench.rport, status=200, reset=True)
            procs.wait_for_quiet()
            mine, receiver = _own_cpu(), procs.cpu_seconds([bench.receiver.pid])
            began = time.monotonic()
            count = asyncio.run(_client_loop(kind, url, bench.secrets["/clients"], seconds, body))
            elapsed = time.monotonic() - began
            cpu = _own_cpu() - mine
            stats = receiver_stats(bench.rport)
            rows.append(
                {
                    "client": kind,
                    "requests": count,
                    "per_s": round(count / elapsed, 1),
                    "client_cpu_pct": round(100 * cpu / elapsed, 1),
                    "per_cpu_s": round(count / cpu, 1),
                    "receiver_cpu_pct": round(
                        100 * (procs.cpu_seconds([bench.receiver.pid]) - receiver) / elapsed, 1
                    ),
                    "verified": stats["verified"],
                    "bad_signatures": stats["bad_signatures"],
                }
            )
    return rows


# -- the run -----------------------------------------------------------------------------------


def run_store(backend: str, url: str, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    bench = Bench(backend, url, work, args)
    try:
        bench.hook("/bulk", "CALL_UPDATED")
        result: dict[str, Any] = {}
        pending = bench.backlog(args.backlog)
        procs.wait_for_quiet()
        drained = enable_and_drain(bench, pending)
        result["deliveries"] = {k: v for k, v in drained.items() if k not in ("times", "during")}
        result["deliveries"]["curve"] = _curve(drained["times"], drained["enabled_at"])
        pending = bench.backlog(args.page_backlog)
        result["pages"] = pages(bench, args.seconds, args.conns, pending)
        result["latency"] = latency(bench, args.latency_calls, args.pause)
        if args.profile:
            result["profile"] = profiled(bench, args.backlog)
        if args.clients:
            result["clients"] = clients(bench, args.seconds)
        return result
    finally:
        bench.close()


def _curve(times: list[float], enabled: float) -> list[int]:
    """Arrivals in each second after the enable."""
    buckets: dict[int, int] = {}
    for t in times:
        buckets[int(t - enabled)] = buckets.get(int(t - enabled), 0) + 1
    return [buckets.get(s, 0) for s in range(max(buckets) + 1)] if buckets else []


def markdown(results: dict[str, Any]) -> str:
    stores = [s for s in ("sqlite", "postgres") if s in results]
    out = [
        "### Webhook deliveries (bench/hooks.py)",
        "",
        f"Run {results['started']} on {results['cores']} cores; load average before the run "
        f"{results['load_before']}; "
        + (
            "unpinned."
            if results["no_pin"]
            else "server pinned to CPU 0, receiver and load client to CPU 1 (taskset)."
        ),
        "",
        "Deliveries per second (a backlog of CALL_UPDATED deliveries, `hook enable`, time to "
        f"the last arrival; goal {GOAL_PER_S:.0f}/s):",
        "",
        "| store | backlog | enable -> last s | deliveries/s | first -> last s | flowing /s "
        "| server CPU % | server CPU ms/delivery | receiver CPU % | other CPU % | verified / bad "
        "| dup | goal |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for s in stores:
        d = results[s]["deliveries"]
        out.append(
            f"| {s} | {d['backlog']:,} | {d['enable_to_last_s']} | {d['per_s']} | "
            f"{d['first_to_last_s']} | {d['per_s_flowing']} | {d['server_cpu_pct']} | "
            f"{d['server_cpu_ms_per_delivery']} | {d['receiver_cpu_pct']} | "
            f"{d['other_cpu_pct']} | {d['verified']:,} / {d['bad_signatures']} | "
            f"{d['duplicates']} | {'met' if d['per_s'] >= GOAL_PER_S else 'NOT met'} |"
        )
    out += [
        "",
        "Latency from the POST of `call.ended` to the AFTER_CALL_FINISH at the receiver, one "
        f"call at a time (goal p99 < {GOAL_P99_S * 1000:.0f} ms):",
        "",
        "| store | calls | arrived | p50 ms | p90 ms | p99 ms | max ms | of which the POST's "
        "answer p50 / p99 ms | answer -> arrival p50 / p99 ms | warm-up calls (not counted), ms "
        "| verified / bad | goal |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    for s in stores:
        x = results[s]["latency"]
        out.append(
            f"| {s} | {x['calls']} | {x['arrived']} | {x['p50_ms']} | {x['p90_ms']} | "
            f"{x['p99_ms']} | {x['max_ms']} | {x['post_p50_ms']} / {x['post_p99_ms']} | "
            f"{x['after_answer_p50_ms']} / {x['after_answer_p99_ms']} | "
            f"{', '.join(str(w) for w in x['warmup_ms'])} | "
            f"{x['verified']} / {x['bad_signatures']} | "
            f"{'met' if x['p99_ms'] < GOAL_P99_S * 1000 and x['arrived'] == x['calls'] else 'NOT met'} |"  # noqa: E501
        )
    out += [
        "",
        "v3 pages (`call/get`, 1000 calls a page, wrk) with no delivery running, then while a "
        "backlog drains:",
        "",
        "| store | conns | pages/s idle | pages/s draining | ratio | p99 ms idle / draining "
        "| server CPU % idle / draining | other CPU % idle / draining | deliveries/s meanwhile "
        "| backlog outlasted the run |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for s in stores:
        p = results[s]["pages"]
        i, b = p["idle"], p["draining"]
        out.append(
            f"| {s} | {p['conns']} | {i['pages_per_s']:.1f} | {b['pages_per_s']:.1f} | "
            f"{p['ratio']:.2f}x | {i['p99_ms']:.1f} / {b['p99_ms']:.1f} | "
            f"{i['server_cpu_pct']:.0f} / {b['server_cpu_pct']:.0f} | "
            f"{i['other_cpu_pct']:.0f} / {b['other_cpu_pct']:.0f} | "
            f"{p['deliveries_per_s_during']} | {'yes' if p['backlog_outlasted_pages'] else 'NO'} |"
        )
    if any("clients" in results[s] for s in stores):
        out += [
            "",
            "HTTP clients: signed POSTs (a stored CALL_UPDATED payload) at concurrency 16 to "
            "the receiver, from one process:",
            "",
            "| store run | client | requests/s | client CPU % | requests per CPU-s "
            "| receiver CPU % | verified / bad |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for s in stores:
            for c in results[s].get("clients", []):
                out.append(
                    f"| {s} | {c['client']} | {c['per_s']} | {c['client_cpu_pct']} | "
                    f"{c['per_cpu_s']} | {c['receiver_cpu_pct']} | {c['verified']} / "
                    f"{c['bad_signatures']} |"
                )
    for s in stores:
        prof = results[s].get("profile")
        if not prof or "cpu" not in prof:
            continue
        out += [
            "",
            f"Profile of a {s} worker draining a backlog ({prof['per_s']} deliveries/s under "
            f"py-spy, {prof['cpu']['samples']} CPU samples): share of its CPU samples",
            "",
            "| function (self) | % | calltrack function (inclusive) | % |",
            "|---|---:|---|---:|",
        ]
        own, ours = prof["cpu"]["self_pct"], prof["cpu"]["calltrack_inclusive_pct"]
        for index in range(min(12, max(len(own), len(ours)))):
            a = own[index] if index < len(own) else ("", "")
            b = ours[index] if index < len(ours) else ("", "")
            out.append(f"| {a[0]} | {a[1]} | {b[0]} | {b[1]} |")
    return "\n".join(out) + "\n"


@contextlib.contextmanager
def _stopped_on_signals() -> Iterator[None]:
    """SIGTERM ends the run like Ctrl-C: through the ``finally`` blocks that stop processes."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--receiver", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--calls", type=int, default=10_000, help="calls imported for pages")
    parser.add_argument("--backlog", type=int, default=6_000)
    parser.add_argument("--page-backlog", type=int, default=6_000)
    parser.add_argument("--seconds", type=float, default=5.0, help="per page or client run")
    parser.add_argument("--conns", type=int, default=2, help="wrk connections for pages")
    parser.add_argument("--latency-calls", type=int, default=150)
    parser.add_argument("--warmup", type=int, default=4, help="latency calls not counted")
    parser.add_argument("--pause", type=float, default=0.05, help="seconds between calls")
    parser.add_argument("--clients", action="store_true", help="also compare HTTP clients")
    parser.add_argument("--profile", action="store_true", help="py-spy on a further drain")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--no-pin", action="store_true")
    parser.add_argument(
        "--deliverer", choices=["process", "workers"], default="process",
        help="where `serve` delivers from: one process beside its workers (its default), or "
        "inside each worker",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=HERE / "out")
    args = parser.parse_args()
    if args.receiver:
        serve_receiver(args.receiver)
        return
    args.backlog = min(args.backlog, args.calls)
    args.page_backlog = min(args.page_backlog, args.calls)
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": os.cpu_count(),
        "load_before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "no_pin": args.no_pin,
        "deliverer": args.deliverer,
        "calls": args.calls,
    }
    created = False
    with _stopped_on_signals(), tempfile.TemporaryDirectory(prefix="calltrack-hooks-") as tmp:
        work = Path(tmp)
        try:
            results["sqlite"] = run_store("sqlite", f"sqlite:///{work / 'hooks.db'}", work, args)
            if not args.no_postgres and data.pg_reachable(ADMIN_PG):
                created = True
                url = data.pg_create(ADMIN_PG, PG_NAME)
                results["postgres"] = run_store("postgres", url, work, args)
        finally:
            procs.stop_all()
            if created:
                data.pg_drop(ADMIN_PG, PG_NAME)
    results["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    text = markdown(results)
    print(text)
    (args.out / "hooks.md").write_text(text)
    (args.out / "hooks.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
