"""The console's calls pages against API v4 over the same store: the filters select what
/api/v4/calls selects, paging by cursor visits every call once, the downloads hold the same
calls, another account's call is not there, a role key sees its grantor's, hostile values stay
text, bad parameters are 400 naming the parameter."""

from __future__ import annotations

import csv
import html
import io
import json
import re
import sys
import tempfile
import zipfile
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode
from xml.etree import ElementTree

import msgspec
import pytest
from starlette.testclient import TestClient

from calltrack import access
from calltrack.client.writers import COLUMNS
from calltrack.demo_data import generate_calls
from calltrack.importer import import_bytes
from calltrack.model import FIELD_NAMES
from calltrack.store import Store
from calltrack.store.hooks import AttemptResult, unix_ms
from tests.conftest import new_account
from tests.helpers_console import sign_in

Record = dict[str, Any]
SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(1)>'
FREE_TEXT = [name for name, kind in COLUMNS if kind == "free_text"]
_ROW = re.compile(r'<tr data-id="([^"]*)">')
_NEXT = re.compile(r'<a href="([^"]*)" class="button" rel="next">')
_TOTAL = re.compile(r"Calls found: ([0-9\u202f]+)")
_PROBLEM = re.compile(r'<p class="problem" role="alert">([^<]*)</p>')


class Shop:
    """Accounts a (signed in to the console) and b, with generated calls."""

    def __init__(self, http: TestClient, store: Store) -> None:
        self.http, self.store = http, store
        self.a, self.key = new_account(store, "a")
        self.b, self.b_key = new_account(store, "b")
        self.calls = self.load(self.a, 130, seed=5, prefix="5")
        self.other = self.load(self.b, 30, seed=6, prefix="6")
        sign_in(http, self.key)

    def load(self, account: int, count: int, seed: int, prefix: str) -> list[Record]:
        calls = list(generate_calls(count, seed=seed, id_prefix=prefix, now=datetime(2020, 5, 20)))
        for index, call in enumerate(calls[:20]):  # calls sharing a second: keyset ties
            call["callTime"] = "2020-04-10 12:00:00" if index % 2 else calls[0]["callTime"]
        self.put(account, calls)
        return calls

    def put(self, account: int, calls: list[Record], mode: str = "insert") -> None:
        lines = b"\n".join(msgspec.json.encode(c) for c in calls)
        import_bytes(self.store, account, lines, self.store.settings.zone, mode)  # type: ignore[arg-type]

    def api(self, key: str | None = None, **params: str) -> tuple[list[Record], int]:
        """Every call /api/v4/calls gives for ``params``, newest first unless ordered; the
        total it counts."""
        params = {"order": "-callTime", **params}
        headers = {"authorization": f"Bearer {key or self.key}"}
        found: list[Record] = []
        cursor: str | None = None
        for _ in range(100):
            extra = {"cursor": cursor} if cursor else {}
            answer = self.http.get("/api/v4/calls", params={**params, **extra}, headers=headers)
            assert answer.status_code == 200, answer.text
            body = answer.json()
            found += body["calls"]
            cursor = body["next"]
            if cursor is None:
                return found, body["total"]
        raise AssertionError("the API walk never ended")

    def walk(
        self, params: dict[str, str] | None = None, http: TestClient | None = None
    ) -> tuple[list[str], set[int]]:
        """The ids of every page of /console/calls for ``params``, following its next
        links; the totals the pages show."""
        http = http or self.http
        params = params or {}
        url: str | None = "/console/calls?" + urlencode(params)
        ids: list[str] = []
        totals: set[int] = set()
        for _ in range(100):
            assert url is not None
            answer = http.get(url)
            assert answer.status_code == 200, answer.text
            ids += [html.unescape(found) for found in _ROW.findall(answer.text)]
            totals.add(total_of(answer.text))
            following = _NEXT.search(answer.text)
            if following is None:
                return ids, totals
            url = html.unescape(following.group(1))
            for name, value in params.items():  # the filters stay in the URL
                if name != "cursor":
                    assert f"{name}={quote(value, safe='')}" in url or name == "limit"
        raise AssertionError("the console walk never ended")


def total_of(page: str) -> int:
    found = _TOTAL.search(page)
    assert found, "the page shows no total"
    return int(found.group(1).replace("\u202f", ""))


@pytest.fixture
def shop(client: tuple[TestClient, Store]) -> Shop:
    return Shop(*client)


