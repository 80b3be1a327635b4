"""Reading import files as streams: line numbers across the first read."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from calltrack.errors import ImportRejected
from calltrack.importer import import_file
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
