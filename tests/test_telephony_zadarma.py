"""Zadarma notifications: the Signature checked as the library computes it, and each mapped
to the one telephony event; bad forms get a ValueError naming the field, nothing else."""

from __future__ import annotations

import base64
import calendar
import hashlib
from dataclasses import replace
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from calltrack.telephony import zadarma
from calltrack.telephony.events import TelephonyEvent
from tests.helpers_tables import cases

SECRET = "a5e3b2c1d0f9e8d7c6b5"
CALL_START = "2026-12-01 12:00:05"
# 12:00:05 in Moscow (UTC+3 all year) is 09:00:05 UTC.
AT = calendar.timegm((2026, 12, 1, 9, 0, 5))


def hmac_sha1_hex(key: bytes, message: bytes) -> str:
    """HMAC-SHA1 written out from RFC 2104, so the test does not share the module's code."""
    block = 64
    if len(key) > block:
        key = hashlib.sha1(key).digest()
    key = key.ljust(block, b"\x00")
    inner = hashlib.sha1(bytes(b ^ 0x36 for b in key) + message).digest()
    return hashlib.sha1(bytes(b ^ 0x5C for b in key) + inner).hexdigest()


def php_signature(text: str, secret: str = SECRET) -> str:
    """``base64_encode(hash_hmac('sha1', $text, $secret))``: PHP's hash_hmac gives hex."""
    return base64.b64encode(hmac_sha1_hex(secret.encode(), text.encode()).encode()).decode()


# Forms as Zadarma posts them, each with the concatenation its library class signs.
START = {
    "event": "NOTIFY_START",
    "call_start": CALL_START,
    "pbx_call_id": "in_2c1f5b0e9d8a7c6b5a4f3e2d1c0b9a8f",
    "caller_id": "+79161234567",
    "called_did": "74951234567",
}
INTERNAL = {**START, "event": "NOTIFY_INTERNAL", "internal": "100"}
IVR = {**START, "event": "NOTIFY_IVR"}
ANSWER = {
    "event": "NOTIFY_ANSWER",
    "call_start": CALL_START,
    "pbx_call_id": START["pbx_call_id"],
    "caller_id": "79161234567",
    "destination": "84957654321",
    "internal": "100",
}
END = {
    **START,
    "event": "NOTIFY_END",
    "internal": "100",
    "duration": "130",
    "disposition": "answered",
    "status_code": "16",
    "is_recorded": "1",
    "call_id_with_rec": "1764579605.3478853",
}
OUT_START = {
    "event": "NOTIFY_OUT_START",
    "call_start": CALL_START,
    "pbx_call_id": "out_9a8b7c6d5e4f",
    "internal": "100",
    "destination": "79161234567",
}
OUT_END = {**OUT_START, "event": "NOTIFY_OUT_END", "duration": "12", "disposition": "answered"}
RECORD = {
    "event": "NOTIFY_RECORD",
    "call_id_with_rec": "1764579605.3478853",
    "pbx_call_id": START["pbx_call_id"],
}

SIGNED = [
    ("start", START, START["caller_id"] + START["called_did"] + CALL_START),
    ("internal", INTERNAL, INTERNAL["caller_id"] + INTERNAL["called_did"] + CALL_START),
    ("ivr", IVR, IVR["caller_id"] + IVR["called_did"] + CALL_START),
    ("answer", ANSWER, ANSWER["caller_id"] + ANSWER["destination"] + CALL_START),
    ("end", END, END["caller_id"] + END["called_did"] + CALL_START),
    ("out start", OUT_START, OUT_START["internal"] + OUT_START["destination"] + CALL_START),
    ("out end", OUT_END, OUT_END["internal"] + OUT_END["destination"] + CALL_START),
    ("record", RECORD, RECORD["pbx_call_id"] + RECORD["call_id_with_rec"]),
]


