"""One writer process of the v4 exactly-once test (tests/test_v4_exactly_once.py).

Each kind writes calls of one account back to back until its time is up, in transactions of
its own that overlap those of the other writer processes:

- ``import``: ``store.import_calls`` (through ``import_bytes``) of batches that add new calls and
  update calls of the account's seeded range;
- ``cli-import``: the same batches through ``calltrack import`` subprocesses;
- ``put``: v3 ``call/put`` over HTTP of new and seeded calls (a put may bring back a deleted one);
- ``delete``: v3 ``call/delete`` over HTTP of seeded calls and of calls this writer put first;
- ``telephony``: generic telephony events (started, answered, ended) to ``/telephony/generic``.

    python tests/faults/feed_writers.py KIND --database URL --port P --key K --account ID \
        --prefix a --seeded 100 --seconds 5 --seed 1 [--secret S]

Prints one JSON line: ``{"kind", "ok", "failed", "errors"}`` (errors: the first few).
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

try:
    from tests.faults import _common as common
except ModuleNotFoundError:  # run as a file
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.faults import _common as common

from calltrack.config import Settings
from calltrack.demo_data import generate_calls
from calltrack.importer import import_bytes
from calltrack.store import open_store

KINDS = ("import", "cli-import", "put", "delete", "telephony")


def records(rng: random.Random, uids: list[str]) -> list[dict[str, Any]]:
    """A call record for each universalId (a fresh random state each time)."""
    made = list(generate_calls(len(uids), seed=rng.randrange(10**9), now=datetime(2020, 5, 20)))
    for record, uid in zip(made, uids, strict=True):
        record["universalId"] = uid
        record["duration"] = rng.randrange(100_000)  # a new state even when the rest repeats
    return made


def send(
    port: int, method: str, target: str, body: bytes = b"", **headers: str
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, target, body=body or None, headers=headers)
        answer = conn.getresponse()
        return answer.status, answer.read()
    except (OSError, http.client.HTTPException) as exc:
        return 0, repr(exc).encode()
    finally:
        conn.close()


class Writer:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.seeded = [f"{args.prefix}-s{i}" for i in range(args.seeded)]
        self.mine: list[str] = []
        self.counter = 0
        self.ok = 0
        self.errors: list[str] = []

    def new_uids(self, count: int) -> list[str]:
        uids = []
        for _ in range(count):
            self.counter += 1
            uids.append(f"{self.args.prefix}-{self.args.kind}{self.args.seed}-{self.counter}")
        self.mine += uids
        return uids

    def batch(self) -> list[dict[str, Any]]:
        fresh = self.new_uids(self.rng.randrange(1, 8))
        old = self.rng.sample(self.seeded + self.mine[:-8], k=min(5, len(self.seeded)))
        return records(self.rng, sorted(set(fresh + old)))

    def fail(self, what: str) -> None:
        self.errors.append(what[:300])

    def step(self) -> None:
        kind, args = self.args.kind, self.args
        if kind == "import":
            lines = b"\n".join(msgspec.json.encode(r) for r in self.batch())
            import_bytes(self.store, args.account, lines, self.store.settings.zone)
        elif kind == "cli-import":
            with tempfile.NamedTemporaryFile("wb", suffix=".jsonl", delete=False) as sink:
                sink.write(b"\n".join(msgspec.json.encode(r) for r in self.batch()))
            command = [common.CALLTRACK, "--database", args.database, "import", sink.name]
            done = subprocess.run(
                [*command, "--account", str(args.account)], capture_output=True, timeout=120
            )
            Path(sink.name).unlink()
            if done.returncode != 0:
                return self.fail(f"import: {done.stderr.decode(errors='replace')}")
        elif kind == "put":
            body = msgspec.json.encode(self.batch())
            status, answer = send(args.port, "POST", f"/api/?json/v3/{args.key}/call/put", body)
            if status != 200 or b'"error"' in answer:
                return self.fail(f"put: HTTP {status} {answer[:200]!r}")
        elif kind == "delete":
            if self.rng.random() < 0.4:  # a call of its own first, to delete later
                body = msgspec.json.encode(records(self.rng, self.new_uids(1)))
                status, answer = send(args.port, "POST", f"/api/?json/v3/{args.key}/call/put", body)
            else:
                uid = self.rng.choice(self.seeded + self.mine)
                target = f"/api/?json/v3/{args.key}/call/delete/{uid}"
                status, answer = send(args.port, "DELETE", target)
            if status != 200 or b'"error"' in answer:
                return self.fail(f"delete: HTTP {status} {answer[:200]!r}")
        else:
            [call_id] = self.new_uids(1)
            start = int(time.time()) - 600
            called = f"7495{self.rng.randrange(10**7):07d}"
            events = [
                {"event": "call.started", "call_id": call_id, "at": start,
                 "caller": f"7999{self.rng.randrange(10**7):07d}", "called": called},
                {"event": "call.answered", "call_id": call_id, "at": start + 3},
                {"event": "call.ended", "call_id": call_id, "at": start + 3 + 40,
                 "talk_seconds": 40, "disposition": "answered"},
            ]  # fmt: skip
            status, answer = send(
                args.port,
                "POST",
                "/telephony/generic",
                msgspec.json.encode(events),
                authorization=f"Bearer {args.secret}",
            )
            if status != 200:
                return self.fail(f"telephony: HTTP {status} {answer[:200]!r}")
        self.ok += 1

    def run(self) -> dict[str, Any]:
        if self.args.kind == "import":
            settings = Settings.from_env(env={}, database_url=self.args.database)
            self.store = open_store(settings)
        ends = time.monotonic() + self.args.seconds
        try:
            while time.monotonic() < ends:
                try:
                    self.step()
                except Exception as exc:  # a failed write is reported, not fatal
                    self.fail(f"{type(exc).__name__}: {exc}")
                time.sleep(self.rng.uniform(0, 0.02))
        finally:
            if self.args.kind == "import":
                self.store.close()
        return {
            "kind": self.args.kind,
            "ok": self.ok,
            "failed": len(self.errors),
            "errors": self.errors[:5],
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").strip().splitlines()[0])
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--database", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--key", default="")
    parser.add_argument("--secret", default="")
    parser.add_argument("--account", type=int, required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--seeded", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    print(json.dumps(Writer(parser.parse_args()).run()), flush=True)


if __name__ == "__main__":
    main()
