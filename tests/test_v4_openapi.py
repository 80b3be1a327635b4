"""API v4's OpenAPI document against a real `calltrack serve` (issue 14).

1. The document that GET /api/v4/openapi.json serves is valid OpenAPI 3.1
   (openapi-spec-validator).
2. Schemathesis runs every operation of that document against the server, on a SQLite
   database of demo calls (with a delete in the feed): requests from the document's schemas
   (positive) and outside them (negative), sent with a user key, a role key, no key, a wrong
   key or another scheme, and with the Accept headers clients send (JSON, NDJSON, both, any).
   Every answer must pass schemathesis's not_a_server_error, status_code_conformance,
   content_type_conformance, response_schema_conformance and response_headers_conformance;
   NDJSON answers (which schemathesis does not read) are checked line by line here against the
   stream's ``x-itemSchema``: items, then the end line.

Bounded: ``CALLTRACK_SCHEMATHESIS_EXAMPLES`` examples per operation (default 150) and a timeout
per request (about 20 s on two cores); a run with more (e.g. 2000) looks harder. Every
failing answer is listed with the key it used and a curl command that repeats it.
"""

from __future__ import annotations

import base64
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hypothesis
import jsonschema_rs
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase
from hypothesis import strategies as st
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from calltrack.api.v4.openapi import document
from calltrack.config import Settings
from calltrack.store import open_store
from tests.faults._common import Server, cli

EXAMPLES = int(os.environ.get("CALLTRACK_SCHEMATHESIS_EXAMPLES", "150"))
REQUEST_TIMEOUT = 15.0
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
NDJSON = "application/x-ndjson"
# What clients send: none (requests sends */*), JSON, NDJSON, both, and something else.
ACCEPTS = (
    None,
    "application/json",
    NDJSON,
    f"{NDJSON}, application/json;q=0.5",
    "application/problem+json, application/json",
    "text/html",
)


@dataclass
class Live:
    """The running server, its keys (label -> Authorization header, None: send none), and
    values the document cannot know: real call ids and cursors."""

    server: Server
    authorizations: dict[str, str | None]
    call_ids: list[str]
    cursors: dict[str, list[str]]  # query parameter -> real values
    deleted: str


def _get(url: str, key: str, accept: str = "application/json") -> Any:
    headers = {"Authorization": f"Bearer {key}", "Accept": accept}
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT) as answer:
        return json.loads(answer.read())


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    work: Path = tmp_path_factory.mktemp("v4-openapi")
    database = f"sqlite:///{work / 'v4.db'}"
    demo = cli(database, "demo", "--no-serve", "--calls", "300")
    keys: dict[str, str] = demo["keys"]
    role_key: str = demo["role_keys"][0]["api_key"]
    server = Server(database, work / "serve.log", workers=1)
    try:
        dealer = keys["demo-dealer"]
        page = _get(f"{server.base}/api/v4/calls?limit=3", dealer)
        deleted = page["calls"][0]["universalId"]
        store = open_store(Settings.from_env(env={}, database_url=database))
        try:  # a delete in the feed, so that the run meets one
            assert store.delete_call(store.find_account("demo-dealer").id, deleted) == 1
        finally:
            store.close()
        feed = _get(f"{server.base}/api/v4/calls/changes?limit=5", dealer)
        ids = [call["universalId"] for call in page["calls"][1:]]
        yield Live(
            server=server,
            authorizations={
                "user key": f"Bearer {keys['demo-agency']}",
                "user key (dealer)": f"bearer {dealer}",
                "role key": f"Bearer {role_key}",
                "no key": None,
                "wrong key": "Bearer not-a-key-0000",
                "other scheme": f"Basic {dealer}",
            },
            call_ids=[*ids, deleted, "no-such-call"],
            cursors={
                "after": [feed["next"], feed["changes"][-1]["cursor"]],
                "cursor": [page["next"]],
            },
            deleted=deleted,
        )
    finally:
        server.stop()