def filter_sets(shop: Shop) -> list[dict[str, str]]:
    """Filters taken from the data, each narrowing the calls (one of them combined)."""
    calls = shop.calls
    pick = next(c for c in calls if c["utm_source"] and c["utm_medium"] and c["utm_campaign"])
    tagged = next(c for c in calls if c["tags"])
    number = str(calls[7]["clientNumber"])
    return [
        {"status": "fail"},
        {"serviceType": "callback"},
        {"campaign": str(calls[3]["ctCampaignId"])},
        {"utm_source": pick["utm_source"]},
        {"utm_medium": pick["utm_medium"]},
        {"utm_campaign": pick["utm_campaign"]},
        {"tag": tagged["tags"][0]},
        {"unique": "true"},
        {"target": "false"},
        {"q": f"+{number[0]} ({number[1:4]}) {number[4:7]}"},
        {"from": "2020-04-01", "to": "2020-04-30"},
        {"status": "success", "unique": "true", "from": "2020-03-01"},
    ]


def test_the_filters_select_what_v4_selects_in_its_order(shop: Shop) -> None:
    everything, total = shop.api()
    assert total == len(shop.calls)
    ids, totals = shop.walk()
    assert ids == [c["universalId"] for c in everything]
    assert totals == {total}
    for params in filter_sets(shop):
        expected, count = shop.api(**params)
        assert 0 < count < total, params  # the filter narrows: the comparison means something
        ids, totals = shop.walk(params)
        assert ids == [c["universalId"] for c in expected], params
        assert totals == {count}, params
    oldest, _ = shop.api(order="callTime", status="success")
    ids, _ = shop.walk({"order": "callTime", "status": "success"})
    assert ids == [c["universalId"] for c in oldest]


def test_a_forms_empty_fields_are_no_filter(shop: Shop) -> None:
    empty = dict.fromkeys(("from", "to", "status", "campaign", "unique", "q", "tag"), "")
    ids, totals = shop.walk({**empty, "serviceType": "callback"})
    expected, count = shop.api(serviceType="callback")
    assert ids == [c["universalId"] for c in expected]
    assert totals == {count}


def test_paging_by_cursor_visits_every_call_once(shop: Shop) -> None:
    ids, totals = shop.walk({"limit": "25"})
    assert len(ids) == len(set(ids)) == len(shop.calls)
    assert set(ids) == {c["universalId"] for c in shop.calls}
    assert totals == {len(shop.calls)}
    first = shop.http.get("/console/calls?limit=25").text
    assert len(_ROW.findall(first)) == 25
    assert "First page" not in first  # only pages after the first link back to it
    second = shop.http.get(html.unescape(_NEXT.findall(first)[0])).text
    assert "First page" in second


def read_csv(body: bytes) -> list[list[str]]:
    assert body.startswith(b"\xef\xbb\xbf"), "no byte order mark: Excel would not read UTF-8"
    return list(csv.reader(io.StringIO(body.decode("utf-8-sig"), newline=""), delimiter=";"))


def cell(name: str, value: object) -> str:
    """A value of the API's record as the CSV for Excel writes it (a time zone's offset after a
    ', so that Excel keeps it as text)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return "'" + str(value) if name == "timezoneOffset" and value else str(value)


def test_the_csv_holds_the_apis_calls_for_the_same_filters(shop: Shop) -> None:
    for params in ({}, {"status": "fail", "from": "2020-04-01"}, {"order": "callTime"}):
        expected, _ = shop.api(**params)
        answer = shop.http.get("/console/calls.csv", params=params)
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/csv")
        assert "attachment" in answer.headers["content-disposition"]
        rows = read_csv(answer.content)
        assert rows[0] == list(FIELD_NAMES)
        assert [row[1:] for row in rows[1:]] == [
            [cell(name, call[name]) for name in FIELD_NAMES[1:]] for call in expected
        ], params


def read_xlsx(body: bytes) -> list[list[str]]:
    """The first sheet's cells as text (shared or inline strings, numbers, booleans)."""
    ns = {"x": "http://schemas.openxmlformats.org/spreadsheetml/2006/main"}
    with zipfile.ZipFile(io.BytesIO(body)) as book:
        sheet = ElementTree.fromstring(book.read("xl/worksheets/sheet1.xml"))
        shared: list[str] = []
        if "xl/sharedStrings.xml" in book.namelist():
            strings = ElementTree.fromstring(book.read("xl/sharedStrings.xml"))
            shared = ["".join(t.text or "" for t in s.iter(f"{{{ns['x']}}}t")) for s in strings]
    rows: list[list[str]] = []
    for row in sheet.iter(f"{{{ns['x']}}}row"):
        cells: list[str] = []
        for c in row.findall("x:c", ns):
            column = sum(
                (ord(ch) - 64) * 26**i
                for i, ch in enumerate(reversed(c.get("r", "A").rstrip("0123456789")))
            )
            cells += [""] * (column - 1 - len(cells))
            kind, value = c.get("t"), c.find("x:v", ns)
            if kind == "inlineStr":
                text = "".join(t.text or "" for t in c.iter(f"{{{ns['x']}}}t"))
            elif kind == "s":
                text = shared[int(value.text or 0)] if value is not None else ""
            else:
                text = value.text or "" if value is not None else ""
            cells.append(text)
        rows.append(cells)
    return rows


