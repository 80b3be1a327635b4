"""What a call record learns beyond its events: the caller's place and time from their number,
the visitor's device from the user agent, and the visit's place from its IP (GeoIP).

Pure functions over plain data; the libraries' data (phonenumbers' geocoder and time zones,
ua-parser's regexes, a MaxMind database) is loaded once and shared, all of it thread-safe.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from ipaddress import ip_address
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import maxminddb
import phonenumbers
import ua_parser
from phonenumbers import timezone as phone_timezone
from ua_parser import Domain

from calltrack.config import ConfigError

# A user agent is the visitor's own header: past this length it is cut before parsing, so a
# hostile one cannot make the regexes work on kilobytes (real ones are under 300 characters).
MAX_USER_AGENT = 512


@dataclass(frozen=True, slots=True)
class CallerPlace:
    """Where a phone number is from; each field ``""`` when the number does not say."""

    region: str = ""
    country: str = ""
    time_zone: str = ""  # an IANA name, e.g. ``Europe/Moscow``


@dataclass(frozen=True, slots=True)
class GeoPlace:
    """The place a GeoIP database gives an address; a field is ``""`` where it has no name."""

    city: str = ""
    region: str = ""
    country: str = ""


# libphonenumber gives a zone of the same *winter* offset for some regions, which is wrong half
# the year where the two differ on daylight saving time: Kaliningrad (UTC+2 all year) is given
# Europe/Bucharest (UTC+3 in summer). Keyed by the number's region, so Romania keeps its zone.
_ZONE_FIXES = {("RU", "Europe/Bucharest"): "Europe/Kaliningrad"}


def caller_place(digits: str, language: str = "ru") -> CallerPlace:
    """The region, country and time zone of an international number given as digits.

    ``digits`` is the number in E.164 without ``+`` (``74951234567``). A number the library
    cannot place (too short, unknown country code, not digits) gives an empty ``CallerPlace``.
    A mobile number has no region, and a time zone only where its country has one zone.
    """
    # Imported on first use: the geocoder's names for every country in every language load at
    # once (about a second and 100 MB here), which a process that never places a caller (a CLI
    # command importing the app) should not pay.
    from phonenumbers import geocoder

    if not digits.isascii() or not digits.isdigit():
        return CallerPlace()
    try:
        number = phonenumbers.parse("+" + digits)
    except phonenumbers.NumberParseException:
        return CallerPlace()
    if not phonenumbers.is_valid_number(number):
        return CallerPlace()
    country = geocoder.country_name_for_number(number, language)
    # Without an area the geocoder falls back to the country's name: that is no region.
    description = geocoder.description_for_number(number, language)
    region = "" if description == country else description
    return CallerPlace(region, country, _zone_of(number))


def _zone_of(number: phonenumbers.PhoneNumber) -> str:
    zones = phone_timezone.time_zones_for_number(number)
    # Several zones (a mobile number of a country that spans many) means the number does not
    # say which: no zone, rather than a guess that shifts the caller's local time by hours.
    if len(zones) != 1 or zones[0] == phone_timezone.UNKNOWN_TIMEZONE:
        return ""
    region_code = phonenumbers.region_code_for_number(number) or ""
    zone = _ZONE_FIXES.get((region_code, zones[0]), zones[0])
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        return ""  # a name this machine's tz database lacks: better none than a crash
    return zone


def local_date(start_unix: int, zone_name: str, service_zone: str | tzinfo) -> tuple[str, str]:
    """``(localDate, timezoneOffset)`` of a call that started at ``start_unix``.

    ``localDate`` is the start in the caller's zone (``YYYY-MM-DD HH:MM:SS``); the offset is
    ``localDate`` minus ``callTime`` (the start in the service's zone) as ``+HHMM``/``-HHMM``,
    both zones' daylight saving time at that instant included. ``("", "")`` when the zone is
    empty or unknown.
    """
    try:
        caller = ZoneInfo(zone_name) if zone_name else None
    except (ZoneInfoNotFoundError, ValueError):
        caller = None
    if caller is None:
        return "", ""
    service = ZoneInfo(service_zone) if isinstance(service_zone, str) else service_zone
    instant = datetime.fromtimestamp(start_unix, UTC)
    local = instant.astimezone(caller)
    here = instant.astimezone(service)
    difference = (local.utcoffset() or timedelta()) - (here.utcoffset() or timedelta())
    minutes = round(difference.total_seconds() / 60)
    sign = "-" if minutes < 0 else "+"
    hours, rest = divmod(abs(minutes), 60)
    return local.strftime("%Y-%m-%d %H:%M:%S"), f"{sign}{hours:02d}{rest:02d}"


# ua-parser names these brands for devices it recognises only as a kind, not as a model.
_GENERIC_BRANDS = frozenset({"Generic", "Generic_Android", "Generic_Android_Tablet"})
# Operating systems of phones; any other OS ua-parser recognises runs on a computer.
_MOBILE_OS = frozenset(
    {"Android", "iOS", "Windows Phone", "BlackBerry OS", "KaiOS", "Symbian OS", "Firefox OS"}
)


def device(user_agent: str) -> str:
    """``desktop``, ``mobile``, ``tablet`` or the device's model, from a user agent.

    The model (ua-parser's device family: ``iPhone``, ``iPad``, ``Samsung SM-S901B``) where the
    parser knows the maker; computers are always ``desktop`` (their user agents name no
    model). ``""`` for an empty or unrecognised user agent and for bots: none of these is a
    person's device.
    """
    ua = user_agent[:MAX_USER_AGENT]
    if not ua.strip():
        return ""
    # The global parser: the regexes compiled once (by ua-parser-rs when installed), behind a
    # thread-safe cache of recent answers.
    parsed = ua_parser.parser(ua, Domain.DEVICE | Domain.OS)
    found, system = parsed.device, parsed.os
    os_family = system.family if system is not None else "Other"
    if found is None or found.family == "Other":
        if os_family in _MOBILE_OS:
            return "mobile"
        return "" if os_family == "Other" else "desktop"
    if found.family == "Spider":
        return ""
    if os_family == "Mac OS X" or found.family == "Mac":
        return "desktop"
    if found.brand is not None and found.brand not in _GENERIC_BRANDS:
        return found.family
    if found.brand == "Generic_Android_Tablet" or found.model == "Tablet":
        return "tablet"
    return "mobile" if found.brand in _GENERIC_BRANDS else ""


_readers: dict[str, maxminddb.Reader] = {}
_readers_lock = threading.Lock()


def check_geoip_db(path: str) -> None:
    """Open the MaxMind database at ``path`` (kept for later lookups), or raise ``ConfigError``
    naming it: called at startup, so a wrong path stops the service instead of every call."""
    _reader(path)


def _reader(path: str) -> maxminddb.Reader:
    reader = _readers.get(path)
    if reader is not None:
        return reader
    with _readers_lock:
        reader = _readers.get(path)
        if reader is None:
            try:
                reader = maxminddb.open_database(path)
            except (OSError, maxminddb.InvalidDatabaseError, ValueError) as exc:
                raise ConfigError(
                    f"CALLTRACK_GEOIP_DB: cannot open the MaxMind database {path!r}: {exc}"
                ) from exc
            _readers[path] = reader
    return reader


def geoip(ip: str, database_path: str | None, language: str = "ru") -> GeoPlace | None:
    """The city, region and country of a public IP address in a MaxMind City (or Country)
    database, named in ``language`` where the database has it, else in English.

    ``None`` when no database is configured, the address is invalid or not public (private,
    loopback, reserved: no database places those), or the database does not know it.
    """
    if not database_path:
        return None
    try:
        address = ip_address(ip.strip())
    except ValueError:
        return None
    if not address.is_global:
        return None
    record = _reader(database_path).get(address)
    if not isinstance(record, dict):
        return None
    subdivisions = record.get("subdivisions")
    first = subdivisions[0] if isinstance(subdivisions, list) and subdivisions else None
    place = GeoPlace(
        _name(record.get("city"), language),
        # The first subdivision is the largest (a federal subject, a state), as the field means.
        _name(first, language),
        _name(record.get("country"), language),
    )
    return None if place == GeoPlace() else place


def _name(entity: object, language: str) -> str:
    """``entity["names"][language]``, else the English name, else ``""``."""
    names = entity.get("names") if isinstance(entity, dict) else None
    if not isinstance(names, dict):
        return ""
    name = names.get(language) or names.get("en") or ""
    return name if isinstance(name, str) else ""