def served_document(live: Live) -> dict[str, Any]:
    with urllib.request.urlopen(live.server.base + "/api/v4/openapi.json", timeout=10) as answer:
        assert answer.headers.get_content_type() == "application/json"
        found: dict[str, Any] = json.loads(answer.read())
    return found


# -- 1. the document --------------------------------------------------------------------------


def test_the_served_document_is_valid_openapi_3_1(live: Live) -> None:
    served = served_document(live)
    assert served == json.loads(document())
    assert served["openapi"].startswith("3.1.")
    validate(served)  # raises on any error; the 3.1 validator is chosen by `openapi`


def test_the_validator_refuses_a_broken_document() -> None:
    """The validation above can fail: the same document with a response that has no
    description (which OpenAPI requires) does not pass."""
    broken = json.loads(document())
    del broken["paths"]["/api/v4/calls/changes"]["get"]["responses"]["200"]["description"]
    with pytest.raises(OpenAPIValidationError):
        validate(broken)


# -- 2. schemathesis against the live server --------------------------------------------------


@dataclass
class Findings:
    """Every failing answer of a run, for one report at its end."""

    problems: list[str] = field(default_factory=list)
    requests: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    ndjson_answers: int = 0

    def add(self, what: str, curl: str) -> None:
        self.problems.append(f"{what}\n    {curl}")

    def report(self) -> str:
        shown = "\n".join(self.problems[:30])
        more = len(self.problems) - 30
        return shown + (f"\n... and {more} more" if more > 0 else "")


def ndjson_problems(
    body: bytes, item: jsonschema_rs.Validator, end: jsonschema_rs.Validator
) -> list[str]:
    """What is wrong with an NDJSON answer: its lines must be items, then one end line."""
    if not body.endswith(b"\n"):
        return ["the stream does not end with a newline (cut short?)"]
    lines = body.split(b"\n")[:-1]
    found: list[str] = []
    for number, line in enumerate(lines, 1):
        try:
            value = json.loads(line)
        except ValueError:
            found.append(f"line {number} is not JSON: {line[:80]!r}")
            continue
        validator = end if number == len(lines) else item
        for error in validator.iter_errors(value):
            found.append(f"line {number}: {error.message[:200]}")
    return found


def line_validators(doc: dict[str, Any]) -> dict[str, tuple[jsonschema_rs.Validator, ...]]:
    """Per streamed path: validators of its item lines and of its end line, from the
    stream's ``x-itemSchema`` (``oneOf``: item, end) in the served document."""
    found: dict[str, tuple[jsonschema_rs.Validator, ...]] = {}
    for path, item in doc["paths"].items():
        content = item["get"]["responses"]["200"]["content"]
        if NDJSON in content:
            item_ref, end_ref = content[NDJSON]["x-itemSchema"]["oneOf"]
            found[path] = tuple(
                jsonschema_rs.Draft202012Validator({**ref, "components": doc["components"]})
                for ref in (item_ref, end_ref)
            )
    return found


