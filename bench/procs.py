"""Child processes of the bench: each in its own session, always stopped by its own group id.

Also the /proc readings the bench needs: resident memory of a server's workers and CPU time.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
_LIVE: list[subprocess.Popen[bytes]] = []


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pinned(cmd: Sequence[str], cpus: str | None) -> list[str]:
    """The command under ``taskset -c cpus`` (children inherit the affinity), or as is."""
    return ["taskset", "-c", cpus, *cmd] if cpus else list(cmd)


def parse_cpus(spec: str) -> set[int]:
    """``"0"``, ``"0,2"``, ``"0-3"`` -> the set of CPU numbers."""
    cpus: set[int] = set()
    for part in spec.split(","):
        low, _, high = part.partition("-")
        cpus.update(range(int(low), int(high or low) + 1))
    return cpus


@contextlib.contextmanager
def affinity(cpus: str | None) -> Iterator[None]:
    """Run this process on ``cpus`` for the block (no change when None)."""
    saved = os.sched_getaffinity(0)
    if cpus:
        os.sched_setaffinity(0, parse_cpus(cpus))
    try:
        yield
    finally:
        os.sched_setaffinity(0, saved)


def start(
    cmd: Sequence[str], log: Path, *, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start a long-running process in a new session, its output appended to ``log``."""
    with log.open("ab") as out:
        out.write(f"\n=== {' '.join(cmd)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            list(cmd),
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
        )
    _LIVE.append(proc)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group we started (pgid == pid), then SIGKILL what is left."""
    pgid = proc.pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        proc.wait(timeout=10)
    deadline = time.monotonic() + 5
    while group_pids(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if group_pids(pgid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    if proc in _LIVE:
        _LIVE.remove(proc)


def stop_all() -> None:
    for proc in list(_LIVE):
        stop(proc)


@contextlib.contextmanager
def running(
    cmd: Sequence[str], log: Path, *, env: dict[str, str] | None = None, cwd: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    proc = start(cmd, log, env=env, cwd=cwd)
    try:
        yield proc
    finally:
        stop(proc)


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    """Wait until ``url`` answers (any HTTP status), failing early if the server died."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                answer.read()
                return
        except urllib.error.HTTPError:
            return
        except OSError as exc:
            last = exc
        time.sleep(0.2)
    raise RuntimeError(f"no answer from {url} within {timeout:.0f}s: {last}")


def _stat(pid: int | str) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # fields from 3 (state) on


def group_pids(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group."""
    found = []
    for entry in os.listdir("/proc"):
        fields = _stat(entry) if entry.isdigit() else None
        if fields is not None and int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(entry))
    return found


def worker_pids(master: int) -> list[int]:
    """uvicorn's worker processes: the master's children that run ``spawn_main``."""
    workers = []
    for pid in group_pids(master):
        fields = _stat(pid)
        if fields is None or int(fields[1]) != master:
            continue
        with contextlib.suppress(OSError):
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                workers.append(pid)
    return sorted(workers)


def rss_mb(pid: int) -> tuple[float, float]:
    """(resident MB, of which anonymous MB); the rest is mapped files such as SQLite's mmap."""
    total = anon = 0.0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total = int(line.split()[1]) / 1024
            elif line.startswith("RssAnon:"):
                anon = int(line.split()[1]) / 1024
    except OSError:
        pass
    return total, anon


def memory(pids: Sequence[int]) -> dict[str, float]:
    """RSS of a server's workers: the sum and the largest, total and anonymous."""
    sizes = [rss_mb(pid) for pid in pids]
    return {
        "sum": sum(total for total, _ in sizes),
        "sum_anon": sum(anon for _, anon in sizes),
        "largest": max((total for total, _ in sizes), default=0.0),
        "largest_anon": max((anon for _, anon in sizes), default=0.0),
    }


def unpin(pids: Sequence[int]) -> None:
    """Let the processes (every thread of each) run on every CPU again."""
    every = set(range(os.cpu_count() or 1))
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(ProcessLookupError):
                os.sched_setaffinity(int(task.name), every)


def cpu_seconds(pids: Sequence[int]) -> float:
    """utime + stime of the given processes (all their threads)."""
    total = 0
    for pid in pids:
        if (fields := _stat(pid)) is not None:
            total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def machine_busy_seconds() -> float:
    """user + nice + system CPU time of the whole machine."""
    with open("/proc/stat") as stat:
        values = stat.readline().split()[1:]
    return (int(values[0]) + int(values[1]) + int(values[2])) / CLK_TCK


QUIET = {"budget": 60.0, "waited": 0.0}  # seconds the whole run may spend waiting


def wait_for_quiet(most: float = 10.0, threshold: float = 0.25) -> float:
    """Wait while others keep more than ``threshold`` of a core busy: at most ``most`` s now,
    and at most ``QUIET["budget"]`` s over the run. Returns the seconds waited."""
    waited = 0.0
    while waited < most and QUIET["waited"] < QUIET["budget"]:
        before = machine_busy_seconds()
        time.sleep(0.5)
        if machine_busy_seconds() - before <= threshold * 0.5:
            break
        waited += 0.5
        QUIET["waited"] += 0.5
    return waited
