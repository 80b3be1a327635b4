"""The v3 request: its parser, and the contract's checks in the order the handler runs them.

The tables go through ``api.handler.check``, the first step of every answer, over a real
SQLite store that knows ``KEY`` (a user key) and ``ROLE_KEY`` (a role key): so the checks
that need the store (3: the key, 6: the key's kind) take their real place among the others.
Errors 10 and 11 (no rows, a page past the end) need calls and are tested in ``test_api``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from calltrack import access
from calltrack.api.handler import check
from calltrack.api.request import PageQuery, parse, redact_query
from calltrack.config import Settings
from calltrack.errors import (
    ApiError,
    BadEnd,
    BadPage,
    BadStart,
    FormatNotAvailable,
    HttpMethodNotAllowed,
    MissingCallId,
    UnknownEntity,
    UnknownKey,
    UnknownMethod,
    WrongVersion,
)
from calltrack.protocol import WRITE_METHODS
from calltrack.store import Store, Window, open_store

MOSCOW = ZoneInfo("Europe/Moscow")
KEY = "k3y0f16charsxyz9"  # a user key of the store below
ROLE_KEY = "r0lek3y16charsxy"  # a role key of the store below
UNKNOWN_KEY = "n0such16charkey0"  # well formed, but no key of the store
PREFIX = f"json/v3/{KEY}/call/get"  # everything before the page, all valid

FirstError = Callable[..., type[ApiError] | None]


@pytest.fixture(scope="module")
def keyed_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """A store with an account holding ``KEY`` and a role key ``ROLE_KEY`` of another's."""
    path: Path = tmp_path_factory.mktemp("request") / "calltrack.db"
    store = open_store(Settings.from_env(env={}, database_url=f"sqlite:///{path}"))
    reader = store.create_account("reader").id
    owner = store.create_account("owner").id
    store.add_key(reader, access.hash_key(KEY), KEY[:4])
    grant = store.create_grant(store.create_role(owner, "reports").id, reader)
    store.add_key(reader, access.hash_key(ROLE_KEY), ROLE_KEY[:4], grant_id=grant.id)
    yield store
    store.close()


@pytest.fixture
def first_error(keyed_store: Store) -> FirstError:
    """The error the handler's checks raise first for a query, or None when all pass.

    The request goes with ``http_method``, by default the one its v3 method takes.
    """

    def first(query: str | bytes, http_method: str | None = None) -> type[ApiError] | None:
        request = parse(query.encode() if isinstance(query, str) else query, MOSCOW)
        if http_method is None:
            http_method = "POST" if request.method in WRITE_METHODS else "GET"
        try:
            check(keyed_store, keyed_store.settings, request, http_method)
        except ApiError as error:
            return type(error)
        return None

    return first


def utc(year: int, month: int, day: int, hour: int, minute: int, second: int) -> int:
    """Unix seconds of a UTC wall-clock time: the expected values, computed without the zone."""
    return int(datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp())


# -- the error table, one row at a time ------------------------------------------------------

