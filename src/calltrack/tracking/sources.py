"""Where a session came from: its source, classified from the landing URL and the referrer.

Pure functions over plain data. The order of the contract: utm tags of the landing URL; else
a click id (``gclid``, ``yclid``) makes it an ad; else the referrer's domain: a search engine
is ``organic``, a social network ``social``, another site ``referral``, none or the site
itself (and its subdomains) ``direct``. A direct session inherits the visitor's last
non-direct source of the last 180 days (:func:`effective_source`).

Everything a visitor sends is bounded here: a URL longer than 2 KB, or one that does not
parse, counts as absent, so a hostile hit gives a direct source and never an exception.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final, Literal, NamedTuple, get_args
from urllib.parse import SplitResult, parse_qsl, urlsplit

SourceType = Literal["ad", "organic", "referral", "social", "direct"]
SOURCE_TYPES: Final[tuple[str, ...]] = get_args(SourceType)

MAX_URL_LENGTH: Final = 2048
# A tag longer than this is cut: no campaign name needs more, and it bounds what is stored.
MAX_TAG_LENGTH: Final = 512
MAX_HOST_LENGTH: Final = 253
# Last non-direct click: a direct session inherits a source seen at most this long ago.
ATTRIBUTION_WINDOW_SECONDS: Final = 180 * 24 * 3600

UTM_TAGS: Final = ("utm_source", "utm_medium", "utm_campaign", "utm_content", "utm_term")
# Ad-click ids the ad networks add to the landing URL, and the source a click is given, with
# medium cpc (Google Ads auto-tagging shows google / cpc in GA; yandex / cpc is how Yandex
# Direct campaigns are conventionally tagged). ``fbclid`` and ``ysclid`` are not here:
# Facebook adds fbclid to every outbound link and Yandex adds ysclid to organic results.
CLICK_IDS: Final[dict[str, str]] = {"gclid": "google", "yclid": "yandex"}

# utm_medium values that name a type other than ad; any other tagged visit is an ad: a tagged
# link is a campaign someone paid for or placed, and "ad" is the one type of five saying so.
_MEDIUM_TYPES: Final[dict[str, SourceType]] = {
    "organic": "organic",
    "social": "social",
    "smm": "social",
    "social-network": "social",
    "social-media": "social",
    "sm": "social",
    "referral": "referral",
}

# Search engines, by the name their organic clicks are reported under. A pattern is a host
# (matched with or without ``www.``), ``name.*`` for the name under any country domain
# (google.com, google.co.uk, yandex.com.tr), or ``*.host`` for the host and its subdomains.
# Only the hosts that serve results: docs.google.com or mail.yandex.ru are referrals.
SEARCH_ENGINES: Final[dict[str, tuple[str, ...]]] = {
    "google": ("google.*",),
    "yandex": ("yandex.*", "ya.ru"),
    "bing": ("bing.com", "cn.bing.com"),
    "duckduckgo": ("duckduckgo.com",),
    "mail.ru": ("go.mail.ru", "search.mail.ru"),
    "yahoo": ("*.search.yahoo.com", "search.yahoo.co.jp"),
    "rambler": ("nova.rambler.ru", "search.rambler.ru"),
    "baidu": ("baidu.com", "m.baidu.com"),
    "ecosia": ("ecosia.org",),
    "qwant": ("qwant.com",),
    "startpage": ("startpage.com",),
    "brave": ("search.brave.com",),
    "seznam": ("seznam.cz", "search.seznam.cz"),
    "naver": ("search.naver.com", "m.search.naver.com"),
    "sogou": ("sogou.com",),
    "ask": ("ask.com",),
    "aol": ("search.aol.com",),
}

# Social networks and messengers, by name; every subdomain of theirs is theirs (l.facebook.com
# and away.vk.com are the link redirectors the networks send visitors through).
SOCIAL_NETWORKS: Final[dict[str, tuple[str, ...]]] = {
    "vk": ("*.vk.com", "*.vk.ru", "*.vkontakte.ru"),
    "ok": ("*.ok.ru", "*.odnoklassniki.ru"),
    "facebook": ("*.facebook.com", "*.fb.com", "*.fb.me"),
    "instagram": ("*.instagram.com",),
    "telegram": ("*.t.me", "*.telegram.org", "*.telegram.me"),
    "twitter": ("*.twitter.com", "*.x.com", "*.t.co"),
    "youtube": ("*.youtube.com", "*.youtu.be"),
    "linkedin": ("*.linkedin.com", "*.lnkd.in"),
    "tiktok": ("*.tiktok.com",),
    "pinterest": ("*.pinterest.com", "*.pinterest.ru"),
    "reddit": ("*.reddit.com",),
    "dzen": ("*.dzen.ru", "zen.yandex.ru"),
    "whatsapp": ("*.whatsapp.com", "*.wa.me"),
    "threads": ("*.threads.net",),
    "livejournal": ("*.livejournal.com",),
    "my.mail.ru": ("my.mail.ru",),
    "tumblr": ("*.tumblr.com",),
    "snapchat": ("*.snapchat.com",),
}

# A country domain after ``name.*``: one label (com, ru, de) or a second-level one under a
# country code (co.uk, com.tr, com.ua).
_SECOND_LEVEL: Final = frozenset({"co", "com", "net", "org", "ac", "gov", "edu", "or", "ne"})
_HOST_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-._")
_CONTROL: Final = frozenset(map(chr, [*range(0x20), 0x7F]))


@dataclass(frozen=True, slots=True)
class Source:
    """A session's source: its type, its utm tags, the referrer's host and the ad click id.

    For a source found without utm tags the tags are filled the way the analytics the
    customer already reads fill them: Google Analytics reports organic search as
    source = engine, medium = organic, and Yandex Metrica names the search engine or social
    network; here social is medium = social (GA would say referral and put it in its
    "Organic Social" channel), and another site is source = its host, medium = referral, as
    in GA. So the call's utm fields always say where it came from, and rules can match them.
    """

    type: SourceType = "direct"
    utm_source: str = ""
    utm_medium: str = ""
    utm_campaign: str = ""
    utm_content: str = ""
    utm_term: str = ""
    referrer: str = ""  # the referrer's host, lower case; "" when none
    click_id_name: str = ""  # gclid or yclid
    click_id_value: str = ""


class Sighting(NamedTuple):
    """A non-direct source and when the visitor came from it (unix seconds, session start)."""

    source: Source
    at: int


def classify(landing_url: str, referrer: str, site_host: str) -> Source:
    """The source of a session from its first hit (contract section 3), never raising.

    ``landing_url`` and ``referrer`` are what the page reported (``""`` for none);
    ``site_host`` is the campaign's site host. An over-long or unparsable URL counts as
    absent.
    """
    query = _query(landing_url)
    referrer_host = _host(referrer)
    tags = {name: _first(query, name) for name in UTM_TAGS}
    click_name, click_value = next(
        ((name, value) for name, value in query if name in CLICK_IDS and value), ("", "")
    )
    if any(tags.values()):
        return Source(
            _MEDIUM_TYPES.get(tags["utm_medium"].casefold(), "ad"),
            utm_source=tags["utm_source"],
            utm_medium=tags["utm_medium"],
            utm_campaign=tags["utm_campaign"],
            utm_content=tags["utm_content"],
            utm_term=tags["utm_term"],
            referrer=referrer_host,
            click_id_name=click_name,
            click_id_value=click_value,
        )
    if click_name:
        return Source(
            "ad",
            utm_source=CLICK_IDS[click_name],
            utm_medium="cpc",
            referrer=referrer_host,
            click_id_name=click_name,
            click_id_value=click_value,
        )
    if not referrer_host or in_domain(referrer_host, site_host):
        return Source("direct", referrer=referrer_host)
    engine = _named(referrer_host, SEARCH_ENGINES)
    if engine:
        return Source("organic", engine, "organic", referrer=referrer_host)
    network = _named(referrer_host, SOCIAL_NETWORKS)
    if network:
        return Source("social", network, "social", referrer=referrer_host)
    return Source("referral", _bare(referrer_host), "referral", referrer=referrer_host)


def is_new_source(previous: Source, new: Source) -> bool:
    """Whether a hit from ``new`` ends a session whose source is ``previous``.

    A different non-direct source ends it (a new campaign, search engine, network, site or
    ad click, as Google Analytics starts a new session on a new campaign or gclid). A direct
    hit, internal navigation included, never does. The referrer's host alone does not
    count: the same tagged link shared on two sites is one campaign.
    """
    return new.type != "direct" and replace(new, referrer="") != replace(previous, referrer="")


def effective_source(
    session_source: Source,
    last_non_direct: Sighting | None,
    now: int,
    window: int = ATTRIBUTION_WINDOW_SECONDS,
) -> Source:
    """The source that rules and the call's utm fields use: last non-direct click.

    A non-direct session is its own source. A direct one inherits ``last_non_direct`` when
    that was seen at most ``window`` seconds before ``now`` (exactly ``window`` ago still
    counts; one seen "later" than now, from a host whose clock runs ahead, counts too),
    with that source's referrer host, so a referrer rule matches the inherited visit.
    The session's own landing page and referrer field are the caller's to keep.
    """
    if session_source.type != "direct" or last_non_direct is None:
        return session_source
    source, at = last_non_direct
    if source.type == "direct" or now - at > window:
        return session_source
    return source


def _split(url: str) -> SplitResult | None:
    """An http(s) URL in parts; None for an absent, over-long or invalid one.

    Control characters refuse the URL rather than being dropped as a browser's address bar
    would: a browser sends its URLs percent-encoded, so they mark a forged hit.
    """
    if not url or len(url) > MAX_URL_LENGTH or not _CONTROL.isdisjoint(url):
        return None
    try:
        parts = urlsplit(url.strip())
        # Reading the host parses the netloc, which raises on a malformed IPv6 literal.
        parts.hostname  # noqa: B018
    except ValueError:
        return None
    return parts if parts.scheme in ("http", "https") else None


def _query(url: str) -> list[tuple[str, str]]:
    """The landing URL's query as (name, value) pairs; [] for an absent or invalid URL."""
    parts = _split(url)
    try:
        pairs = parse_qsl(parts.query, max_num_fields=MAX_URL_LENGTH) if parts else []
    except ValueError:
        return []
    return [(name, value.strip()[:MAX_TAG_LENGTH]) for name, value in pairs]


