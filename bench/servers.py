"""The servers under test and what the bench does with each one while it runs; and what the
benches of one server (v4.py, console.py) share: its start pinned to its own CPU, and a run's
cleanup and results."""

from __future__ import annotations

import contextlib
import gzip as gzip_module
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import data
import export
import load
import procs
from data import CALLTRACK, WINDOW

HERE = Path(__file__).resolve().parent
ADMIN_PG = os.environ.get(
    "CALLTRACK_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
# The benches of one server: `calltrack serve --workers 2` alone on CPU 0, the client on CPU 1.
WORKERS = 2
SERVER_CPUS, CLIENT_CPUS = "0", "1"


@dataclass(slots=True)
class Server:
    """How to start one server and address the pages of each dataset on it."""

    name: str
    cmd: list[str]
    ready_path: str
    templates: dict[str, str]  # dataset name -> path template with {page}
    scale: int  # {page} becomes page * scale
    is_end: export.IsEnd
    env: dict[str, str] = field(default_factory=dict)
    gzip: bool = False  # ours: also measure with Accept-Encoding: gzip

    def target(self, dataset: str, port: int, pages: int) -> load.Target:
        return load.Target(self.name, port, self.templates[dataset], self.scale, pages)


def calltrack_server(name: str, url: str, keys: dict[str, str], workers: int) -> Server:
    """`calltrack serve`, as in production: uvicorn, `workers` processes, access log on."""
    start, end = WINDOW
    serve = ["serve", "--workers", str(workers), "--host", "127.0.0.1", "--port", "{port}"]
    return Server(
        name=name,
        cmd=[CALLTRACK, "--database", url, *serve],
        ready_path="/healthz",
        templates={
            dataset: f"/api/?json/v3/{key}/call/get/{{page}}/{start}/{end}"
            for dataset, key in keys.items()
        },
        scale=1,
        is_end=export.calltrack_end,
        gzip=True,
    )


def _uvicorn(app: str, workers: int, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        app,
        *extra,
        "--app-dir",
        str(HERE),
        "--host",
        "127.0.0.1",
        "--port",
        "{port}",
        "--workers",
        str(workers),
        "--no-access-log",
        "--log-level",
        "warning",
    ]


def floor_server(db: Path, datasets: list[str], workers: int, pragmas: str) -> Server:
    return Server(
        name="floor",
        cmd=_uvicorn("floor:app", workers),
        ready_path=f"/{datasets[0]}/0",
        templates={name: f"/{name}/{{page}}" for name in datasets},
        scale=1,
        is_end=export.floor_end,
        env={"FLOOR_DB": str(db), "FLOOR_PRAGMAS": pragmas},
    )


def peer_server(db: Path, datasets: list[str], workers: int) -> Server:
    import peer

    return Server(
        name="peer",
        cmd=_uvicorn("peer:create_app", workers, "--factory"),
        ready_path="/-/versions.json",
        templates={name: peer.page_path(db.stem, name) for name in datasets},
        scale=1000,
        is_end=export.peer_end,
        env={"PEER_DB": str(db)},
    )


@dataclass(slots=True)
class Running:
    server: Server
    port: int
    proc: subprocess.Popen[bytes]
    workers: list[int]


def launch(server: Server, workers: int, cpus: str | None, log: Path) -> Running:
    """Start ``server`` pinned to ``cpus``; wait until it answers and its workers are up
    (one worker: uvicorn serves in the process it started, with no worker processes)."""
    port = procs.free_port()
    cmd = procs.pinned([part.replace("{port}", str(port)) for part in server.cmd], cpus)
    proc = procs.start(cmd, log, env=server.env, cwd=HERE)
    try:
        procs.wait_http(f"http://127.0.0.1:{port}{server.ready_path}", proc)
        if workers == 1:
            return Running(server, port, proc, [proc.pid])
        deadline = time.monotonic() + 30
        while len(found := procs.worker_pids(proc.pid)) < workers:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{server.name}: {len(found)} of {workers} workers started")
            time.sleep(0.2)
    except BaseException:
        procs.stop(proc)
        raise
    return Running(server, port, proc, found)


def serve_pinned(
    name: str, url: str, keys: dict[str, str], log: Path, no_pin: bool
) -> tuple[Server, Running, str | None]:
    """`calltrack serve --workers 2` over ``url`` pinned to SERVER_CPUS (unpinned with
    ``no_pin``), up and answering; and the CPUs the client keeps to (None: any)."""
    server = calltrack_server(name, url, keys, WORKERS)
    running = launch(server, WORKERS, None if no_pin else SERVER_CPUS, log)
    return server, running, None if no_pin else CLIENT_CPUS


# -- a bench's run -----------------------------------------------------------------------------


def run_facts(no_pin: bool) -> dict[str, Any]:
    """What a results file says first: when, on how many cores, how loaded, which code."""
    return {
        "started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": os.cpu_count(),
        "load_before": _load_average(),
        "no_pin": no_pin,
        "source": git_state(),
    }


def _load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def git_state() -> str:
    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=HERE.parent, capture_output=True, text=True, check=False
        )
        return done.stdout.strip()

    dirty = git("status", "--porcelain", "--", "src")
    return git("rev-parse", "--short", "HEAD") + (" + uncommitted src/" if dirty else "")


