"""gzip on request: the same bytes, compressed, only for clients that ask."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable

import pytest
from starlette.testclient import TestClient

from calltrack.api import encoding
from calltrack.api.answers import Answer
from calltrack.api.encoding import accepts_gzip, gzip_answer
from calltrack.store import Store
from tests.conftest import new_account
from tests.helpers_calls import seed

MakeClient = Callable[..., tuple[TestClient, Store]]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("gzip", True),
        ("gzip, deflate, br", True),
        ("br;q=1.0, gzip;q=0.8", True),
        ("*", True),
        ("gzip;q=0", False),
        ("deflate, br", False),
        ("", False),
        ("identity", False),
    ],
)
def test_accept_encoding_is_read_as_http_means_it(header: str, expected: bool) -> None:
    assert accepts_gzip(header) is expected


def raw(http: TestClient, url: str, encoding: str) -> tuple[dict[str, str], bytes]:
    # httpx2 would decode gzip for us; read the bytes as sent.
    with http.stream("GET", url, headers={"accept-encoding": encoding}) as answer:
        return dict(answer.headers), b"".join(answer.iter_raw())


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_a_page_is_gzipped_only_when_asked_and_decodes_to_the_same_bytes(
    make_client: MakeClient, fmt: str
) -> None:
    http, store = make_client()
    owner, key = new_account(store, "a")
    seed(store, owner, *[f"id{i}" for i in range(30)])
    url = f"/api/?{fmt}/v3/{key}/call/get/0/2020-01-01/2020-12-31"
    plain_headers, plain = raw(http, url, "identity")
    zipped_headers, zipped = raw(http, url, "gzip")
    assert "content-encoding" not in plain_headers
    assert zipped_headers["content-encoding"] == "gzip"
    assert zipped_headers["vary"] == "Accept-Encoding"
    assert gzip.decompress(zipped) == plain
    assert len(zipped) < len(plain)


def test_gzip_level_zero_turns_it_off(make_client: MakeClient) -> None:
    http, store = make_client(gzip_level=0)
    owner, key = new_account(store, "a")
    seed(store, owner, *[f"id{i}" for i in range(30)])
    headers, _ = raw(http, f"/api/?json/v3/{key}/call/get/0/2020-01-01/2020-12-31", "gzip")
    assert "content-encoding" not in headers


def test_small_error_answers_are_not_compressed(make_client: MakeClient) -> None:
    http, _ = make_client()
    headers, body = raw(http, "/api/?yaml/v3", "gzip")
    assert "content-encoding" not in headers
    assert body.startswith(b'{"inbound"')


@pytest.mark.parametrize("level", range(1, 10))
def test_every_level_gives_gzip_that_decodes_to_the_answer(level: int) -> None:
    call = '{"page":0,"city":"Москва"}'.encode()
    page = b"[" + b",".join([call] * 400) + b"]"
    whole = gzip_answer(Answer(page, "application/json"), level)
    chunked = gzip_answer(Answer(iter([page[:1000], page[1000:]]), "text/csv"), level)
    assert whole is not None
    assert chunked is not None
    assert isinstance(whole.body, bytes)
    assert gzip.decompress(whole.body) == page
    assert not isinstance(chunked.body, bytes)
    assert gzip.decompress(b"".join(chunked.body)) == page


def test_the_fast_levels_use_isa_l_where_installed() -> None:
    if not encoding.HAVE_ISAL:
        pytest.skip("isal has no wheels for this machine; zlib serves every level")
    from isal import isal_zlib

    assert "isal" in type(encoding._compressor(1)).__module__
    assert "isal" not in type(encoding._compressor(6)).__module__
    page = b"[" + b",".join(b'{"page":0,"n":%d}' % n for n in range(2000)) + b"]"
    assert encoding._compress(page, 1) == isal_zlib.compress(page, 1, encoding.GZIP_WBITS)
    assert encoding._compress(page, 6) == zlib.compress(page, 6, encoding.GZIP_WBITS)
