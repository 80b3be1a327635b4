"""`calltrack export` and the export loop: formats, progress, resume, since-last, memory."""

from __future__ import annotations

import csv
import io
import json
import re
import sys
import tracemalloc
import zipfile
from collections import deque
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import msgspec
import pytest
from click.testing import CliRunner, Result
from starlette.applications import Starlette
from starlette.testclient import TestClient

from calltrack.api.app import create_app
from calltrack.client import CallRecord, Client, ClientError, command, export_calls
from calltrack.client.writers import XlsxWriter
from calltrack.config import Settings
from calltrack.model import FIELD_NAMES
from calltrack.store import open_store
from tests.conftest import new_account
from tests.test_client import load, rich_call
from tests.test_client_faults import KEY, FakeServer, Reply, envelope, record

WINDOW = ["--from", "2020-05-01", "--to", "2020-05-01"]


def v3_only(app: Starlette) -> Starlette:
    """The project's app as a server that predates API v4: its v4 routes removed (404)."""
    app.router.routes[:] = [
        route
        for route in app.router.routes
        if not getattr(route, "path", "").startswith("/api/v4/")
    ]
    return app


class App:
    """The project's app over a fresh SQLite store, reached by `calltrack export` in process.

    ``v4=False`` serves v3 only, as a server from before API v4."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, v4: bool = True) -> None:
        url = f"sqlite:///{tmp_path / 'calls.db'}"
        self.store = open_store(Settings.from_env(env={}, database_url=url, page_size=4))
        served = create_app(self.store.settings, self.store)
        self.http = TestClient(served if v4 else v3_only(served))
        self.http.__enter__()
        self.account, self.key = new_account(self.store, "a")
        self.tmp = tmp_path
        monkeypatch.setattr(command, "Client", partial(Client, transport=self.http._transport))

    def run(self, *args: str | Path) -> Result:
        base = ["--url", "http://testserver", "--key", self.key]
        return CliRunner().invoke(command.export, [*base, *map(str, args)])

    def calls(self) -> list[CallRecord]:
        with Client("http://testserver", self.key, transport=self.http._transport) as client:
            return list(client.iter_calls("2020-01-01", "2020-12-31"))

    def close(self) -> None:
        self.http.__exit__(None, None, None)
        self.store.close()


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    made = App(tmp_path, monkeypatch)
    yield made
    made.close()


@pytest.fixture
def v3_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    made = App(tmp_path, monkeypatch, v4=False)
    yield made
    made.close()


@pytest.fixture
def server() -> Iterator[FakeServer]:
    with FakeServer() as fake:
        fake.calls = [record(f"id{n}", f"2020-05-01 10:{n:02d}:00") for n in range(10)]
        yield fake


def run_fake(fake: FakeServer, *args: str | Path) -> Result:
    base = ["--url", fake.url, "--key", KEY, "--from", "2020-05-01", "--to", "2020-05-01"]
    return CliRunner().invoke(command.export, [*base, *map(str, args)])


def cut_off_at(page: int, fake: FakeServer, out: Path, *args: str | Path) -> None:
    """An export to ``out`` that fails at ``page`` as if the network dropped, no retries."""
    fake.faults[page] = deque([Reply(body=b"[", cut_at=0)])
    assert run_fake(fake, "-o", out, "--retries", "0", *args).exit_code == 1


def ok(result: Result) -> Result:
    assert result.exit_code == 0, result.output + result.stderr
    return result


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".part" in p.name or ".tmp" in p.name)


# -- formats -------------------------------------------------------------------------------


def test_csv_has_a_column_per_field_in_the_contracts_order(app: App) -> None:
    load(app.store, app.account, [rich_call(n) for n in range(6)])
    result = ok(app.run(*WINDOW, "-o", app.tmp / "calls.csv"))
    rows = list(csv.reader(io.StringIO((app.tmp / "calls.csv").read_text("utf-8"))))
    assert tuple(rows[0]) == FIELD_NAMES
    expected = app.calls()
    assert [row[1] for row in rows[1:]] == [call.universalId for call in expected]
    cells = dict(zip(rows[0], rows[1], strict=True))
    assert cells["city"] == "Москва"
    assert cells["utm_term"] == "купить диван, недорого\nс доставкой"
    assert json.loads(cells["hooks"])[0]["hookMethod"] == "POST"
    assert json.loads(cells["cbAttemptsQueue"]) == [1, 2, 3]
    assert cells["unique"] == "false"
    assert "exported 6 calls (2 pages)" in result.stdout
    assert leftovers(app.tmp) == []


def test_excel_csv_has_a_bom_semicolons_and_no_live_formulas(app: App) -> None:
    load(app.store, app.account, [rich_call(0) | {"referrer": "=HYPERLINK(1)"}])
    ok(app.run(*WINDOW, "-o", app.tmp / "calls.csv", "--excel"))
    data = (app.tmp / "calls.csv").read_bytes()
    assert data.startswith(b"\xef\xbb\xbfpage;universalId;")
    rows = list(csv.reader(io.StringIO(data[3:].decode()), delimiter=";"))
    assert dict(zip(rows[0], rows[1], strict=True))["referrer"] == "'=HYPERLINK(1)"


def test_the_format_comes_from_the_extension_unless_given(app: App) -> None:
    load(app.store, app.account, [rich_call(0)])
    ok(app.run(*WINDOW, "-o", app.tmp / "calls.txt", "--format", "jsonl"))
    assert msgspec.json.decode((app.tmp / "calls.txt").read_bytes())["universalId"]
    failed = app.run(*WINDOW, "-o", app.tmp / "calls.txt")
    assert failed.exit_code == 1
    assert "--format" in failed.stderr


def column_letter(index: int) -> str:
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(ord("A") + rest) + letters
    return letters


def first_row(path: Path) -> dict[str, tuple[str, str]]:
    """Field -> (cell type attribute, cell XML body) of the first sheet's first data row."""
    xml = zipfile.ZipFile(path).read("xl/worksheets/sheet1.xml").decode()
    cells = {
        ref: (kind, body)
        for ref, kind, body in re.findall(r'<c r="([A-Z]+)2"[^>]*?(?: t="(\w+)")?>(.*?)</c>', xml)
    }
    return {name: cells.get(column_letter(i), ("", "")) for i, name in enumerate(FIELD_NAMES)}


