"""Deterministic, realistic demo calls in the import format (docs/api.md sections 7 and 9)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import date, datetime
from functools import cache
from itertools import combinations
from math import log
from random import Random
from typing import TypeVar
from zoneinfo import ZoneInfo

__all__ = ["generate_calls"]

_T = TypeVar("_T")


def _weighted(pairs: Sequence[tuple[_T, int]]) -> tuple[_T, ...]:
    # Repeating each item by its weight makes a weighted pick one random() and one index.
    return tuple(item for item, weight in pairs for _ in range(weight))


# fmt: off
# (city, region, UTC offset in hours) of the caller: Kaliningrad (+2) to Kamchatka (+12).
_GEO = _weighted([
    (("Москва", "Москва", 3), 30), (("Санкт-Петербург", "Санкт-Петербург", 3), 12),
    (("Новосибирск", "Новосибирская область", 7), 5),
    (("Екатеринбург", "Свердловская область", 5), 5),
    (("Казань", "Республика Татарстан", 3), 4),
    (("Нижний Новгород", "Нижегородская область", 3), 4),
    (("Краснодар", "Краснодарский край", 3), 4), (("Ростов-на-Дону", "Ростовская область", 3), 3),
    (("Самара", "Самарская область", 4), 3), (("Уфа", "Республика Башкортостан", 5), 3),
    (("Челябинск", "Челябинская область", 5), 3), (("Пермь", "Пермский край", 5), 2),
    (("Омск", "Омская область", 6), 2), (("Красноярск", "Красноярский край", 7), 2),
    (("Калининград", "Калининградская область", 2), 2), (("Иркутск", "Иркутская область", 8), 2),
    (("Якутск", "Республика Саха (Якутия)", 9), 1), (("Владивосток", "Приморский край", 10), 2),
    (("Хабаровск", "Хабаровский край", 10), 1), (("Магадан", "Магаданская область", 11), 1),
    (("Петропавловск-Камчатский", "Камчатский край", 12), 1),
])
# Calls per hour of the service day: quiet nights, a business-hours plateau, a fading evening.
_HOURS = _weighted(list(enumerate((1, 1, 1, 1, 1, 2, 4, 8, 15, 22, 24, 24,
                                   20, 22, 23, 22, 19, 15, 10, 7, 5, 4, 2, 1))))
# (site, its typical search phrase)
_SITES = (
    ("mebel-market.ru", "купить диван"), ("okna-profi.ru", "пластиковые окна цена"),
    ("autosalon-kaluga.ru", "купить авто в кредит"), ("stroymaterialy24.ru", "кирпич оптом"),
    ("dental-smile.ru", "стоматология рядом"), ("flowers-msk.ru", "доставка цветов москва"),
    ("remont-kvartir.pro", "ремонт квартир под ключ"), ("english-school.online", "english courses"),
)
# (ctCampaignName, utm_campaign, utm_source, utm_medium, referrer); offline ones carry no utm.
_CAMPAIGNS = (
    ("Весенняя распродажа", "spring_sale", "yandex", "cpc", "https://yandex.ru/"),
    ("Яндекс Директ — поиск", "yd_search", "yandex", "cpc", "https://yandex.ru/"),
    ("Google Ads", "google_ads", "google", "cpc", "https://www.google.com/"),
    ("Брендовый трафик", "brand", "yandex", "cpc", "https://yandex.ru/"),
    ("Чёрная пятница", "black_friday", "email", "email", "https://e.mail.ru/"),
    ("Ретаргетинг ВКонтакте", "vk_retarget", "vk", "social", "https://vk.com/"),
    ("Telegram Ads", "tg_ads", "telegram", "messenger", "https://t.me/"),
    ("Новогодняя акция", "new_year", "yandex", "cpc", "https://yandex.ru/"),
    ("SEO", "", "", "", "https://www.google.com/"),
    ("Наружная реклама", "", "", "", ""), ("Радио Европа Плюс", "", "", "", ""),
)
# (cbEventSource, cbToolName, weight); the sources in _NO_VISIT leave no site visit behind.
_TOOLS = (
    ("widget", "Виджет обратного звонка", 40), ("mobile", "Мобильный виджет", 15),
    ("form", "Форма на сайте", 10), ("iform", "Всплывающая форма", 6), ("lg", "Лидогенератор", 6),
    ("api", "API", 6), ("ckapp", "Мобильное приложение", 4), ("hand", "Ручной звонок", 5),
    ("vk", "ВКонтакте", 4), ("fb", "Facebook", 2), ("ok", "Одноклассники", 2),
)
_NO_VISIT = frozenset({"api", "ckapp", "hand", "vk", "fb", "ok"})
_OFFICES = (("0", "Moscow office"), ("1", "Офис на Тверской"),
            ("2", "Санкт-Петербург, Невский пр."), ("3", "Склад в Подольске"))
# Traffic of visits not tied to a calltracking campaign: (utm_source, utm_medium, referrer).
_TRAFFIC = _weighted([
    (("yandex", "cpc", "https://yandex.ru/"), 30),
    (("google", "cpc", "https://www.google.com/"), 15),
    (("vk", "social", "https://vk.com/"), 8), (("telegram", "messenger", "https://t.me/"), 4),
    (("", "", "https://yandex.ru/"), 15), (("", "", "https://www.google.com/"), 6),
    (("", "", "https://go.mail.ru/"), 2), (("", "", ""), 20),
])
_CONTENTS = ("banner_1", "text_ad_3", "carousel", "video_15s", "")
_PATHS = ("", "catalog/", "catalog/novinki/", "akcii/", "kontakty/", "blog/kak-vybrat/",
          "dostavka/", "uslugi/", "price/")
_WEBKIT = "AppleWebKit/537.36 (KHTML, like Gecko)"
_SAFARI = "AppleWebKit/605.1.15 (KHTML, like Gecko)"
_AGENTS = _weighted([
    ((f"Mozilla/5.0 (Windows NT 10.0; Win64; x64) {_WEBKIT} Chrome/120.0.0.0 Safari/537.36",
      "desktop"), 30),
    ((f"Mozilla/5.0 (Windows NT 10.0; Win64; x64) {_WEBKIT} Chrome/118.0.0.0 "
      "YaBrowser/23.11.0.0 Safari/537.36", "desktop"), 15),
    ((f"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) {_SAFARI} Version/17.1 Safari/605.1.15",
      "desktop"), 6),
    ((f"Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) {_SAFARI} Version/17.1 "
      "Mobile/15E148 Safari/604.1", "iPhone 13"), 20),
    ((f"Mozilla/5.0 (Linux; Android 13; SM-A525F) {_WEBKIT} Chrome/119.0.0.0 Mobile Safari/537.36",
      "Samsung Galaxy A52"), 14),
    ((f"Mozilla/5.0 (Linux; Android 12; Redmi Note 10 Pro) {_WEBKIT} Chrome/119.0.0.0 Mobile "
      "Safari/537.36", "Xiaomi Redmi Note 10 Pro"), 14),
])
_IP_FIRST = (5, 31, 37, 46, 77, 78, 79, 80, 83, 85, 87, 89, 91, 92, 93, 94, 95, 109, 176, 178,
             185, 188, 193, 194, 195, 212, 213, 217)
_TAGS = ("Новый клиент", "Повторный звонок", "Заказ", "Консультация", "Спам", "Жалоба", "VIP",
         "lead", "sale", "support", "missed", "callback")
_FAIL_CODES = (486, 486, 487, 487, 603, 480, 408)  # busy, cancelled, declined, away, no answer
_HOOK_STATUSES = (200, 200, 200, 200, 200, 200, 201, 204, 400, 404, 500, 502, 504)
_HOOK_URLS = ("https://crm.example.ru/hooks/calls", "https://hooks.amocrm.ru/calltrack/in",
              "https://b24-demo.bitrix24.ru/rest/1/hook/telephony",
              "https://api.analytics.example.com/v1/calls")
_RECORDS = "https://records.calltrack.ru/"
# Section 7 of docs/api.md in order, without `page`, each with its empty value. A record starts
# as a copy of this (a 63-key dict literal costs ~2.7 us, a copy ~0.2 us) and sets what it has.
_EMPTY: dict[str, object] = dict.fromkeys((
    "universalId", "serviceType", "clientNumber", "managerNumber", "callerIdToManager",
    "callerIdToClient", "statusFirst", "statusSecond", "status", "callTime", "localDate",
    "timezoneOffset", "duration", "tariffTime", "site", "recordUrl", "unique", "target",
    "uniqueTarget", "visitSite", "siteVisit", "referrer", "utm_source", "utm_medium",
    "utm_campaign", "utm_content", "utm_term", "yaClid", "gaClid", "roistatClid", "calltouchClid",
    "comagicClid", "city", "region", "country", "ipAddress", "pagesCount", "entryPoint",
    "entryPointQuery", "callPage", "counts", "userAgent", "device", "cbWidgetHash", "cbToolId",
    "cbCallId", "cbUid", "cbToolName", "cbOfficeNumber", "cbOfficeName", "cbOrderDate",
    "cbAttempt", "cbAttemptsQueue", "cbConnectType", "cbSmartCallCount", "cbIvrCount",
    "cbEventSource", "ctCallId", "ctCampaignId", "ctCampaignName", "ctIsListened", "tags", "hooks",
), "")
_EMPTY.update(dict.fromkeys((
    "statusFirst", "statusSecond", "duration", "tariffTime", "pagesCount", "counts", "cbToolId",
    "cbCallId", "cbUid", "cbAttempt", "cbSmartCallCount", "cbIvrCount", "ctCallId", "ctCampaignId",
), 0))
_EMPTY.update(unique=False, target=False, uniqueTarget=False)
# Tag sets by size: a uniform pick inside a size is one index, never a sample().
_TAG_SETS = tuple(tuple(list(c) for c in combinations(_TAGS, k)) for k in (1, 2, 3))


def _hook(event: str, url: str, method: str, status: int) -> dict[str, object]:
    return {"hookEventName": event, "hookAddress": url, "hookMethod": method,
            "hookResponseStatus": status}
# fmt: on


@cache
def _clock() -> tuple[str, ...]:
    """Every "HH:MM:SS" of a day, indexed by second of day."""
    return tuple(f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}" for s in range(86400))


@cache
def _offset_text(seconds: int) -> str:
    minutes = abs(seconds) // 60
    return f"{'-' if seconds < 0 else '+'}{minutes // 60:02d}{minutes % 60:02d}"


def _utc_offset(moment: datetime) -> int:
    offset = moment.utcoffset()
    return 0 if offset is None else int(offset.total_seconds())


def generate_calls(
    count: int,
    *,
    seed: int = 0,
    days: int = 90,
    now: datetime | None = None,
    timezone: str = "Europe/Moscow",
    id_prefix: str = "",
    sites: Sequence[tuple[str, str]] = (),
) -> Iterator[dict[str, object]]:
    """Yield ``count`` calls (every key of a call record but ``page``); same arguments, same calls.

    ``sites`` are the account's (site, its typical search phrase) pairs; without them the seed
    picks three of a stock list.
    """
    if count < 0 or days < 1:
        raise ValueError("count must be >= 0 and days >= 1")
    if id_prefix and not id_prefix.isdigit():
        raise ValueError("id_prefix must be digits")
    if not all(site and "/" not in site for site, _phrase in sites):
        raise ValueError("a site is a host name, like example.ru")
    tz = ZoneInfo(timezone)  # checked here, like the rest, not at the first next()
    now = datetime.now(tz) if now is None else now.replace(tzinfo=tz) if not now.tzinfo else now
    return _generate(count, seed, days, int(now.timestamp()), tz, id_prefix, tuple(sites))


def _generate(
    count: int,
    seed: int,
    days: int,
    end: int,
    tz: ZoneInfo,
    id_prefix: str,
    own_sites: tuple[tuple[str, str], ...],
) -> Iterator[dict[str, object]]:
    start = end - days * 86400
    rng = Random(seed)
    rnd, bits = rng.random, rng.getrandbits

    # One entry per service-zone date of the window: (ordinal, midnight instant, UTC offset, one
    # offset all day, weekend). On one-offset days wall time is midnight + seconds: no zoneinfo.
    day_list: list[tuple[int, int, int, bool, bool]] = []
    first_day = datetime.fromtimestamp(start, tz).toordinal()
    for ordinal in range(first_day, datetime.fromtimestamp(end, tz).toordinal() + 1):
        midnight = datetime.fromordinal(ordinal).replace(tzinfo=tz)
        off = _utc_offset(midnight)
        steady = off == _utc_offset(datetime.fromordinal(ordinal + 1).replace(tzinfo=tz))
        day_list.append((ordinal, int(midnight.timestamp()), off, steady, midnight.weekday() >= 5))
    n_days, clock = len(day_list), _clock()
    day_text: dict[int, str] = {}

    def pick_time() -> tuple[int, int]:
        """(wall seconds since day 0 in the service zone, its UTC offset), inside the window."""
        while True:
            ordinal, midnight, off, steady, weekend = day_list[int(rnd() * n_days)]
            if weekend and rnd() < 0.45:  # weekends get about half the calls of a weekday
                continue
            second = _HOURS[int(rnd() * len(_HOURS))] * 3600 + int(rnd() * 3600)
            instant = midnight + second
            if not start <= instant <= end:
                continue
            if steady:
                return ordinal * 86400 + second, off
            moment = datetime.fromtimestamp(instant, tz)
            wall = moment.toordinal() * 86400 + moment.hour * 3600 + moment.minute * 60
            return wall + moment.second, _utc_offset(moment)

    def fmt(wall: int) -> str:
        ordinal, second = divmod(wall, 86400)
        text = day_text.get(ordinal)
        if text is None:
            text = day_text[ordinal] = date.fromordinal(ordinal).isoformat() + " "
        return text + clock[second]

    # The account behind this seed: its sites, campaigns, tools, phone lines and id ranges.
    sites = own_sites or rng.sample(_SITES, 3)
    campaigns = [(rng.randrange(1000, 9000), *c, *rng.choice(sites), f"7495{bits(23):07d}")
                 for c in rng.sample(_CAMPAIGNS, 5)]  # fmt: skip
    by_source = {c[3]: c[2] for c in campaigns if c[3]}
    tools = _weighted([((rng.randrange(1000, 99999), name, source, f"{bits(128):032x}",
                         *rng.choice(sites)), w) for source, name, w in _TOOLS])  # fmt: skip
    managers = [f"7{rng.choice(('495', '499', '812', '343'))}{bits(23):07d}" for _ in range(4)]
    lines = [f"7800{bits(23):07d}" for _ in range(2)]
    cb_uid, cb_base, ct_base = rng.randrange(1000, 99999), 10**7 + bits(26), 10**5 + bits(19)
    # prefix + seed tag + tag length + 10-digit counter reads back unambiguously from the right,
    # so ids never collide across prefixes or seeds. The tag is injective and never starts with 0.
    seed_tag = str(2 * seed + 1 if seed >= 0 else -2 * seed)
    id_head = f"{id_prefix}{seed_tag}{len(seed_tag):02d}"
    prev = (0, 0)

    for i in range(count):
        d = _EMPTY.copy()
        d["universalId"] = uid = f"{id_head}{i:010d}"
        r = rnd()
        service = "calltracking" if r < 0.6 else "callback" if r < 0.95 else "import"
        d["serviceType"] = service
        wall, service_off = prev if i and rnd() < 0.01 else pick_time()  # ~1% share a second
        prev = (wall, service_off)
        d["callTime"] = fmt(wall)
        city, region, caller_hours = _GEO[int(rnd() * len(_GEO))]
        shift = caller_hours * 3600 - service_off
        d["localDate"] = fmt(wall + shift)
        d["timezoneOffset"] = _offset_text(shift)
        if rnd() >= 0.05:  # else the caller's location is unknown
            d["city"], d["region"], d["country"] = city, region, "Россия"
        r = rnd()
        d["clientNumber"] = d["callerIdToManager"] = (
            f"79{int(r * 1.2e9):09d}" if r < 0.8 else f"7495{bits(23):07d}"
        )
        d["managerNumber"], d["callerIdToClient"] = managers[i & 3], lines[i & 1]

        answered = rnd() < 0.74
        if answered:
            d["statusFirst"] = d["statusSecond"] = 200
            d["status"], duration = "success", min(3600, 8 + int(-140.0 * log(1.0 - rnd())))
            d["duration"], d["tariffTime"] = duration, (duration + 59) // 60
            d["recordUrl"] = f"{_RECORDS}{uid}.mp3"
            d["target"] = target = duration >= 120  # the roadmap's default target threshold
        else:
            code, target = _FAIL_CODES[int(rnd() * 7)], False
            d["status"], d["statusFirst"], d["statusSecond"] = "fail", 200, code
            if service == "callback" and rnd() < 0.4:  # no operator answered: client not dialled
                d["statusFirst"], d["statusSecond"] = code, 0
        d["unique"] = unique = rnd() < 0.6
        d["uniqueTarget"] = unique and target

        slug = ""
        if service == "calltracking":
            ct_id, d["ctCampaignName"], slug, c_src, c_medium, c_ref, site, term, tracking = (
                campaigns[int(rnd() * 5)]
            )
            d["ctCampaignId"], d["ctCallId"], d["callerIdToClient"] = ct_id, ct_base + i, tracking
            if answered:
                d["ctIsListened"] = "1" if rnd() < 0.4 else "0"
            visit = rnd() < (0.9 if c_ref else 0.15)
        elif service == "callback":
            tool_id, d["cbToolName"], source, d["cbWidgetHash"], site, term = tools[
                int(rnd() * len(tools))
            ]
            d["cbToolId"], d["cbEventSource"], d["cbUid"] = tool_id, source, cb_uid
            d["cbOfficeNumber"], d["cbOfficeName"] = _OFFICES[i & 3]
            r = rnd()
            attempt = 1 if r < 0.7 else 2 if r < 0.9 else 3
            d["cbAttempt"], d["cbCallId"] = attempt, cb_base + 4 * i + 3
            d["cbAttemptsQueue"] = [cb_base + 4 * i + k for k in range(attempt - 1)]
            r = rnd()
            d["cbConnectType"] = "auto" if r < 0.6 else "smartcall" if r < 0.85 else "dtmf"
            d["cbSmartCallCount"] = 0 if r < 0.6 else 1 + int(rnd() * 4)
            d["cbIvrCount"] = int(rnd() * 3)
            d["cbOrderDate"] = fmt(wall - 3 - int(rnd() * rnd() * 600))
            if rnd() < 0.3:  # the operator is shown the service line, not the client
                d["callerIdToManager"] = lines[0]
            visit = source not in _NO_VISIT
        else:
            site, term = sites[i % len(sites)] if rnd() < 0.5 else ("", "")
            visit = bool(site) and rnd() < 0.6
        d["site"] = site

        if visit:
            d["visitSite"] = d["siteVisit"] = host = site if rnd() < 0.85 else "m." + site
            if slug:  # a calltracking call: its campaign brought the visit
                src, medium, referrer, campaign = c_src, c_medium, c_ref, slug
                if src and rnd() < 0.1:  # the visitor lost the campaign's tags on the way
                    src = medium = campaign = ""
            else:
                src, medium, referrer = _TRAFFIC[int(rnd() * len(_TRAFFIC))]
                campaign = by_source.get(src) or f"{src}_general" if src else ""
            d["referrer"] = referrer
            d["entryPoint"] = d["entryPointQuery"] = entry = f"https://{host}/{_PATHS[i % 9]}"
            if src:
                d["utm_source"], d["utm_medium"], d["utm_campaign"] = src, medium, campaign
                d["utm_content"] = _CONTENTS[int(rnd() * 5)]
                if medium == "cpc":
                    d["utm_term"] = "brand" if campaign == "brand" else term
                d["entryPointQuery"] = f"{entry}?utm_source={src}&utm_medium={medium}"
            d["callPage"] = f"https://{host}/{_PATHS[int(rnd() * 9)]}"
            r = rnd()
            if src == "yandex" or r < 0.3:
                d["yaClid"] = str(10**17 + int(r * 9e17))
            r = rnd()
            if r < 0.4:
                d["gaClid"] = f"{10**8 + int(r * 2e9)}.{start + int(r * 3e4) * days}"
            r = rnd()
            if r < 0.24:  # a site runs at most one of these analytics services
                key = "roistatClid" if r < 0.1 else "calltouchClid" if r < 0.18 else "comagicClid"
                d[key] = str(10**7 + int(r * 3e9))
            b = bits(29)
            octets = f"{(b >> 16) & 255}.{(b >> 8) & 255}.{1 + (b & 255) % 254}"
            d["ipAddress"] = f"{_IP_FIRST[(b >> 24) % 28]}.{octets}"
            d["userAgent"], d["device"] = _AGENTS[int(rnd() * len(_AGENTS))]
            d["pagesCount"], d["counts"] = 1 + int(rnd() * rnd() * 15), 1 + int(rnd() * rnd() * 20)

        r = rnd()
        options = _TAG_SETS[0 if r < 0.7 else 1 if r < 0.9 else 2]
        d["tags"] = options[int(rnd() * len(options))].copy() if r >= 0.4 else []
        r = rnd()
        d["hooks"] = hooks = []
        if r < 0.4:
            url, method = _HOOK_URLS[i & 3], "GET" if r < 0.05 else "POST"
            if r < 0.1:
                hooks.append(_hook("BEFORE_CALL_START", url, method, _HOOK_STATUSES[i % 13]))
            hooks.append(_hook("AFTER_CALL_FINISH", url, method, _HOOK_STATUSES[(i >> 2) % 13]))
        if service != "callback":
            d["cbAttemptsQueue"] = []
        yield d
