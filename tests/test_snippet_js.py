"""The snippet's JavaScript tests (tests/js, Node's own test runner), run as part of pytest."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.helpers_node import node_or_skip

JS_TESTS = Path(__file__).resolve().parent / "js"


def test_node_test_runner_passes_the_snippet_tests() -> None:
    node = node_or_skip()
    # The files named, not the directory: Node 20 takes a directory, Node 22 takes patterns.
    files = sorted(str(path) for path in JS_TESTS.glob("*.test.mjs"))
    assert files, f"no *.test.mjs in {JS_TESTS}"
    done = subprocess.run(
        [node, "--test", *files], capture_output=True, text=True, timeout=120, check=False
    )
    report = done.stdout + done.stderr
    assert done.returncode == 0, report
    passed = re.search(r"^# pass (\d+)$", report, re.MULTILINE)
    failed = re.search(r"^# fail (\d+)$", report, re.MULTILINE)
    assert passed is not None, report
    assert failed is not None, report
    assert int(passed.group(1)) >= 10, f"the JavaScript tests did not all run:\n{report}"
    assert failed.group(1) == "0", report
