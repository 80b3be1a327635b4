"""In-process per-request cost of Starlette vs a raw ASGI callable (no server,
no sockets): call the app directly with a prepared scope and no-op send.

Run:  .venv/bin/python bench/choices/bench_asgi_overhead.py [--out results/asgi_overhead.md]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
from asgi_apps import raw_app, starlette_app


def make_scope(path: str) -> dict:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"wrk"), (b"accept", b"*/*")],
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "state": {},
    }


async def receive():
    return {"type": "http.request", "body": b"", "more_body": False}


async def run(app, path: str, n: int) -> float:
    sent = []

    async def send(msg):
        sent.append(msg)

    # sanity
    await app(make_scope(path), receive, send)
    assert sent[0]["status"] == 200, sent[0]
    scopes = [make_scope(path) for _ in range(n)]  # fresh scope per request (apps mutate it)
    sent_clear = sent.clear
    t0 = time.thread_time()
    for s in scopes:
        await app(s, receive, send)
        sent_clear()
    return (time.thread_time() - t0) / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path)
    ap.add_argument("-n", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    res = {}
    for name, app in (("raw ASGI", raw_app), ("Starlette", starlette_app)):
        for path in ("/small", "/big"):
            loop.run_until_complete(run(app, path, 2000))  # warm-up
            runs = [loop.run_until_complete(run(app, path, args.n)) for _ in range(args.repeats)]
            res[(name, path)] = (min(runs), statistics.median(runs))
    loop.close()
    out = [
        f"In-process, uvloop, {args.n} calls x {args.repeats} repeats, thread CPU time; send() "
        "is a no-op append.\n",
        "| app | path | best µs/req | median µs/req |",
        "|---|---|---:|---:|",
    ]
    for (name, path), (b, m) in res.items():
        out.append(f"| {name} | {path} | {b * 1e6:.2f} | {m * 1e6:.2f} |")
    for path in ("/small", "/big"):
        d = res[("Starlette", path)][0] - res[("raw ASGI", path)][0]
        out.append(
            f"\nStarlette overhead on {path}: **{d * 1e6:.1f} µs per request** (best vs best)."
        )
    text = "\n".join(out) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
