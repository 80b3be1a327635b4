"""The enrichment of a call record: the caller's place and local time from the number, the
device from the user agent, and the place from the IP through a real (small) MaxMind database
written here."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from calltrack.config import ConfigError
from calltrack.telephony.enrich import (
    MAX_USER_AGENT,
    CallerPlace,
    GeoPlace,
    caller_place,
    check_geoip_db,
    device,
    geoip,
    local_date,
)

# --- the caller's place from the number -------------------------------------------------------


@pytest.mark.parametrize(
    ("digits", "language", "expected"),
    [
        pytest.param(
            "74991234567", "ru", CallerPlace("г. Москва", "Россия", "Europe/Moscow"), id="moscow"
        ),
        # The library's Russian data names 495 after the region around the city.
        pytest.param(
            "74951234567",
            "ru",
            CallerPlace("Московская обл.", "Россия", "Europe/Moscow"),
            id="moscow-495",
        ),
        pytest.param(
            "73833000000",
            "ru",
            CallerPlace("Новосибирская обл.", "Россия", "Asia/Novosibirsk"),
            id="novosibirsk",
        ),
        pytest.param(
            "74012000000",
            "ru",
            CallerPlace("Калининградская обл.", "Россия", "Europe/Kaliningrad"),
            id="kaliningrad-zone-fixed",
        ),
        pytest.param(
            "40211234567",
            "en",
            CallerPlace("Bucharest and Ilfov County", "Romania", "Europe/Bucharest"),
            id="bucharest-keeps-its-zone",
        ),
        pytest.param(
            "74991234567", "en", CallerPlace("Moscow", "Russia", "Europe/Moscow"), id="en"
        ),
        pytest.param(
            "12125551234",
            "ru",
            CallerPlace("New York, NY", "Соединенные Штаты", "America/New_York"),
            id="new-york-no-ru-name",
        ),
        # Russia spans eleven zones: a mobile number does not say which.
        pytest.param("79130381698", "ru", CallerPlace("", "Россия", ""), id="ru-mobile"),
        pytest.param(
            "4915112345678", "ru", CallerPlace("", "Германия", "Europe/Berlin"), id="de-mobile"
        ),
        pytest.param("", "ru", CallerPlace(), id="empty"),
        pytest.param("123", "ru", CallerPlace(), id="too-short"),
        pytest.param("7499123456a", "ru", CallerPlace(), id="not-digits"),
        pytest.param("+74991234567", "ru", CallerPlace(), id="plus-is-not-a-digit"),
        pytest.param("٧٤٩٩١٢٣٤٥٦٧", "ru", CallerPlace(), id="non-ascii-digits"),
        pytest.param("99912345678", "ru", CallerPlace(), id="unknown-country-code"),
    ],
)
def test_caller_place(digits: str, language: str, expected: CallerPlace) -> None:
    assert caller_place(digits, language) == expected


# --- local date and offset --------------------------------------------------------------------


def _at(text: str) -> int:
    """Unix seconds of a UTC ``YYYY-MM-DD HH:MM:SS``."""
    return int(datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp())


@pytest.mark.parametrize(
    ("utc", "caller", "service", "expected"),
    [
        pytest.param(
            "2026-01-15 10:00:00",
            "Asia/Novosibirsk",
            "Europe/Moscow",
            ("2026-01-15 17:00:00", "+0400"),
            id="east-of-the-service",
        ),
        pytest.param(
            "2026-01-15 10:00:00",
            "Europe/Moscow",
            "Europe/Moscow",
            ("2026-01-15 13:00:00", "+0000"),
            id="same-zone",
        ),
        pytest.param(
            "2026-01-15 10:00:00",
            "Europe/London",
            "Europe/Moscow",
            ("2026-01-15 10:00:00", "-0300"),
            id="caller-in-winter-time",
        ),
        pytest.param(
            "2026-07-15 10:00:00",
            "Europe/London",
            "Europe/Moscow",
            ("2026-07-15 11:00:00", "-0200"),
            id="caller-in-summer-time",
        ),
        # The instant London moves its clocks (01:00 UTC): one second apart, an hour apart.
        pytest.param(
            "2026-03-29 00:59:59",
            "Europe/London",
            "Europe/Moscow",
            ("2026-03-29 00:59:59", "-0300"),
            id="second-before-dst",
        ),
        pytest.param(
            "2026-03-29 01:00:00",
            "Europe/London",
            "Europe/Moscow",
            ("2026-03-29 02:00:00", "-0200"),
            id="dst-begins",
        ),
        # The service's own daylight saving time moves the offset the other way.
        pytest.param(
            "2026-01-15 10:00:00",
            "Europe/Moscow",
            "Europe/Berlin",
            ("2026-01-15 13:00:00", "+0200"),
            id="service-in-winter-time",
        ),
        pytest.param(
            "2026-07-15 10:00:00",
            "Europe/Moscow",
            "Europe/Berlin",
            ("2026-07-15 13:00:00", "+0100"),
            id="service-in-summer-time",
        ),
        # The local date is the caller's: after midnight there, before midnight here.
        pytest.param(
            "2026-01-15 20:30:00",
            "Asia/Vladivostok",
            "Europe/Moscow",
            ("2026-01-16 06:30:00", "+0700"),
            id="next-day-for-the-caller",
        ),
        pytest.param(
            "2026-01-15 10:00:00",
            "Asia/Kolkata",
            "Europe/Moscow",
            ("2026-01-15 15:30:00", "+0230"),
            id="half-hour-zone",
        ),
        pytest.param(
            "2026-01-15 10:00:00",
            "America/St_Johns",
            "Europe/Moscow",
            ("2026-01-15 06:30:00", "-0630"),
            id="negative-with-minutes",
        ),
        pytest.param("2026-01-15 10:00:00", "", "Europe/Moscow", ("", ""), id="no-zone"),
        pytest.param("2026-01-15 10:00:00", "Mars/Base", "Europe/Moscow", ("", ""), id="unknown"),
        pytest.param("2026-01-15 10:00:00", "../etc", "Europe/Moscow", ("", ""), id="bad-name"),
    ],
)
def test_local_date(utc: str, caller: str, service: str, expected: tuple[str, str]) -> None:
    assert local_date(_at(utc), caller, service) == expected
    # The service's zone as the settings hold it gives the same answer.
    assert local_date(_at(utc), caller, ZoneInfo(service)) == expected


def test_local_date_of_a_number() -> None:
    """The two steps as a record takes them: the number's zone, then the call's local date."""
    place = caller_place("73833000000")
    assert local_date(_at("2026-07-01 21:00:00"), place.time_zone, "Europe/Moscow") == (
        "2026-07-02 04:00:00",
        "+0400",
    )


# --- device -----------------------------------------------------------------------------------

_WINDOWS_CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)

# Real user agents (browsers' current forms, Yandex's browser, Chrome's reduced Android form,
# crawlers) and the answer for each.
USER_AGENTS = [
    pytest.param(
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1_2 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
        "iPhone",
        id="iphone-safari",
    ),
    pytest.param(
        "Mozilla/5.0 (iPhone; CPU iPhone OS 16_6 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/16.0 YaBrowser/23.7.5.427.10 SA/3 Mobile/15E148 "
        "Safari/604.1",
        "iPhone",
        id="iphone-yandex-browser",
    ),
    pytest.param(
        "Mozilla/5.0 (iPad; CPU OS 12_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/12.1 Mobile/15E148 Safari/604.1",
        "iPad",
        id="ipad-safari",
    ),
    pytest.param(
        "Mozilla/5.0 (iPad; CPU OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "CriOS/119.0.6045.169 Mobile/15E148 Safari/604.1",
        "iPad",
        id="ipad-chrome",
    ),
    pytest.param(
        "Mozilla/5.0 (Linux; Android 13; SM-S901B) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/112.0.0.0 Mobile Safari/537.36",
        "Samsung SM-S901B",
        id="android-samsung-chrome",
    ),
    pytest.param(
        "Mozilla/5.0 (Linux; arm_64; Android 12; SM-A525F) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/108.0.0.0 YaBrowser/22.11.7.42.00 SA/3 Mobile Safari/537.36",
        "Samsung SM-A525F",
        id="android-samsung-yandex-browser",
    ),
    pytest.param(
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/119.0.6045.163 Mobile Safari/537.36",
        "Pixel 8",
        id="android-pixel",
    ),
    pytest.param(
        "Mozilla/5.0 (Linux; Android 12; Redmi Note 11) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/112.0.0.0 Mobile Safari/537.36",
        "XiaoMi Redmi Note 11",
        id="android-xiaomi-named",
    ),
    # A bare model code the parser cannot attribute to a maker is no model: the kind only.
    pytest.param(
        "Mozilla/5.0 (Linux; Android 11; M2101K6G) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/114.0.5735.196 Mobile Safari/537.36",
        "mobile",
        id="android-unknown-maker",
    ),
    # Chrome's reduced user agent names every Android device "K".
    pytest.param(
        "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0.0.0 Mobile Safari/537.36",
        "mobile",
        id="android-reduced-phone",
    ),
    pytest.param(
        "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0.0.0 Safari/537.36",
        "tablet",
        id="android-reduced-tablet",
    ),
    pytest.param(
        "Mozilla/5.0 (Android 13; Mobile; rv:109.0) Gecko/117.0 Firefox/117.0",
        "mobile",
        id="android-firefox-phone",
    ),
    pytest.param(
        "Mozilla/5.0 (Android 13; Tablet; rv:109.0) Gecko/117.0 Firefox/117.0",
        "tablet",
        id="android-firefox-tablet",
    ),
    pytest.param(
        "Mozilla/5.0 (Linux; Android 12; SM-X200) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/110.0.0.0 Safari/537.36",
        "tablet",
        id="android-samsung-tablet",
    ),
    pytest.param(
        "Mozilla/5.0 (Linux; Android 9; KFMAWI) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Silk/118.4.1 like Chrome/118.0.5993.112 Safari/537.36",
        "Kindle",
        id="kindle-fire",
    ),
    pytest.param(_WINDOWS_CHROME, "desktop", id="windows-chrome"),
    pytest.param(_WINDOWS_CHROME + " Edg/120.0.0.0", "desktop", id="windows-edge"),
    pytest.param(
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0",
        "desktop",
        id="windows-firefox",
    ),
    pytest.param(
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/118.0.0.0 YaBrowser/23.11.0.0 Safari/537.36",
        "desktop",
        id="windows-yandex-browser",
    ),
    pytest.param(
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.1 Safari/605.1.15",
        "desktop",
        id="macos-safari",
    ),
    pytest.param(
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0.0.0 Safari/537.36",
        "desktop",
        id="macos-chrome",
    ),
    pytest.param(
        "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
        "desktop",
        id="ubuntu-firefox",
    ),
    pytest.param("Mozilla/5.0 (X11; Linux x86_64)", "desktop", id="linux-short"),
    pytest.param(
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "HeadlessChrome/120.0.0.0 Safari/537.36",
        "desktop",
        id="headless-chrome",
    ),
    pytest.param(
        "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0.0.0 Safari/537.36",
        "desktop",
        id="chromebook",
    ),
    pytest.param(
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "",
        id="googlebot",
    ),
    pytest.param(
        "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/120.0.6099.71 Mobile Safari/537.36 "
        "(compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "",
        id="googlebot-smartphone",
    ),
    pytest.param(
        "Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)", "", id="yandexbot"
    ),
    pytest.param(
        "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
        "",
        id="bingbot",
    ),
    pytest.param("curl/8.4.0", "", id="curl"),
    pytest.param("", "", id="empty"),
    pytest.param("   ", "", id="blank"),
]


@pytest.mark.parametrize(("user_agent", "expected"), USER_AGENTS)
def test_device(user_agent: str, expected: str) -> None:
    assert device(user_agent) == expected


def test_device_reads_only_the_bounded_prefix() -> None:
    """Past MAX_USER_AGENT characters a user agent is not read: a crawler's mark there is not
    seen, and a huge header costs no more than a bounded one."""
    padded = _WINDOWS_CHROME.ljust(MAX_USER_AGENT + 10)
    assert device(padded) == "desktop"
    assert device(padded + " Googlebot/2.1") == "desktop"
    assert device(_WINDOWS_CHROME + " Googlebot/2.1") == ""  # within the bound it is seen
    assert device(_WINDOWS_CHROME + "x" * 1_000_000) == "desktop"


# --- GeoIP ------------------------------------------------------------------------------------

MOSCOW_NET = "81.200.0.0/16"
NOVOSIBIRSK_NET = "2a02:6b8::/32"
NAMELESS_NET = "5.45.0.0/16"


def _names(ru: str | None, en: str) -> dict[str, object]:
    names = {"en": en} | ({"ru": ru} if ru else {})
    return {"names": names}


@pytest.fixture
def geoip_db(tmp_path: Path) -> str:
    """A City-style database: a Moscow IPv4 network named in Russian and English, an IPv6 one
    whose city has only an English name, and one with a record but no names at all."""
    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoIP2-City")
    writer.insert_network(
        IPSet([MOSCOW_NET]),
        {
            "city": _names("Москва", "Moscow"),
            "subdivisions": [_names("Москва", "Moscow")],
            "country": _names("Россия", "Russia") | {"iso_code": "RU"},
        },
    )
    writer.insert_network(
        IPSet([NOVOSIBIRSK_NET]),
        {
            "city": _names(None, "Novosibirsk"),
            "subdivisions": [
                _names("Новосибирская область", "Novosibirsk Oblast"),
                _names(None, "Novosibirsk"),
            ],
            "country": _names("Россия", "Russia"),
        },
    )
    writer.insert_network(IPSet([NAMELESS_NET]), {"location": {"time_zone": "Europe/Moscow"}})
    path = tmp_path / "city.mmdb"
    writer.to_db_file(str(path))
    return str(path)


@pytest.mark.parametrize(
    ("ip", "language", "expected"),
    [
        pytest.param("81.200.1.2", "ru", GeoPlace("Москва", "Москва", "Россия"), id="ipv4-ru"),
        pytest.param("81.200.255.255", "en", GeoPlace("Moscow", "Moscow", "Russia"), id="ipv4-en"),
        pytest.param(
            "2a02:6b8::1",
            "ru",
            GeoPlace("Novosibirsk", "Новосибирская область", "Россия"),
            id="ipv6-english-fallback",
        ),
        pytest.param(" 81.200.1.2 ", "ru", GeoPlace("Москва", "Москва", "Россия"), id="spaces"),
        pytest.param("81.201.0.1", "ru", None, id="next-network-unknown"),
        pytest.param("8.8.8.8", "ru", None, id="unknown"),
        pytest.param("5.45.1.1", "ru", None, id="record-without-names"),
        pytest.param("10.1.2.3", "ru", None, id="private"),
        pytest.param("127.0.0.1", "ru", None, id="loopback"),
        pytest.param("::1", "ru", None, id="ipv6-loopback"),
        pytest.param("fd00::1", "ru", None, id="ipv6-private"),
        pytest.param("not-an-ip", "ru", None, id="invalid"),
        pytest.param("81.200.1.256", "ru", None, id="invalid-octet"),
        pytest.param("", "ru", None, id="empty"),
    ],
)
def test_geoip(geoip_db: str, ip: str, language: str, expected: GeoPlace | None) -> None:
    assert geoip(ip, geoip_db, language) == expected


@pytest.mark.parametrize("configured", [None, ""], ids=["none", "empty"])
def test_geoip_without_a_database(configured: str | None) -> None:
    assert geoip("81.200.1.2", configured) is None


def test_geoip_reader_is_opened_once(geoip_db: str) -> None:
    """The startup check opens the database and lookups reuse it: the file can even go."""
    check_geoip_db(geoip_db)
    Path(geoip_db).unlink()
    assert geoip("81.200.1.2", geoip_db) == GeoPlace("Москва", "Москва", "Россия")


def test_geoip_from_many_threads(geoip_db: str) -> None:
    """Threads racing to the first lookup share one reader and all get the right answers."""
    ips = ["81.200.1.2", "2a02:6b8::1", "8.8.8.8"] * 200
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda ip: geoip(ip, geoip_db), ips))
    expected = [
        GeoPlace("Москва", "Москва", "Россия"),
        GeoPlace("Novosibirsk", "Новосибирская область", "Россия"),
        None,
    ] * 200
    assert answers == expected


def test_missing_database_is_a_config_error(tmp_path: Path) -> None:
    missing = str(tmp_path / "nowhere.mmdb")
    with pytest.raises(ConfigError, match=r"CALLTRACK_GEOIP_DB.*nowhere\.mmdb"):
        check_geoip_db(missing)
    with pytest.raises(ConfigError, match=r"nowhere\.mmdb"):
        geoip("81.200.1.2", missing)


def test_a_file_that_is_no_database_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "city.mmdb"
    path.write_text("not a MaxMind database\n")
    with pytest.raises(ConfigError, match=r"CALLTRACK_GEOIP_DB.*city\.mmdb"):
        check_geoip_db(str(path))