def test_sign_matches_the_rfc_2202_vector_hex_then_base64() -> None:
    # RFC 2202 test case 2: HMAC-SHA1("Jefe", "what do ya want for nothing?").
    hex_digest = "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
    signed = zadarma.sign("what do ya want for nothing?", "Jefe")
    assert base64.b64decode(signed) == hex_digest.encode()


@pytest.mark.parametrize(("form", "text"), cases(SIGNED))
def test_each_notification_signature_verifies(form: dict[str, str], text: str) -> None:
    assert zadarma.signed_text(form) == text
    assert zadarma.verify(form, php_signature(text), SECRET)


@pytest.mark.parametrize(("form", "text"), cases(SIGNED))
def test_wrong_secret_rejected(form: dict[str, str], text: str) -> None:
    assert not zadarma.verify(form, php_signature(text, SECRET + "x"), SECRET)
    assert not zadarma.verify(form, php_signature(text), SECRET[:-1])


@pytest.mark.parametrize(("form", "text"), cases(SIGNED))
def test_a_changed_signed_field_is_rejected(form: dict[str, str], text: str) -> None:
    signature = php_signature(text)
    fields = zadarma.SIGNED_FIELDS[form["event"]]
    for name in fields:
        changed = {**form, name: form[name] + "1"}
        assert not zadarma.verify(changed, signature, SECRET), name


def test_the_raw_digest_in_base64_is_not_zadarmas_signature() -> None:
    # base64 of the 20 raw bytes is the usual mistake; Zadarma sends base64 of the hex text.
    text = START["caller_id"] + START["called_did"] + CALL_START
    raw = bytes.fromhex(hmac_sha1_hex(SECRET.encode(), text.encode()))
    assert not zadarma.verify(START, base64.b64encode(raw).decode(), SECRET)


def test_fields_outside_the_formula_are_not_covered() -> None:
    # Zadarma signs three fields of NOTIFY_END: the rest (duration, disposition) can change
    # under a valid signature. Pinned here so nobody believes otherwise.
    signature = php_signature(END["caller_id"] + END["called_did"] + CALL_START)
    assert zadarma.verify({**END, "duration": "9999"}, signature, SECRET)


def test_a_missing_field_signs_as_empty_as_in_the_library() -> None:
    form = {k: v for k, v in OUT_START.items() if k != "internal"}
    assert zadarma.verify(form, php_signature(OUT_START["destination"] + CALL_START), SECRET)


@pytest.mark.parametrize(
    ("form", "signature", "secret"),
    cases(
        [
            ("empty secret", START, php_signature("", ""), ""),
            ("empty signature", START, "", SECRET),
            ("unknown event", {**START, "event": "SMS"}, php_signature("x"), SECRET),
            ("no event", {k: v for k, v in START.items() if k != "event"}, "x", SECRET),
            ("long signature", START, "A" * 10_000, SECRET),
            ("non-ascii signature", START, "подпись\udc80", SECRET),
            ("value not text", {**START, "caller_id": None}, "x", SECRET),
        ]
    ),
)
def test_verify_refuses_without_raising(form: dict[str, str], signature: str, secret: str) -> None:
    assert zadarma.verify(form, signature, secret) is False


def test_signature_header_whitespace_is_ignored() -> None:
    text = START["caller_id"] + START["called_did"] + CALL_START
    assert zadarma.verify(START, f" {php_signature(text)}\r\n", SECRET)


def test_parse_start() -> None:
    assert zadarma.parse(START) == TelephonyEvent(
        event="call.started",
        call_id="in_2c1f5b0e9d8a7c6b5a4f3e2d1c0b9a8f",
        at=AT,
        caller="79161234567",
        called="74951234567",
    )


def test_parse_answer_keeps_who_answered() -> None:
    by_phone = TelephonyEvent(
        event="call.answered",
        call_id=START["pbx_call_id"],
        at=AT,
        caller="79161234567",
        forwarded_to="74957654321",
    )
    assert zadarma.parse(ANSWER) == by_phone
    by_extension = replace(by_phone, forwarded_to="100")
    assert zadarma.parse({**ANSWER, "destination": "100"}) == by_extension
    assert zadarma.parse({**ANSWER, "destination": ""}) == by_extension  # then `internal`


