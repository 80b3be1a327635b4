"""SQLite backend specifics: per-thread connections and their lifetime, the calls layout."""

from __future__ import annotations

import fcntl
import gc
import os
import threading
from pathlib import Path

import msgspec
import pytest

from calltrack.config import Settings
from calltrack.errors import StoreUnavailable
from calltrack.model import decode_record, prepare
from calltrack.store import migrations
from calltrack.store.paging import Window, build_page_query
from calltrack.store.sqlite import SqliteStore
from tests.conftest import new_account
from tests.helpers_calls import record, seed


def test_connections_of_finished_threads_are_released(tmp_path: Path) -> None:
    store = SqliteStore(Settings.from_env(env={}, database_url=f"sqlite:///{tmp_path}/t.db"))
    store.ensure_ready()  # the main thread's connection
    for _ in range(5):
        worker = threading.Thread(target=store.ping)
        worker.start()
        worker.join()
    gc.collect()
    assert len(store._all) == 1  # only the main thread's is still open
    store.close()
    assert len(store._all) == 0


def _store(path: Path) -> SqliteStore:
    return SqliteStore(Settings.from_env(env={}, database_url=f"sqlite:///{path}"))


def _walk(store: SqliteStore, owner: int) -> list[list[bytes]]:
    window = Window(0, 2**40)
    pages: list[list[bytes]] = []
    while rows := store.read_page([owner], window, len(pages), 3):  # no page emptied here
        pages.append(rows)
    return pages


def test_a_new_file_stores_calls_in_page_order_on_16k_pages(tmp_path: Path) -> None:
    store = _store(tmp_path / "t.db")
    owner, _ = new_account(store, "a")
    seed(store, owner, "c1", "c2")
    with store._connect() as conn:
        assert conn.execute("PRAGMA page_size").fetchone()[0] == 16384
        table = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'calls'").fetchone()[0]
        sql, params = build_page_query([owner], 0, 2**40, None, None, 0, 1000)
        plan = " ".join(
            row[-1] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params).fetchall()
        )
    assert "WITHOUT ROWID" in table
    assert "PRIMARY KEY" in plan
    assert "TEMP B-TREE" not in plan
    store.close()


def test_migrations_4_and_later_keep_every_page_of_an_older_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A database as an older release left it: migrations 1-3, calls in a rowid table,
    # written out of time order as that release wrote them, one with an old version kept.
    zone = Settings.from_env(env={}).zone
    times = [f"2020-05-0{day} 10:00:00" for day in (5, 1, 3, 2, 4, 1, 3)]
    calls = [prepare(decode_record(msgspec.json.encode(record(f"c{i}", callTime=when))), zone)
             for i, when in enumerate(times)]  # fmt: skip
    with monkeypatch.context() as patch:
        patch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:3])
        old = _store(tmp_path / "t.db")
        owner, _ = new_account(old, "a")
        with old._transaction() as conn:
            for seq, call in enumerate(calls, start=1):
                conn.execute(
                    "INSERT INTO calls (account_id, universal_id, call_time, change_seq, "
                    "created_seq, service_type, status, campaign_id, body) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (owner, call.universal_id, call.call_time, seq, seq, call.service_type,
                     call.status, call.campaign_id, call.body),
                )  # fmt: skip
        before = _walk(old, owner)
        with old._transaction() as conn:  # the old version that release kept for its walks
            conn.execute(
                "INSERT INTO calls (account_id, universal_id, call_time, change_seq, "
                "created_seq, superseded_seq, superseded_at, service_type, status, "
                "campaign_id, body) SELECT account_id, universal_id, call_time, 1, 1, 2, 0, "
                "service_type, status, campaign_id, body FROM calls WHERE universal_id = 'c2'"
            )
        old.close()
    store = _store(tmp_path / "t.db")
    assert _walk(store, owner) == before
    assert store.count_calls(owner) == len(times)
    seed(store, owner, "new")  # ids continue after the migrated ones
    with store._connect() as conn:
        ids = [row[0] for row in conn.execute("SELECT id FROM calls ORDER BY id").fetchall()]
        table = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'calls'").fetchone()[0]
        callers = conn.execute("SELECT DISTINCT client_number FROM calls").fetchall()
    assert "WITHOUT ROWID" in table
    assert len(ids) == len(times) + 1  # migration 5 dropped the old version
    assert len(set(ids)) == len(ids)
    assert callers == [("",)]  # migration 7 filled the caller column from the bodies
    store.close()


def _writer_lock_free(path: Path) -> bool:
    """Whether another process could take the writers' lock of the database at ``path``."""
    fd = os.open(f"{path}-writer", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # releases it if taken
    return True


def test_writers_of_every_process_queue_on_one_lock_held_to_the_commit(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    store, other = _store(path), _store(path)  # each its own lock, as two processes have
    store.ensure_ready()
    assert _writer_lock_free(path)
    with store._transaction() as conn:
        conn.execute("INSERT INTO meta (key, value) VALUES ('k', 'v')")
        assert not _writer_lock_free(path)
        # Another writer waits on it, and gives up at its deadline saying who holds it.
        with pytest.raises(StoreUnavailable, match="another process"), other._transaction(0.05):
            pass
    assert _writer_lock_free(path)  # released with the commit
    with pytest.raises(RuntimeError), store._transaction():
        raise RuntimeError("rolled back")
    assert _writer_lock_free(path)  # and with a rollback
    with other._transaction() as conn:  # the other writer gets it now
        assert conn.execute("SELECT value FROM meta WHERE key = 'k'").fetchone()[0] == "v"
    store.close()
    other.close()
