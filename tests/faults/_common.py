"""What every fault and load scenario shares: a real `calltrack serve`, a private PostgreSQL,
the CLI, raw HTTP, the spec's error envelope, and process memory.

Everything here starts processes in their own process group and stops them (the whole group)
in ``close``/``stop``, so a scenario that fails half-way leaves nothing running.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from calltrack.store import Store, Window

REPO = Path(__file__).resolve().parents[2]
CALLTRACK = str(Path(sys.executable).parent / "calltrack")
if not Path(CALLTRACK).exists():  # pragma: no cover - an install without the venv layout
    CALLTRACK = shutil.which("calltrack") or "calltrack"

UNAVAILABLE = "Service temporarily unavailable"
# The error envelope of API.md section 2, written from the contract (not from src).
INFO: dict[str, Any] = {
    "entities": {
        "call": ["get", "getByRole", "getWithRole"],
        "callrole": ["get"],
        "phone": ["get"],
        "user": ["get"],
        "campaign": ["get"],
        "tag": ["get"],
    },
    "types": ["json", "plain", "csv", "xml"],
    "versions": ["v3"],
}
CONTENT_TYPE = "application/json; charset=utf-8"


def envelope(message: str) -> dict[str, Any]:
    """The documented error answer with ``message``."""
    return {"inbound": {"error": message}, "info": INFO, "payload": []}


def error_of(body: bytes) -> str | None:
    """The message of a documented error envelope, or None if ``body`` is not exactly one."""
    try:
        decoded = json.loads(body)
    except ValueError:
        return None
    if not isinstance(decoded, dict):
        return None
    inbound = decoded.get("inbound")
    message = inbound.get("error") if isinstance(inbound, dict) else None
    if not isinstance(message, str) or inbound != {"error": message}:
        return None
    if decoded.get("payload") != [] or set(decoded) != {"inbound", "info", "payload"}:
        return None
    return message if covers_spec_info(decoded["info"]) else None


def covers_spec_info(info: object) -> bool:
    """``info`` lists at least what the contract's does (the service may list more)."""
    if not isinstance(info, dict) or set(info) != set(INFO):
        return False
    entities = info["entities"]
    return (
        isinstance(entities, dict)
        and all(
            set(methods) <= set(entities.get(name, ()))
            for name, methods in INFO["entities"].items()
        )
        and set(INFO["types"]) <= set(info["types"])
        and set(INFO["versions"]) <= set(info["versions"])
    )


def require(condition: object, message: str) -> None:
    """A scenario's own set-up failed (not the service under test)."""
    if not condition:
        raise RuntimeError(message)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cli(database: str, *args: str, timeout: float = 120) -> dict[str, Any]:
    """Run one `calltrack ... --json` command; its last line of output, decoded."""
    done = subprocess.run(
        [CALLTRACK, "--database", database, *args, "--json"],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"calltrack {' '.join(args)} failed: {done.stderr.strip()}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def write_calls(path: Path, count: int, *, seed: int, prefix: str, **options: Any) -> list[str]:
    """A JSON Lines file of ``count`` generated calls; their universalIds in file order."""
    from calltrack.demo_data import generate_calls

    ids: list[str] = []
    with path.open("wb") as sink:
        for call in generate_calls(count, seed=seed, id_prefix=prefix, **options):
            ids.append(str(call["universalId"]))
            sink.write(msgspec.json.encode(call) + b"\n")
    return ids


# -- HTTP ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    """One request as the client saw it: when, what came back (status 0: no answer)."""

    target: str
    sent: float
    received: float
    status: int
    retry_after: str | None
    content_type: str | None
    body: bytes
    error: str | None = None

    @property
    def latency(self) -> float:
        return self.received - self.sent


def get(port: int, target: str, timeout: float = 15.0, method: str = "GET") -> Answer:
    """One request on a fresh connection to 127.0.0.1 (no proxy, no redirects, no retries)."""
    sent = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, target)
        response = conn.getresponse()
        body = response.read()
        return Answer(
            target,
            sent,
            time.monotonic(),
            response.status,
            response.getheader("retry-after"),
            response.getheader("content-type"),
            body,
        )
    except (OSError, http.client.HTTPException) as exc:
        return Answer(target, sent, time.monotonic(), 0, None, None, b"", repr(exc))
    finally:
        conn.close()


