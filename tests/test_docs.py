"""The documentation tells the truth: its examples are sent to a real server and checked.

Every fenced ```http block of the API documents is one exchange: a request line (with a body
after it for writes), a blank line, the status and content type, the headers the answer must
carry (``name: value``) or must not (``name: (none)``), a blank line, then the answer's body.
In values and bodies ``…`` stands for any text within a line. The blocks run in the order of
the file against ``calltrack serve`` over the example data below (the accounts, keys and calls
the documents name), on SQLite and on PostgreSQL. And no document points outside the
repository, nor to a file or heading that does not exist.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest

from calltrack.access import hash_key
from calltrack.importer import import_bytes
from calltrack.store import Store
from tests.conftest import StoreFactory
from tests.faults._common import Server

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_DOCS = ("docs/api.md", "docs/formats.md")
ALL_DOCS = sorted(
    [ROOT / "README.md", ROOT / "SECURITY.md", *ROOT.glob("docs/**/*.md"), *ROOT.glob("bench/*.md")]
)

# The example data of docs/api.md section 12.
DEALER_KEY = "x9xx99xx99xxxx99"
AGENCY_KEY = "a9aa99aa99aaaa99"
ROLE_KEY = "r9rr99rr99rrrr99"

CALLBACK: dict[str, Any] = {
    "universalId": "1010000000001",
    "serviceType": "callback",
    "clientNumber": "79130381698",
    "managerNumber": "74951234567",
    "callerIdToManager": "79130381698",
    "callerIdToClient": "74951234500",
    "statusFirst": 200,
    "statusSecond": 200,
    "status": "success",
    "callTime": "2020-05-01 13:23:32",
    "localDate": "2020-05-01 15:23:32",
    "timezoneOffset": "+0200",
    "duration": 152,
    "tariffTime": 3,
    "site": "shop.example.ru",
    "recordUrl": "https://records.example.ru/1010000000001.mp3",
    "unique": True,
    "target": True,
    "uniqueTarget": False,
    "visitSite": "shop.example.ru",
    "siteVisit": "shop.example.ru",
    "referrer": "search.example.ru",
    "utm_source": "search",
    "utm_medium": "cpc",
    "utm_campaign": "spring",
    "utm_content": "goods",
    "utm_term": "sofa",
    "yaClid": "534543523543",
    "gaClid": "345345353.234234234",
    "city": "Екатеринбург",
    "region": "Свердловская область",
    "country": "Россия",
    "ipAddress": "192.0.2.10",
    "pagesCount": 5,
    "entryPoint": "https://shop.example.ru/sofas",
    "entryPointQuery": "https://shop.example.ru/sofas?utm_source=search",
    "callPage": "https://shop.example.ru/sofas/12",
    "counts": 2,
    "userAgent": "Mozilla/5.0 (X11; Linux x86_64)",
    "device": "desktop",
    "cbWidgetHash": "5f2b8c0e9a7d4e1f8a3b6c9d0e1f2a3b",
    "cbToolId": 1000,
    "cbCallId": 10000000,
    "cbUid": 1000,
    "cbToolName": "Виджет обратного звонка",
    "cbOfficeNumber": "0",
    "cbOfficeName": "Main office",
    "cbOrderDate": "2020-05-01 13:22:50",
    "cbAttempt": 2,
    "cbAttemptsQueue": [23636673],
    "cbConnectType": "auto",
    "cbSmartCallCount": 0,
    "cbIvrCount": 1,
    "cbEventSource": "widget",
    "tags": ["Повторный звонок"],
    "hooks": [
        {
            "hookEventName": "AFTER_CALL_FINISH",
            "hookAddress": "https://api.analytics.example.com/v1/calls",
            "hookMethod": "POST",
            "hookResponseStatus": 200,
        }
    ],
}
DEALER_CALLS: list[dict[str, Any]] = [
    CALLBACK,
    {
        "universalId": "1010000000002",
        "serviceType": "calltracking",
        "clientNumber": "79161234567",
        "status": "fail",
        "statusFirst": 486,
        "callTime": "2020-05-02 09:00:00",
        "site": "shop.example.ru",
        "ctCallId": 100000,
        "ctCampaignId": 1,
        "ctCampaignName": 'Весна, "скидки"',
        "ctIsListened": "0",
        "tags": ["VIP"],
    },
]
AGENCY_CALLS: list[dict[str, Any]] = [
    {
        "universalId": "2020000000001",
        "serviceType": "calltracking",
        "clientNumber": "79031112233",
        "status": "success",
        "callTime": "2020-05-02 11:00:00",
        "duration": 61,
        "tariffTime": 2,
        "site": "agency.example.com",
    }
]


def build_world(store: Store) -> None:
    """The accounts, keys, grant, campaigns and calls that the documents' examples use."""
    dealer = store.create_account("Dealer").id
    agency = store.create_account("Agency").id
    store.add_key(dealer, hash_key(DEALER_KEY), DEALER_KEY[:4])
    store.add_key(agency, hash_key(AGENCY_KEY), AGENCY_KEY[:4])
    grant = store.create_grant(store.create_role(dealer, "agency").id, agency)
    store.add_key(agency, hash_key(ROLE_KEY), ROLE_KEY[:4], grant_id=grant.id)
    store.add_campaign(dealer, 1, 'Весна, "скидки"', "shop.example.ru", "active")
    store.add_campaign(dealer, 2, "A&B <test>\tq", "x.ru", "paused")
    zone = store.settings.zone
    import_bytes(store, dealer, msgspec.json.encode(DEALER_CALLS), zone)
    import_bytes(store, agency, msgspec.json.encode(AGENCY_CALLS), zone)