ERROR_ROWS: list[tuple[str, str, type[ApiError] | None]] = [
    # (id, query, expected error)
    ("valid_request", f"{PREFIX}/0/2020-05-01/2020-05-02", None),
    ("valid_request_without_to", f"{PREFIX}/0/2020-05-01", None),
    ("valid_getByRole", f"json/v3/{ROLE_KEY}/call/getByRole/0/2020-05-01", None),
    ("valid_getWithRole", f"json/v3/{KEY}/call/getWithRole/0/2020-05-01", None),
    # 1. format missing or not served
    ("1_empty_query", "", FormatNotAvailable),
    ("1_format_missing", f"/v3/{KEY}/call/get/0/2020-05-01", FormatNotAvailable),
    ("1_format_xml_served", f"xml/v3/{KEY}/call/get/0/2020-05-01", None),
    ("1_format_csv_served", f"csv/v3/{KEY}/call/get/0/2020-05-01", None),
    ("1_format_plain_served", f"plain/v3/{KEY}/call/get/0/2020-05-01", None),
    ("1_format_yaml_unknown", f"yaml/v3/{KEY}/call/get/0/2020-05-01", FormatNotAvailable),
    ("1_format_uppercase", f"JSON/v3/{KEY}/call/get/0/2020-05-01", FormatNotAvailable),
    ("1_format_unknown", f"jsonp/v3/{KEY}/call/get/0/2020-05-01", FormatNotAvailable),
    ("1_format_with_space", f"%20json/v3/{KEY}/call/get/0/2020-05-01", FormatNotAvailable),
    ("1_only_a_slash", "/", FormatNotAvailable),
    # 2. version missing or not v3
    ("2_version_missing", f"json//{KEY}/call/get/0/2020-05-01", WrongVersion),
    ("2_version_only_format_given", "json", WrongVersion),
    ("2_version_v2", f"json/v2/{KEY}/call/get/0/2020-05-01", WrongVersion),
    ("2_version_uppercase", f"json/V3/{KEY}/call/get/0/2020-05-01", WrongVersion),
    ("2_version_without_v", f"json/3/{KEY}/call/get/0/2020-05-01", WrongVersion),
    ("2_version_v33", f"json/v33/{KEY}/call/get/0/2020-05-01", WrongVersion),
    # 4. entity missing or unknown
    ("4_entity_missing", f"json/v3/{KEY}//get/0/2020-05-01", UnknownEntity),
    ("4_entity_missing_at_end", f"json/v3/{KEY}", UnknownEntity),
    ("4_entity_plural", f"json/v3/{KEY}/calls/get/0/2020-05-01", UnknownEntity),
    ("4_entity_uppercase", f"json/v3/{KEY}/Call/get/0/2020-05-01", UnknownEntity),
    ("4_entity_phone_served", f"json/v3/{KEY}/phone/get/0/2020-05-01", None),
    ("4_entity_singular_only", f"json/v3/{KEY}/phones/get/0/2020-05-01", UnknownEntity),
    # 5. method missing or unknown
    ("5_method_missing", f"json/v3/{KEY}/call//0/2020-05-01", UnknownMethod),
    ("5_method_missing_at_end", f"json/v3/{KEY}/call", UnknownMethod),
    (
        "5_method_call_is_a_typo_in_the_original",
        f"json/v3/{KEY}/call/call/0/2020-05-01",
        UnknownMethod,
    ),
    ("5_method_post", f"json/v3/{KEY}/call/post/0/2020-05-01", UnknownMethod),
    ("5_method_put_is_a_write", f"json/v3/{KEY}/call/put", None),
    ("5_method_of_another_entity", f"json/v3/{KEY}/tag/getByRole/0/2020-05-01", UnknownMethod),
    ("5_method_uppercase", f"json/v3/{KEY}/call/GET/0/2020-05-01", UnknownMethod),
    ("5_method_wrong_case", f"json/v3/{KEY}/call/getbyrole/0/2020-05-01", UnknownMethod),
    # 7. page missing, not decimal, or more than 9 digits
    ("7_page_missing", f"{PREFIX}//2020-05-01", BadPage),
    ("7_page_missing_at_end", PREFIX, BadPage),
    ("7_page_letters", f"{PREFIX}/x/2020-05-01", BadPage),
    ("7_page_digits_then_letter", f"{PREFIX}/1a/2020-05-01", BadPage),
    ("7_page_negative", f"{PREFIX}/-1/2020-05-01", BadPage),
    ("7_page_plus_sign", f"{PREFIX}/+1/2020-05-01", BadPage),
    ("7_page_escaped_plus_sign", f"{PREFIX}/%2B1/2020-05-01", BadPage),
    ("7_page_decimal_fraction", f"{PREFIX}/1.0/2020-05-01", BadPage),
    ("7_page_exponent", f"{PREFIX}/1e3/2020-05-01", BadPage),
    ("7_page_hex", f"{PREFIX}/0x1/2020-05-01", BadPage),
    ("7_page_leading_space", f"{PREFIX}/%201/2020-05-01", BadPage),
    ("7_page_trailing_space", f"{PREFIX}/1%20/2020-05-01", BadPage),
    ("7_page_arabic_indic_digit", f"{PREFIX}/\u0661/2020-05-01", BadPage),
    ("7_page_fullwidth_digit", f"{PREFIX}/\uff11/2020-05-01", BadPage),
    ("7_page_escaped_arabic_indic_digit", f"{PREFIX}/%D9%A1/2020-05-01", BadPage),
    ("7_page_10_digits", f"{PREFIX}/1234567890/2020-05-01", BadPage),
    ("7_page_10_digits_leading_zeros", f"{PREFIX}/0000000001/2020-05-01", BadPage),
    ("7_page_9_digits", f"{PREFIX}/999999999/2020-05-01", None),
    ("7_page_9_digits_leading_zeros", f"{PREFIX}/000000001/2020-05-01", None),
    # 8. from missing or in neither format
    ("8_from_missing", f"{PREFIX}/0", BadStart),
    ("8_from_empty_before_to", f"{PREFIX}/0//2020-05-02", BadStart),
    ("8_from_impossible_feb_30", f"{PREFIX}/0/2020-02-30", BadStart),
    ("8_from_feb_29_of_non_leap_year", f"{PREFIX}/0/2021-02-29", BadStart),
    ("8_from_year_zero", f"{PREFIX}/0/0000-01-01", BadStart),
    ("8_from_month_13", f"{PREFIX}/0/2020-13-01", BadStart),
    ("8_from_day_00", f"{PREFIX}/0/2020-05-00", BadStart),
    ("8_from_unpadded_date", f"{PREFIX}/0/2020-5-1", BadStart),
    ("8_from_two_digit_year", f"{PREFIX}/0/20-05-01", BadStart),
    ("8_from_date_with_time", f"{PREFIX}/0/2020-05-01T00:00:00", BadStart),
    ("8_from_date_with_dots", f"{PREFIX}/0/01.05.2020", BadStart),
    ("8_from_compact_date_is_a_timestamp", f"{PREFIX}/0/20200501", None),
    ("8_from_fullwidth_digits_in_date", f"{PREFIX}/0/\uff12020-05-01", BadStart),
    ("8_from_negative_timestamp", f"{PREFIX}/0/-1588854585", BadStart),
    ("8_from_plus_timestamp", f"{PREFIX}/0/+1588854585", BadStart),
    ("8_from_fractional_timestamp", f"{PREFIX}/0/1588854585.5", BadStart),
    ("8_from_exponent_timestamp", f"{PREFIX}/0/1e9", BadStart),
    ("8_from_arabic_indic_timestamp", f"{PREFIX}/0/\u0661\u0665\u0668\u0668", BadStart),
    ("8_from_timestamp_19_digits", f"{PREFIX}/0/1000000000000000000", BadStart),
    ("8_from_timestamp_18_digits", f"{PREFIX}/0/999999999999999999", None),
    ("8_from_timestamp_zero", f"{PREFIX}/0/0", None),
    ("8_from_leap_day", f"{PREFIX}/0/2020-02-29", None),
    ("8_from_first_day_of_year_one", f"{PREFIX}/0/0001-01-01", None),
    # 9. to present but in neither format
    ("9_to_impossible_feb_30", f"{PREFIX}/0/2020-05-01/2020-02-30", BadEnd),
    ("9_to_feb_29_of_non_leap_year", f"{PREFIX}/0/2020-05-01/2021-02-29", BadEnd),
    ("9_to_year_zero", f"{PREFIX}/0/2020-05-01/0000-01-01", BadEnd),
    ("9_to_letters", f"{PREFIX}/0/2020-05-01/now", BadEnd),
    ("9_to_negative_timestamp", f"{PREFIX}/0/2020-05-01/-1", BadEnd),
    ("9_to_plus_timestamp", f"{PREFIX}/0/2020-05-01/+1588854585", BadEnd),
    ("9_to_timestamp_19_digits", f"{PREFIX}/0/2020-05-01/1000000000000000000", BadEnd),
    ("9_to_timestamp_18_digits", f"{PREFIX}/0/2020-05-01/999999999999999999", None),
    ("9_to_last_day_of_year_9999", f"{PREFIX}/0/2020-05-01/9999-12-31", None),
    ("9_to_empty_is_absent", f"{PREFIX}/0/2020-05-01/", None),
]