def judge(answer: Answer, expected: bytes | None) -> str | None:
    """None if ``answer`` is the expected page or a documented 503; else what is wrong."""
    if answer.status == 200 and expected is not None:
        if answer.body == expected and answer.content_type == CONTENT_TYPE:
            return None
        return f"200 with another body ({answer.body[:120]!r})"
    if answer.status == 503:
        if error_of(answer.body) != UNAVAILABLE:
            return f"503 without the documented envelope ({answer.body[:120]!r})"
        if not (answer.retry_after or "").isdigit() or int(answer.retry_after or 0) < 1:
            return f"503 without a valid Retry-After ({answer.retry_after!r})"
        return None
    if answer.status == 0:
        return f"no answer: {answer.error}"
    return f"HTTP {answer.status} ({answer.body[:120]!r})"


class Driver:
    """Requests sent back to back from ``threads`` threads until stopped; every answer kept.

    ``pick(i)`` gives the i-th request's target and its expected 200 body (None when any
    200 would be wrong).
    """

    def __init__(
        self,
        port: int,
        pick: Callable[[int], tuple[str, bytes | None]],
        threads: int = 2,
        pause: float = 0.02,
    ) -> None:
        self.port = port
        self.pick = pick
        self.pause = pause
        self.answers: list[tuple[Answer, bytes | None]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._count = 0
        self._threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(threads)]

    def _next(self) -> int:
        with self._lock:
            self._count += 1
            return self._count

    def _loop(self) -> None:
        while not self._stop.is_set():
            target, expected = self.pick(self._next())
            answer = get(self.port, target, timeout=15.0)
            with self._lock:
                self.answers.append((answer, expected))
            self._stop.wait(self.pause)

    def __enter__(self) -> Driver:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=20)

    def snapshot(self) -> list[tuple[Answer, bytes | None]]:
        with self._lock:
            return list(self.answers)

    def wait_for(
        self, accept: Callable[[Answer], bool], since: float, limit: float
    ) -> float | None:
        """Seconds from ``since`` to the first accepted answer that arrived after it (whenever
        it was sent), or None if none arrives within ``limit`` seconds."""
        deadline = since + limit
        while time.monotonic() < deadline:
            found = [a.received for a, _ in self.snapshot() if a.received >= since and accept(a)]
            if found:
                return min(found) - since
            time.sleep(0.02)
        return None


# -- processes --------------------------------------------------------------------------------


def tracebacks_in(log: Path) -> list[str]:
    """Each traceback in a server log: its exception line, where it was raised and the line
    logged before it (what was being done)."""
    lines = log.read_text(errors="replace").splitlines()
    found = []
    for i, line in enumerate(lines):
        if line.startswith("Traceback"):
            rest = lines[i + 1 :]
            end = next((n for n, x in enumerate(rest) if x and not x.startswith(" ")), len(rest))
            frames = [x.strip() for x in rest[:end] if x.strip().startswith("File ")]
            what = rest[end] if end < len(rest) else "?"
            before = lines[i - 1] if i else ""
            found.append(f"{what[:200]} at {frames[-1] if frames else '?'} after {before[:200]!r}")
    return found


def stop_group(process: subprocess.Popen[bytes], grace: float = 15.0) -> None:
    """SIGTERM the process group of ``process``, then SIGKILL it if it lingers."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


class Server:
    """`calltrack serve` in its own process group, its output in ``log``."""

    def __init__(
        self,
        database: str,
        log: Path,
        workers: int = 2,
        env: dict[str, str] | None = None,
        ready: str = "/healthz",
    ) -> None:
        self.port = free_port()
        self.log = log
        full_env = {**os.environ, "CALLTRACK_DATABASE_URL": database, **(env or {})}
        with log.open("wb") as sink:
            self.process = subprocess.Popen(
                [CALLTRACK, "serve", "--port", str(self.port), "--workers", str(workers)],
                stdout=sink,
                stderr=subprocess.STDOUT,
                env=full_env,
                start_new_session=True,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            if get(self.port, ready, timeout=2).status == 200:
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("server did not start:\n" + log.read_text(errors="replace")[-4000:])

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        stop_group(self.process)

    def rss_kb(self) -> int:
        """Resident memory of the server and all its workers, in KiB."""
        return sum(rss_kb(pid) for pid in process_tree(self.process.pid))


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (Linux /proc)."""
    found = [pid]
    for current in found:
        for task in Path(f"/proc/{current}/task").glob("*"):
            with contextlib.suppress(OSError):
                found += [int(c) for c in (task / "children").read_text().split()]
    return found