def test_xlsx_cells_have_real_types(app: App) -> None:
    load(app.store, app.account, [rich_call(0)])
    ok(app.run(*WINDOW, "-o", app.tmp / "calls.xlsx"))
    row = first_row(app.tmp / "calls.xlsx")
    assert row["duration"] == ("", "<v>0</v>")  # a number
    assert row["statusFirst"] == ("", "<v>200</v>")
    assert row["unique"] == ("b", "<v>0</v>")
    assert row["target"] == ("b", "<v>1</v>")
    assert row["callTime"][1].startswith("<v>43952.41666")  # a date: days since 1900
    assert row["city"] == ("inlineStr", "<is><t>Москва</t></is>")
    assert row["cbAttemptsQueue"] == ("inlineStr", "<is><t>[1,2,3]</t></is>")


def test_xlsx_goes_on_in_a_new_sheet_past_the_row_limit(tmp_path: Path) -> None:
    writer = XlsxWriter(tmp_path / "calls.xlsx", max_rows=3)  # a header and two calls
    writer.write([record(f"id{n}") for n in range(5)])
    writer.close()
    book = zipfile.ZipFile(tmp_path / "calls.xlsx")
    names = re.findall(r'<sheet name="([^"]+)"', book.read("xl/workbook.xml").decode())
    assert names == ["calls", "calls (2)", "calls (3)"]
    last = book.read("xl/worksheets/sheet3.xml").decode()
    assert "id4" in last
    assert "id3" not in last


def test_parquet_columns_have_real_types(app: App) -> None:
    # pyarrow ships no type information; src/calltrack/client/writers.py ignores it alike.
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    load(app.store, app.account, [rich_call(n) for n in range(5)])
    ok(app.run(*WINDOW, "-o", app.tmp / "calls.parquet"))
    table = pq.read_table(app.tmp / "calls.parquet")
    assert tuple(table.schema.names) == FIELD_NAMES
    types = {name: str(table.schema.field(name).type) for name in FIELD_NAMES}
    assert types["duration"] == "int64"
    assert types["unique"] == "bool"
    assert types["callTime"].startswith("timestamp")
    assert types["tags"] == "list<element: string>"
    assert types["hooks"].startswith("list<element: struct<hookEventName: string")
    first = table.slice(0, 1).to_pylist()[0]
    assert str(first["callTime"]) == "2020-05-01 10:00:00"
    assert first["localDate"] is not None
    assert table.num_rows == 5


