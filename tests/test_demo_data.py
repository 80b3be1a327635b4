"""The demo generator yields valid, realistic, reproducible calls (docs/api.md section 7)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, TypedDict, Unpack
from zoneinfo import ZoneInfo

import pytest

from calltrack import model
from calltrack.demo_data import generate_calls

MOSCOW = ZoneInfo("Europe/Moscow")
NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=MOSCOW)

# Section 7 of docs/api.md, in order, without `page` (the generator writes the import format).
KEYS = [
    "universalId", "serviceType", "clientNumber", "managerNumber", "callerIdToManager",
    "callerIdToClient", "statusFirst", "statusSecond", "status", "callTime", "localDate",
    "timezoneOffset", "duration", "tariffTime", "site", "recordUrl", "unique", "target",
    "uniqueTarget", "visitSite", "siteVisit", "referrer", "utm_source", "utm_medium",
    "utm_campaign", "utm_content", "utm_term", "yaClid", "gaClid", "roistatClid",
    "calltouchClid", "comagicClid", "city", "region", "country", "ipAddress", "pagesCount",
    "entryPoint", "entryPointQuery", "callPage", "counts", "userAgent", "device",
    "cbWidgetHash", "cbToolId", "cbCallId", "cbUid", "cbToolName", "cbOfficeNumber",
    "cbOfficeName", "cbOrderDate", "cbAttempt", "cbAttemptsQueue", "cbConnectType",
    "cbSmartCallCount", "cbIvrCount", "cbEventSource", "ctCallId", "ctCampaignId",
    "ctCampaignName", "ctIsListened", "tags", "hooks",
]  # fmt: skip
INT_KEYS = {
    "statusFirst", "statusSecond", "duration", "tariffTime", "pagesCount", "counts", "cbToolId",
    "cbCallId", "cbUid", "cbAttempt", "cbSmartCallCount", "cbIvrCount", "ctCallId",
    "ctCampaignId",
}  # fmt: skip
BOOL_KEYS = {"unique", "target", "uniqueTarget"}
LIST_KEYS = {"cbAttemptsQueue", "tags", "hooks"}
EMPTY: dict[type, object] = {str: "", int: 0, list: []}
IDENTITY = {"cb": ("cbCallId", "cbToolName", "cbUid"), "ct": ("ctCallId", "ctCampaignName")}
EVENT_SOURCES = {"widget", "mobile", "api", "lg", "iform", "form", "ckapp", "hand", "fb", "vk"}
EVENT_SOURCES |= {"ok"}
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


class Options(TypedDict, total=False):
    """generate_calls' keyword arguments that the tests vary (``now`` is always NOW)."""

    seed: int
    days: int
    timezone: str
    id_prefix: str
    sites: Sequence[tuple[str, str]]


def calls(count: int = 3000, **options: Unpack[Options]) -> list[dict[str, object]]:
    options.setdefault("seed", 7)
    return list(generate_calls(count, now=NOW, **options))


def items(value: object) -> list[Any]:
    """A list field's items (the field must be a list)."""
    assert isinstance(value, list), value
    return value


CALLS = calls()


def wall(text: object) -> datetime:
    assert isinstance(text, str)
    return datetime.strptime(text, TIME_FORMAT)


def test_the_same_arguments_give_the_same_calls() -> None:
    assert calls(500) == CALLS[:500]
    assert json.dumps(calls(500)) == json.dumps(CALLS[:500])


def test_another_seed_gives_other_calls() -> None:
    assert calls(50, seed=8) != CALLS[:50]


def test_every_call_has_exactly_the_section_5_keys_in_order_without_page() -> None:
    for call in CALLS:
        assert list(call) == KEYS


def test_every_field_has_its_json_type_and_is_never_null() -> None:
    for call in CALLS:
        for key, value in call.items():
            expected = (
                int if key in INT_KEYS else bool if key in BOOL_KEYS else list if key in LIST_KEYS
                else str
            )  # fmt: skip
            assert type(value) is expected, (key, value)
        assert all(type(item) is int for item in items(call["cbAttemptsQueue"]))
        assert all(type(tag) is str for tag in items(call["tags"]))
        for hook in items(call["hooks"]):
            assert list(hook) == [
                "hookEventName",
                "hookAddress",
                "hookMethod",
                "hookResponseStatus",
            ]
            assert hook["hookEventName"] in {"AFTER_CALL_FINISH", "BEFORE_CALL_START"}
            assert hook["hookMethod"] in {"GET", "POST", "PUT", "DELETE"}
            assert type(hook["hookResponseStatus"]) is int