def rss_kb(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


# -- a private PostgreSQL ----------------------------------------------------------------------


def find_pg_bin(name: str) -> str | None:
    """A PostgreSQL server binary: on PATH, else the newest /usr/lib/postgresql/*/bin."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(candidates[-1]) if candidates else None


def started_database(
    stack: contextlib.ExitStack, work: Path, postgres: bool
) -> tuple[str, PrivatePostgres | None]:
    """The database a scenario runs on: a private PostgreSQL cluster started for it (stopped
    with ``stack``), or a SQLite file in ``work``. FileNotFoundError when PostgreSQL's
    binaries are missing."""
    if not postgres:
        return f"sqlite:///{work / 'calltrack.db'}", None
    cluster = PrivatePostgres()
    stack.callback(cluster.close)
    cluster.start()
    return cluster.url, cluster


@dataclass
class PrivatePostgres:
    """A throwaway cluster in a temp dir, on its own port and socket dir: never the machine's.

    As root, its commands run as the ``postgres`` user (initdb refuses root).
    """

    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="calltrack-pg-")))
    port: int = field(default_factory=free_port)

    def __post_init__(self) -> None:
        initdb = find_pg_bin("initdb")
        pg_ctl = find_pg_bin("pg_ctl")
        if initdb is None or pg_ctl is None:
            shutil.rmtree(self.root, ignore_errors=True)
            raise FileNotFoundError("initdb/pg_ctl not found")
        self.initdb, self.pg_ctl = initdb, pg_ctl
        self.data = self.root / "data"
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self._run(
            self.initdb,
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        )
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 60) -> None:
        done = subprocess.run(
            [*self.as_user, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed: {done.stdout}{done.stderr}")

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c max_connections=50"
        )
        self._run(
            self.pg_ctl,
            "-D",
            str(self.data),
            "-l",
            str(self.root / "postgres.log"),
            "-o",
            options,
            "-w",
            "-t",
            "30",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self._run(self.pg_ctl, "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")

    def close(self) -> None:
        """Stop it if running and delete everything it wrote."""
        pid_file = self.data / "postmaster.pid"
        if pid_file.exists():
            with contextlib.suppress(Exception):
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def temp_dir(prefix: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def summary(answers: Iterable[tuple[Answer, bytes | None]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for answer, _ in answers:
        key = str(answer.status)
        counts[key] = counts.get(key, 0) + 1
    return counts


def main(run: Callable[..., dict[str, Any]], doc: str | None, **options: tuple[type, str]) -> None:
    """The scripts' command line: ``--quick`` for the CI version, plus each script's options
    (name -> (type, help); ``bool`` makes a flag); print the result as JSON, exit 1 if not ok."""
    import argparse

    parser = argparse.ArgumentParser(description=(doc or "").strip().splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the short version CI runs")
    for name, (kind, help_text) in options.items():
        flag = "--" + name.replace("_", "-")
        if kind is bool:
            parser.add_argument(flag, action="store_true", help=help_text)
        else:
            parser.add_argument(flag, type=kind, help=help_text)
    args = vars(parser.parse_args())
    result = run(args.pop("quick"), **args)
    print(json.dumps(result, indent=2, default=str))
    sys.exit(0 if result.get("ok") else 1)


def stored_bodies(store: Store, account_id: int) -> list[bytes]:
    """Every stored call of an account, in page order, read by walking its pages as the API
    does (a window over all time, so a new layout of its own)."""
    window = Window(-(2**62), 2**62)
    bodies: list[bytes] = []
    for page in range(10**6):  # loop guard
        found = store.read_page([account_id], window, page, 1000)
        if found is None:
            return bodies
        bodies += [bytes(body) for body in found]
    raise AssertionError("the walk never ended")
