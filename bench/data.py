"""The bench's data: call files from the project's generator, loaded with `calltrack import`."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import msgspec

from calltrack.demo_data import generate_calls

CALLTRACK = str(Path(sys.executable).with_name("calltrack"))
ZONE = ZoneInfo("Europe/Moscow")  # the service default; dates below are in it
# Fixed, so every run generates the same calls and asks for the same window.
GENERATED_AT = datetime(2025, 6, 1, tzinfo=ZONE)
DAYS = 90
WINDOW = ("2025-02-01", "2025-06-01")  # from, to: covers every generated call


@dataclass(frozen=True, slots=True)
class Dataset:
    """One account's calls: ``count`` records of generator seed ``seed``."""

    name: str  # also the account name and the floor/peer table name
    count: int
    seed: int

    def path(self, folder: Path) -> Path:
        return folder / f"calls-{self.count}-seed{self.seed}.jsonl"


@dataclass(slots=True)
class Loaded:
    """A calltrack database filled with the datasets: keys, account ids, import timings."""

    backend: str
    url: str
    keys: dict[str, str] = field(default_factory=dict)
    account_ids: dict[str, int] = field(default_factory=dict)
    imports: dict[str, dict[str, float]] = field(default_factory=dict)


def ensure_file(dataset: Dataset, folder: Path) -> tuple[Path, float]:
    """The dataset's JSON Lines file, generated unless a complete one exists; (path, seconds)."""
    path = dataset.path(folder)
    done = path.with_suffix(".done")
    if path.exists() and done.exists():
        return path, 0.0
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    write_jsonl(path, generate_calls(dataset.count, seed=dataset.seed, days=DAYS, now=GENERATED_AT))
    done.write_text(f"{dataset.count}\n")
    return path, time.perf_counter() - started


def write_jsonl(path: Path, records: Iterable[dict[str, object]]) -> None:
    """Records as JSON Lines, 10,000 lines a write."""
    encode = msgspec.json.Encoder().encode
    chunk: list[bytes] = []
    with path.open("wb") as out:
        for record in records:
            chunk.append(encode(record))
            if len(chunk) == 10_000:
                out.write(b"\n".join(chunk) + b"\n")
                chunk.clear()
        if chunk:
            out.write(b"\n".join(chunk) + b"\n")


def calltrack(url: str, *args: str, timeout: float = 120.0) -> dict[str, object]:
    """Run one admin command with ``--json``; its last output line, parsed."""
    cmd = [CALLTRACK, "--database", url, *args, "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[3:])} failed: {done.stderr.strip()[-2000:]}")
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def load(backend: str, url: str, datasets: list[Dataset], folder: Path) -> Loaded:
    """Create one account per dataset and import its file with the CLI, timing each import."""
    loaded = Loaded(backend, url)
    for dataset in datasets:
        account = calltrack(url, "account", "add", dataset.name)
        loaded.keys[dataset.name] = str(account["api_key"])
        loaded.account_ids[dataset.name] = int(str(account["id"]))
        path = dataset.path(folder)
        started = time.perf_counter()
        result = calltrack(
            url, "import", str(path), "--account", dataset.name, timeout=120 + dataset.count / 2000
        )
        seconds = time.perf_counter() - started
        if result.get("imported") != dataset.count:
            raise RuntimeError(f"{backend}: imported {result} of {dataset.count} calls")
        loaded.imports[dataset.name] = {
            "calls": dataset.count,
            "seconds": seconds,
            "calls_per_s": dataset.count / seconds,
            "file_mb": path.stat().st_size / 1e6,
        }
    return loaded


# -- PostgreSQL -------------------------------------------------------------------------------


def _with_db(url: str, name: str) -> str:
    head, _, _ = url.rpartition("/")
    return f"{head}/{name}"


def pg_reachable(admin_url: str) -> bool:
    try:
        import psycopg
    except ImportError:
        return False
    try:
        with psycopg.connect(admin_url, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True


def pg_create(admin_url: str, name: str) -> str:
    """A fresh, empty database ``name`` on the server of ``admin_url``; its URL."""
    import psycopg

    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return _with_db(admin_url, name)


def pg_drop(admin_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pg_server_version(url: str) -> str:
    import psycopg

    with psycopg.connect(url, connect_timeout=5) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"
