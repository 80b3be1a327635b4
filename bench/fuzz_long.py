#!/usr/bin/env python3
"""A long fuzz of the raw query string: a plain random loop for N minutes.

Builds the small world of ``tests/test_fuzz.py`` (accounts alpha, beta and gamma, a role, a
role granted to itself, a revoked key) in a fresh store, then until the time is up sends
random raw query strings straight to the in-process ASGI app (no HTTP client cleans them up):
valid queries with segments replaced by nasty values (SQL and JSON metacharacters, NUL and
control bytes, invalid UTF-8 and percent-escapes, huge and negative numbers, dates out of
range, random bytes), cut short, extended, percent-encoded, and now and then a megabyte long.
Every answer is held to the reference of the contract in ``tests/test_fuzz.py``: a page with
exactly the calls it allows or the error envelope with a documented message, never a 5xx,
never a traceback, never slower than a second.

    .venv/bin/python bench/fuzz_long.py                       # 10 minutes on a temp SQLite
    .venv/bin/python bench/fuzz_long.py --minutes 60 --seed 7
    .venv/bin/python bench/fuzz_long.py --database postgresql://postgres@127.0.0.1/empty_db

``--database`` must name an EMPTY database (the world's accounts are created in it). Prints a
summary (requests, answers by kind, slowest answer) and the first failing queries; exits 1 if
any answer was not one the contract allows. Same seed, same queries.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[1]
MB = 1024 * 1024


def random_segment(rng: random.Random, nasty: tuple[str, ...]) -> bytes:
    kind = rng.randrange(7)
    if kind == 0:
        return rng.choice(nasty).encode()
    if kind == 1:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(33)))
    if kind == 2:
        return "".join(chr(rng.randrange(1, 0x3000)) for _ in range(rng.randrange(13))).encode()
    if kind == 3:
        text = "".join(chr(rng.randrange(1, 0x800)) for _ in range(rng.randrange(9)))
        return quote(text, safe="").encode()
    if kind == 4:
        sign = "-" if rng.random() < 0.2 else ""
        return (
            sign + "".join(rng.choice("0123456789") for _ in range(rng.randrange(1, 41)))
        ).encode()
    if kind == 5:
        year, month, day = rng.randrange(10000), rng.randrange(14), rng.randrange(33)
        return f"{year:04d}-{month:02d}-{day:02d}".encode()
    return rng.choice((b"%", b"%zz", b"%ff%fe", b"%00", b"\x00", b"%2F", b"%25"))


def random_query(
    rng: random.Random,
    values: list[list[str]],
    pairs: list[tuple[str, str]],
    nasty: tuple[str, ...],
) -> bytes:
    """A query as tests/test_fuzz.py draws them, from a seeded random.Random."""
    roll = rng.random()
    if roll < 0.05:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(300)))
    if roll < 0.06:  # a megabyte: in one segment, or as many segments
        filler = rng.choice((b"x", b"9", b"/", b"%", b"%41", b"\x00"))
        head = b"/".join(v[0].encode() for v in values[: rng.randrange(9)])
        return head + b"/" + filler * (MB // len(filler))
    segments = [rng.choice(v).encode() for v in values]
    if rng.random() < 0.8:
        key, method = rng.choice(pairs)
        segments[2], segments[4] = key.encode(), method.encode()
    for _ in range(rng.randrange(1, 4) if rng.random() < 0.5 else 0):
        segments[rng.randrange(8)] = random_segment(rng, nasty)
    if rng.random() < 0.2:
        position = rng.randrange(8)
        segments[position] = "".join(f"%{b:02X}" for b in segments[position]).encode()
    if rng.random() < 0.2:
        extra = [random_segment(rng, nasty) for _ in range(4)]
        segments = (segments + extra)[: rng.randrange(13)]
    raw = b"/".join(segments)
    return raw + b"/" if rng.random() < 0.3 else raw


def main() -> int:
    parser = argparse.ArgumentParser(description="A long random fuzz of the raw query string.")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--database", help="an EMPTY database URL (default: a temp SQLite)")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))  # the reference lives with the tests
    from starlette.testclient import TestClient

    from calltrack.api.app import create_app
    from calltrack.config import Settings
    from calltrack.store import open_store
    from tests import test_fuzz as reference

    seed = random.randrange(10**9) if args.seed is None else args.seed
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="calltrack-fuzz-") as tmp:
        url = args.database or f"sqlite:///{Path(tmp) / 'fuzz.db'}"
        store = open_store(
            Settings.from_env(env={}, database_url=url, page_size=reference.PAGE_SIZE)
        )
        with TestClient(create_app(store.settings, store)) as http:
            world = reference.build_world(http, store)
            pairs = [(key, method) for key, scope in world.scopes.items() for method in scope]
            values = reference.segment_values(pairs)
            nasty: tuple[str, ...] = reference.NASTY
            kinds: Counter[str] = Counter()
            failures: list[tuple[bytes, str]] = []
            slowest = (0.0, b"")
            deadline = time.monotonic() + args.minutes * 60
            requests = 0
            while time.monotonic() < deadline:
                raw = random_query(rng, values, pairs, nasty)
                allowed = reference.expect(world, raw)
                try:
                    spent = reference.check(world, raw)
                except AssertionError as exc:
                    failures.append((raw, str(exc)[:300]))
                    kinds["FAILED"] += 1
                else:
                    kinds[" or ".join(sorted(_name(a) for a in allowed))] += 1
                    slowest = max(slowest, (spent, raw[:80]))
                requests += 1
        store.close()

    print(f"seed {seed}: {requests} queries in {args.minutes:g} min ({url})")
    for kind, count in kinds.most_common():
        print(f"  {count:8d}  {kind}")
    print(f"slowest answer: {slowest[0] * 1000:.1f} ms for {slowest[1]!r}")
    for raw, reason in failures[:10]:
        print(f"FAILED {raw[:200]!r}\n       {reason}")
    print("undocumented answers:", len(failures))
    return 1 if failures else 0


def _name(answer: Any) -> str:
    return "a page" if isinstance(answer, tuple) else str(answer)


if __name__ == "__main__":
    sys.exit(main())