def exercise(
    live: Live,
    operation: Any,
    lines: dict[str, tuple[jsonschema_rs.Validator, ...]],
    findings: Findings,
    examples: int,
) -> None:
    """Schemathesis's cases of one operation, in both modes, with varied keys and Accepts."""
    session = requests.Session()
    base = live.server.base
    strategy = operation.as_strategy(GenerationMode.POSITIVE) | operation.as_strategy(
        GenerationMode.NEGATIVE
    )
    path_template: str = operation.path

    @hypothesis.settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @hypothesis.given(
        case=strategy,
        # Mostly keys that answer, so that most answers are the resources themselves.
        key=st.sampled_from([*list(live.authorizations)[:3] * 2, *live.authorizations]),
        accept=st.sampled_from(ACCEPTS),
        data=st.data(),
    )
    def run(case: Any, key: str, accept: str | None, data: st.DataObject) -> None:
        # Values the document cannot know, now and then: real call ids and cursors.
        if "universalId" in (case.path_parameters or {}) and data.draw(st.booleans()):
            case.path_parameters["universalId"] = data.draw(st.sampled_from(live.call_ids))
        for name, values in live.cursors.items():
            if isinstance(case.query, dict) and name in case.query and data.draw(st.booleans()):
                case.query[name] = data.draw(st.sampled_from(values))
        headers = {}
        authorization = live.authorizations[key]
        if authorization is not None:
            headers["Authorization"] = authorization
        if accept is not None:
            headers["Accept"] = accept
        curl = f"({key}) " + case.as_curl_command(headers=headers, base_url=base)
        findings.requests += 1
        try:
            response = case.call(
                base_url=base, session=session, headers=headers, timeout=REQUEST_TIMEOUT
            )
        except requests.RequestException as exc:
            findings.add(f"{operation.label}: no answer: {exc!r}", curl)
            return
        findings.statuses[response.status_code] = findings.statuses.get(response.status_code, 0) + 1
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except (Failure, FailureGroup) as exc:
            failures = exc.exceptions if isinstance(exc, FailureGroup) else (exc,)
            for failure in failures:
                message = " ".join(failure.message.split())[:300]
                findings.add(
                    f"{operation.label} -> {response.status_code}: {failure.title}: {message}", curl
                )
        content_type = response.headers.get("content-type", [""])[0]
        if response.status_code == 200 and content_type.startswith(NDJSON):
            findings.ndjson_answers += 1
            if path_template not in lines:
                findings.add(f"{operation.label}: NDJSON, which it does not document", curl)
                return
            item, end = lines[path_template]
            for problem in ndjson_problems(response.content, item, end):
                findings.add(f"{operation.label} NDJSON: {problem}", curl)

    run()


def load_schema(doc: dict[str, Any], base: str) -> Any:
    schema = schemathesis.openapi.from_dict(doc)
    schema.config.update(base_url=base)
    return schema


def run_all(live: Live, doc: dict[str, Any], examples: int) -> tuple[Findings, dict[str, int]]:
    """Schemathesis over every operation of ``doc``; the findings and requests per operation."""
    schema = load_schema(doc, live.server.base)
    lines = line_validators(doc)
    findings = Findings()
    per_operation = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        before = findings.requests
        exercise(live, operation, lines, findings, examples)
        per_operation[operation.label] = findings.requests - before
    return findings, per_operation


def test_schemathesis_finds_no_server_error_and_no_answer_off_the_document(live: Live) -> None:
    doc = served_document(live)
    started = time.monotonic()
    findings, per_operation = run_all(live, doc, EXAMPLES)
    took = time.monotonic() - started
    assert not findings.problems, f"{len(findings.problems)} problems:\n{findings.report()}"
    # The run reached what it is meant to judge (not only 400s and 401s).
    assert set(per_operation) == {f"GET {path}" for path in doc["paths"]}, per_operation
    assert all(count >= min(EXAMPLES, 20) for count in per_operation.values()), per_operation
    for status in (200, 400, 401, 404):
        assert findings.statuses.get(status, 0) > 0, findings.statuses
    assert findings.ndjson_answers > 0
    print(f"schemathesis: {findings.requests} requests in {took:.1f} s, {findings.statuses}")