@pytest.mark.parametrize(
    ("query", "expected"),
    [pytest.param(query, expected, id=name) for name, query, expected in ERROR_ROWS],
)
def test_each_row_of_the_error_table_gives_its_error(
    first_error: FirstError, query: str, expected: type[ApiError] | None
) -> None:
    assert first_error(query) is expected


ORDER_ROWS: list[tuple[str, str, type[ApiError] | None]] = [
    ("format_before_version", f"yaml/v2/{KEY}/call/get/0/2020-05-01", FormatNotAvailable),
    ("format_before_everything", "yaml/v2/x/foo/bar/-1/2020-02-30/nope", FormatNotAvailable),
    ("version_before_key", f"json/v2/{UNKNOWN_KEY}/call/get/0/2020-05-01", WrongVersion),
    ("version_before_everything_after_it", "json/v2/x/foo/bar/-1/2020-02-30/nope", WrongVersion),
    ("key_before_entity", f"json/v3/{UNKNOWN_KEY}/foo/get/0/2020-05-01", UnknownKey),
    ("key_before_method", f"json/v3/{UNKNOWN_KEY}/call/bar/0/2020-05-01", UnknownKey),
    ("key_before_page", f"json/v3/{UNKNOWN_KEY}/call/get/x/2020-05-01", UnknownKey),
    ("malformed_key_before_entity", "json/v3/x/foo/bar/-1/2020-02-30/nope", UnknownKey),
    ("entity_before_method", f"json/v3/{KEY}/foo/bar/0/2020-05-01", UnknownEntity),
    ("entity_before_page", f"json/v3/{KEY}/foo/get/x/2020-05-01", UnknownEntity),
    ("entity_before_key_kind", f"json/v3/{ROLE_KEY}/foo/getByRole/0/2020-05-01", UnknownEntity),
    ("method_before_key_kind", f"json/v3/{ROLE_KEY}/call/bar/0/2020-05-01", UnknownMethod),
    ("method_before_page", f"json/v3/{KEY}/call/bar/x/2020-05-01", UnknownMethod),
    ("method_before_from", f"json/v3/{KEY}/call/bar/0/2020-02-30", UnknownMethod),
    ("key_kind_before_page", f"json/v3/{ROLE_KEY}/call/get/x/2020-05-01", UnknownKey),
    ("key_kind_before_call_id", f"json/v3/{ROLE_KEY}/call/delete", UnknownKey),
    ("user_key_for_getByRole", f"json/v3/{KEY}/call/getByRole/x/2020-05-01", UnknownKey),
    ("page_before_from", f"{PREFIX}/x/2020-02-30", BadPage),
    ("page_before_to", f"{PREFIX}/1234567890/2020-05-01/nope", BadPage),
    ("from_before_to", f"{PREFIX}/0/2020-02-30/2020-02-31", BadStart),
    ("missing_from_before_bad_to", f"{PREFIX}/0//nope", BadStart),
    ("call_id_of_a_delete", f"json/v3/{KEY}/call/delete", MissingCallId),
    ("a_put_has_no_page", f"json/v3/{KEY}/call/put/x/2020-02-30", None),
]