def test_enumerated_fields_only_take_their_documented_values() -> None:
    for call in CALLS:
        assert call["serviceType"] in {"calltracking", "callback", "import"}
        assert call["status"] in {"success", "fail"}
        assert call["cbConnectType"] in {"", "auto", "smartcall", "dtmf"}
        assert call["cbEventSource"] in EVENT_SOURCES | {""}
        assert call["ctIsListened"] in {"", "0", "1"}
        assert call["visitSite"] == call["siteVisit"]
        assert 0 <= len(items(call["tags"])) <= 3
        assert 0 <= len(items(call["hooks"])) <= 2


def test_service_types_are_mixed_mostly_calltracking_then_callback() -> None:
    shares = Counter(call["serviceType"] for call in CALLS)
    assert 0.55 < shares["calltracking"] / len(CALLS) < 0.65
    assert 0.30 < shares["callback"] / len(CALLS) < 0.40
    assert 0.02 < shares["import"] / len(CALLS) < 0.08


@pytest.mark.parametrize(("prefix", "service"), [("cb", "callback"), ("ct", "calltracking")])
def test_service_specific_fields_are_empty_on_other_services(prefix: str, service: str) -> None:
    for call in CALLS:
        fields = {key: value for key, value in call.items() if key.startswith(prefix)}
        if call["serviceType"] != service:
            assert all(value == EMPTY[type(value)] for value in fields.values()), fields
        else:
            assert all(call[key] for key in IDENTITY[prefix]), call


def test_callbacks_carry_a_connect_type_an_event_source_and_an_order_just_before_the_call() -> None:
    callbacks = [call for call in CALLS if call["serviceType"] == "callback"]
    assert callbacks
    for call in callbacks:
        assert call["cbConnectType"] in {"auto", "smartcall", "dtmf"}
        assert call["cbEventSource"] in EVENT_SOURCES
        assert call["cbAttempt"] == len(items(call["cbAttemptsQueue"])) + 1
        waited = wall(call["callTime"]) - wall(call["cbOrderDate"])
        assert timedelta(seconds=1) <= waited <= timedelta(minutes=15)


