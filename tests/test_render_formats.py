"""csv, xml, plain and JSON rows: hostile values round-trip through real parsers.

Every format is checked against the JSON answer of the same stored bodies (``render_page``):
same calls, same order, same values, fields in ``FIELD_NAMES`` order, ``page`` as requested.
"""

from __future__ import annotations

import csv as std_csv
import io
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from itertools import cycle, islice
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import pytest

from calltrack.demo_data import generate_calls
from calltrack.model import FIELD_NAMES, decode_record, prepare
from calltrack.render import csv, plain, rows, xml
from calltrack.render.json import render_page

ZONE = ZoneInfo("Europe/Moscow")
PAGE = 7

HOSTILE = (
    'say "hi", ok',
    "semi;colon; 'single'",
    "tab\there",
    "line\nfeed",
    "carriage\rreturn",
    "crlf\r\nend",
    "<b>bold</b> & co > x &amp;",
    "cdata ]]> end <![CDATA[ x ]]>",
    "nul\x00 bell\x07 esc\x1b us\x1f vt\x0b ff\x0c del\x7f",
    "emoji 😀 and 𠜎 (U+2070E)",
    "Привет, мир",
    "back\\slash \\t \\n \\\\",
    "=SUM(A1:A2)",
    "+7 (495) 000",
    "-1",
    "@cmd",
    "nonchars \ufffe\uffff bom \ufeff",
    "separators \u2028\u2029\x85",
    "  padded  ",
    "",
    "\\",
    '"',
    ",",
    "\t",
    "\n",
    "\r",
    "\x00",
)
TEXT_FIELDS = (
    "site", "recordUrl", "referrer", "utm_source", "utm_medium", "utm_campaign", "utm_content",
    "utm_term", "yaClid", "gaClid", "roistatClid", "calltouchClid", "comagicClid", "city",
    "region", "country", "ipAddress", "entryPoint", "entryPointQuery", "callPage", "userAgent",
    "device", "cbWidgetHash", "cbToolName", "cbOfficeNumber", "cbOfficeName", "ctCampaignName",
)  # fmt: skip


def hostile_call(n: int) -> dict[str, Any]:
    """A valid call whose every free-text field, tag and hook address is a hostile value."""
    values = islice(cycle(HOSTILE), n, None)
    call: dict[str, Any] = {
        "universalId": str(10**12 + n),
        "serviceType": ("callback", "calltracking", "import")[n % 3],
        "status": ("success", "fail")[n % 2],
        "callTime": f"2020-05-01 10:{n // 60 % 60:02d}:{n % 60:02d}",
        "duration": n,
        "unique": n % 2 == 0,
        "target": n % 3 == 0,
        "cbAttemptsQueue": list(range(n % 4)),
        "tags": [next(values) for _ in range(n % 4)],
        "hooks": [
            {
                "hookEventName": "AFTER_CALL_FINISH",
                "hookAddress": next(values),
                "hookMethod": "POST",
                "hookResponseStatus": 200 + n,
            }
        ][: n % 2],
    }
    call.update({name: next(values) for name in TEXT_FIELDS})
    call["visitSite"] = call["siteVisit"] = next(values)
    return call


def stored(calls: Iterator[dict[str, Any]] | Sequence[dict[str, Any]]) -> list[bytes]:
    return [prepare(decode_record(msgspec.json.encode(call)), ZONE).body for call in calls]


BODIES = stored([hostile_call(n) for n in range(2 * len(HOSTILE) + 1)])


def json_rows(bodies: Sequence[bytes], page: int = PAGE) -> list[dict[str, Any]]:
    rows_: list[dict[str, Any]] = msgspec.json.decode(render_page(bodies, page))
    assert all(tuple(row) == FIELD_NAMES for row in rows_)
    return rows_


def joined(chunks: Iterator[bytes]) -> bytes:
    return b"".join(chunks)


# -- what each format must give back, from the JSON values ------------------------------------


def cell(value: Any) -> str:
    """A CSV / plain cell: booleans true/false, ints as digits, arrays as compact JSON."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | str):
        return str(value)
    return msgspec.json.encode(value).decode()


def is_xml_char(char: str) -> bool:
    """XML 1.0's Char production."""
    code = ord(char)
    return (
        char in "\t\n\r"
        or 0x20 <= code <= 0xD7FF
        or 0xE000 <= code <= 0xFFFD
        or 0x10000 <= code <= 0x10FFFF
    )


def xml_text(value: str) -> str:
    return "".join(c if is_xml_char(c) else "\ufffd" for c in value)