@pytest.mark.parametrize(
    ("query", "expected"),
    [pytest.param(query, expected, id=name) for name, query, expected in ORDER_ROWS],
)
def test_checks_run_in_the_contracts_order(
    first_error: FirstError, query: str, expected: type[ApiError] | None
) -> None:
    assert first_error(query) is expected


# The HTTP method is judged after the key's kind, before what follows the method.
HTTP_ORDER_ROWS: list[tuple[str, str, str, type[ApiError] | None]] = [
    ("key_kind_before_http_method", "DELETE", f"json/v3/{ROLE_KEY}/call/get/x", UnknownKey),
    ("method_before_http_method", "POST", f"json/v3/{KEY}/call/bar/x", UnknownMethod),
    ("http_method_before_page", "POST", f"{PREFIX}/x/2020-05-01", HttpMethodNotAllowed),
    ("http_method_before_call_id", "GET", f"json/v3/{KEY}/call/delete", HttpMethodNotAllowed),
    ("a_read_is_also_head", "HEAD", f"{PREFIX}/0/2020-05-01", None),
    ("a_put_is_also_put", "PUT", f"json/v3/{KEY}/call/put", None),
    ("a_put_is_not_get", "GET", f"json/v3/{KEY}/call/put", HttpMethodNotAllowed),
    ("a_delete_is_also_delete", "DELETE", f"json/v3/{KEY}/call/delete/u1", None),
]


