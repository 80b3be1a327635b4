"""Load: wrk when installed (a Lua script cycles through the pages), else an asyncio client.

Every run is bounded: wrk gets ``-d`` and ``--timeout`` and a subprocess timeout on top; the
asyncio client stops at its deadline.
"""

from __future__ import annotations

import asyncio
import json
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import procs


@dataclass(frozen=True, slots=True)
class Target:
    """Pages of one server: ``template`` with ``{page}`` replaced by ``page * scale``."""

    name: str
    port: int
    template: str
    scale: int
    pages: int  # full pages to cycle through: 0 .. pages-1
    page_size: int = 1000

    def path(self, page: int) -> str:
        return self.template.replace("{page}", str(page * self.scale))


@dataclass(slots=True)
class LoadResult:
    client: str
    connections: int
    gzip: bool
    seconds: float
    requests: int
    errors: int
    pages_per_s: float
    calls_per_s: float
    p50_ms: float
    p99_ms: float
    bytes_per_page: float
    server_cpu_pct: float  # of one core
    other_cpu_pct: float  # the rest of the machine, not server nor client

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


_LUA = """
local template, scale, npages, out = %(template)s, %(scale)d, %(pages)d, %(out)s
local next_id = 0
function setup(thread) thread:set("tid", next_id); next_id = next_id + 1 end
function init(args) counter = (tid or 0) * 7 end
%(headers)s
function request()
  local page = counter %% npages
  counter = counter + 1
  local path = string.gsub(template, "{page}", tostring(page * scale))
  return wrk.format("GET", path)
end
function done(summary, latency, requests)
  local e = summary.errors
  local f = io.open(out, "w")
  f:write(string.format('{"requests":%%d,"duration_us":%%d,"bytes":%%d,"errors":%%d,' ..
    '"p50_us":%%d,"p99_us":%%d}', summary.requests, summary.duration, summary.bytes,
    e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(99)))
  f:close()
end
"""


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def measure(
    target: Target,
    connections: int,
    seconds: float,
    *,
    cpus: str | None,
    server_pids: list[int],
    gzip: bool = False,
    use_wrk: bool = True,
) -> LoadResult:
    """Load ``target`` with ``connections`` keep-alive connections for ``seconds``."""
    cpu0, busy0 = procs.cpu_seconds(server_pids), procs.machine_busy_seconds()
    if use_wrk and have_wrk():
        client, raw, client_cpu = "wrk", *_wrk(target, connections, seconds, cpus, gzip)
    else:
        client, raw, client_cpu = "python", *_python(target, connections, seconds, cpus, gzip)
    server_cpu = procs.cpu_seconds(server_pids) - cpu0
    busy = procs.machine_busy_seconds() - busy0
    elapsed = raw["duration_us"] / 1e6
    good = raw["requests"] - raw["errors"]
    return LoadResult(
        client=client,
        connections=connections,
        gzip=gzip,
        seconds=elapsed,
        requests=raw["requests"],
        errors=raw["errors"],
        pages_per_s=good / elapsed,
        calls_per_s=good * target.page_size / elapsed,
        p50_ms=raw["p50_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        bytes_per_page=raw["bytes"] / max(1, raw["requests"]),
        server_cpu_pct=100 * server_cpu / elapsed,
        other_cpu_pct=max(0.0, 100 * (busy - server_cpu - client_cpu) / elapsed),
    )


def lua_string(text: str) -> str:
    return json.dumps(text)  # a JSON string literal is a valid Lua string literal here


def _wrk(
    target: Target, connections: int, seconds: float, cpus: str | None, gzip: bool
) -> tuple[dict[str, int], float]:
    headers = 'wrk.headers["Accept-Encoding"] = "gzip"' if gzip else ""
    script = _LUA % {
        "template": lua_string(target.template),
        "scale": target.scale,
        "pages": target.pages,
        "out": '"{out}"',
        "headers": headers,
    }
    return run_wrk(script, target.port, connections, seconds, cpus)


def wrk_threads(connections: int, cpus: str | None) -> int:
    """The threads wrk runs with: one per client core (2 unpinned), at most one a connection."""
    cores = len(procs.parse_cpus(cpus)) if cpus else 2
    return max(1, min(connections, cores))


def run_wrk(
    script: str, port: int, connections: int, seconds: float, cpus: str | None
) -> tuple[dict[str, Any], float]:
    """Run wrk with the Lua ``script`` (its ``{out}`` replaced by the quoted path its ``done``
    writes JSON to) against ``port``; (that JSON, the CPU seconds wrk used)."""
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        out, path = Path(tmp) / "out.json", Path(tmp) / "script.lua"
        path.write_text(script.replace('"{out}"', lua_string(str(out))))
        threads = wrk_threads(connections, cpus)
        cmd = procs.pinned(
            [
                "wrk",
                f"-t{threads}",
                f"-c{connections}",
                f"-d{max(1, round(seconds))}s",
                "--timeout",
                "10s",
                "-s",
                str(path),
                f"http://127.0.0.1:{port}",
            ],
            cpus,
        )
        cpu_before = _children_cpu()
        subprocess.run(cmd, capture_output=True, timeout=seconds + 30, check=True)
        client_cpu = _children_cpu() - cpu_before
        return json.loads(out.read_text()), client_cpu


async def _read_body(reader: asyncio.StreamReader, head: bytes) -> int:
    """Read the body after ``head`` (Content-Length or chunked); its size."""
    fields = dict(line.lower().split(b":", 1) for line in head.split(b"\r\n")[1:] if b":" in line)
    if b"content-length" in fields:
        return len(await reader.readexactly(int(fields[b"content-length"])))
    size = 0
    while chunk := int((await reader.readuntil(b"\r\n")).strip(), 16):
        size += len(await reader.readexactly(chunk + 2)) - 2
    await reader.readuntil(b"\r\n")
    return size


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _python(
    target: Target, connections: int, seconds: float, cpus: str | None, gzip: bool
) -> tuple[dict[str, int], float]:
    """The fallback client: asyncio streams, HTTP/1.1 keep-alive, one page per request."""
    with procs.affinity(cpus):
        cpu0 = time.process_time()
        raw = asyncio.run(_python_run(target, connections, seconds, gzip))
        return raw, time.process_time() - cpu0


async def _python_run(
    target: Target, connections: int, seconds: float, gzip: bool
) -> dict[str, int]:
    latencies: list[float] = []
    counts = {"bytes": 0, "errors": 0}
    started = time.perf_counter()
    deadline = started + seconds
    extra = "Accept-Encoding: gzip\r\n" if gzip else ""

    async def connection(offset: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", target.port)
        page = offset
        try:
            while time.perf_counter() < deadline:
                path = target.path(page % target.pages)
                page += 1
                sent = time.perf_counter()
                writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n".encode())
                head = await reader.readuntil(b"\r\n\r\n")
                length = await _read_body(reader, head)
                latencies.append(time.perf_counter() - sent)
                counts["bytes"] += len(head) + length
                if not head.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200")):
                    counts["errors"] += 1
        finally:
            writer.close()

    await asyncio.gather(*(connection(i * 7) for i in range(connections)))
    elapsed = time.perf_counter() - started
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return {
        "requests": len(latencies),
        "duration_us": int(elapsed * 1e6),
        "bytes": counts["bytes"],
        "errors": counts["errors"],
        "p50_us": int(quantiles[49] * 1e6),
        "p99_us": int(quantiles[98] * 1e6),
    }
