"""Counts are printed with the noun their number takes: "1 call", "2 calls"."""

from __future__ import annotations

from pathlib import Path

import pytest

from calltrack.client.command import summary
from calltrack.client.export import ExportResult
from calltrack.words import plural


@pytest.mark.parametrize(
    ("count", "shown"), [(0, "0 calls"), (1, "1 call"), (2, "2 calls"), (1000, "1,000 calls")]
)
def test_plural_takes_the_singular_for_one_only(count: int, shown: str) -> None:
    assert plural(count, "call") == shown


def test_the_export_summary_of_one_call_on_one_page_is_singular() -> None:
    result = ExportResult(Path("one.csv"), "csv", 1, 1, 1, 0, 2.0, True, None)
    assert summary(result).startswith(
        "exported 1 call (1 page) to one.csv [csv] in 2.0 s (0 calls/s), resumed: 1 call by this"
    )