@pytest.mark.parametrize(
    ("http_method", "query", "expected"),
    [pytest.param(*row[1:], id=row[0]) for row in HTTP_ORDER_ROWS],
)
def test_the_http_method_is_checked_in_its_place(
    first_error: FirstError, http_method: str, query: str, expected: type[ApiError] | None
) -> None:
    assert first_error(query, http_method) is expected


def test_a_checked_read_is_its_page_and_window(keyed_store: Store) -> None:
    request = parse(f"json/v3/{KEY}/call/get/3/1588854585/1588940985".encode(), MOSCOW)
    checked = check(keyed_store, keyed_store.settings, request, "GET")
    assert checked.method == "get"
    assert checked.page == PageQuery(3, Window(1588854585, 1588940985))
    put = parse(f"json/v3/{KEY}/call/put".encode(), MOSCOW)
    assert check(keyed_store, keyed_store.settings, put, "POST").page is None


# -- segments: percent-escapes, slashes, empty segments -------------------------------------

ESCAPE_ROWS: list[tuple[str, str, type[ApiError] | None]] = [
    ("escaped_letter_in_format", f"%6Ason/v3/{KEY}/call/get/0/2020-05-01", None),
    ("lowercase_hex_escape", f"%6ason/v3/{KEY}/call/get/0/2020-05-01", None),
    ("whole_format_escaped", f"%6A%73%6F%6E/v3/{KEY}/call/get/0/2020-05-01", None),
    ("escaped_version", f"json/%763/{KEY}/call/get/0/2020-05-01", None),
    ("escaped_entity", f"json/v3/{KEY}/%63all/get/0/2020-05-01", None),
    ("escaped_method", f"json/v3/{ROLE_KEY}/call/get%42yRole/0/2020-05-01", None),
    ("escaped_page_digits", f"{PREFIX}/%31%32/2020-05-01", None),
    ("escaped_dash_in_date", f"{PREFIX}/0/2020%2D05%2D01", None),
    (
        "escaped_slash_does_not_split_format",
        f"json%2Fv3/v3/{KEY}/call/get/0/2020-05-01",
        FormatNotAvailable,
    ),
    (
        "escaped_slash_does_not_split_version",
        f"json/v3%2F/{KEY}/call/get/0/2020-05-01",
        WrongVersion,
    ),
    ("escaped_slash_does_not_split_page", f"{PREFIX}/0%2F2020-05-01", BadPage),
    ("escaped_slash_does_not_split_from", f"{PREFIX}/0/2020-05-01%2F2020-05-02", BadStart),
    ("lowercase_escaped_slash_does_not_split", f"{PREFIX}/0/2020-05-01%2f2020-05-02", BadStart),
    ("escaped_slash_does_not_split_to", f"{PREFIX}/0/2020-05-01/2020-05-02%2F", BadEnd),
    ("lone_percent_sign", f"%/v3/{KEY}/call/get/0/2020-05-01", FormatNotAvailable),
    ("broken_escape", f"%6/v3/{KEY}/call/get/0/2020-05-01", FormatNotAvailable),
    ("escape_to_invalid_utf8", f"%FF/v3/{KEY}/call/get/0/2020-05-01", FormatNotAvailable),
    ("plus_is_not_a_space", f"json/v3/{KEY}/call/get/0+/2020-05-01", BadPage),
    ("trailing_slash_after_from", f"{PREFIX}/0/2020-05-01/", None),
    ("trailing_slash_after_to", f"{PREFIX}/0/2020-05-01/2020-05-02/", None),
    ("escaped_trailing_slash_is_part_of_to", f"{PREFIX}/0/2020-05-01/2020-05-02%2F", BadEnd),
    ("empty_version_segment", f"json//{KEY}/call/get/0/2020-05-01", WrongVersion),
    ("empty_page_segment", f"{PREFIX}//2020-05-01", BadPage),
    ("empty_from_segment", f"{PREFIX}/0//2020-05-02", BadStart),
    (
        "leading_slash_shifts_every_segment",
        f"/json/v3/{KEY}/call/get/0/2020-05-01",
        FormatNotAvailable,
    ),
]