def test_the_xlsx_opens_with_the_apis_calls(shop: Shop) -> None:
    params = {"status": "success", "target": "true"}
    expected, _ = shop.api(**params)
    answer = shop.http.get("/console/calls.xlsx", params=params)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/vnd.openxmlformats")
    rows = read_xlsx(answer.content)
    assert rows[0] == list(FIELD_NAMES)
    assert [row[1] for row in rows[1:]] == [c["universalId"] for c in expected]
    column = FIELD_NAMES.index("clientNumber")
    assert [row[column] for row in rows[1:]] == [c["clientNumber"] for c in expected]


def test_the_csv_keeps_a_time_zone_offset_as_text_for_excel(shop: Shop) -> None:
    """Excel reads a bare "+0300" as the number 300: in the CSV for Excel it starts with a ',
    as free text that looks like a formula does; the XLSX cell is text already, unchanged."""
    plus, minus = dict(shop.calls[0]), dict(shop.calls[1])
    plus.update(universalId="tz-plus", timezoneOffset="+0300", tags=["tz"])
    minus.update(universalId="tz-minus", timezoneOffset="-0500", tags=["tz"])
    shop.put(shop.a, [plus, minus])
    rows = read_csv(shop.http.get("/console/calls.csv", params={"tag": "tz"}).content)
    offsets = {row[1]: row[FIELD_NAMES.index("timezoneOffset")] for row in rows[1:]}
    assert offsets == {"tz-plus": "'+0300", "tz-minus": "'-0500"}
    sheet = read_xlsx(shop.http.get("/console/calls.xlsx", params={"tag": "tz"}).content)
    cells = {row[1]: row[FIELD_NAMES.index("timezoneOffset")] for row in sheet[1:]}
    assert cells == {"tz-plus": "+0300", "tz-minus": "-0500"}
    api, _ = shop.api(tag="tz")
    assert {c["universalId"]: c["timezoneOffset"] for c in api} == {
        "tz-plus": "+0300",
        "tz-minus": "-0500",
    }


def _broken_after_headers(app: Any) -> Any:
    """``app`` behind a connection that breaks when the body is sent (the client went away)."""

    async def broken(scope: Any, receive: Any, send: Any) -> None:
        async def failing(message: Any) -> None:
            if message["type"] == "http.response.body":
                raise OSError("the connection broke")
            await send(message)

        await app(scope, receive, failing if scope["type"] == "http" else send)

    return broken


def test_the_xlsx_s_temporary_file_is_removed_sent_or_not(
    shop: Shop, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "temporary"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))  # where mkstemp makes its files
    answer = shop.http.get("/console/calls.xlsx")
    assert answer.status_code == 200, answer.text
    assert read_xlsx(answer.content)[0] == list(FIELD_NAMES)
    assert list(folder.iterdir()) == []
    broken = TestClient(_broken_after_headers(shop.http.app))
    broken.cookies = shop.http.cookies
    with pytest.raises(OSError, match="the connection broke"):
        broken.get("/console/calls.xlsx")
    assert list(folder.iterdir()) == []


def test_without_xlsxwriter_the_xlsx_is_501_naming_the_extra(
    shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "xlsxwriter", None)  # find_spec then finds nothing
    answer = shop.http.get("/console/calls.xlsx")
    assert answer.status_code == 501
    assert "pip install &#39;calltrack[xlsx]&#39;" in answer.text


