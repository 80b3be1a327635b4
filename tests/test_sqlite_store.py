"""SQLite backend specifics: per-thread connections and their lifetime."""

from __future__ import annotations

import gc
import threading
from pathlib import Path

from calltrack.config import Settings
from calltrack.store.sqlite import SqliteStore


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