@contextlib.contextmanager
def stopped_on_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP end the run like Ctrl-C: through the ``finally`` blocks."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@dataclass(slots=True)
class BenchRun:
    """A run's work folder, and the bench's PostgreSQL database once made."""

    work: Path
    postgres_url: str  # an admin database's
    pg_name: str
    created: bool = False

    def create_postgres(self) -> str:
        """The bench's own database, made anew (dropped when the run ends); its URL."""
        self.created = True
        return data.pg_create(self.postgres_url, self.pg_name)


@contextlib.contextmanager
def bench_run(prefix: str, postgres_url: str, pg_name: str) -> Iterator[BenchRun]:
    """A run in a temporary folder. However it ends (Ctrl-C, SIGTERM and SIGHUP too: exit
    130), every server started is stopped and the bench's database, if made, is dropped."""
    with stopped_on_signals(), tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        run = BenchRun(Path(tmp), postgres_url, pg_name)
        try:
            yield run
        except KeyboardInterrupt:
            print("interrupted: servers stopped, bench database dropped", file=sys.stderr)
            raise SystemExit(130) from None
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(signum, signal.SIG_IGN)  # let the bounded cleanup finish
            procs.stop_all()
            if run.created:
                data.pg_drop(postgres_url, pg_name)
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(signum, signal.SIG_DFL)


def write_results(
    out: Path, name: str, results: dict[str, Any], markdown: Callable[[dict[str, Any]], str]
) -> None:
    """``out``/NAME.json and NAME.md (the load average after the run added), and the
    Markdown printed."""
    results["load_after"] = _load_average()
    (out / f"{name}.json").write_text(json.dumps(results, indent=1) + "\n")
    text = markdown(results)
    (out / f"{name}.md").write_text(text)
    print(text)


# -- what the bench asks of a running server ---------------------------------------------------


def fetch(
    port: int, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", path, headers=headers or {})
        answer = conn.getresponse()
        return answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read()
    finally:
        conn.close()


def gzip_check(running: Running, target: load.Target) -> dict[str, object]:
    """Does the server compress on request, and does the compressed page decode to the plain?"""
    _, _, plain = fetch(running.port, target.path(1))
    _, headers, body = fetch(running.port, target.path(1), {"Accept-Encoding": "gzip"})
    encoding = headers.get("content-encoding", "")
    same = gzip_module.decompress(body) == plain if encoding == "gzip" else body == plain
    return {
        "served": encoding == "gzip",
        "plain_bytes": len(plain),
        "sent_bytes": len(body),
        "ratio": len(plain) / max(1, len(body)),
        "same_content": same,
    }


def profile(
    running: Running, target: load.Target, out: Path, seconds: int, cpus: str | None
) -> dict[str, object]:
    """py-spy on one worker (an SVG flame graph) and another (raw stacks) under 16 connections."""
    spy = Path(sys.executable).with_name("py-spy")
    if not spy.exists() or len(running.workers) < 1:
        return {"skipped": "py-spy not installed (pip install py-spy)"}
    raw = out / "profile.txt"
    options = ["--duration", str(seconds), "--rate", "200", "--nonblocking"]
    spies = [
        procs.start(
            [str(spy), "record", "--pid", str(pid), *options, "--format", fmt, "-o", str(path)],
            out / "logs" / "py-spy.log",
        )
        for pid, fmt, path in zip(
            running.workers, ("flamegraph", "raw"), (out / "profile.svg", raw), strict=False
        )
    ]
    time.sleep(1)
    loaded = load.measure(target, 16, seconds, cpus=cpus, server_pids=running.workers, use_wrk=True)
    for spy_proc in spies:
        try:
            spy_proc.wait(timeout=seconds + 30)
        finally:
            procs.stop(spy_proc)
    result: dict[str, object] = {"load": loaded.as_dict(), "svg": str(out / "profile.svg")}
    if raw.exists():
        result.update(summarize_stacks(raw.read_text()))
    return result


def summarize_stacks(text: str, top: int = 15) -> dict[str, object]:
    """Share of samples per function from py-spy's collapsed stacks: where the time is spent
    (self, any code) and which of calltrack's functions it is spent under (inclusive)."""
    own: dict[str, int] = {}
    ours: dict[str, int] = {}
    total = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame(frame) for frame in stack.split(";")]
        total += count
        own[frames[-1][0]] = own.get(frames[-1][0], 0) + count
        for name in {name for name, path in frames if _ours(path)}:
            ours[name] = ours.get(name, 0) + count

    def ranked(table: dict[str, int]) -> list[tuple[str, float]]:
        best = sorted(table.items(), key=lambda item: -item[1])[:top]
        return [(name, round(100 * count / max(1, total), 1)) for name, count in best]

    return {"samples": total, "self_pct": ranked(own), "calltrack_inclusive_pct": ranked(ours)}


def _ours(path: str) -> bool:
    return path.startswith("calltrack/") or "/calltrack/" in path


def _frame(frame: str) -> tuple[str, str]:
    """(``name (file.py)``, full path) from py-spy's ``name (path/file.py:line)``."""
    name, _, place = frame.partition(" (")
    path = place.rsplit(":", 1)[0]
    return (f"{name} ({Path(path).name})" if path else name), path