def test_parse_end_of_a_recorded_answered_call() -> None:
    assert zadarma.parse(END) == TelephonyEvent(
        event="call.ended",
        call_id=START["pbx_call_id"],
        at=AT + 130,  # the end: Zadarma stamps the start, the talk lasted 130 s
        caller="79161234567",
        called="74951234567",
        forwarded_to="100",
        talk_seconds=130,
        disposition="answered",
        recording_url="zadarma-record:1764579605.3478853",
    )


def test_parse_end_of_a_missed_call_has_no_talk_and_no_recording() -> None:
    missed = {**END, "disposition": "no answer", "duration": "25", "is_recorded": "0"}
    missed.pop("internal")
    event = zadarma.parse(missed)
    assert event is not None
    assert (event.disposition, event.talk_seconds, event.recording_url, event.forwarded_to) == (
        "no_answer",
        0,
        "",
        "",
    )
    no_duration = {k: v for k, v in missed.items() if k != "duration"}
    assert zadarma.parse(no_duration) == event


def test_parse_record() -> None:
    assert zadarma.parse(RECORD, now=1_800_000_000) == TelephonyEvent(
        event="call.recording",
        call_id=START["pbx_call_id"],
        at=1_800_000_000,
        recording_url="zadarma-record:1764579605.3478853",
    )
    event = zadarma.parse(RECORD)
    assert event is not None
    assert event.at > AT  # stamped with the clock when no time is given


def test_call_start_is_read_in_the_given_zone() -> None:
    utc = zadarma.parse(START, zone=ZoneInfo("UTC"))
    vladivostok = zadarma.parse(START, zone=ZoneInfo("Asia/Vladivostok"))
    assert utc is not None
    assert vladivostok is not None
    assert (utc.at - AT, vladivostok.at - AT) == (3 * 3600, -7 * 3600)


def test_a_hidden_caller_is_still_a_call() -> None:
    for caller in ("", "anonymous"):
        event = zadarma.parse({**START, "caller_id": caller})
        assert event is not None
        assert (event.caller, event.called) == ("", "74951234567")


DISPOSITIONS = [
    ("answered", "answered", "answered"),
    ("busy", "busy", "busy"),
    ("cancel", "cancel", "cancelled"),
    ("no answer", "no answer", "no_answer"),
    ("failed", "failed", "failed"),
    ("no money", "no money", "failed"),
    ("unallocated number", "unallocated number", "failed"),
    ("no limit", "no limit", "failed"),
    ("no day limit", "no day limit", "failed"),
    ("line limit", "line limit", "failed"),
    ("no money, no limit", "no money, no limit", "failed"),
    ("no money no limit", "no money no limit", "failed"),
    ("upper case and spaces", "  NO   Answer ", "no_answer"),
    ("unknown is still an ended call", "congestion", "failed"),
]


@pytest.mark.parametrize(("given_", "expected"), cases(DISPOSITIONS))
def test_dispositions(given_: str, expected: str) -> None:
    event = zadarma.parse({**END, "disposition": given_})
    assert event is not None
    assert event.disposition == expected
    assert event.talk_seconds == (130 if expected == "answered" else 0)


@pytest.mark.parametrize("event", ["NOTIFY_INTERNAL", "NOTIFY_IVR", "NOTIFY_OUT_START", "SMS"])
def test_other_notifications_are_not_events(event: str) -> None:
    assert zadarma.parse({**OUT_END, **START, "event": event}) is None
    assert zadarma.parse(OUT_END) is None