def test_asking_for_xlsx_without_its_extra_names_the_extra(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "xlsxwriter", None)
    failed = app.run(*WINDOW, "-o", app.tmp / "calls.xlsx")
    assert failed.exit_code == 1
    assert "pip install 'calltrack[xlsx]'" in failed.stderr
    assert list(app.tmp.glob("calls.xlsx*")) == []


# -- progress --------------------------------------------------------------------------------


def test_the_progress_bar_shows_pages_calls_and_rate(app: App) -> None:
    load(app.store, app.account, [rich_call(n) for n in range(9)])
    shown = ok(app.run(*WINDOW, "-o", app.tmp / "calls.jsonl", "--progress"))
    assert "calls: 9, 3 pages" in shown.stderr
    assert "calls/s" in shown.stderr
    converted = ok(app.run(*WINDOW, "-o", app.tmp / "calls.xlsx", "--progress"))
    assert "writing calls.xlsx" in converted.stderr
    assert "9/9" in converted.stderr
    quiet = ok(app.run(*WINDOW, "-o", app.tmp / "calls.jsonl"))  # not a terminal
    assert quiet.stderr == ""
    assert quiet.stdout.count("\n") == 1


# -- resume ----------------------------------------------------------------------------------


def test_an_export_cut_off_by_network_loss_resumes_without_loss_or_duplicates(
    server: FakeServer, tmp_path: Path
) -> None:
    out = tmp_path / "calls.jsonl"
    server.faults[2] = deque([Reply(body=b"[" * 50, cut_at=10)])
    failed = run_fake(server, "-o", out, "--retries", "0")
    assert failed.exit_code == 1
    assert "--resume" in failed.stderr
    assert not out.exists()
    assert server.pages() == [0, 1, 2]
    server.requests.clear()
    ok(run_fake(server, "-o", out, "--resume", "--retries", "0"))
    assert server.pages() == [2, 3, 4]
    assert [json.loads(line)["universalId"] for line in out.read_text().splitlines()] == [
        f"id{n}" for n in range(10)
    ]
    assert leftovers(tmp_path) == []