def xml_value(name: str, value: Any) -> Any:
    """What ElementTree reads back for one field."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return xml_text(value)
    if name == "hooks":
        return [{k: xml_value(k, v) for k, v in hook.items()} for hook in value]
    return [xml_value(name, item) for item in value]


ITEMS = {"tags": "tag", "cbAttemptsQueue": "attempt", "hooks": "hook"}


def parsed_value(element: ET.Element) -> Any:
    name = element.tag
    if name in ITEMS:
        assert all(child.tag == ITEMS[name] for child in element)
        if name == "hooks":
            return [{e.tag: e.text or "" for e in hook} for hook in element]
        return [child.text or "" for child in element]
    assert len(element) == 0
    return element.text or ""


_UNESCAPES = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r"}


def plain_unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: _UNESCAPES[m.group(1)], value, flags=re.DOTALL)


def plain_escape(value: str) -> str:
    return (
        value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    )


def parse_csv(data: bytes) -> list[list[str]]:
    return list(std_csv.reader(io.StringIO(data.decode("utf-8"), newline="")))


def parse_plain(data: bytes) -> list[list[str]]:
    text = data.decode("utf-8")
    assert "\r" not in text
    assert text.endswith("\n")
    return [[plain_unescape(v) for v in line.split("\t")] for line in text.split("\n")[:-1]]


# -- calls ----------------------------------------------------------------------------------


def test_hostile_values_are_really_there() -> None:
    values = {v for row in json_rows(BODIES) for v in row.values() if isinstance(v, str)}
    assert set(HOSTILE) <= values
    tags = {t for row in json_rows(BODIES) for t in row["tags"]}
    addresses = {h["hookAddress"] for row in json_rows(BODIES) for h in row["hooks"]}
    assert {"\x00", "\r", "<", "&", "😀"} <= {c for v in tags | addresses for c in v}


def test_csv_round_trips_hostile_values() -> None:
    data = joined(csv.render_calls(BODIES, PAGE))
    table = parse_csv(data)
    assert tuple(table[0]) == FIELD_NAMES
    assert table[1:] == [[cell(v) for v in row.values()] for row in json_rows(BODIES)]
    assert all(row[0] == str(PAGE) for row in table[1:])
    assert data.endswith(b"\r\n")
    assert not data.startswith(b"\xef\xbb\xbf")  # no byte order mark
    # Formula-like values are not altered (documented: import as text).
    assert {"=SUM(A1:A2)", "@cmd", "+7 (495) 000", "-1"} <= {c for row in table for c in row}


def test_csv_quotes_only_when_needed() -> None:
    lines = joined(csv.render_calls(BODIES[:1], 0)).decode().split("\r\n")
    assert lines[0] == ",".join(FIELD_NAMES)
    assert lines[1].startswith(f"0,{10**12},callback,,,,,0,0,success,")
    one = b"".join(csv.render_rows("tag", ["name"], [{"name": 'a "b", c'}, {"name": "x;y"}]))
    assert one == b'name\r\n"a ""b"", c"\r\nx;y\r\n'


def test_xml_round_trips_hostile_values() -> None:
    data = joined(xml.render_calls(BODIES, PAGE))
    assert data.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<calls>')
    root = ET.fromstring(data)
    assert root.tag == "calls"
    expected = json_rows(BODIES)
    assert len(root) == len(expected)
    for element, row in zip(root, expected, strict=True):
        assert element.tag == "call"
        assert element.attrib == {"page": str(PAGE)}
        assert tuple(child.tag for child in element) == FIELD_NAMES[1:]
        got = {child.tag: parsed_value(child) for child in element}
        assert got == {k: xml_value(k, v) for k, v in row.items() if k != "page"}


def test_xml_keeps_cr_and_replaces_only_forbidden_characters() -> None:
    [body] = stored([{**hostile_call(0), "city": "a\r\nb\rc\td\ne", "region": "x\x00\x1fy\ufffe"}])
    data = joined(xml.render_calls([body], 0))
    assert b"&#13;" in data  # a raw CR would be read back as LF
    [call] = ET.fromstring(data)
    assert call.findtext("city") == "a\r\nb\rc\td\ne"
    assert call.findtext("region") == "x\ufffd\ufffdy\ufffd"


def test_xml_escapes_markup() -> None:
    assert xml.text("a<b>&c ]]> 😀") == "a&lt;b&gt;&amp;c ]]&gt; 😀"
    assert xml.text("plain Привет") == "plain Привет"
    assert xml.text("\x00\x08\x0b\x0c\x0e\x1f\ud800\udfff\ufffe\uffff") == "\ufffd" * 10
    assert xml.text("\t\n\x7f\x85\ufeff\U0010ffff") == "\t\n\x7f\x85\ufeff\U0010ffff"


def test_plain_round_trips_hostile_values() -> None:
    data = joined(plain.render_calls(BODIES, PAGE))
    lines = parse_plain(data)
    assert lines == [[cell(v) for v in row.values()] for row in json_rows(BODIES)]
    assert all(len(line) == len(FIELD_NAMES) and line[0] == str(PAGE) for line in lines)
    assert plain.escape("a\\b\tc\nd\re\\t") == "a\\\\b\\tc\\nd\\re\\\\t"


# The conftest's backend fixture: skipped loudly without PostgreSQL, a failure with CI=true.
@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_plain_is_read_back_by_postgres_copy(backend: str, postgres_url: str | None) -> None:
    assert postgres_url is not None
    import psycopg

    # PostgreSQL text cannot hold NUL; everything else must come back unchanged.
    def without_nul(value: Any) -> Any:
        if isinstance(value, str):
            return value.replace("\x00", "")
        return [without_nul(v) for v in value] if isinstance(value, list) else value

    bodies = stored(
        {k: without_nul(v) for k, v in hostile_call(n).items() if k != "hooks"}
        for n in range(len(HOSTILE) + 1)
    )
    columns = [f"c{i}" for i in range(len(FIELD_NAMES))]
    with psycopg.connect(postgres_url) as conn:
        conn.execute(f"CREATE TEMP TABLE t (n serial, {', '.join(c + ' text' for c in columns)})")
        with conn.cursor().copy(f"COPY t ({', '.join(columns)}) FROM STDIN") as copy:
            for chunk in plain.render_calls(bodies, PAGE):
                copy.write(chunk)
        got = conn.execute(f"SELECT {', '.join(columns)} FROM t ORDER BY n").fetchall()
    assert [list(row) for row in got] == [
        [cell(v) for v in row.values()] for row in json_rows(bodies)
    ]


@pytest.mark.parametrize("module", [csv, xml, plain], ids=lambda m: m.__name__)
def test_chunks_are_whole_records_and_join_to_the_unchunked_answer(module: Any) -> None:
    bodies = list(islice(cycle(BODIES), 250))
    chunks = list(module.render_calls(bodies, PAGE))
    assert len(chunks) >= 3
    for chunk in chunks:
        chunk.decode("utf-8")  # never a character cut in two
    alone = [b"".join(module.render_calls([body], PAGE)) for body in bodies]
    if module is csv:
        header = (",".join(FIELD_NAMES) + "\r\n").encode()
        assert all(a.startswith(header) for a in alone)
        expected = header + b"".join(a[len(header) :] for a in alone)
        text = io.StringIO(newline="")
        writer = std_csv.writer(text, lineterminator="\r\n")
        writer.writerow(FIELD_NAMES)
        writer.writerows([cell(v) for v in row.values()] for row in json_rows(bodies))
        assert text.getvalue().encode() == expected
    elif module is xml:
        head, tail = b'<?xml version="1.0" encoding="UTF-8"?>\n<calls>\n', b"</calls>\n"
        expected = head + b"".join(a[len(head) : -len(tail)] for a in alone) + tail
    else:
        expected = b"".join(alone)
        lines = [
            "\t".join(plain_escape(cell(v)) for v in row.values()) for row in json_rows(bodies)
        ]
        assert "".join(line + "\n" for line in lines).encode() == expected
    assert b"".join(chunks) == expected


@pytest.mark.parametrize(
    ("module", "empty"),
    [
        (csv, (",".join(FIELD_NAMES) + "\r\n").encode()),
        (xml, b'<?xml version="1.0" encoding="UTF-8"?>\n<calls>\n</calls>\n'),
        (plain, b""),
    ],
    ids=["csv", "xml", "plain"],
)
def test_empty_page(module: Any, empty: bytes) -> None:
    assert joined(module.render_calls([], 0)) == empty


def test_empty_json_page() -> None:
    assert render_page([], 0) == b"[]"


def test_content_types() -> None:
    assert csv.CONTENT_TYPE == "text/csv; charset=utf-8"
    assert xml.CONTENT_TYPE == "application/xml"
    assert plain.CONTENT_TYPE == "text/plain; charset=utf-8"
    assert rows.CONTENT_TYPE == "application/json; charset=utf-8"


def test_a_1000_call_page_streams_in_chunks_with_the_json_rows() -> None:
    bodies = stored(generate_calls(1000, seed=3))
    expected = json_rows(bodies, 2)
    uids = [row["universalId"] for row in expected]
    for module in (csv, xml, plain):
        chunks = list(module.render_calls(bodies, 2))
        total = sum(map(len, chunks))
        assert len(chunks) >= 10
        assert max(map(len, chunks)) < total / 5
    table = parse_csv(joined(csv.render_calls(bodies, 2)))
    assert table[1:] == [[cell(v) for v in row.values()] for row in expected]
    assert parse_plain(joined(plain.render_calls(bodies, 2))) == table[1:]
    root = ET.fromstring(joined(xml.render_calls(bodies, 2)))
    assert [call.findtext("universalId") for call in root] == uids
    assert {call.get("page") for call in root} == {"2"}
    assert [{child.tag: parsed_value(child) for child in call} for call in root] == [
        {k: xml_value(k, v) for k, v in row.items() if k != "page"} for row in expected
    ]


# -- entity rows -----------------------------------------------------------------------------

ROW_FIELDS = ("id", "name", "site", "status", "active", "campaignIds", "tags", "hooks")


def entity_rows() -> list[dict[str, object]]:
    values = cycle(HOSTILE)
    return [
        {
            "status": next(values),  # key order differs from ROW_FIELDS on purpose
            "id": n,
            "name": next(values),
            "site": next(values),
            "active": n % 2 == 1,
            "campaignIds": list(range(n % 3)),
            "tags": [next(values) for _ in range(n % 3)],
            "hooks": [{"hookAddress": next(values), "hookResponseStatus": n}][: n % 2],
            "secret": "not a field",
        }
        for n in range(len(HOSTILE) + 1)
    ]


def test_json_rows_in_field_order_utf8_as_is() -> None:
    data = joined(rows.render_rows("campaign", ROW_FIELDS, entity_rows()))
    got = msgspec.json.decode(data)
    assert got == [{name: row[name] for name in ROW_FIELDS} for row in entity_rows()]
    assert all(tuple(row) == ROW_FIELDS for row in got)
    assert "Привет, мир".encode() in data
    assert "😀".encode() in data
    assert joined(rows.render_rows("campaign", ROW_FIELDS, [])) == b"[]"


def test_csv_and_plain_rows_round_trip() -> None:
    expected = [[cell(row[name]) for name in ROW_FIELDS] for row in entity_rows()]
    table = parse_csv(joined(csv.render_rows("campaign", ROW_FIELDS, entity_rows())))
    assert table == [list(ROW_FIELDS), *expected]
    assert parse_plain(joined(plain.render_rows("campaign", ROW_FIELDS, entity_rows()))) == expected
    assert (
        joined(csv.render_rows("campaign", ROW_FIELDS, []))
        == (",".join(ROW_FIELDS) + "\r\n").encode()
    )
    assert joined(plain.render_rows("campaign", ROW_FIELDS, [])) == b""


def test_xml_rows_round_trip() -> None:
    root = ET.fromstring(joined(xml.render_rows("campaign", ROW_FIELDS, entity_rows())))
    assert root.tag == "campaigns"
    got = []
    for element in root:
        assert element.tag == "campaign"
        assert element.attrib == {}
        assert tuple(child.tag for child in element) == ROW_FIELDS
        row: dict[str, Any] = {}
        for child in element:
            if child.tag == "campaignIds":
                assert all(item.tag == "item" for item in child)
                row[child.tag] = [item.text for item in child]
            else:
                row[child.tag] = parsed_value(child)
        got.append(row)
    assert got == [
        {name: xml_value(name, row[name]) for name in ROW_FIELDS} for row in entity_rows()
    ]
    empty = ET.fromstring(joined(xml.render_rows("tag", ["id"], [])))
    assert (empty.tag, len(empty)) == ("tags", 0)


def test_xml_rejects_names_that_are_not_xml_names() -> None:
    with pytest.raises(ValueError, match="XML element name"):
        joined(xml.render_rows("campaign", ["bad name"], []))
    with pytest.raises(ValueError, match="XML element name"):
        joined(xml.render_rows("campaign", ["x"], [{"x": [{"1st": 1}]}]))


def test_lone_surrogates_become_replacement_characters_everywhere() -> None:
    fields = ("name", "tags")
    bad = [{"name": "a\ud800b", "tags": ["c\udfff"]}]
    assert msgspec.json.decode(joined(rows.render_rows("tag", fields, bad))) == [
        {"name": "a\ufffdb", "tags": ["c\ufffd"]}
    ]
    assert parse_csv(joined(csv.render_rows("tag", fields, bad)))[1] == [
        "a\ufffdb",
        '["c\ufffd"]',
    ]
    assert parse_plain(joined(plain.render_rows("tag", fields, bad))) == [
        ["a\ufffdb", '["c\ufffd"]']
    ]
    [element] = ET.fromstring(joined(xml.render_rows("tag", fields, bad)))
    assert element.findtext("name") == "a\ufffdb"
    assert [t.text for t in element.findall("tags/tag")] == ["c\ufffd"]
