"""The console's words in English and Russian, and which language a request gets.

Each page module keeps its own messages (``MESSAGES``: key -> (English, Russian)); ``Catalog``
joins them and refuses a key defined twice. The language is the ``lang`` cookie (set by the
switch in the page header) or else the best of ``Accept-Language``; English otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Final

LANGUAGES: Final = ("en", "ru")
DEFAULT: Final = "en"

Messages = Mapping[str, tuple[str, str]]
Translate = Callable[..., str]

MESSAGES: Final[Messages] = {
    "app.name": ("calltrack console", "Консоль calltrack"),
    "nav.overview": ("Overview", "Обзор"),
    "nav.calls": ("Calls", "Звонки"),
    "nav.campaigns": ("Campaigns", "Кампании"),
    "nav.settings": ("Settings", "Настройки"),
    "nav.sign_out": ("Sign out", "Выйти"),
    "nav.language": ("Language", "Язык"),
    "nav.read_only": ("read-only: calls of {account}", "только чтение: звонки {account}"),
    "nav.account": ("Account {account}", "Аккаунт {account}"),
    "sign_in.title": ("Sign in", "Вход"),
    "sign_in.key": ("API key (a user key or a role key)", "API-ключ (ключ пользователя или роли)"),
    "sign_in.submit": ("Sign in", "Войти"),
    "sign_in.hint": (
        "The key is checked and never shown again; the session lasts {hours} hours.",
        "Ключ проверяется и больше нигде не показывается; сессия длится {hours} ч.",
    ),
    "sign_in.unknown": ("The key is unknown or revoked.", "Ключ неизвестен или отозван."),
    "sign_in.too_many": (
        "Too many failed sign-ins from this address; try again in {minutes} minutes.",
        "Слишком много неудачных попыток входа с этого адреса; повторите через {minutes} мин.",
    ),
    "sign_in.expired": (
        "The form expired; please sign in again.",
        "Форма устарела; войдите ещё раз.",
    ),
    "error.csrf": (
        "The form was not sent from this console (its token is missing or stale); "
        "nothing was changed. Reload the page and try again.",
        "Форма отправлена не из этой консоли (нет токена или он устарел); ничего не изменено. "
        "Обновите страницу и повторите.",
    ),
    "error.forbidden": (
        "A role key opens a read-only console: settings need a user key.",
        "Ключ роли открывает консоль только для чтения: настройки доступны с ключом пользователя.",
    ),
    "error.not_found": ("Nothing here.", "Здесь ничего нет."),
    "error.unavailable": (
        "The database does not answer; try again in a few seconds.",
        "База данных не отвечает; повторите через несколько секунд.",
    ),
    "error.bad_parameter": ("{name}: {detail}", "{name}: {detail}"),
    "period.today": ("Today", "Сегодня"),
    "period.7d": ("7 days", "7 дней"),
    "period.30d": ("30 days", "30 дней"),
    "period.custom": ("Custom", "Свой период"),
    "period.from": ("From", "С"),
    "period.to": ("To", "По"),
    "period.apply": ("Show", "Показать"),
    "period.range": ("{start} – {end}", "{start} – {end}"),
    "period.previous": ("against {start} – {end}", "к периоду {start} – {end}"),
    "count.calls": ("Calls", "Звонки"),
    "count.answered": ("Answered", "Отвеченные"),
    "count.unique": ("Unique", "Уникальные"),
    "count.target": ("Target", "Целевые"),
    "count.uniqueTarget": ("Unique target", "Уникально-целевые"),
    "overview.title": ("Overview", "Обзор"),
    "overview.chart": ("Calls per day by source", "Звонки по дням и источникам"),
    "overview.chart_empty": ("No calls in this period.", "В этом периоде звонков нет."),
    "overview.top_sources": ("Top sources", "Лучшие источники"),
    "overview.top_campaigns": ("Top campaigns", "Лучшие кампании"),
    "overview.top_utm": ("Top utm campaigns", "Лучшие utm-кампании"),
    "overview.source": ("Source", "Источник"),
    "overview.campaign": ("Campaign", "Кампания"),
    "overview.utm_campaign": ("utm_campaign", "utm_campaign"),
    "overview.none": ("(none)", "(нет)"),
    "overview.new": ("new", "новое"),
    "overview.day": ("Day", "День"),
}


class Catalog:
    """Every message of the console, by key, in each language."""

    def __init__(self, *parts: Messages) -> None:
        self._messages: dict[str, tuple[str, str]] = {}
        for part in parts:
            for key, texts in part.items():
                if key in self._messages:
                    raise ValueError(f"console message {key!r} is defined twice")
                self._messages[key] = texts

    def __iter__(self) -> Iterator[str]:
        return iter(self._messages)

    def texts(self, key: str) -> tuple[str, str]:
        """The message in each language, in the order of ``LANGUAGES``."""
        return self._messages[key]

    def translator(self, language: str) -> Translate:
        index = LANGUAGES.index(language)

        def translate(key: str, /, **values: object) -> str:
            text = self._messages[key][index]  # a missing key is a bug: KeyError, loudly
            return text.format(**values) if values else text

        return translate


def choose(cookie: str | None, accept_language: str | None) -> str:
    """The language of a request: its cookie's if valid, else Accept-Language's best."""
    if cookie in LANGUAGES:
        return str(cookie)
    best, best_q = DEFAULT, -1.0
    for position, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        language = tag.strip().lower().split("-")[0]
        if language not in LANGUAGES:
            continue
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        q -= position * 1e-6  # equal weights: the first listed wins
        if q > best_q and q > 0:
            best, best_q = language, q
    return best
