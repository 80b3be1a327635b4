"""The test run's last line says which stores were tested, also when PostgreSQL is missing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import stores_line

ROOT = Path(__file__).resolve().parent.parent
# One small test that runs on both stores.
SELECTED = "tests/test_cli.py::test_role_list_shows_both_sides_with_ids_and_states_on_both_backends"
NO_SERVER = "postgresql://postgres@127.0.0.1:9/test"  # the discard port: nothing listens there


def plain_and_ci_runs(selected: str, env: dict[str, str]) -> dict[str, tuple[int, str]]:
    """(exit code, stdout) of pytest on ``selected`` with ``env``, plain and with CI=true.

    Both run at once: each is mostly pytest starting up.
    """
    clean = {k: v for k, v in os.environ.items() if k not in {"CI", "PYTEST_ADDOPTS"}}
    started = {
        name: subprocess.Popen(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", selected],
            cwd=ROOT,
            env={**clean, **env, **ci},
            stdout=subprocess.PIPE,
            text=True,
        )
        for name, ci in (("plain", {}), ("ci", {"CI": "true"}))
    }
    outputs = {name: process.communicate(timeout=120)[0] for name, process in started.items()}
    return {name: (started[name].returncode, output) for name, output in outputs.items()}


@pytest.fixture(scope="module")
def runs() -> dict[str, tuple[int, str]]:
    """(exit code, stdout) of the selected test run without PostgreSQL, plain and with CI=true."""
    return plain_and_ci_runs(SELECTED, {"CALLTRACK_TEST_POSTGRES_URL": NO_SERVER})


def test_a_run_without_postgresql_ends_saying_it_was_skipped(
    runs: dict[str, tuple[int, str]],
) -> None:
    code, output = runs["plain"]
    assert code == 0, output
    assert "1 passed, 1 skipped" in output
    assert output.splitlines()[-1].startswith(
        f"stores tested: sqlite only (PostgreSQL tests SKIPPED: {NO_SERVER}: "
    )


def test_with_ci_a_missing_postgresql_fails_the_run_and_the_last_line_says_so(
    runs: dict[str, tuple[int, str]],
) -> None:
    code, output = runs["ci"]
    assert code == 1, output
    assert "1 passed, 1 error" in output
    assert output.splitlines()[-1].startswith(
        "stores tested: sqlite only (PostgreSQL tests FAILED (CI=true requires it): "
    )


@pytest.mark.parametrize(
    ("tested", "line"),
    [
        ({"sqlite", "postgres"}, "stores tested: sqlite, postgresql"),
        ({"sqlite"}, "stores tested: sqlite only (no PostgreSQL test was selected)"),
        ({"postgres"}, "stores tested: postgresql only (no SQLite test was selected)"),
        (set(), "stores tested: none (no store test was selected)"),
    ],
)
def test_the_line_names_the_stores_that_ran(tested: set[str], line: str) -> None:
    assert stores_line(tested, None, in_ci=False) == line


def test_the_line_stays_one_line_when_the_reason_has_several() -> None:
    line = stores_line(set(), "refused\n\tIs the server running?", in_ci=False)
    assert line == "stores tested: none (PostgreSQL tests SKIPPED: refused Is the server running?)"