def test_status_follows_the_status_codes_and_only_answered_calls_have_talk_time() -> None:
    for call in CALLS:
        answered = call["statusFirst"] == call["statusSecond"] == 200
        assert call["status"] == ("success" if answered else "fail")
        duration = call["duration"]
        assert isinstance(duration, int)
        assert (duration > 0) == answered
        assert call["tariffTime"] == -(-duration // 60)
        assert bool(call["recordUrl"]) == answered
        assert call["uniqueTarget"] == (call["unique"] and call["target"])
    fail_codes = {call["statusSecond"] or call["statusFirst"] for call in CALLS}
    assert {486, 487, 603} <= fail_codes


def test_phone_numbers_are_eleven_digits_starting_with_7() -> None:
    for call in CALLS:
        for key in ("clientNumber", "managerNumber", "callerIdToManager", "callerIdToClient"):
            number = call[key]
            assert isinstance(number, str)
            assert len(number) == 11, (key, number)
            assert number.isdigit(), (key, number)
            assert number.startswith("7"), (key, number)


@pytest.mark.parametrize("zone", ["Europe/Moscow", "Europe/Berlin", "UTC"])
def test_timezone_offset_is_local_date_minus_call_time(zone: str) -> None:
    for call in calls(2000, timezone=zone, days=200):
        offset = call["timezoneOffset"]
        assert isinstance(offset, str)
        minutes = int(offset[1:3]) * 60 + int(offset[3:5])
        shift = timedelta(minutes=-minutes if offset[0] == "-" else minutes)
        assert wall(call["localDate"]) - wall(call["callTime"]) == shift


def test_callers_are_in_russian_zones_from_kaliningrad_to_kamchatka() -> None:
    offsets = {call["timezoneOffset"] for call in CALLS}
    assert offsets <= {f"{h - 3:+03d}00" for h in range(2, 13)}
    assert {"-0100", "+0000", "+0200", "+0900"} <= offsets


@pytest.mark.parametrize("zone", ["Europe/Berlin", "UTC", "Asia/Vladivostok"])
def test_local_date_is_the_callers_utc_time_whatever_the_service_zone(zone: str) -> None:
    tz = ZoneInfo(zone)
    seen = set()
    for call in calls(2000, timezone=zone, days=200):
        service_offset = wall(call["callTime"]).replace(tzinfo=tz).utcoffset()
        assert service_offset is not None
        caller_offset = wall(call["localDate"]) - wall(call["callTime"]) + service_offset
        seen.add(caller_offset)
    assert seen == {timedelta(hours=h) for h in range(2, 13)}


@pytest.mark.parametrize(("zone", "days"), [("Europe/Moscow", 90), ("Europe/Berlin", 200)])
def test_call_times_fall_inside_the_window_before_now(zone: str, days: int) -> None:
    tz = ZoneInfo(zone)
    now = NOW.astimezone(tz)
    for call in calls(2000, timezone=zone, days=days):
        moment = wall(call["callTime"]).replace(tzinfo=tz)
        assert now - timedelta(days=days) <= moment <= now


def test_business_hours_are_busier_than_nights() -> None:
    hours = Counter(wall(call["callTime"]).hour for call in CALLS)
    assert sum(hours[h] for h in range(10, 18)) > 5 * sum(hours[h] for h in range(0, 8))


def test_weekdays_are_busier_than_weekends() -> None:
    days = Counter(wall(call["callTime"]).weekday() >= 5 for call in CALLS)
    assert days[True] / 2 < 0.8 * days[False] / 5


def test_some_calls_share_the_same_second() -> None:
    times = Counter(call["callTime"] for call in calls(5000))
    shared = sum(n for n in times.values() if n > 1)
    assert 10 <= shared <= 500


def test_universal_ids_are_unique_digits_across_prefixes_and_seeds() -> None:
    ids: list[object] = []
    for prefix in ("", "1", "7", "71", "12"):
        for seed in (0, 1, 2, 5, 12, 21, -3):
            ids += [call["universalId"] for call in generate_calls(300, seed=seed, now=NOW,
                                                                   id_prefix=prefix)]  # fmt: skip
    assert all(isinstance(uid, str) and uid.isdigit() for uid in ids)
    assert len(set(ids)) == len(ids)


def test_universal_ids_start_with_the_prefix() -> None:
    assert all(str(call["universalId"]).startswith("7") for call in calls(100, id_prefix="7"))


def test_campaign_ids_and_names_stay_paired_within_a_seed() -> None:
    tracked = [call for call in CALLS if call["serviceType"] == "calltracking"]
    pairs = {(call["ctCampaignId"], call["ctCampaignName"]) for call in tracked}
    assert 2 <= len(pairs) <= 5
    assert len({campaign_id for campaign_id, _ in pairs}) == len(pairs)


def test_text_mixes_russian_and_latin() -> None:
    text = json.dumps(CALLS[:300], ensure_ascii=False)
    assert "Россия" in text
    assert "Mozilla/5.0" in text
    assert any(call["city"] == "Москва" for call in CALLS)


def test_a_bad_prefix_or_count_is_refused() -> None:
    with pytest.raises(ValueError, match="digits"):
        generate_calls(1, id_prefix="a1")
    with pytest.raises(ValueError, match="count"):
        generate_calls(-1)
    assert list(generate_calls(0)) == []


def test_every_call_is_accepted_by_the_record_model() -> None:
    for call in CALLS:
        model.prepare(model.decode_record(json.dumps(call, ensure_ascii=False)), MOSCOW)


def test_given_sites_are_the_only_sites_of_the_calls() -> None:
    own = (("autosalon-kaluga.ru", "купить авто в кредит"), ("kaluga-trade-in.ru", "трейд-ин"))
    generated = calls(2000, sites=own)
    hosts = {str(call["site"]) for call in generated} | {
        str(call["visitSite"]).removeprefix("m.") for call in generated
    }
    assert hosts - {""} == {"autosalon-kaluga.ru", "kaluga-trade-in.ru"}
    terms = {call["utm_term"] for call in generated} - {"", "brand"}
    assert terms == {"купить авто в кредит", "трейд-ин"}


def test_a_site_that_is_not_a_host_name_is_refused() -> None:
    with pytest.raises(ValueError, match="host name"):
        generate_calls(1, sites=[("https://example.ru/", "phrase")])
