"""Source rules: tried top-down by position, the first whose every condition holds wins."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from calltrack.tracking.rules import Rule, check_condition, first_match, normalise_domain
from calltrack.tracking.sources import SOURCE_TYPES, Source
from tests.helpers_tables import cases

YANDEX_CPC = Source("ad", "Yandex", "cpc", "spring", referrer="ya.ru")
PARTNER = Source("referral", "blog.partner.example", "referral", referrer="blog.partner.example")
DIRECT = Source("direct")

MATCHES = [
    ("no conditions: catch-all", Rule(1, 1), DIRECT, True),
    ("utm source any case", Rule(1, 1, utm_source="YANDEX"), YANDEX_CPC, True),
    ("utm source whole, not a prefix", Rule(1, 1, utm_source="yan"), YANDEX_CPC, False),
    ("utm source and medium", Rule(1, 1, utm_source="yandex", utm_medium="cpc"), YANDEX_CPC,
     True),
    ("one condition fails", Rule(1, 1, utm_source="yandex", utm_medium="cpm"), YANDEX_CPC,
     False),
    ("campaign", Rule(1, 1, utm_campaign="Spring"), YANDEX_CPC, True),
    ("campaign wanted, none", Rule(1, 1, utm_campaign="spring"), DIRECT, False),
    ("source type", Rule(1, 1, source_type="ad"), YANDEX_CPC, True),
    ("another source type", Rule(1, 1, source_type="organic"), YANDEX_CPC, False),
    ("referrer domain itself", Rule(1, 1, referrer="ya.ru"), YANDEX_CPC, True),
    ("referrer subdomain", Rule(1, 1, referrer="partner.example"), PARTNER, True),
    ("referrer domain upper case", Rule(1, 1, referrer="Partner.Example"), PARTNER, True),
    ("referrer look-alike", Rule(1, 1, referrer="artner.example"), PARTNER, False),
    ("referrer wanted, none", Rule(1, 1, referrer="partner.example"), DIRECT, False),
    ("every condition holds", Rule(1, 1, "yandex", "CPC", "spring", "ya.ru", "ad"), YANDEX_CPC,
     True),
]  # fmt: skip


@pytest.mark.parametrize(
    ("rule", "source", "matched"),
    cases(MATCHES),
)
def test_rule_matches(rule: Rule, source: Source, matched: bool) -> None:
    assert rule.matches(source) is matched
    assert first_match([rule], source) == (rule if matched else None)


RULES = [
    Rule(10, 3, source_type="ad", number="74950000003"),
    Rule(11, 1, utm_source="yandex", utm_campaign="spring", number="74950000001"),
    Rule(12, 2, utm_source="yandex"),
    Rule(13, 9),
    Rule(14, 2, utm_source="yandex", number="74950000014"),
]

FIRST = [
    ("the lowest position that holds", YANDEX_CPC, 11),
    ("a lower position failing falls through", Source("ad", "yandex", "cpc", "autumn"), 12),
    ("equal positions: the lower id", Source("ad", "yandex"), 12),
    ("type rule below", Source("ad", "google", "cpc"), 10),
    ("the catch-all last", DIRECT, 13),
]


@pytest.mark.parametrize(
    ("source", "rule_id"),
    cases(FIRST),
)
def test_first_match_goes_by_position(source: Source, rule_id: int) -> None:
    for order in (RULES, RULES[::-1]):
        matched = first_match(order, source)
        assert matched is not None
        assert matched.id == rule_id


def test_no_rule_matches() -> None:
    assert first_match([], YANDEX_CPC) is None
    assert first_match(RULES[:3], DIRECT) is None


def test_a_rule_without_a_number_uses_the_pool() -> None:
    assert Rule(1, 1).uses_pool
    assert not Rule(1, 1, number="74951234567").uses_pool


conditions = st.sampled_from(["", "yandex", "google", "cpc"])
sources = st.builds(
    Source,
    st.sampled_from(SOURCE_TYPES),
    st.sampled_from(["", "yandex", "Google"]),
    st.sampled_from(["", "cpc", "CPC"]),
    referrer=st.sampled_from(["", "ya.ru", "www.google.com", "shop.example"]),
)
rules = st.builds(
    Rule,
    st.integers(1, 50),
    st.integers(0, 5),
    conditions,
    conditions,
    referrer=st.sampled_from(["", "google.com", "ya.ru"]),
    source_type=st.sampled_from(["", *SOURCE_TYPES]),
)


@given(st.lists(rules, max_size=8), sources)
def test_first_match_is_the_first_matching_rule_in_position_order(
    rule_list: list[Rule], source: Source
) -> None:
    matched = first_match(rule_list, source)
    holding = [rule for rule in rule_list if rule.matches(source)]
    if matched is None:
        assert not holding
    else:
        assert matched in holding
        assert all((matched.position, matched.id) <= (r.position, r.id) for r in holding)


DOMAINS = [
    ("plain", "partner.example", "partner.example"),
    ("www and case dropped", " WWW.Partner.Example. ", "partner.example"),
    ("subdomain kept", "blog.partner.example", "blog.partner.example"),
    ("idn", "Пример.рф", "пример.рф"),
]


@pytest.mark.parametrize(
    ("text", "domain"),
    cases(DOMAINS),
)
def test_normalise_domain(text: str, domain: str) -> None:
    assert normalise_domain(text) == domain


@pytest.mark.parametrize(
    "text",
    ["", "   ", "https://partner.example/", "partner example", "a..b", "x" * 254, "a/b"],
    ids=["empty", "blank", "url", "space", "empty label", "too long", "slash"],
)
def test_normalise_domain_refuses(text: str) -> None:
    with pytest.raises(ValueError, match=r"referrer domain: .* not a domain name"):
        normalise_domain(text)


def test_check_condition() -> None:
    assert check_condition("utm_source", "  yandex ") == "yandex"
    assert check_condition("source_type", "social") == "social"
    with pytest.raises(
        ValueError,
        match=re.escape("source_type: 'paid' is not one of ad|organic|referral|social|direct"),
    ):
        check_condition("source_type", "paid")
    with pytest.raises(ValueError, match="utm_campaign: longer than 512"):
        check_condition("utm_campaign", "c" * 513)
    with pytest.raises(ValueError, match="utm_medium: has a control character"):
        check_condition("utm_medium", "cpc\x1b[31m")