# -- the examples ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Example:
    """One ```http block: the request and the answer the document promises."""

    doc: str
    line: int
    method: str
    target: str
    body: bytes
    status: int
    content_type: str
    headers: dict[str, str]
    answer: str


_FENCE = re.compile(r"^```http\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def examples(doc: str) -> list[Example]:
    text = (ROOT / doc).read_text(encoding="utf-8")
    found: list[Example] = []
    for match in _FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        request, head, *answer = match.group(1).split("\n\n", 2)
        first, *body = request.split("\n")
        method, target = first.split(" ", 1)
        status_line, *header_lines = head.strip("\n").split("\n")
        status, content_type = status_line.split(" ", 1)
        headers = dict(h.split(": ", 1) for h in header_lines)
        found.append(
            Example(
                doc,
                line,
                method,
                target,
                "\n".join(body).encode(),
                int(status),
                content_type,
                headers,
                answer[0].removesuffix("\n") if answer else "",
            )
        )
    return found


def matches(expected: str, actual: str) -> bool:
    """Whether ``actual`` is ``expected``, each ``…`` in it standing for any text in a line.

    An expected answer that is whole JSON is compared in the server's compact form, so the
    document may show it indented.
    """
    with contextlib.suppress(ValueError):  # not whole JSON: compared as text
        expected = json.dumps(json.loads(expected), ensure_ascii=False, separators=(",", ":"))
    pattern = ".*?".join(re.escape(part) for part in expected.split("…"))
    return re.fullmatch(pattern, actual) is not None


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


def send(port: int, example: Example) -> Reply:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(example.method, example.target, body=example.body or None)
        response = conn.getresponse()
        headers = {name.lower(): value for name, value in response.getheaders()}
        return Reply(response.status, headers, response.read())
    finally:
        conn.close()


@pytest.fixture
def server(make_store: StoreFactory, tmp_path: Path) -> Iterator[Server]:
    store = make_store()
    build_world(store)
    running = Server(store.settings.database_url, tmp_path / "server.log", workers=1)
    yield running
    running.stop()


def test_the_documents_hold_examples() -> None:
    for doc in EXAMPLE_DOCS:
        assert len(examples(doc)) >= 5, doc


@pytest.mark.parametrize("doc", EXAMPLE_DOCS)
def test_every_example_answers_as_documented(server: Server, doc: str) -> None:
    for example in examples(doc):
        where = f"{doc}:{example.line} {example.method} {example.target}"
        reply = send(server.port, example)
        assert reply.status == example.status, where
        assert reply.headers.get("content-type") == example.content_type, where
        for name, value in example.headers.items():
            if value == "(none)":
                assert name not in reply.headers, where
            else:
                assert matches(value, reply.headers.get(name, "(none)")), where
        if example.method == "HEAD":
            assert reply.body == b"", where
            continue
        text = reply.body.decode("utf-8")
        if example.content_type.startswith("text/csv"):
            assert text.endswith("\r\n"), where
            assert "\n" not in text.replace("\r\n", ""), where  # every line ends CRLF
            text = text.replace("\r\n", "\n")
        assert matches(example.answer, text.removesuffix("\n")), f"{where}\n{text[:2000]}"


# -- links -----------------------------------------------------------------------------------

_LINK = re.compile(r"\]\(([^)\s]+)\)")
_MACHINE_PATH = re.compile(r"\.\./shared|(?<![\w.])/(?:work|home|tmp|root|Users)/")


def test_no_document_points_outside_the_repository() -> None:
    for doc in ALL_DOCS:
        text = doc.read_text(encoding="utf-8")
        where = doc.relative_to(ROOT)
        assert not _MACHINE_PATH.search(text), f"{where}: {_MACHINE_PATH.search(text)}"
        for target in _LINK.findall(text):
            if re.match(r"[a-z]+:", target):
                continue  # a web address
            path, _, anchor = target.partition("#")
            resolved = (doc.parent / path).resolve() if path else doc
            assert resolved.is_relative_to(ROOT), f"{where}: {target}"
            assert resolved.exists(), f"{where}: {target}"
            if anchor and resolved.suffix == ".md":
                assert anchor in anchors(resolved), f"{where}: {target}"


def anchors(doc: Path) -> set[str]:
    """The anchors a markdown renderer gives the document's headings (GitHub's rule)."""
    found = set()
    for heading in re.findall(r"^#+ (.+)$", doc.read_text(encoding="utf-8"), re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(slug)
    return found
