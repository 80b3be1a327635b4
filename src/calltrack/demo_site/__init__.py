"""The demo site: a car dealer's three pages whose phone number the snippet swaps."""

from __future__ import annotations

import html
from importlib.resources import files
from typing import Final

PAGES: Final = {
    "": (
        "Новые автомобили в Калуге",
        "Более 300 автомобилей в наличии, тест-драйв в день обращения.",
    ),
    "catalog": ("Каталог", "Седаны, кроссоверы и внедорожники: цены и комплектации."),
    "contacts": ("Контакты", "Калуга, ул. Московская, 1. Ежедневно с 9 до 21."),
}


def demo_page(name: str, site_key: str) -> bytes | None:
    """The page ``name`` ("" is the home page) with the snippet of ``site_key``, or None."""
    if name not in PAGES:
        return None
    title, text = PAGES[name]
    template = files(__package__).joinpath("page.html").read_text(encoding="utf-8")
    page = template.replace("%TITLE%", html.escape(title)).replace("%TEXT%", html.escape(text))
    return page.replace("%SITE_KEY%", html.escape(site_key)).encode()
