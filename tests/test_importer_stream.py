"""Reading import files as streams: line numbers across the first read, and the prefetch."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from calltrack.errors import ImportRejected
from calltrack.importer import import_file, prefetched
from calltrack.store import Store
from tests.conftest import new_account
from tests.helpers_calls import dump, record


def write(path: Path, lines: list[bytes], newline: bytes = b"\n", bom: bool = False) -> Path:
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + newline.join(lines) + newline)
    return path


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"], ids=["lf", "crlf"])
@pytest.mark.parametrize("bom", [False, True], ids=["plain", "bom"])
def test_a_bad_line_past_the_first_read_is_named_exactly(
    store: Store, tmp_path: Path, newline: bytes, bom: bool
) -> None:
    owner, _ = new_account(store, "a")
    long_first = msgspec.json.encode(record("long", site="x" * 6000))  # spans the first read
    lines = [long_first, b"", msgspec.json.encode(record("b")), b'{"duration": "x"}']
    with pytest.raises(ImportRejected) as caught:
        import_file(
            store, owner, write(tmp_path / "f.jsonl", lines, newline, bom), store.settings.zone
        )
    assert caught.value.line == 4
    assert dump(store, owner) == []


def test_a_streamed_file_imports_every_line(store: Store, tmp_path: Path) -> None:
    owner, _ = new_account(store, "a")
    lines = [msgspec.json.encode(record(f"id{i}", site="y" * (i * 23))) for i in range(300)]
    result = import_file(store, owner, write(tmp_path / "f.jsonl", lines), store.settings.zone)
    assert result.imported == 300
    assert sorted(c["universalId"] for c in dump(store, owner)) == sorted(
        f"id{i}" for i in range(300)
    )


def test_prefetch_keeps_order_and_raises_the_producers_error_in_place() -> None:
    def numbers() -> Iterator[int]:
        yield from range(2500)
        raise ValueError("at 2500")

    seen: list[int] = []

    def consume() -> None:
        seen.extend(prefetched(numbers(), batch=100, depth=2))

    with pytest.raises(ValueError, match="at 2500"):
        consume()
    assert seen == list(range(2500))


def test_a_consumer_that_stops_early_stops_the_producer() -> None:
    produced: list[int] = []

    def endless() -> Iterator[int]:
        n = 0
        while True:
            produced.append(n)
            yield n
            n += 1

    stream = prefetched(endless(), batch=10, depth=2)
    assert next(stream) == 0
    stream.close()
    count = len(produced)
    assert not any(t.name == "import-validate" and t.is_alive() for t in threading.enumerate())
    assert len(produced) == count  # nothing more is produced once the consumer left
