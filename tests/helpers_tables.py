"""Test tables as rows whose first item names the case: ``("idn referrer", arg1, arg2)``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import pytest


def cases(rows: Iterable[Sequence[Any]]) -> list[Any]:  # pytest.param's type is not public
    """The rows for ``pytest.mark.parametrize``, each shown in the run under its name."""
    return [pytest.param(*row[1:], id=row[0]) for row in rows]
