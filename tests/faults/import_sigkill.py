"""`calltrack import` killed with SIGKILL at random moments: all of the file or none of it.

A large generated file (``calltrack.demo_data.generate_calls``) is imported into one account;
another account holds calls of its own. One import into a scratch database first measures how
long an import takes; then the real import is started again and again and killed at a random
moment of that span (stratified, so early and late moments are both hit). After every kill
the account must hold none of the file's calls or all of them, the other account must be
untouched and the database intact. Finally the import runs to its end: the account then holds
exactly the file's calls, each once.

    .venv/bin/python tests/faults/import_sigkill.py               # full: 60,000 calls, 12 kills
    .venv/bin/python tests/faults/import_sigkill.py --quick       # what CI runs
    .venv/bin/python tests/faults/import_sigkill.py --postgres    # on a private PostgreSQL

Prints the measurements as JSON; exits 1 if an expectation failed. Every import is bounded
in time and killed; the temp dir (and the private cluster) are removed on any exit.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

try:
    from tests.faults import _common as common
except ModuleNotFoundError:  # run as a file: python tests/faults/import_sigkill.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root
    from tests.faults import _common as common

from calltrack.config import Settings
from calltrack.store import open_store


def run(quick: bool, postgres: bool = False, seed: int | None = None) -> dict[str, Any]:
    """Kill imports, check after each; the result holds what each kill left, and ``ok``."""
    count, kills = (10_000, 4) if quick else (60_000, 12)
    seed = random.randrange(10**6) if seed is None else seed
    rng = random.Random(seed)
    result: dict[str, Any] = {
        "scenario": "import_sigkill",
        "quick": quick,
        "backend": "postgres" if postgres else "sqlite",
        "seed": seed,
        "calls_in_file": count,
    }
    with contextlib.ExitStack() as stack:
        work = stack.enter_context(common.temp_dir("calltrack-sigkill-"))
        try:
            database, cluster = common.started_database(stack, work, postgres)
        except FileNotFoundError as exc:
            return {**result, "ok": False, "skipped": str(exc)}
        scratch = _scratch_database(cluster.url) if cluster else f"sqlite:///{work / 'scratch.db'}"
        calls = work / "calls.jsonl"
        ids = common.write_calls(calls, count, seed=21, prefix="6", now=datetime(2020, 6, 1))
        other_calls = work / "other.jsonl"
        common.write_calls(other_calls, 300, seed=22, prefix="8", now=datetime(2020, 6, 1))
        for name in ("victim", "other"):
            common.cli(database, "account", "add", name)
        common.cli(database, "import", str(other_calls), "--account", "other")
        common.cli(scratch, "account", "add", "victim")

        began = time.monotonic()
        common.cli(scratch, "import", str(calls), "--account", "victim")
        span = time.monotonic() - began
        result["seconds_per_import"] = round(span, 3)
        before = state(database)

        attempts = []
        for index in range(kills):
            moment = (index + rng.random()) / kills * span
            attempts.append(kill_import(database, calls, count, moment, before["other"]))
        result["attempts"] = attempts

        began = time.monotonic()
        common.cli(database, "import", str(calls), "--account", "victim", timeout=600)
        result["seconds_final_import"] = round(time.monotonic() - began, 3)
        final = state(database)
        stored_ids = final["victim_ids"]

    problems = [f"kill {i}: {p}" for i, a in enumerate(attempts) for p in a["problems"]]
    if sorted(stored_ids) != sorted(ids):
        missing = len(set(ids) - set(stored_ids))
        extra = len(stored_ids) - len(set(stored_ids) & set(ids))
        problems.append(f"after the full run: {missing} calls missing, {extra} unexpected")
    if final["other"] != before["other"]:
        problems.append("the other account changed")
    result["killed_mid_import"] = sum(a["left"] == 0 for a in attempts)
    result["finished_before_the_kill"] = sum(a["left"] == count for a in attempts)
    result["calls_after_full_run"] = len(stored_ids)
    result["problems"] = problems
    result["ok"] = not problems
    return result


def _scratch_database(url: str) -> str:
    """A second database on the same private cluster, for the timing run."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE DATABASE scratch")
    return url.rsplit("/", 1)[0] + "/scratch"


def kill_import(
    database: str, calls: Path, count: int, moment: float, other: list[str]
) -> dict[str, Any]:
    """Start the import, SIGKILL it ``moment`` seconds later, and look at what it left."""
    process = subprocess.Popen(
        [common.CALLTRACK, "--database", database, "import", str(calls), "--account", "victim"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        time.sleep(moment)
        finished = process.poll() is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    finally:
        common.stop_group(process, grace=5)
    after = state(database)
    left = len(after["victim_ids"])
    problems = []
    if left not in (0, count):
        problems.append(f"{left} calls left (partial import)")
    if len(set(after["victim_ids"])) != left:
        problems.append("a call stored twice")
    if after["other"] != other:
        problems.append("the other account changed")
    if after["integrity"] != "ok":
        problems.append(f"integrity check: {after['integrity']}")
    return {
        "killed_after_seconds": round(moment, 3),
        "had_finished": finished,
        "left": left,
        "problems": problems,
    }


def state(database: str) -> dict[str, Any]:
    """What the database holds now: the victim's universalIds, the other account's bodies."""
    store = open_store(Settings.from_env(env={}, database_url=database))
    try:
        accounts = {a.name: a.id for a in store.list_accounts()}
        victim = [
            json.loads(b'{"page":0,' + body)["universalId"]
            for body in common.stored_bodies(store, accounts["victim"])
        ]
        other = [body.hex() for body in common.stored_bodies(store, accounts["other"])]
        integrity = "ok"
        if database.startswith("sqlite:"):
            with store._connect() as conn:  # a check the store has no method for
                integrity = str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        store.close()
    return {"victim_ids": victim, "other": other, "integrity": integrity}


if __name__ == "__main__":
    common.main(
        run,
        __doc__,
        postgres=(bool, "on a private PostgreSQL"),
        seed=(int, "repeat the kill moments of a run"),
    )
