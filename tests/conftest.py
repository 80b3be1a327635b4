"""Fixtures: every store and API test runs on SQLite and on PostgreSQL.

PostgreSQL comes from ``CALLTRACK_TEST_POSTGRES_URL`` (default: the local server's ``test``
database); a fresh database is created for the run and dropped after it. Where no server
answers, those tests are skipped with a loud line, unless ``CI=true``, where that fails.
The run's last line says which stores the tests ran on.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from calltrack import access
from calltrack.api.app import create_app
from calltrack.config import Settings
from calltrack.store import Store, open_store

DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
TABLES = (
    "accounts, roles, grants, api_keys, calls, page_bounds, meta, rate_hits, "
    "campaigns, phones, call_tags, call_tombstones, source_rules, visitors, sessions, "
    "page_views, holds, hit_counts, exhausted_hits, call_counts, call_filter_counts, "
    # Webhooks: hook_attempts has no foreign key, so no TRUNCATE ... CASCADE reaches it.
    "hook_endpoints, hook_deliveries, hook_attempts"
)
_postgres_problem: list[str] = []
_stores_tested: set[str] = set()  # backends that at least one test ran on
_postgres_missed: list[str] = []  # why tests that wanted PostgreSQL did not run on it
_RAN = pytest.StashKey[bool]()

StoreFactory = Callable[..., Store]


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str | None]:
    """A fresh database on the test server for this run, or None where none answers."""
    try:
        import psycopg
    except ImportError:
        _postgres_problem.append("psycopg is not installed (pip install -e '.[dev]')")
        yield None
        return
    admin_url = os.environ.get("CALLTRACK_TEST_POSTGRES_URL", DEFAULT_POSTGRES)
    name = f"calltrack_test_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        _postgres_problem.append(f"{admin_url}: {exc}".strip())
        yield None
        return
    url = admin_url.rsplit("/", 1)[0] + "/" + name
    store = open_store(_settings(url))
    store.ensure_ready()
    store.close()
    yield url
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _settings(url: str, **overrides: Any) -> Settings:
    return Settings.from_env(env={}, database_url=url, **overrides)


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, postgres_url: str | None) -> str:
    name: str = request.param
    if name == "postgres" and postgres_url is None:
        problem = _postgres_problem[0] if _postgres_problem else "unavailable"
        _postgres_missed[:] = [problem]
        if _in_ci():
            pytest.fail(f"CI=true requires PostgreSQL, which is unavailable: {problem}")
        pytest.skip(f"PostgreSQL unavailable: {problem}")
    _stores_tested.add(name)
    return name


@pytest.fixture
def make_store(backend: str, tmp_path: Path, postgres_url: str | None) -> Iterator[StoreFactory]:
    """Opens stores on this test's backend, all on one empty database; closes them after."""
    opened: list[Store] = []
    if backend == "postgres":
        assert postgres_url is not None
        import psycopg

        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")
        url = postgres_url
    else:
        url = f"sqlite:///{tmp_path / 'calltrack.db'}"

    def make(**overrides: Any) -> Store:
        store = open_store(_settings(url, **overrides))
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def store(make_store: StoreFactory) -> Store:
    return make_store()


@pytest.fixture
def make_client(make_store: StoreFactory) -> Iterator[Callable[..., tuple[TestClient, Store]]]:
    """An in-process client of the app over a fresh store, with any settings overridden."""
    clients: list[TestClient] = []

    def make(**overrides: Any) -> tuple[TestClient, Store]:
        store = make_store(**overrides)
        client = TestClient(create_app(store.settings, store))
        client.__enter__()
        clients.append(client)
        return client, store

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., tuple[TestClient, Store]]) -> tuple[TestClient, Store]:
    return make_client()


def new_account(store: Store, name: str) -> tuple[int, str]:
    """An account and its first user key."""
    created = store.create_account(name)
    return created.id, access.issue_user_key(store, created.id)


def stores_line(tested: set[str], postgres_problem: str | None, in_ci: bool) -> str:
    """The run's last line: which stores the tests ran on, and why PostgreSQL did not."""
    names = [shown for name, shown in (("sqlite", "sqlite"), ("postgres", "postgresql"))
             if name in tested]  # fmt: skip
    if postgres_problem is not None:
        verdict = "FAILED (CI=true requires it)" if in_ci else "SKIPPED"
        why = f"PostgreSQL tests {verdict}: {' '.join(postgres_problem.split())}"  # one line
    elif len(names) == 1:
        why = f"no {'PostgreSQL' if names == ['sqlite'] else 'SQLite'} test was selected"
    else:
        return f"stores tested: {', '.join(names) or 'none (no store test was selected)'}"
    return f"stores tested: {names[0] + ' only' if names else 'none'} ({why})"


def pytest_sessionfinish(session: pytest.Session) -> None:
    session.config.stash[_RAN] = not session.config.option.collectonly


def pytest_unconfigure(config: pytest.Config) -> None:
    """The stores line, printed here because it comes after pytest's own summary lines."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or not config.stash.get(_RAN, False):
        return
    problem = _postgres_missed[0] if _postgres_missed else None
    if problem is not None:
        bar = "!" * 78
        reporter.write_line(bar, red=True, bold=True)
        reporter.write_line(
            "Set CALLTRACK_TEST_POSTGRES_URL to a server you can create databases on.", red=True
        )
        reporter.write_line(bar, red=True, bold=True)
    line = stores_line(_stores_tested, problem, _in_ci())
    reporter.write_line(line, red=problem is not None, bold=True)