def test_another_accounts_call_is_404_like_an_unknown_one(shop: Shop) -> None:
    mine = shop.http.get(f"/console/calls/{shop.calls[0]['universalId']}")
    assert mine.status_code == 200
    theirs = shop.http.get(f"/console/calls/{shop.other[0]['universalId']}")
    unknown = shop.http.get("/console/calls/999999999")
    assert shop.http.get("/console/calls.pdf").status_code == 404
    assert theirs.status_code == unknown.status_code == 404
    assert _PROBLEM.findall(theirs.text) == _PROBLEM.findall(unknown.text) == ["Nothing here."]
    assert str(shop.other[0]["clientNumber"]) not in theirs.text
    ids, _ = shop.walk()
    assert not set(ids) & {c["universalId"] for c in shop.other}


def test_a_role_key_sees_its_grantors_calls(shop: Shop, client: tuple[TestClient, Store]) -> None:
    store = shop.store
    grant = store.create_grant(store.create_role(shop.b, "viewer").id, shop.a)
    role_key = access.issue_role_key(store, grant)
    viewer = TestClient(shop.http.app)
    sign_in(viewer, role_key)
    ids, totals = shop.walk(http=viewer)
    expected, count = shop.api(role_key)
    assert ids == [c["universalId"] for c in expected]
    assert set(ids) == {c["universalId"] for c in shop.other}
    assert totals == {count}
    assert viewer.get(f"/console/calls/{shop.other[0]['universalId']}").status_code == 200
    assert viewer.get(f"/console/calls/{shop.calls[0]['universalId']}").status_code == 404
    rows = read_csv(viewer.get("/console/calls.csv").content)
    assert {row[1] for row in rows[1:]} == set(ids)


def hostile(shop: Shop) -> Record:
    """A call of a whose every free-text field is markup, its recording a javascript: URL."""
    call = dict(shop.calls[0])
    for index, name in enumerate(FREE_TEXT):
        call[name] = (SCRIPT, IMG)[index % 2]
    call.update(
        universalId=IMG,
        siteVisit=call["visitSite"],
        recordUrl="javascript:alert(1)",
        tags=[SCRIPT, IMG],
        hooks=[],
        callTime="2020-05-19 10:00:00",
        utm_content='=HYPERLINK("http://evil")',
        cbOfficeName="@SUM(1)",
    )
    shop.put(shop.a, [call])
    return call


def no_markup(page: str) -> None:
    assert SCRIPT not in page
    assert "<img" not in page
    assert IMG not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert not re.search(r"""(href|src)\s*=\s*["']?\s*javascript:""", page, re.IGNORECASE)
    assert " style=" not in page  # the CSP forbids inline styles
    for tag in re.findall(r"<script[^>]*>", page):
        assert "src=" in tag or 'type="application/json"' in tag


def test_hostile_values_are_text_never_markup(shop: Shop) -> None:
    call = hostile(shop)
    listed = shop.http.get(
        "/console/calls", params={"tag": SCRIPT, "utm_source": call["utm_source"]}
    )
    assert listed.status_code == 200
    assert [html.unescape(i) for i in _ROW.findall(listed.text)] == [IMG]
    no_markup(listed.text)
    link = f'href="/console/calls/{quote(IMG, safe="")}"'
    assert link in listed.text
    page = shop.http.get(f"/console/calls/{quote(IMG, safe='')}")
    assert page.status_code == 200
    no_markup(page.text)
    assert "<audio" not in page.text
    assert "No recording." in page.text
    assert "javascript:alert(1)" in page.text  # shown as the recordUrl's text only
    for name in FREE_TEXT:
        assert f'data-field="{name}"' in page.text  # every field of the record is listed
    rows = read_csv(shop.http.get("/console/calls.csv", params={"tag": SCRIPT}).content)
    record = dict(zip(rows[0], rows[1], strict=True))
    assert record["utm_content"] == '\'=HYPERLINK("http://evil")'
    assert record["cbOfficeName"] == "'@SUM(1)"
    assert record["referrer"] in (SCRIPT, IMG)  # not a formula: unchanged
    sheet = read_xlsx(shop.http.get("/console/calls.xlsx", params={"tag": SCRIPT}).content)
    cells = dict(zip(sheet[0], sheet[1], strict=False))
    assert cells["utm_content"] == '\'=HYPERLINK("http://evil")'