def test_ctrl_c_leaves_an_export_that_resumes(
    server: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "calls.csv"
    ok(run_fake(server, "-o", tmp_path / "whole.csv"))
    real_page = Client._page

    def interrupted(self: Client, number: int, *args: Any) -> list[CallRecord]:
        if number == 2:
            raise KeyboardInterrupt
        return real_page(self, number, *args)

    monkeypatch.setattr(Client, "_page", interrupted)
    stopped = run_fake(server, "-o", out)
    assert stopped.exit_code == 130
    assert stopped.stderr == f"error: interrupted{resume_advice(out)}\n"
    monkeypatch.setattr(Client, "_page", real_page)
    ok(run_fake(server, "-o", out, "--resume"))
    assert out.read_bytes() == (tmp_path / "whole.csv").read_bytes()


def test_a_page_half_written_before_a_crash_is_dropped_on_resume(
    server: FakeServer, tmp_path: Path
) -> None:
    out = tmp_path / "calls.parquet"

    def crash(done: Any) -> None:
        if done.page == 1:
            raise SystemExit("crash")

    with Client(server.url, KEY) as client, pytest.raises(SystemExit):
        export_calls(client, out, "2020-05-01", "2020-05-01", on_page=crash)
    part = tmp_path / "calls.parquet.part"
    with part.open("ab") as stream:
        stream.write(b'{"universalId": "half a pa' + b"x" * 100_000)  # being written at death
    with Client(server.url, KEY) as client:
        result = export_calls(client, out, "2020-05-01", "2020-05-01", resume=True)
    assert result.resumed
    assert result.calls == 10
    import pyarrow.parquet as pq

    assert pq.read_table(out).column("universalId").to_pylist() == [f"id{n}" for n in range(10)]


def test_resume_refuses_an_unfinished_export_of_another_query(
    server: FakeServer, tmp_path: Path
) -> None:
    out = tmp_path / "calls.jsonl"
    cut_off_at(1, server, out)
    other = run_fake(server, "-o", out, "--resume", "--method", "getWithRole")
    assert other.exit_code == 1
    assert "another method" in other.stderr
    fresh = ok(run_fake(server, "-o", out))  # without --resume: starts over
    assert "resumed" not in fresh.stdout
    assert len(out.read_text().splitlines()) == 10


def test_a_walk_without_an_end_keeps_the_end_it_started_with(
    server: FakeServer, tmp_path: Path
) -> None:
    out = tmp_path / "calls.jsonl"
    moments = iter([1_600_000_000.0, 1_700_000_000.0])
    server.faults[1] = deque([Reply(body=b"[", cut_at=0)])
    with Client(server.url, KEY, retries=0) as client, pytest.raises(ClientError):
        export_calls(client, out, "2020-05-01", clock=lambda: next(moments))
    with Client(server.url, KEY) as client:
        export_calls(client, out, "2020-05-01", resume=True, clock=lambda: next(moments))
    assert {query.rsplit("/", 1)[1] for query in server.requests} == {"1600000000"}


def test_a_page_that_moves_under_the_walk_repeats_no_call(
    server: FakeServer, tmp_path: Path
) -> None:
    # Our server keeps a walk's pages in place; a v3 server that does not shifts them forward
    # when calls land in the window mid-walk, as this one does after page 0.
    def calls_land_before_the_walk(done: Any) -> None:
        if done.page == 0:
            server.calls[:0] = [record(f"late{n}", "2020-05-01 09:00:00") for n in range(2)]

    with Client(server.url, KEY) as client:
        result = export_calls(
            client,
            tmp_path / "calls.jsonl",
            "2020-05-01",
            "2020-05-01",
            on_page=calls_land_before_the_walk,
        )
    lines = (tmp_path / "calls.jsonl").read_text().splitlines()
    got = [json.loads(line)["universalId"] for line in lines]
    assert got == [f"id{n}" for n in range(10)]
    assert result.skipped == 2  # id1 and id2 of page 0 came round again on page 1


# -- since-last ------------------------------------------------------------------------------


def test_since_last_exports_only_the_calls_after_the_last_run(v3_app: App) -> None:
    app = v3_app  # a server without API v4: v3 windows (the feed's merge: test_client_changes)
    state = app.tmp / "state.json"
    first = app.tmp / "first.jsonl"
    assert "--from" in app.run("-o", first, "--since-last", state).stderr
    load(app.store, app.account, [rich_call(n) for n in range(5)])
    ok(app.run("--from", "2020-05-01", "-o", first, "--since-last", state))
    assert len(first.read_text().splitlines()) == 5
    saved = json.loads(state.read_text())
    assert saved["watermark"] == {"call_time": "2020-05-01 10:04:00", "ids": [f"{10**18 + 4}"]}

    same_second = rich_call(50, "2020-05-01 10:04:00")
    load(app.store, app.account, [same_second, rich_call(51, "2020-05-01 10:30:00")])
    second = app.tmp / "second.jsonl"
    result = ok(app.run("--from", "2020-05-01", "-o", second, "--since-last", state))
    got = [json.loads(line)["universalId"] for line in second.read_text().splitlines()]
    assert got == [f"{10**18 + 50}", f"{10**18 + 51}"]
    assert "1 seen before and skipped" in result.stdout

    third = app.tmp / "third.jsonl"
    ok(app.run("-o", third, "--since-last", state))
    assert third.read_text() == ""


def test_since_last_state_moves_only_when_the_run_succeeded(
    server: FakeServer, tmp_path: Path
) -> None:
    state = tmp_path / "state.json"
    ok(run_fake(server, "-o", tmp_path / "a.jsonl", "--since-last", state))
    before = state.read_bytes()
    server.calls.append(record("id10", "2020-05-01 11:00:00"))
    server.faults[0] = deque([Reply(503, b"")])
    assert run_fake(server, "-o", tmp_path / "b.jsonl", "--since-last", state, "--retries", "0")
    assert state.read_bytes() == before
    ok(run_fake(server, "-o", tmp_path / "b.jsonl", "--since-last", state))
    assert json.loads(state.read_text())["watermark"]["ids"] == ["id10"]


def test_an_interrupted_since_last_run_resumes_and_then_moves_the_state(
    server: FakeServer, tmp_path: Path
) -> None:
    state = tmp_path / "state.json"
    out = tmp_path / "calls.jsonl"
    cut_off_at(2, server, out, "--since-last", state)
    assert not state.exists()
    ok(run_fake(server, "-o", out, "--since-last", state, "--resume"))
    assert len(out.read_text().splitlines()) == 10
    saved = json.loads(state.read_text())
    assert saved["watermark"] == {"call_time": "2020-05-01 10:09:00", "ids": ["id9"]}
    assert saved["from"] == "1588316940"  # 10:09 Moscow time


def resume_advice(out: Path) -> str:
    part = out.with_name(out.name + ".part")
    return (
        f"\nthe export is unfinished in {part}: run the same command with --resume to continue it"
    )


def test_a_transient_failure_keeps_the_part_and_advises_resume(
    server: FakeServer, tmp_path: Path
) -> None:
    out = tmp_path / "calls.jsonl"
    server.faults[1] = deque([envelope("Service temporarily unavailable", 503)])
    failed = run_fake(server, "-o", out, "--retries", "0")
    assert failed.exit_code == 1
    assert failed.stderr == (
        f"error: HTTP 503: Service temporarily unavailable{resume_advice(out)}\n"
    )
    assert leftovers(tmp_path) == ["calls.jsonl.part", "calls.jsonl.part.state"]
    assert len((tmp_path / "calls.jsonl.part").read_text().splitlines()) == 3  # page 0


def test_an_export_goes_past_an_empty_page_and_resumes_after_it(
    server: FakeServer, tmp_path: Path
) -> None:
    out = tmp_path / "calls.jsonl"
    server.faults[1] = deque([Reply(body=b"[]")] * 2)  # its calls were deleted mid-walk
    cut_off_at(2, server, out)
    result = ok(run_fake(server, "-o", out, "--resume"))
    got = [json.loads(line)["universalId"] for line in out.read_text().splitlines()]
    assert got == [f"id{n}" for n in (0, 1, 2, 6, 7, 8, 9)]
    assert "exported 7 calls (3 pages)" in result.stdout
    assert server.pages() == [0, 1, 2, 1, 2, 3, 4]  # the empty page is asked again on resume


# -- what is refused: before asking, or for good ---------------------------------------------


@pytest.mark.parametrize(
    ("window", "message"),
    [
        (
            ["--from", "2020-13-45"],
            "--from: not a date: '2020-13-45' (there is no such day)",
        ),
        (
            ["--from", "2020-05-01", "--to", "2020-02-30"],
            "--to: not a date: '2020-02-30' (there is no such day)",
        ),
        (
            ["--from", "May 1st"],
            "--from: not a date: 'May 1st' (use YYYY-MM-DD, a unix timestamp or an ISO date-time)",
        ),
        (
            ["--from", "1" * 19],
            f"--from: not a timestamp: '{'1' * 19}' has more than 18 digits",
        ),
        (
            ["--from", "2020-05-02", "--to", "2020-05-01"],
            "--from 2020-05-02 is after --to 2020-05-01: the window holds no call",
        ),
        (
            ["--from", "1588280400", "--to", "2020-04-30"],  # 2020-05-01 00:00 Moscow time
            "--from 1588280400 is after --to 2020-04-30: the window holds no call",
        ),
    ],
    ids=["month-13", "february-30", "words", "timestamp-19-digits", "from-after-to", "mixed"],
)
def test_a_bad_date_is_refused_before_any_request(
    server: FakeServer, tmp_path: Path, window: list[str], message: str
) -> None:
    args = ["--url", server.url, "--key", KEY, *window, "-o", str(tmp_path / "calls.csv")]
    failed = CliRunner().invoke(command.export, args)
    assert (failed.exit_code, failed.stderr) == (1, f"error: {message}\n")
    assert server.requests == []
    assert list(tmp_path.iterdir()) == []


def test_the_same_day_as_from_and_to_is_a_window(server: FakeServer, tmp_path: Path) -> None:
    ok(run_fake(server, "-o", tmp_path / "calls.csv"))  # --from 2020-05-01 --to 2020-05-01
    assert server.requests


@pytest.mark.parametrize(
    ("url", "key", "message"),
    [
        (
            None,
            "abcd1234",
            "an API key is 16 characters, each a-z or 0-9 (this one has 8 characters)",
        ),
        (
            None,
            "ABCD1234EFGH5678",
            "an API key is 16 characters, each a-z or 0-9 "
            "(this one has 16 characters, not all of them a-z or 0-9)",
        ),
        (
            "ftp://127.0.0.1",
            KEY,
            "the server URL must be http:// or https://, got 'ftp://127.0.0.1'",
        ),
    ],
    ids=["short-key", "capitals", "scheme"],
)
def test_a_malformed_key_or_url_is_refused_before_any_request(
    server: FakeServer, tmp_path: Path, url: str | None, key: str, message: str
) -> None:
    args = ["--url", url or server.url, "--key", key, *WINDOW, "-o", str(tmp_path / "c.csv")]
    failed = CliRunner().invoke(command.export, args)
    assert (failed.exit_code, failed.stderr) == (1, f"error: {message}\n")
    assert key not in failed.stderr  # a key is never shown
    assert server.requests == []
    assert list(tmp_path.iterdir()) == []


def test_a_wrong_key_says_so_and_leaves_no_part_and_no_advice(app: App) -> None:
    load(app.store, app.account, [rich_call(n) for n in range(6)])
    base = ["--url", "http://testserver", "--key", "0123456789abcdef", *WINDOW]
    failed = CliRunner().invoke(command.export, [*base, "-o", str(app.tmp / "calls.csv")])
    assert failed.exit_code == 1
    assert failed.stderr == (
        "error: the server does not know this API key (mistyped, revoked, or another "
        "server's): the server said 'User is not recognized'\n"
    )
    assert leftovers(app.tmp) == []
    assert not (app.tmp / "calls.csv").exists()


def test_an_http_4xx_is_final_and_leaves_no_part(server: FakeServer, tmp_path: Path) -> None:
    out = tmp_path / "calls.jsonl"
    server.faults[1] = deque([Reply(404, b"<h1>Not Found</h1>")])
    failed = run_fake(server, "-o", out)
    assert failed.exit_code == 1
    assert failed.stderr == f"error: page 1: HTTP 404 from {server.url}/api/ (is it a v3 API?)\n"
    assert server.pages() == [0, 1]  # not retried
    assert leftovers(tmp_path) == []


def test_a_permanent_error_on_resume_keeps_the_earlier_runs_pages(
    server: FakeServer, tmp_path: Path
) -> None:
    out = tmp_path / "calls.jsonl"
    cut_off_at(2, server, out)
    server.faults[2] = deque([envelope("User is not recognized")])  # the key was revoked
    failed = run_fake(server, "-o", out, "--resume")
    assert failed.exit_code == 1
    part = tmp_path / "calls.jsonl.part"
    assert failed.stderr.endswith(
        f"\nthe unfinished export in {part} is kept: once that is fixed, "
        "the same command with --resume continues it\n"
    )
    assert len(part.read_text().splitlines()) == 6  # pages 0 and 1, of the first run
    ok(run_fake(server, "-o", out, "--resume"))
    assert len(out.read_text().splitlines()) == 10


def test_resume_with_nothing_to_resume_starts_afresh(server: FakeServer, tmp_path: Path) -> None:
    result = ok(run_fake(server, "-o", tmp_path / "calls.jsonl", "--resume"))
    assert "exported 10 calls (4 pages)" in result.stdout
    assert "resumed" not in result.stdout


# -- memory ----------------------------------------------------------------------------------


def peak_bytes(fake: FakeServer, calls: int, out: Path) -> int:
    fake.calls = [
        record(f"id{n}", f"2020-05-01 {10 + n // 3600:02d}:{n // 60 % 60:02d}:{n % 60:02d}")
        for n in range(calls)
    ]
    fake.page_size = 300
    tracemalloc.start()
    try:
        with Client(fake.url, KEY) as client:
            result = export_calls(client, out, "2020-05-01", "2020-05-01")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.calls == calls  # after the finally: a failed export shows its own error
    return peak


def test_memory_stays_flat_however_many_calls_are_exported(
    server: FakeServer, tmp_path: Path
) -> None:
    small = peak_bytes(server, 600, tmp_path / "small.csv")
    large = peak_bytes(server, 6_000, tmp_path / "large.csv")
    assert large < small * 1.5, (small, large)