@pytest.mark.parametrize(
    ("query", "expected"),
    [pytest.param(query, expected, id=name) for name, query, expected in ESCAPE_ROWS],
)
def test_each_segment_is_split_then_percent_decoded(
    first_error: FirstError, query: str, expected: type[ApiError] | None
) -> None:
    assert first_error(query) is expected


def test_escaped_segments_decode_to_their_values() -> None:
    parsed = parse(b"%6Ason/v3/ab%2Fcd/call/get%42yRole/%30%37/2020-05-01", MOSCOW)
    assert parsed.format == "json"
    assert parsed.key == "ab/cd"
    assert parsed.method == "getByRole"
    assert parsed.page == 7


def test_an_escaped_slash_inside_the_key_does_not_shift_the_segments_after_it() -> None:
    parsed = parse(f"json/v3/{KEY[:8]}%2F{KEY[8:]}/call/get/0/2020-05-01".encode(), MOSCOW)
    assert parsed.key == f"{KEY[:8]}/{KEY[8:]}"
    assert parsed.checked_method() == "get"
    assert parsed.checked_page() == PageQuery(0, Window(utc(2020, 4, 30, 21, 0, 0), None))


@pytest.mark.parametrize(
    "query",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"/" * 50, id="only_slashes"),
        pytest.param(b"\xff\xfe/\x00/\x80", id="raw_non_utf8_bytes"),
        pytest.param(b"%" * 20, id="only_percent_signs"),
        pytest.param(b"json/v3/" + b"a" * 10_000, id="huge_key"),
        pytest.param(b"json/v3/k/call/get/0/2020-05-01/2020-05-02/extra/segments", id="extra"),
        pytest.param("json/v3/ключ/звонок/get/0/2020-05-01".encode(), id="raw_utf8"),
    ],
)
def test_parse_never_raises(query: bytes) -> None:
    parse(query, MOSCOW)  # any input earns an answer, never an exception


# -- page ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "page"),
    [
        pytest.param("0", 0, id="zero"),
        pytest.param("1", 1, id="one"),
        pytest.param("007", 7, id="leading_zeros"),
        pytest.param("000000000", 0, id="nine_zeros"),
        pytest.param("999999999", 999_999_999, id="largest_9_digits"),
        pytest.param("%34%32", 42, id="escaped_digits"),
    ],
)
def test_page_is_a_decimal_of_at_most_nine_digits(text: str, page: int) -> None:
    parsed = parse(f"{PREFIX}/{text}/2020-05-01".encode(), MOSCOW)
    assert parsed.checked_page().number == page


def test_a_bad_page_has_no_value() -> None:
    assert parse(f"{PREFIX}/1234567890/2020-05-01".encode(), MOSCOW).page is None


# -- from and to -----------------------------------------------------------------------------

