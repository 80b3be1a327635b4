"""render_snippet: a campaign's settings put into snippet.js as data that cannot break out."""

from __future__ import annotations

import gzip
import json
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from calltrack.tracking.snippet import TOKEN, SnippetConfig, render_snippet, snippet_etag
from tests.helpers_node import node_or_skip

SOURCE = Path(__file__).resolve().parents[1] / "src" / "calltrack" / "tracking" / "snippet.js"
BREAKOUT = "</script><script>alert(1)</script>"
HOSTILE = (
    BREAKOUT + "<!-- \"quoted\" 'single' \\ back\nnew\rline\u2028ls\u2029ps */ `tick` ${x} &amp;"
)

PLAIN = SnippetConfig(
    k="site_0123456789abcdef",
    hit="https://calls.example/t/hit",
    replace=("74951234567", "78005553535"),
    selector=".phone, #header a.tel",
    format="+7 (XXX) XXX-XX-XX",
)
HOSTILE_CONFIGS = {
    "selector": replace(PLAIN, selector=HOSTILE),
    "number": replace(PLAIN, replace=("74951234567", HOSTILE)),
    "format": replace(PLAIN, format=HOSTILE),
    "key": replace(PLAIN, k=HOSTILE),
    "hit": replace(PLAIN, hit="https://calls.example/t/hit?x=" + HOSTILE),
}


def as_dict(config: SnippetConfig) -> dict[str, Any]:
    return {
        "k": config.k,
        "hit": config.hit,
        "replace": list(config.replace),
        "selector": config.selector,
        "format": config.format,
        "ping": config.ping,
    }


def injected(body: bytes) -> str:
    """The text that took the token's place; everything else must be the file as written."""
    before, after = SOURCE.read_text(encoding="utf-8").split(TOKEN)
    text = body.decode("utf-8")
    assert text.startswith(before), "the script before the settings changed"
    assert text.endswith(after), "the script after the settings changed"
    return text[len(before) : len(text) - len(after)]


@pytest.mark.parametrize("field", sorted(HOSTILE_CONFIGS))
def test_hostile_values_stay_inside_json_strings(field: str) -> None:
    config = HOSTILE_CONFIGS[field]
    body = render_snippet(config)
    settings = injected(body)
    assert json.loads(settings) == as_dict(config)  # the whole insertion is one JSON object
    lowered = body.decode("utf-8").lower()
    for breaker in ("</script", "<script", "<!--", "\u2028", "\u2029"):
        assert breaker not in lowered, breaker
    for raw in ("<", ">", "&", "\n", "\r"):
        assert raw not in settings, repr(raw)


@pytest.mark.parametrize("field", sorted(HOSTILE_CONFIGS))
def test_rendered_snippet_is_javascript_that_reads_the_settings_as_data(
    field: str, tmp_path: Path
) -> None:
    node = node_or_skip()
    config = HOSTILE_CONFIGS[field]
    script = tmp_path / "snippet.js"
    script.write_bytes(render_snippet(config))
    checked = subprocess.run(
        [node, "--check", str(script)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stderr
    # Run it outside a browser (no document): it only hands its helpers and settings over.
    reader = (
        "globalThis.__calltrackTest = {};"
        "require('vm').runInThisContext(require('fs').readFileSync(process.argv[1], 'utf8'));"
        "process.stdout.write(JSON.stringify(globalThis.__calltrackTest.config));"
        "if (globalThis.__calltrack !== undefined) process.exit(3);"
    )
    ran = subprocess.run(
        [node, "-e", reader, str(script)], capture_output=True, text=True, check=False
    )
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout) == as_dict(config)


def test_snippet_is_under_8_kb_gzipped() -> None:
    many = replace(PLAIN, replace=tuple(f"7495{i:07d}" for i in range(20)), selector="x" * 500)
    for config in (PLAIN, many):
        size = len(gzip.compress(render_snippet(config), compresslevel=9))
        assert size < 8 * 1024, f"{size} bytes gzipped"


def test_etag_is_strong_and_follows_the_settings() -> None:
    etag = snippet_etag(render_snippet(PLAIN))
    assert etag.startswith('"')
    assert etag.endswith('"')
    assert len(etag) > 20
    assert snippet_etag(render_snippet(replace(PLAIN))) == etag
    changed = [
        replace(PLAIN, k="site_other"),
        replace(PLAIN, hit="https://other.example/t/hit"),
        replace(PLAIN, replace=("74951234568",)),
        replace(PLAIN, selector=".tel"),
        replace(PLAIN, format="8 XXX XXX-XX-XX"),
        replace(PLAIN, ping=30),
    ]
    etags = {snippet_etag(render_snippet(config)) for config in changed}
    assert len(etags) == len(changed)
    assert etag not in etags


def test_the_token_is_replaced_and_plain_settings_read_as_written() -> None:
    body = render_snippet(PLAIN)
    assert TOKEN.encode() not in body
    assert json.loads(injected(body)) == as_dict(PLAIN)


@pytest.mark.parametrize("ping", [0, 9, 3601, -60])
def test_ping_out_of_bounds_is_refused(ping: int) -> None:
    with pytest.raises(ValueError, match="ping must be"):
        replace(PLAIN, ping=ping)
