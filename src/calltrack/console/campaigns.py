"""The campaigns page (``/console/campaigns``): each campaign of the account with its tracking
numbers, source rules, pool (held now, the peak and the stub hits of the last 24 hours, and
whether to add numbers) and the snippet tag to paste into its site.

Read-only, for user and role keys alike: a role key sees its grantor's campaigns (the account
whose calls the console shows, ``visitor.owners[0]``). Everything comes from one store call
(``Store.campaign_setups``: six queries however many campaigns). The snippet tag is the CLI's
(``campaign snippet``) with this server's address as the browser reached it; a campaign that
has no site key yet gets none here (the page writes nothing) but the command that makes one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from calltrack.api.app import service_of
from calltrack.api.tracking import public_url
from calltrack.console.session import PATH
from calltrack.console.web import Visitor, page, render
from calltrack.store.tracking import CampaignSetup
from calltrack.tracking.snippet import snippet_tag

MESSAGES: Final[dict[str, tuple[str, str]]] = {
    "campaigns.title": ("Campaigns", "Кампании"),
    "campaigns.empty": (
        "The account has no campaigns yet: `calltrack campaign add` makes one.",
        "У аккаунта пока нет кампаний: их создаёт `calltrack campaign add`.",
    ),
    "campaigns.id": ("Campaign {id}", "Кампания {id}"),
    "campaigns.status.active": ("active", "активна"),
    "campaigns.status.paused": ("paused", "приостановлена"),
    "campaigns.status.archived": ("archived", "в архиве"),
    "campaigns.site": ("Site", "Сайт"),
    "campaigns.settings": ("Settings", "Настройки"),
    "campaigns.hold": ("A number is held", "Номер закрепляется"),
    "campaigns.hold_value": (
        "{seconds} s after the visitor's last activity",
        "на {seconds} с после последней активности посетителя",
    ),
    "campaigns.stub": ("Stub (every pool number held)", "Заглушка (все номера пула заняты)"),
    "campaigns.format": ("Display format", "Формат показа"),
    "campaigns.replace": ("The site's own numbers replaced", "Заменяемые номера сайта"),
    "campaigns.selector": ("Elements replaced (CSS)", "Заменяемые элементы (CSS)"),
    "campaigns.unset": ("not set", "не задано"),
    "campaigns.numbers": ("Tracking numbers", "Номера отслеживания"),
    "campaigns.no_numbers": (
        "No tracking numbers: `calltrack phone add` adds them.",
        "Номеров отслеживания нет: их добавляет `calltrack phone add`.",
    ),
    "campaigns.number": ("Number", "Номер"),
    "campaigns.kind": ("Kind", "Вид"),
    "campaigns.kind.static": ("static", "статический"),
    "campaigns.kind.dynamic": ("dynamic (pool)", "динамический (пул)"),
    "campaigns.rules": ("Source rules, tried top-down", "Правила источников, сверху вниз"),
    "campaigns.no_rules": (
        "No rules: every visit gets a pool number, or else the first static number.",
        "Правил нет: каждый визит получает номер из пула, а без пула — первый статический.",
    ),
    "campaigns.rule.id": ("Rule", "Правило"),
    "campaigns.rule.referrer": ("Referrer", "Реферер"),
    "campaigns.rule.source_type": ("Source type", "Тип источника"),
    "campaigns.rule.shows": ("Shows", "Показывает"),
    "campaigns.rule.any": ("any", "любой"),
    "campaigns.rule.pool": ("a pool number", "номер из пула"),
    "campaigns.source.ad": ("ad", "реклама"),
    "campaigns.source.organic": ("organic", "поиск"),
    "campaigns.source.referral": ("referral", "переход с сайта"),
    "campaigns.source.social": ("social", "соцсети"),
    "campaigns.source.direct": ("direct", "прямой заход"),
    "campaigns.pool": ("Pool of dynamic numbers", "Пул динамических номеров"),
    "campaigns.pool.size": ("Numbers in the pool", "Номеров в пуле"),
    "campaigns.pool.held_now": ("Held now", "Занято сейчас"),
    "campaigns.pool.peak": ("Peak held, last 24 h", "Пик занятых за 24 ч"),
    "campaigns.pool.exhausted": (
        "Stub shown (pool exhausted), last 24 h",
        "Показов заглушки (пул исчерпан) за 24 ч",
    ),
    "campaigns.advice.no_pool": (
        "The campaign has no dynamic numbers: add some with `calltrack phone add` and --dynamic.",
        "У кампании нет динамических номеров: добавьте их через `calltrack phone add` с --dynamic.",
    ),
    "campaigns.advice.add": (
        "The peak passed 75% of the pool or a visitor got the stub: add numbers "
        "(about {wanted} in all).",
        "Пик превысил 75% пула или посетитель получил заглушку: добавьте номера "
        "(всего около {wanted}).",
    ),
    "campaigns.advice.enough": ("The pool is large enough.", "Пула достаточно."),
    "campaigns.snippet": ("Snippet", "Сниппет"),
    "campaigns.snippet_hint": (
        "Paste this tag into every page of the campaign's site.",
        "Вставьте этот тег на каждую страницу сайта кампании.",
    ),
    "campaigns.no_site_key": (
        "The campaign has no site key yet: `calltrack campaign snippet` makes one "
        "and prints the tag.",
        "У кампании ещё нет ключа сайта: его создаёт `calltrack campaign snippet`, "
        "она же печатает тег.",
    ),
    "campaigns.copy": ("Copy", "Копировать"),
    "campaigns.copied": ("Copied", "Скопировано"),
}
RULE_CONDITIONS: Final = ("utm_source", "utm_medium", "utm_campaign")


def routes() -> list[BaseRoute]:
    return [Route(PATH + "/campaigns", campaigns_page, methods=["GET", "HEAD"])]


@dataclass(frozen=True, slots=True)
class CampaignView:
    setup: CampaignSetup
    tag: str  # the snippet tag; "" without a site key


@page()
async def campaigns_page(request: Request, visitor: Visitor) -> Response:
    service = service_of(request)
    setups = await service.in_thread(service.store.campaign_setups, visitor.owners[0])
    server = public_url(request, str(request.base_url))  # as `campaign snippet --server`
    views = [
        CampaignView(s, snippet_tag(server, s.campaign.site_key)[1] if s.campaign.site_key else "")
        for s in setups
    ]
    return render(
        request, visitor, "campaigns.html", campaigns=views, rule_conditions=RULE_CONDITIONS
    )