WINDOW_ROWS: list[tuple[str, str, Window]] = [
    (
        "dates_cover_both_whole_days",
        "2020-05-01/2020-05-02",
        # Moscow is UTC+3 in 2020: 00:00 MSK is 21:00 UTC of the day before.
        Window(utc(2020, 4, 30, 21, 0, 0), utc(2020, 5, 2, 20, 59, 59)),
    ),
    (
        "one_date_for_both_ends_is_that_whole_day",
        "2020-05-01/2020-05-01",
        Window(utc(2020, 4, 30, 21, 0, 0), utc(2020, 5, 1, 20, 59, 59)),
    ),
    (
        "to_absent_is_open",
        "2020-05-01",
        Window(utc(2020, 4, 30, 21, 0, 0), None),
    ),
    (
        "to_absent_after_trailing_slash_is_open",
        "2020-05-01/",
        Window(utc(2020, 4, 30, 21, 0, 0), None),
    ),
    (
        "timestamps_are_exact",
        "1588854585/1588940985",
        Window(1588854585, 1588940985),
    ),
    (
        "timestamp_from_and_date_to",
        "1588854585/2020-05-08",
        Window(1588854585, utc(2020, 5, 8, 20, 59, 59)),
    ),
    (
        "date_from_and_timestamp_to",
        "2020-05-07/1588940985",
        Window(utc(2020, 5, 6, 21, 0, 0), 1588940985),
    ),
    (
        "timestamp_with_leading_zeros",
        "0001588854585/00",
        Window(1588854585, 0),
    ),
    (
        "from_after_to_is_still_a_window",
        "2020-05-02/2020-05-01",
        Window(utc(2020, 5, 1, 21, 0, 0), utc(2020, 5, 1, 20, 59, 59)),
    ),
    (
        "largest_timestamps",
        "999999999999999999/999999999999999999",
        Window(999_999_999_999_999_999, 999_999_999_999_999_999),
    ),
    (
        # Moscow was UTC+4 from 2011 to 2014.
        "moscow_at_utc_plus_4_in_2012",
        "2012-06-01/2012-06-01",
        Window(utc(2012, 5, 31, 20, 0, 0), utc(2012, 6, 1, 19, 59, 59)),
    ),
    (
        # 2010-03-28: clocks went from 02:00 MSK (UTC+3) to 03:00 MSD (UTC+4); a 23-hour day.
        "day_of_spring_forward_is_23_hours",
        "2010-03-28/2010-03-28",
        Window(utc(2010, 3, 27, 21, 0, 0), utc(2010, 3, 28, 19, 59, 59)),
    ),
    (
        # 2010-10-31: clocks went from 03:00 MSD (UTC+4) back to 02:00 MSK (UTC+3); 25 hours.
        "day_of_fall_back_is_25_hours",
        "2010-10-31/2010-10-31",
        Window(utc(2010, 10, 30, 20, 0, 0), utc(2010, 10, 31, 20, 59, 59)),
    ),
    (
        "leap_day",
        "2020-02-29/2020-02-29",
        Window(utc(2020, 2, 28, 21, 0, 0), utc(2020, 2, 29, 20, 59, 59)),
    ),
    (
        "last_day_of_year_9999",
        "9999-12-31/9999-12-31",
        Window(utc(9999, 12, 30, 21, 0, 0), utc(9999, 12, 31, 20, 59, 59)),
    ),
]


@pytest.mark.parametrize(
    ("dates", "window"),
    [pytest.param(dates, window, id=name) for name, dates, window in WINDOW_ROWS],
)
def test_from_and_to_become_an_inclusive_window_in_moscow(dates: str, window: Window) -> None:
    parsed = parse(f"{PREFIX}/0/{dates}".encode(), MOSCOW)
    assert parsed.checked_page().window == window


def test_date_bounds_are_exact_seconds_of_the_zones_wall_clock() -> None:
    window = parse(f"{PREFIX}/0/2020-05-01/2020-05-01".encode(), MOSCOW).window
    assert window is not None
    assert window.end is not None
    start = datetime.fromtimestamp(window.start, MOSCOW)
    end = datetime.fromtimestamp(window.end, MOSCOW)
    assert start.replace(tzinfo=None) == datetime(2020, 5, 1, 0, 0, 0)
    assert end.replace(tzinfo=None) == datetime(2020, 5, 1, 23, 59, 59)
    assert window.end - window.start == 24 * 3600 - 1