def _first(query: list[tuple[str, str]], name: str) -> str:
    return next((value for key, value in query if key == name and value), "")


def _host(url: str) -> str:
    """The host of an http(s) URL, lower case without a trailing dot; "" if none or invalid."""
    parts = _split(url)
    host = (parts.hostname or "").rstrip(".") if parts else ""
    # Letters of any script (an IDN host), digits, hyphens and dots; anything else (a space,
    # an at sign, a percent sign) is not a host name.
    if len(host) > MAX_HOST_LENGTH or not all(c in _HOST_CHARS or c.isalpha() for c in host):
        return ""
    return host


def _bare(host: str) -> str:
    return host.removeprefix("www.")


def in_domain(host: str, domain: str) -> bool:
    """Whether ``host`` is ``domain`` or one of its subdomains, case and ``www.`` of either
    aside; never for an empty domain."""
    host, domain = _bare(host.lower().rstrip(".")), _bare(domain.lower().rstrip("."))
    return bool(domain) and (host == domain or host.endswith("." + domain))


def _named(host: str, names: dict[str, tuple[str, ...]]) -> str:
    return next(
        (name for name, patterns in names.items() if any(_matches(host, p) for p in patterns)),
        "",
    )


def _matches(host: str, pattern: str) -> bool:
    if pattern.startswith("*."):
        return in_domain(host, pattern[2:])
    host = _bare(host)
    if pattern.endswith(".*"):
        name, _, suffix = host.partition(".")
        return name == pattern[:-2] and _country_domain(suffix)
    return host == pattern


def _country_domain(suffix: str) -> bool:
    labels = suffix.split(".")
    if len(labels) == 1:
        return labels[0].isalpha()
    return len(labels) == 2 and labels[0] in _SECOND_LEVEL and len(labels[1]) == 2