BAD = [
    ("no event", START, "event", None, "`event` is missing"),
    ("no call id", START, "pbx_call_id", None, "`pbx_call_id` is missing"),
    ("call id with spaces", START, "pbx_call_id", "in 1; drop", "`pbx_call_id` is"),
    ("no called number", START, "called_did", None, "`called_did` is missing"),
    ("no call start", ANSWER, "call_start", None, "`call_start` is missing"),
    ("iso call start", START, "call_start", "2026-12-01T12:00:05", "expected YYYY-MM-DD"),
    ("no such day", START, "call_start", "2026-02-30 10:00:00", "no such date"),
    ("hour 24", START, "call_start", "2026-12-01 24:00:00", "no such date"),
    ("words", END, "call_start", "yesterday", "expected YYYY-MM-DD"),
    ("before 1970", START, "call_start", "1969-12-31 23:00:00", "before 1970"),
    ("huge call start", START, "call_start", "9" * 1_000_000, "longer than"),
    ("huge caller", START, "caller_id", "7" * 100, "`caller_id` is longer"),
    ("no disposition", END, "disposition", None, "`disposition` is missing"),
    ("no duration answered", END, "duration", None, "`duration` is missing"),
    ("negative duration", END, "duration", "-5", "expected whole seconds"),
    ("fraction duration", END, "duration", "1.5", "expected whole seconds"),
    ("arabic-indic digits", END, "duration", "١٣٠", "expected whole seconds"),
    ("huge duration", END, "duration", "9" * 40, "more than"),
    ("week-long call", END, "duration", "604801", "more than"),
    ("bad recording id", RECORD, "call_id_with_rec", "../../etc", "`call_id_with_rec` is"),
    ("no recording id", RECORD, "call_id_with_rec", None, "`call_id_with_rec` is missing"),
    ("value not text", START, "called_did", 74951234567, "`called_did` is not text"),
]


@pytest.mark.parametrize(("form", "field", "value", "message"), cases(BAD))
def test_bad_forms_name_the_field(
    form: dict[str, object], field: str, value: object, message: str
) -> None:
    # Non-text values on purpose (Any): a form may hold what the parser must refuse.
    bad: dict[str, Any] = {k: v for k, v in form.items() if k != field}
    if value is not None:
        bad[field] = value
    with pytest.raises(ValueError, match=message):
        zadarma.parse(bad)


_KEYS = st.sampled_from(
    [
        "event",
        "call_start",
        "pbx_call_id",
        "caller_id",
        "called_did",
        "destination",
        "internal",
        "duration",
        "disposition",
        "is_recorded",
        "call_id_with_rec",
    ]
)
_VALUES = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        ["NOTIFY_START", "NOTIFY_ANSWER", "NOTIFY_END", "NOTIFY_RECORD", CALL_START, "1", "0"]
    ),
    st.from_regex(r"\A\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\Z"),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
)


@given(st.dictionaries(_KEYS, _VALUES), st.text(max_size=80))
def test_any_form_gives_an_event_none_or_a_value_error(form: dict[str, str], sig: str) -> None:
    assert zadarma.verify(form, sig, SECRET) in (True, False)
    event: TelephonyEvent | None = None
    try:
        event = zadarma.parse(form, now=0)
    except ValueError as exc:
        message = str(exc)
    else:
        message = ""
    assert message == "" or message.startswith("`"), message  # a refusal names the field
    if not message and event is not None:
        assert event.at >= 0
        assert event.talk_seconds is None or 0 <= event.talk_seconds <= zadarma.MAX_TALK_SECONDS
        assert event.caller.isdigit() or event.caller == ""


def test_echo_reply() -> None:
    assert zadarma.echo_reply({"zd_echo": "f3a9c1e2b7"}) == "f3a9c1e2b7"
    assert zadarma.echo_reply({}) is None
    assert zadarma.echo_reply({"zd_echo": ""}) is None
    assert zadarma.echo_reply({"zd_echo": "a-b_c.d~e:f"}) == "a-b_c.d~e:f"
    for markup in ("<script>", "a&b", 'a"b', "a'b"):
        assert zadarma.echo_reply({"zd_echo": markup}) is None
    assert zadarma.echo_reply({"zd_echo": "two words"}) is None
    assert zadarma.echo_reply({"zd_echo": "x" * 257}) is None