def test_dates_follow_the_zone_given_to_the_parser() -> None:
    window = parse(f"{PREFIX}/0/2020-05-01/2020-05-01".encode(), ZoneInfo("UTC")).window
    assert window == Window(utc(2020, 5, 1, 0, 0, 0), utc(2020, 5, 1, 23, 59, 59))


@pytest.mark.parametrize(
    "query",
    [
        pytest.param(f"{PREFIX}/0/2020-02-30", id="bad_from"),
        pytest.param(f"{PREFIX}/0/2020-05-01/2020-02-30", id="bad_to"),
        pytest.param(f"{PREFIX}/0", id="missing_from"),
    ],
)
def test_a_bad_from_or_to_leaves_no_window(query: str) -> None:
    assert parse(query.encode(), MOSCOW).window is None


# -- redaction -------------------------------------------------------------------------------

REDACT_ROWS: list[tuple[str, bytes, bytes]] = [
    # (id, query, the key as it appears in the query)
    ("full_request", f"json/v3/{KEY}/call/get/0/2020-05-01/2020-05-02".encode(), KEY.encode()),
    ("key_is_the_last_segment", f"json/v3/{KEY}".encode(), KEY.encode()),
    ("key_then_trailing_slash", f"json/v3/{KEY}/".encode(), KEY.encode()),
    ("bad_format_and_version", f"xml/v2/{KEY}/call/get/0".encode(), KEY.encode()),
    (
        "malformed_key",
        b"json/v3/NOT-A-KEY-but-secret/call/get/0/2020-05-01",
        b"NOT-A-KEY-but-secret",
    ),
    ("escaped_key", b"json/v3/%6B3y0f16charsxyz9/call/get/0/2020-05-01", b"%6B3y0f16charsxyz9"),
    ("key_with_escaped_slash", f"json/v3/{KEY[:8]}%2F{KEY[8:]}/call".encode(), KEY[8:].encode()),
    ("empty_format_and_version", f"//{KEY}/call/get".encode(), KEY.encode()),
    ("non_utf8_key", b"json/v3/\xffsecret\xfe/call/get", b"secret"),
]


@pytest.mark.parametrize(
    ("query", "key"),
    [pytest.param(query, key, id=name) for name, query, key in REDACT_ROWS],
)
def test_redact_query_never_leaves_the_key(query: bytes, key: bytes) -> None:
    redacted = redact_query(query)
    assert key not in redacted
    assert parse(query, MOSCOW).key.encode() not in redacted


def test_redact_query_keeps_every_other_segment() -> None:
    query = f"json/v3/{KEY}/call/get/0/2020-05-01/2020-05-02/".encode()
    assert redact_query(query) == b"json/v3/<key>/call/get/0/2020-05-01/2020-05-02/"


@pytest.mark.parametrize(
    "query",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"json/v3", id="no_key_segment"),
        pytest.param(b"json/v3/", id="empty_key_segment"),
        pytest.param(b"json/v3//call/get/0/2020-05-01", id="missing_key"),
    ],
)
def test_redact_query_leaves_a_query_without_a_key_alone(query: bytes) -> None:
    assert redact_query(query) == query


@pytest.mark.parametrize(
    "query",
    [
        b"/json/v3/abcdefgh12345678/call/get/0/2020-01-01",
        b"json/v3//abcdefgh12345678/call/get/0/2020-01-01",
        b"json/v3/%61bcdefgh12345678/call/get/0/2020-01-01",
    ],
    ids=["leading-slash", "doubled-slash", "percent-encoded"],
)
def test_redaction_hides_a_misplaced_or_encoded_key(query: bytes) -> None:
    redacted = redact_query(query)
    assert b"bcdefgh12345678" not in redacted
    assert b"<key>" in redacted
