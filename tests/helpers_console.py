"""Signing in to the console from a TestClient (or any httpx-like client), reading forms, and
what the overview must count of a set of call records."""

from __future__ import annotations

import re
from typing import Any

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    """The CSRF token of the first form of a page."""
    found = _CSRF.search(html)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


def sign_in(http: Any, key: str, next_path: str = "/console/") -> Any:
    """Signs ``http`` in with ``key`` (its cookies keep the session); the answer to the POST."""
    form = http.get("/console/sign-in")
    assert form.status_code == 200, form.text
    answer = http.post(
        "/console/sign-in",
        data={"csrf": csrf_of(form.text), "key": key, "next": next_path},
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    return answer


def overview_counts(records: list[dict[str, Any]]) -> dict[str, int]:
    """The overview's five counts of ``records`` (calls as imported, v3 fields), counted here
    rather than asked of the service."""
    return {
        "calls": len(records),
        "answered": sum(r["status"] == "success" for r in records),
        "unique": sum(bool(r["unique"]) for r in records),
        "target": sum(bool(r["target"]) for r in records),
        "uniqueTarget": sum(bool(r["uniqueTarget"]) for r in records),
    }


def post_form(http: Any, path: str, page_path: str, **fields: str) -> Any:
    """POSTs a form of the page at ``page_path`` with its CSRF token and ``fields``."""
    page = http.get(page_path)
    assert page.status_code == 200, page.text
    return http.post(path, data={"csrf": csrf_of(page.text), **fields}, follow_redirects=False)
