"""A session's source: utm tags, then ad click ids, then the referrer; last non-direct click."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from calltrack.tracking.sources import (
    ATTRIBUTION_WINDOW_SECONDS,
    MAX_TAG_LENGTH,
    MAX_URL_LENGTH,
    SOURCE_TYPES,
    Sighting,
    Source,
    classify,
    effective_source,
    in_domain,
    is_new_source,
)
from tests.helpers_tables import cases

SITE = "shop.example"
LANDING = "https://shop.example/catalog"

# (id, landing URL, referrer, expected type, utm_source, utm_medium, referrer host)
CLASSIFIED = [
    ("utm tags", LANDING + "?utm_source=yandex&utm_medium=cpc", "https://ya.ru/",
     "ad", "yandex", "cpc", "ya.ru"),
    ("utm beat the search referrer", LANDING + "?utm_source=mail&utm_medium=email",
     "https://www.google.com/", "ad", "mail", "email", "www.google.com"),
    ("utm medium organic", LANDING + "?utm_source=google&utm_medium=organic", "",
     "organic", "google", "organic", ""),
    ("utm medium social any case", LANDING + "?utm_source=vk&utm_medium=Social", "",
     "social", "vk", "Social", ""),
    ("utm medium smm", LANDING + "?utm_source=vk&utm_medium=smm", "", "social", "vk", "smm", ""),
    ("utm medium referral", LANDING + "?utm_source=partner&utm_medium=referral", "",
     "referral", "partner", "referral", ""),
    ("utm campaign alone", LANDING + "?utm_campaign=spring", "", "ad", "", "", ""),
    ("empty utm values are no tags", LANDING + "?utm_source=&utm_medium=", "https://ya.ru/",
     "organic", "yandex", "organic", "ya.ru"),
    ("gclid", LANDING + "?gclid=abc123", "https://www.google.com/",
     "ad", "google", "cpc", "www.google.com"),
    ("yclid", LANDING + "?yclid=987", "", "ad", "yandex", "cpc", ""),
    ("empty gclid is none", LANDING + "?gclid=", "", "direct", "", "", ""),
    ("fbclid is not an ad", LANDING + "?fbclid=x", "https://l.facebook.com/",
     "social", "facebook", "social", "l.facebook.com"),
    ("ysclid is not an ad", LANDING + "?ysclid=x", "https://yandex.ru/",
     "organic", "yandex", "organic", "yandex.ru"),
    ("google com", LANDING, "https://www.google.com/", "organic", "google", "organic",
     "www.google.com"),
    ("google co.uk", LANDING, "https://www.google.co.uk/", "organic", "google", "organic",
     "www.google.co.uk"),
    ("yandex com.tr", LANDING, "https://yandex.com.tr/search/?text=x", "organic", "yandex",
     "organic", "yandex.com.tr"),
    ("ya.ru", LANDING, "https://ya.ru/", "organic", "yandex", "organic", "ya.ru"),
    ("bing", LANDING, "https://www.bing.com/", "organic", "bing", "organic", "www.bing.com"),
    ("duckduckgo", LANDING, "https://duckduckgo.com/", "organic", "duckduckgo", "organic",
     "duckduckgo.com"),
    ("mail.ru search", LANDING, "https://go.mail.ru/search?q=x", "organic", "mail.ru",
     "organic", "go.mail.ru"),
    ("yahoo country search", LANDING, "https://uk.search.yahoo.com/", "organic", "yahoo",
     "organic", "uk.search.yahoo.com"),
    ("rambler", LANDING, "https://nova.rambler.ru/search", "organic", "rambler", "organic",
     "nova.rambler.ru"),
    ("uppercase host", LANDING, "https://WWW.GOOGLE.DE/", "organic", "google", "organic",
     "www.google.de"),
    ("google docs is a referral", LANDING, "https://docs.google.com/document/d/1",
     "referral", "docs.google.com", "referral", "docs.google.com"),
    ("yandex mail is a referral", LANDING, "https://mail.yandex.ru/", "referral",
     "mail.yandex.ru", "referral", "mail.yandex.ru"),
    ("google on a foreign domain is a referral", LANDING, "https://google.evil.com/",
     "referral", "google.evil.com", "referral", "google.evil.com"),
    ("vk redirect", LANDING, "https://away.vk.com/away.php?to=x", "social", "vk", "social",
     "away.vk.com"),
    ("telegram", LANDING, "https://t.me/channel", "social", "telegram", "social", "t.me"),
    ("x.com", LANDING, "https://x.com/", "social", "twitter", "social", "x.com"),
    ("t.co", LANDING, "https://t.co/abc", "social", "twitter", "social", "t.co"),
    ("youtube mobile", LANDING, "https://m.youtube.com/", "social", "youtube", "social",
     "m.youtube.com"),
    ("dzen", LANDING, "https://dzen.ru/a/x", "social", "dzen", "social", "dzen.ru"),
    ("ok.ru", LANDING, "https://ok.ru/group", "social", "ok", "social", "ok.ru"),
    ("not vk: a look-alike", LANDING, "https://notvk.com/", "referral", "notvk.com",
     "referral", "notvk.com"),
    ("another site", LANDING, "https://www.partner.example/list", "referral",
     "partner.example", "referral", "www.partner.example"),
    ("no referrer", LANDING, "", "direct", "", "", ""),
    ("the site itself", LANDING, "https://shop.example/cart", "direct", "", "", "shop.example"),
    ("the site's www", LANDING, "https://www.shop.example/", "direct", "", "",
     "www.shop.example"),
    ("a subdomain of the site", LANDING, "https://blog.shop.example/", "direct", "", "",
     "blog.shop.example"),
    ("a site ending like this one", LANDING, "https://myshop.example/", "referral",
     "myshop.example", "referral", "myshop.example"),
    ("idn referrer", LANDING, "https://пример.рф/", "referral", "пример.рф", "referral",
     "пример.рф"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("landing", "referrer", "kind", "utm_source", "utm_medium", "host"),
    cases(CLASSIFIED),
)
def test_classify(
    landing: str, referrer: str, kind: str, utm_source: str, utm_medium: str, host: str
) -> None:
    source = classify(landing, referrer, SITE)
    assert (source.type, source.utm_source, source.utm_medium, source.referrer) == (
        kind,
        utm_source,
        utm_medium,
        host,
    )


def test_classify_keeps_every_tag_and_the_click_id() -> None:
    landing = (
        LANDING + "?utm_source=yandex&utm_medium=cpc&utm_campaign=spring%20sale"
        "&utm_content=banner+1&utm_term=%D0%B4%D0%B8%D0%B2%D0%B0%D0%BD&yclid=42&utm_source=x"
    )
    assert classify(landing, "", "www.shop.example") == Source(
        "ad", "yandex", "cpc", "spring sale", "banner 1", "диван", "", "yclid", "42"
    )


def test_a_site_host_given_with_www_still_covers_the_bare_host() -> None:
    assert classify(LANDING, "https://shop.example/", "WWW.Shop.Example.").type == "direct"


INVALID = [
    ("landing too long", LANDING + "?utm_source=x&pad=" + "a" * MAX_URL_LENGTH, ""),
    ("referrer too long", LANDING, "https://ya.ru/?" + "a" * MAX_URL_LENGTH),
    ("bad ipv6 landing", "http://[::1/?utm_source=x", ""),
    ("bad ipv6 referrer", LANDING, "http://[zz"),
    ("javascript landing", "javascript:alert(1)//?utm_source=x", ""),
    ("ftp referrer", LANDING, "ftp://google.com/"),
    ("referrer without scheme", LANDING, "google.com"),
    ("android app referrer", LANDING, "android-app://com.google.android.gm/"),
    ("host with a space", LANDING, "https://goo gle.com/"),
    ("nul bytes", "\x00" * 10, "\x00https://ya.ru/"),
    ("a lone word", "hello", "world"),
]


@pytest.mark.parametrize(
    ("landing", "referrer"),
    cases(INVALID),
)
def test_an_invalid_url_counts_as_absent(landing: str, referrer: str) -> None:
    assert classify(landing, referrer, SITE) == Source("direct")


def test_a_tag_is_cut_to_its_bound() -> None:
    source = classify(LANDING + "?utm_campaign=" + "c" * 1500, "", SITE)
    assert source.utm_campaign == "c" * MAX_TAG_LENGTH


@given(st.text(max_size=3000), st.text(max_size=3000), st.text(max_size=300))
def test_classify_never_raises_and_answers_a_known_type(
    landing: str, referrer: str, site: str
) -> None:
    source = classify(landing, referrer, site)
    assert source.type in SOURCE_TYPES
    assert len(source.referrer) <= 253
    assert all(len(tag) <= MAX_TAG_LENGTH for tag in (source.utm_source, source.utm_campaign))


hosts = st.from_regex(r"\A[a-z][a-z0-9-]{0,15}\.(com|ru|example|co\.uk)\Z")
paths = st.from_regex(r"\A[a-z0-9/]{0,30}\Z")


@given(hosts, st.sampled_from(["", "www.", "blog.", "a.b."]), paths, paths)
def test_a_visit_from_the_site_itself_or_its_subdomains_is_direct(
    host: str, subdomain: str, landing_path: str, referrer_path: str
) -> None:
    landing = f"https://{host}/{landing_path}"
    referrer = f"http://{subdomain}{host}/{referrer_path}"
    assert classify(landing, referrer, host) == Source("direct", referrer=subdomain + host)
    assert classify(landing, referrer, "www." + host).type == "direct"


YANDEX_AD = Source("ad", "yandex", "cpc", "spring")
GOOGLE = Source("organic", "google", "organic", referrer="www.google.com")
DIRECT = Source("direct")

NEW_SOURCE = [
    ("direct after an ad", YANDEX_AD, DIRECT, False),
    ("internal navigation", YANDEX_AD, Source("direct", referrer="shop.example"), False),
    ("the same campaign again", YANDEX_AD, Source("ad", "yandex", "cpc", "spring"), False),
    ("the same campaign from another site", YANDEX_AD,
     Source("ad", "yandex", "cpc", "spring", referrer="ya.ru"), False),
    ("google from another country domain", GOOGLE,
     Source("organic", "google", "organic", referrer="www.google.de"), False),
    ("another campaign", YANDEX_AD, Source("ad", "yandex", "cpc", "autumn"), True),
    ("a new ad click", Source("ad", "google", "cpc", click_id_name="gclid", click_id_value="1"),
     Source("ad", "google", "cpc", click_id_name="gclid", click_id_value="2"), True),
    ("search after direct", DIRECT, GOOGLE, True),
    ("another search engine", GOOGLE, Source("organic", "yandex", "organic"), True),
    ("another referring site", Source("referral", "a.example", "referral"),
     Source("referral", "b.example", "referral"), True),
]  # fmt: skip


@pytest.mark.parametrize(
    ("previous", "new", "ends"),
    cases(NEW_SOURCE),
)
def test_is_new_source(previous: Source, new: Source, ends: bool) -> None:
    assert is_new_source(previous, new) is ends


NOW = 1_800_000_000
WINDOW = ATTRIBUTION_WINDOW_SECONDS

EFFECTIVE = [
    ("a non-direct session is its own", YANDEX_AD, Sighting(GOOGLE, NOW - 10), YANDEX_AD),
    ("direct without history", DIRECT, None, DIRECT),
    ("direct inherits", DIRECT, Sighting(GOOGLE, NOW - 10), GOOGLE),
    ("direct inherits at the window's edge", DIRECT, Sighting(GOOGLE, NOW - WINDOW), GOOGLE),
    ("a second past the window", DIRECT, Sighting(GOOGLE, NOW - WINDOW - 1), DIRECT),
    ("seen ahead of this clock", DIRECT, Sighting(GOOGLE, NOW + 5), GOOGLE),
    ("a direct sighting is nothing", DIRECT, Sighting(Source("direct", referrer="x.example"),
                                                     NOW), DIRECT),
]  # fmt: skip


@pytest.mark.parametrize(
    ("session", "last", "effective"),
    cases(EFFECTIVE),
)
def test_effective_source(session: Source, last: Sighting | None, effective: Source) -> None:
    assert effective_source(session, last, NOW) == effective


def test_effective_source_takes_a_shorter_window() -> None:
    assert effective_source(DIRECT, Sighting(GOOGLE, NOW - 61), NOW, window=60) == DIRECT
    assert effective_source(DIRECT, Sighting(GOOGLE, NOW - 60), NOW, window=60) == GOOGLE


IN_DOMAIN = [
    ("itself", "partner.example", "partner.example", True),
    ("subdomain", "a.b.partner.example", "partner.example", True),
    ("www on the host", "www.partner.example", "partner.example", True),
    ("www on the domain", "partner.example", "www.partner.example", True),
    ("case", "Partner.Example", "PARTNER.example", True),
    ("look-alike", "mypartner.example", "partner.example", False),
    ("parent is not a subdomain", "example", "partner.example", False),
    ("empty domain", "partner.example", "", False),
]


@pytest.mark.parametrize(
    ("host", "domain", "inside"),
    cases(IN_DOMAIN),
)
def test_in_domain(host: str, domain: str, inside: bool) -> None:
    assert in_domain(host, domain) is inside
