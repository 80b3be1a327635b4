"""Without a browser the browser tests are skipped loudly, and fail with CI=true; the run's
summary says which in the line just before the stores line. These tests need no browser."""

from __future__ import annotations

import pytest

from tests.browser.conftest import BrowserState, browser_line
from tests.test_check_run import plain_and_ci_runs

# One browser test that uses no store, so that no PostgreSQL banner comes between the lines.
SELECTED = (
    "tests/browser/test_browser_smoke.py::"
    "test_contexts_are_separate_visitors_and_tabs_of_one_share_its_cookies"
)
MISSING = "/nonexistent/chromium"
WHY = f"CALLTRACK_TEST_CHROMIUM={MISSING} is not an executable file"


@pytest.fixture(scope="module")
def runs() -> dict[str, tuple[int, list[str]]]:
    """(exit code, output lines) of the selected test with no browser, plain and with CI=true."""
    done = plain_and_ci_runs(SELECTED, {"CALLTRACK_TEST_CHROMIUM": MISSING})
    return {name: (code, output.splitlines()) for name, (code, output) in done.items()}


def test_without_a_browser_the_tests_are_skipped_and_the_summary_says_why(
    runs: dict[str, tuple[int, list[str]]],
) -> None:
    code, lines = runs["plain"]
    assert code == 0, "\n".join(lines)
    assert any("1 skipped" in line for line in lines)
    assert any(f"no browser: {WHY} (apt-get install chromium)" in line for line in lines)
    assert lines[-2] == f"browser tests: SKIPPED ({WHY})"
    assert lines[-1].startswith("stores tested: ")
    assert lines[-3] == "!" * 78  # under a banner


def test_with_ci_a_missing_browser_fails_the_run(runs: dict[str, tuple[int, list[str]]]) -> None:
    code, lines = runs["ci"]
    assert code == 1, "\n".join(lines)
    assert any("1 error" in line for line in lines)
    assert lines[-2] == f"browser tests: FAILED (CI=true requires a browser: {WHY})"
    assert lines[-1].startswith("stores tested: ")


@pytest.mark.parametrize(
    ("state", "in_ci", "line"),
    [
        (BrowserState(True, "156.0.1"), False, "browser tests: ran in Chromium 156.0.1"),
        (BrowserState(), True, "browser tests: none selected"),
        (BrowserState(True), False, "browser tests: FAILED (the browser fixture did not finish)"),
        (
            BrowserState(True, None, "gone"),
            True,
            "browser tests: FAILED (CI=true requires a browser: gone)",
        ),
    ],
)
def test_the_line_says_what_happened(state: BrowserState, in_ci: bool, line: str) -> None:
    assert browser_line(state, in_ci) == line