def test_the_run_catches_answers_off_the_document(live: Live) -> None:
    """The run above can fail: against a document that says `total` is a string, an error
    is 418, a call has no `hooks`, and the changes stream ends with a `done` line, the same
    service's answers are reported."""
    doc = served_document(live)
    schemas = doc["components"]["schemas"]
    schemas["CallsPage"]["properties"]["total"] = {"type": "string"}
    del schemas["CallRecord"]["properties"]["hooks"]
    schemas["ChangesEnd"]["required"].append("done")
    for path in doc["paths"].values():
        responses = path["get"]["responses"]
        if "401" in responses:
            responses["418"] = responses.pop("401")
    findings, _ = run_all(live, doc, 30)
    report = "\n".join(findings.problems)
    assert "GET /api/v4/calls -> 200" in report, report
    assert "Response violates schema" in report, report
    assert "Undocumented status code" in report, report
    # The NDJSON lines are judged too: a stream's end line has no `done`, each call a `hooks`.
    key = live.authorizations["user key"]
    assert key is not None
    request = urllib.request.Request(
        live.server.base + "/api/v4/calls/changes?limit=3",
        headers={"Authorization": key, "Accept": NDJSON},
    )
    with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT) as answer:
        body = answer.read()
    item, end = line_validators(doc)["/api/v4/calls/changes"]
    problems = ndjson_problems(body, item, end)
    assert len(problems) == 4, problems
    assert all("hooks" in problem for problem in problems[:3]), problems
    assert "done" in problems[3], problems
    assert ndjson_problems(body.rstrip(b"\n"), item, end) == [
        "the stream does not end with a newline (cut short?)"
    ]


# -- what the runs found ----------------------------------------------------------------------


def _raw_get(live: Live, target: str, key: str = "user key") -> tuple[int, str, Any]:
    authorization = live.authorizations[key]
    assert authorization is not None
    request = urllib.request.Request(
        live.server.base + target, headers={"Authorization": authorization}
    )
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT) as answer:
            return answer.status, answer.headers.get_content_type(), json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get_content_type(), json.loads(error.read())


def _cursor(prefix: str, text: str) -> str:
    return prefix + base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    ("target", "parameter"),
    [
        # str.isdigit() takes "²", which int() refuses: these were 500s.
        ("/api/v4/calls?limit=%C2%B2", "limit"),
        ("/api/v4/calls/changes?limit=%C2%B2", "limit"),
        ("/api/v4/calls?campaign=%C2%B2", "campaign"),
        ("/api/v4/stats?campaign=%C2%B2", "campaign"),
        # Past SQL's BIGINT the database driver overflows: 500s too.
        ("/api/v4/calls?campaign=99999999999999999999999", "campaign"),
        ("/api/v4/stats?by=campaign&campaign=99999999999999999999999", "campaign"),
        (f"/api/v4/calls?cursor={_cursor('k1.', '99999999999999999999999.1.0')}", "cursor"),
        (f"/api/v4/calls?cursor={_cursor('k1.', '1.99999999999999999999999.0')}", "cursor"),
        # Digits of other scripts are not numbers of this API (were taken as 3 and 33).
        ("/api/v4/calls?campaign=%D9%A3", "campaign"),
        ("/api/v4/calls?from=%D9%A3%D9%A3", "from"),
        ("/api/v4/calls?q=%C2%B2", "q"),
    ],
)
def test_numbers_the_api_cannot_take_are_a_400_naming_them(
    live: Live, target: str, parameter: str
) -> None:
    status, content_type, body = _raw_get(live, target)
    assert (status, content_type) == (400, "application/problem+json"), body
    assert body["parameter"] == parameter


def test_the_largest_numbers_the_api_takes_still_answer(live: Live) -> None:
    largest = "9" * 18
    status, _, body = _raw_get(live, f"/api/v4/calls?campaign={largest}")
    assert (status, body["calls"], body["total"]) == (200, [], 0)
    cursor = _cursor("k1.", f"{largest}.{largest}.0")
    status, _, body = _raw_get(live, f"/api/v4/calls?cursor={cursor}")
    assert (status, body["calls"]) == (200, [])
    status, _, body = _raw_get(live, f"/api/v4/calls?cursor={_cursor('k1.', f'-{largest}.1.0')}")
    assert status == 200
    assert body["calls"]


def test_a_changes_cursor_past_bigint_is_a_400(live: Live) -> None:
    after = _cursor("c1.", "99999999999999999999999.0.1-2-3.")
    status, content_type, body = _raw_get(live, f"/api/v4/calls/changes?after={after}")
    assert (status, content_type) == (400, "application/problem+json"), body
    assert body["parameter"] == "after"
