"""gzip cost on one ~2 MB JSON page of 1000 call records.

Run:  .venv/bin/python bench/choices/bench_gzip.py [--out results/gzip.md]
"""

from __future__ import annotations

import argparse
import gzip
import statistics
import sys
import time
import zlib
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from records import make_records


def t(fn, repeats: int) -> tuple[float, float]:
    fn()
    runs = []
    for _ in range(repeats):
        t0 = time.thread_time()
        fn()
        runs.append(time.thread_time() - t0)
    return min(runs), statistics.median(runs)


def zlib_gzip(data: bytes, level: int) -> bytes:
    # what Starlette's GZipMiddleware does per body chunk (compressobj, gzip wrapper)
    c = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return c.compress(data) + c.flush()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path)
    ap.add_argument("--repeats", type=int, default=9)
    args = ap.parse_args()

    page = orjson.dumps(make_records(1000))
    mb = len(page) / 1e6
    out = [
        f"Page: {len(page):,} bytes (orjson, 1000 synthetic records; zlib "
        f"{zlib.ZLIB_RUNTIME_VERSION}). "
        f"Best/median of {args.repeats}, thread CPU time. Synthetic text comes from a small "
        "vocabulary, so real pages "
        "will compress somewhat worse; treat the ratio as an upper bound and the time as "
        "representative.\n",
        "| level | compress ms (best) | median ms | MB/s in | compressed bytes | ratio | "
        "gzip.decompress ms |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for level in (1, 5, 6, 9):
        z = zlib_gzip(page, level)
        assert gzip.decompress(z) == page
        b, m = t(lambda lv=level: zlib_gzip(page, lv), args.repeats)
        d, _ = t(lambda zz=z: gzip.decompress(zz), args.repeats)
        out.append(
            f"| {level} | {b * 1e3:.1f} | {m * 1e3:.1f} | {mb / b:,.0f} | {len(z):,} | "
            f"{len(page) / len(z):.1f}x | {d * 1e3:.1f} |"
        )
    # gzip.compress convenience API for reference (level 6)
    b, _ = t(lambda: gzip.compress(page, 6, mtime=0), args.repeats)
    out.append(
        f"\n`gzip.compress(page, 6)` for reference: {b * 1e3:.1f} ms (same zlib underneath). "
        "Note: Starlette's `GZipMiddleware` defaults to `compresslevel=9`."
    )
    text = "\n".join(out) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