def test_a_calls_page_shows_its_record_recording_visit_and_deliveries(shop: Shop) -> None:
    store = shop.store
    hook = store.add_hook(shop.a, "https://crm.example.ru/hook?x=<b>", ["CALL_UPDATED"])
    call = dict(shop.calls[5])
    call["duration"] += 1
    shop.put(shop.a, [call], "put")  # a change: CALL_UPDATED
    [claimed] = store.claim_deliveries(unix_ms(), 10_000, 10)
    assert claimed.universal_id == call["universalId"]
    at = unix_ms()
    store.record_attempts(
        [AttemptResult(claimed.id, claimed.endpoint_id, at, 503, 12, "busy", "retry", at + 60_000)],
        86_400_000,
    )
    store.record_attempts(
        [AttemptResult(claimed.id, claimed.endpoint_id, at + 9, 204, 7, "", "delivered")],
        86_400_000,
    )
    page = shop.http.get(f"/console/calls/{call['universalId']}").text
    assert f'<audio controls preload="none" src="{call["recordUrl"]}">' in page
    assert "https://crm.example.ru/hook?x=&lt;b&gt;" in page
    assert "<b>" not in page
    assert "CALL_UPDATED" in page
    assert "delivered" in page
    assert page.index("HTTP 503") < page.index("HTTP 204")  # attempts oldest first
    assert f'data-delivery="{claimed.id}"' in page
    for name in FIELD_NAMES[1:]:
        assert f'data-field="{name}"' in page
    assert f'href="{call["entryPoint"]}"' in page  # the visit's pages link out (http only)
    assert hook.endpoint.account_id == shop.a
    # Another account's key sees neither the call nor its deliveries.
    assert store.call_deliveries([shop.b], call["universalId"]) == []
    assert len(store.call_deliveries([shop.a], call["universalId"])[0].attempts) == 2


BAD = [
    ("campaign", "abc"),
    ("status", "maybe"),
    ("serviceType", ""),  # empty: no filter (checked not to fail below)
    ("unique", "yes"),
    ("target", "1"),
    ("from", "yesterday"),
    ("to", "2020-13-45"),
    ("q", "abc"),
    ("cursor", "nope"),
    ("order", "up"),
    ("limit", "0"),
    ("limit", "100000"),
]


@pytest.mark.parametrize(("name", "value"), BAD)
def test_a_bad_parameter_is_400_naming_it(shop: Shop, name: str, value: str) -> None:
    answer = shop.http.get("/console/calls", params={name: value})
    if not value:
        assert answer.status_code == 200
        return
    assert answer.status_code == 400, answer.text
    [problem] = _PROBLEM.findall(answer.text)
    assert html.unescape(problem).startswith(f"The filter {name} was not understood: {name}: ")
    assert '<form method="get" action="/console/calls"' in answer.text  # to fix it
    if name not in ("cursor", "limit"):  # the downloads take the filters and the order
        for download in ("/console/calls.csv", "/console/calls.xlsx"):
            bad = shop.http.get(download, params={name: value})
            assert bad.status_code == 400
            assert f"{name}: " in html.unescape(bad.text)


def test_to_before_from_is_400_naming_to(shop: Shop) -> None:
    answer = shop.http.get("/console/calls", params={"from": "2020-05-02", "to": "2020-05-01"})
    assert answer.status_code == 400
    assert "to: is before from" in answer.text


def test_not_signed_in_goes_to_sign_in(client: tuple[TestClient, Store]) -> None:
    http, _ = client
    for path in (
        "/console/calls?status=fail",
        "/console/calls/123",
        "/console/calls.csv",
        "/console/calls.xlsx",
    ):
        answer = http.get(path, follow_redirects=False)
        assert answer.status_code == 303, path
        assert answer.headers["location"] == "/console/sign-in?next=" + quote(path, safe="")


def test_the_pages_speak_russian(shop: Shop) -> None:
    shop.http.cookies.set("calltrack_lang", "ru", path="/console")
    listed = shop.http.get("/console/calls").text
    assert "Найдено звонков: 130" in listed
    assert "Скачать" in listed
    one = shop.http.get(f"/console/calls/{shop.calls[0]['universalId']}").text
    assert "Визит, с которого позвонили" in one
    assert "Доставки вебхуков" in one
    bad = shop.http.get("/console/calls", params={"status": "x"}).text
    assert "Фильтр status не понят: status: expected success or fail" in bad
