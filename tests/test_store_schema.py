"""Schema and stored settings: migrations applied once, the time zone fixed once calls exist."""

from __future__ import annotations

import threading

import pytest

from calltrack.config import ConfigError
from calltrack.store import calls as calls_module
from calltrack.store import migrations
from tests.conftest import StoreFactory, new_account
from tests.helpers_calls import seed


def test_every_migration_is_applied_once_however_often_stores_open(
    make_store: StoreFactory,
) -> None:
    for _ in range(3):
        make_store().ensure_ready()
    store = make_store()
    store.ensure_ready()
    with store._connect() as conn:
        versions = [
            row[0] for row in conn.execute("SELECT version FROM schema_migrations").fetchall()
        ]
    assert sorted(versions) == [number for number, _, _ in migrations.MIGRATIONS]


def recorded_zone(make_store: StoreFactory) -> str | None:
    """The zone the database has recorded, read by a new store object opened on it (without
    ``ensure_ready``, which could write one)."""
    with make_store()._connect() as conn:  # the store has no reader for its meta table
        row = conn.execute("SELECT value FROM meta WHERE key = 'timezone'").fetchone()
    return None if row is None else str(row[0])


def test_the_time_zone_may_change_while_the_store_holds_no_calls(
    make_store: StoreFactory,
) -> None:
    make_store(timezone="Europe/Moscow").ensure_ready()
    moved = make_store(timezone="Asia/Novosibirsk")
    owner, _ = new_account(moved, "a")
    seed(moved, owner, "c1")
    assert moved.count_calls() == 1
    # The new zone is the one recorded, so it is the one now fixed: not the first zone.
    assert recorded_zone(make_store) == "Asia/Novosibirsk"
    with pytest.raises(ConfigError, match="stored in 'Asia/Novosibirsk'"):
        make_store(timezone="Europe/Moscow").ensure_ready()


def test_the_time_zone_is_fixed_once_calls_are_stored_in_it(make_store: StoreFactory) -> None:
    # Not the default zone (Europe/Moscow): a store recording the default would pass otherwise.
    store = make_store(timezone="Asia/Vladivostok")
    owner, _ = new_account(store, "a")
    seed(store, owner, "c1")
    assert recorded_zone(make_store) == "Asia/Vladivostok"
    for other in ("UTC", "Europe/Moscow"):
        with pytest.raises(ConfigError, match="stored in 'Asia/Vladivostok'"):
            make_store(timezone=other).ensure_ready()
    make_store(timezone="Asia/Vladivostok").ensure_ready()  # the same zone still opens


def test_a_large_import_refreshes_postgres_planner_statistics(
    make_store: StoreFactory, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if backend != "postgres":
        pytest.skip("PostgreSQL plans from statistics; SQLite needs none here")
    monkeypatch.setattr(calls_module, "STATISTICS_AFTER", 5)
    store = make_store()
    owner, _ = new_account(store, "a")
    seed(store, owner, *[f"s{i}" for i in range(5)])
    with store._connect() as conn:
        tuples = conn.execute("SELECT reltuples FROM pg_class WHERE relname = 'calls'").fetchone()
    assert tuples[0] == 5  # known to the planner, not "never analyzed" (-1)


def test_a_store_opens_and_reads_while_another_holds_the_write_lock(
    make_store: StoreFactory,
) -> None:
    # A server starting during a long import: its schema is current, so it must not wait for
    # the importer's lock (SQLite reads run on the event loop).
    writer = make_store()
    owner, _ = new_account(writer, "a")
    seed(writer, owner, "c1")
    holding, release = threading.Event(), threading.Event()

    def hold_the_lock() -> None:
        with writer._transaction():
            holding.set()
            release.wait(10)

    thread = threading.Thread(target=hold_the_lock)
    thread.start()
    try:
        assert holding.wait(10)
        reader = make_store(db_timeout=1.0)
        reader.ensure_ready()
        assert reader.count_calls(owner) == 1
    finally:
        release.set()
        thread.join()
