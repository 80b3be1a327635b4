"""The page snippet: snippet.js (package data) with a campaign's settings injected as JSON.

The settings are data the page script reads, never code: they are JSON encoded with every
character that could end a ``<script>`` element or a JavaScript line (``<``, ``>``, ``&``,
U+2028, U+2029) written as a ``\\uXXXX`` escape, so even a selector such as
``</script><script>alert(1)</script>`` stays inside a JSON string, inlined or served as a file.
"""

from __future__ import annotations

import hashlib
import html
import json
from dataclasses import asdict, dataclass
from functools import cache
from importlib.resources import files

# The placeholder in snippet.js that the settings replace (a valid script even unrendered).
TOKEN = "/*CALLTRACK_CONFIG*/null"  # noqa: S105 (a placeholder, not a password)
MIN_PING_SECONDS = 10
MAX_PING_SECONDS = 3600

# Characters JSON leaves as they are but an HTML parser or an old JavaScript parser does not.
_UNSAFE = str.maketrans(
    {
        "<": "\\u003c",
        ">": "\\u003e",
        "&": "\\u0026",
        "\u2028": "\\u2028",
        "\u2029": "\\u2029",
    }
)


@dataclass(frozen=True, slots=True)
class SnippetConfig:
    """What the snippet of one campaign needs; the names are the JSON keys the script reads."""

    k: str
    """The campaign's public site key, sent back with every hit."""
    hit: str
    """Absolute URL of ``POST /t/hit``."""
    replace: tuple[str, ...] = ()
    """The site's own numbers (digits) to swap on the page."""
    selector: str = ""
    """CSS selector of elements whose text and ``tel:`` link show the number ("" for none)."""
    format: str = ""
    """How a number is shown when the answer has no display string: X marks take its last digits."""
    ping: int = 60
    """Seconds between pings while the page is visible."""

    def __post_init__(self) -> None:
        if not MIN_PING_SECONDS <= self.ping <= MAX_PING_SECONDS:
            raise ValueError(
                f"ping must be {MIN_PING_SECONDS}..{MAX_PING_SECONDS} seconds, not {self.ping}"
            )


@cache
def _template() -> str:
    source = files("calltrack.tracking").joinpath("snippet.js").read_text(encoding="utf-8")
    if source.count(TOKEN) != 1:
        raise RuntimeError(f"snippet.js must hold {TOKEN} exactly once")
    return source


def config_json(config: SnippetConfig) -> str:
    """The settings as a JSON object that cannot end the script it is written into."""
    text = json.dumps(asdict(config), ensure_ascii=False, separators=(",", ":"))
    # The escaped characters occur only inside JSON strings, where \uXXXX means the same.
    return text.translate(_UNSAFE)


def render_snippet(config: SnippetConfig) -> bytes:
    """snippet.js with ``config`` in place of its token, UTF-8 encoded."""
    return _template().replace(TOKEN, config_json(config), 1).encode("utf-8")


def snippet_tag(server: str, site_key: str) -> tuple[str, str]:
    """The snippet's URL on ``server`` (the address browsers reach this service at) and the
    ``<script>`` tag that loads it, to paste into every page of the campaign's site."""
    src = f"{server.rstrip('/')}/t/{site_key}.js"
    return src, f'<script async src="{html.escape(src)}"></script>'


def snippet_etag(body: bytes) -> str:
    """A strong ETag of a rendered snippet: it changes with the script and with the settings."""
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
