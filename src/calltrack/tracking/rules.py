"""Source rules: which number a session's source is shown, the first matching rule wins.

Pure: rules and sources are plain data. A rule's conditions are its non-empty fields; every
one must hold. utm values compare whole and case-insensitively (``Yandex`` is ``yandex``,
``yandex_direct`` is not ``yandex``), the referrer domain matches that host and its
subdomains, the source type must be equal. A rule without conditions matches every source:
the catch-all a campaign may end its list with.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from calltrack.tracking.sources import MAX_HOST_LENGTH, SOURCE_TYPES, Source, in_domain

MAX_CONDITION_LENGTH: Final = 512
_DOMAIN_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-.")


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule of a campaign; ``number`` is a static number's digits, ``""`` for the pool."""

    id: int
    position: int
    utm_source: str = ""
    utm_medium: str = ""
    utm_campaign: str = ""
    referrer: str = ""  # a domain, as normalise_domain gives it
    source_type: str = ""  # one of SOURCE_TYPES, or "" for any
    number: str = ""

    @property
    def uses_pool(self) -> bool:
        return not self.number

    def matches(self, source: Source) -> bool:
        """Whether every non-empty condition of the rule holds for ``source``."""
        return (
            _same(self.utm_source, source.utm_source)
            and _same(self.utm_medium, source.utm_medium)
            and _same(self.utm_campaign, source.utm_campaign)
            and (not self.source_type or self.source_type == source.type)
            and (not self.referrer or in_domain(source.referrer, self.referrer))
        )


def first_match(rules: Iterable[Rule], source: Source) -> Rule | None:
    """The first rule, by position (then id, so equal positions still give one answer),
    whose every condition holds for ``source``; None when none does (the campaign's default:
    its pool, else its first static number, is the caller's).
    """
    return next(
        (rule for rule in sorted(rules, key=lambda r: (r.position, r.id)) if rule.matches(source)),
        None,
    )


def normalise_domain(text: str) -> str:
    """A rule's referrer condition as typed (``WWW.Partner.example.``, a URL's host) -> the
    bare domain it matches (``partner.example``). ``www.`` is dropped, so the condition covers
    the site with and without it. Raises ValueError for anything that is not a domain.
    """
    domain = text.strip().lower().rstrip(".").removeprefix("www.")
    if not domain or len(domain) > MAX_HOST_LENGTH:
        raise ValueError(f"referrer domain: {text!r} is not a domain name")
    if not all(char in _DOMAIN_CHARS or char.isalpha() for char in domain) or any(
        not label for label in domain.split(".")
    ):
        raise ValueError(
            f"referrer domain: {text!r} is not a domain name (letters, digits, hyphens, dots)"
        )
    return domain


def check_condition(name: str, value: str) -> str:
    """A utm condition or source type as the CLI takes it: stripped, bounded, and a source
    type one of ad|organic|referral|social|direct. Raises ValueError naming ``name``.
    """
    value = value.strip()
    if len(value) > MAX_CONDITION_LENGTH:
        raise ValueError(f"{name}: longer than {MAX_CONDITION_LENGTH} characters")
    if not value.isprintable():
        raise ValueError(f"{name}: has a control character")
    if name == "source_type" and value and value not in SOURCE_TYPES:
        raise ValueError(f"{name}: {value!r} is not one of {'|'.join(SOURCE_TYPES)}")
    return value


def _same(condition: str, value: str) -> bool:
    return not condition or condition.casefold() == value.casefold()
