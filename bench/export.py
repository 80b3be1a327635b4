"""A nightly export: one keep-alive connection walking pages 0, 1, 2 ... to the end."""

from __future__ import annotations

import hashlib
import http.client
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import procs
from load import Target

IsEnd = Callable[[int, bytes], bool]


def calltrack_end(status: int, body: bytes) -> bool:
    """calltrack answers a page past the last one with HTTP 200 and this error."""
    return status == 200 and b"Incorrect page is set" in body[:200]


def floor_end(status: int, body: bytes) -> bool:
    return status == 404


def peer_end(status: int, body: bytes) -> bool:
    return status == 200 and body.strip() == b"[]"


@dataclass(slots=True)
class ExportResult:
    pages: int
    calls: int
    megabytes: float
    seconds: float
    calls_per_s: float
    first_page_ms: float
    last_page_ms: float
    last_over_first: float
    first5_median_ms: float
    last5_median_ms: float
    last5_over_first5: float
    sha256: str  # of every byte of every page, to compare servers
    rss_start: dict[str, float]  # procs.memory() of the workers before the first page
    rss_end: dict[str, float]  # ... after the last page
    rss_peak: dict[str, float]  # the largest of each reading over the walk (every 10 pages)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def walk(
    target: Target,
    is_end: IsEnd,
    expected_calls: int,
    *,
    workers: list[int],
    cpus: str | None = None,
    timeout: float = 120.0,
) -> ExportResult:
    """Read every page of ``target`` in order, timing each one; check the calls add up."""
    with procs.affinity(cpus):
        return _walk(target, is_end, expected_calls, workers, timeout)


def _walk(
    target: Target, is_end: IsEnd, expected: int, workers: list[int], timeout: float
) -> ExportResult:
    limit = expected // target.page_size + 2  # bounded even if the end is never signalled
    rss_start = procs.memory(workers)
    rss_peak = dict(rss_start)
    digest = hashlib.sha256()
    times: list[float] = []
    calls = size = 0
    conn = http.client.HTTPConnection("127.0.0.1", target.port, timeout=timeout)
    started = time.perf_counter()
    try:
        for page in range(limit + 1):
            t0 = time.perf_counter()
            conn.request("GET", target.path(page))
            answer = conn.getresponse()
            body = answer.read()
            elapsed = time.perf_counter() - t0
            if is_end(answer.status, body):
                break
            if answer.status != 200 or not body.startswith(b"["):
                raise RuntimeError(f"{target.name} page {page}: {answer.status} {body[:200]!r}")
            times.append(elapsed)
            calls += body.count(b'"universalId":')
            size += len(body)
            digest.update(body)
            if page % 10 == 0:
                for key, value in procs.memory(workers).items():
                    rss_peak[key] = max(rss_peak[key], value)
        else:
            raise RuntimeError(f"{target.name}: no end after {limit} pages")
    finally:
        conn.close()
    seconds = time.perf_counter() - started
    rss_end = procs.memory(workers)
    if calls != expected:
        raise RuntimeError(f"{target.name}: the export returned {calls} calls, not {expected}")
    first5, last5 = statistics.median(times[:5]), statistics.median(times[-5:])
    return ExportResult(
        pages=len(times),
        calls=calls,
        megabytes=size / 1e6,
        seconds=seconds,
        calls_per_s=calls / seconds,
        first_page_ms=times[0] * 1000,
        last_page_ms=times[-1] * 1000,
        last_over_first=times[-1] / times[0],
        first5_median_ms=first5 * 1000,
        last5_median_ms=last5 * 1000,
        last5_over_first5=last5 / first5,
        sha256=digest.hexdigest(),
        rss_start=rss_start,
        rss_end=rss_end,
        rss_peak={key: max(value, rss_end[key]) for key, value in rss_peak.items()},
    )
