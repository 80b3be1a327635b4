"""The console's routes under ``/console``: sign-in and out, the language, static files, and
each page module's own routes (overview, calls, campaigns, settings)."""

from __future__ import annotations

import hmac
import secrets
import time
from typing import Final

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from calltrack import access
from calltrack.api.app import service_of
from calltrack.api.tracking import client_ip, via_https
from calltrack.console import calls, campaigns, i18n, overview, settings
from calltrack.console.session import (
    COOKIE,
    LANGUAGE_COOKIE,
    PATH,
    SIGN_IN_COOKIE,
    SIGN_IN_WINDOW,
)
from calltrack.console.web import (
    Console,
    Visitor,
    action,
    read_form,
    render,
    safe_next,
    signer_of,
    visitor_of,
)
from calltrack.errors import StoreUnavailable, UnknownKey
from calltrack.store import ResolvedKey, Store

LANGUAGE_COOKIE_SECONDS: Final = 365 * 86400
SIGN_IN_FORM_SECONDS: Final = 3600


def console() -> Console:
    """The console's shared state (its messages from every page module)."""
    return Console(
        i18n.Catalog(
            i18n.MESSAGES,
            overview.MESSAGES,
            calls.MESSAGES,
            campaigns.MESSAGES,
            settings.MESSAGES,
        )
    )


def routes() -> list[BaseRoute]:
    return [
        Route(PATH, to_console, methods=["GET", "HEAD"]),
        Route(PATH + "/sign-in", sign_in_form, methods=["GET", "HEAD"]),
        Route(PATH + "/sign-in", sign_in, methods=["POST"]),
        Route(PATH + "/sign-out", sign_out, methods=["POST"]),
        Route(PATH + "/language/{language}", choose_language, methods=["GET"]),
        Mount(
            PATH + "/static",
            app=StaticFiles(packages=[("calltrack.console", "static")]),
            name="console-static",
        ),
        *overview.routes(),
        *calls.routes(),
        *campaigns.routes(),
        *settings.routes(),
    ]


async def to_console(request: Request) -> Response:
    return RedirectResponse(PATH + "/", 308)


async def sign_in_form(request: Request) -> Response:
    if await visitor_of(request) is not None:
        return RedirectResponse(safe_next(request.query_params.get("next")), 303)
    return await _sign_in_page(request, 200)


async def _sign_in_page(
    request: Request, status: int, message: str = "", **values: object
) -> Response:
    """The form, with a fresh nonce in its own cookie and the token made from it."""
    signer = await signer_of(request)
    nonce = secrets.token_urlsafe(16)
    service = service_of(request)
    answer = render(
        request,
        None,
        "sign_in.html",
        status,
        csrf=signer.form_token(nonce),
        next=safe_next(request.query_params.get("next")),
        message=message,
        values=values,
        hours=f"{service.settings.console_session_hours:g}",
    )
    answer.set_cookie(
        SIGN_IN_COOKIE,
        nonce,
        max_age=SIGN_IN_FORM_SECONDS,
        path=PATH,
        httponly=True,
        samesite="strict",
        secure=via_https(request),
    )
    return answer


async def sign_in(request: Request) -> Response:
    """The key checked, a session cookie set; failures counted per IP and limited."""
    service = service_of(request)
    signer = await signer_of(request)
    form = await read_form(request) or {}
    nonce = request.cookies.get(SIGN_IN_COOKIE, "")
    token = form.get("csrf", "")
    if not nonce or not hmac.compare_digest(signer.form_token(nonce), token):
        return await _sign_in_page(request, 403, "sign_in.expired")
    ip = client_ip(request, service.settings)
    window = _window_start()
    limit = service.settings.console_sign_in_limit
    try:
        failures = await service.in_thread(service.store.sign_in_failures, ip, window)
        if failures >= limit:
            return await _too_many(request, window)
        key = await service.in_thread(_key_for_console, service.store, form.get("key", "").strip())
        if key is None:
            failures = await service.in_thread(service.store.count_sign_in_failure, ip, window)
            if failures >= limit:
                return await _too_many(request, window)
            return await _sign_in_page(request, 401, "sign_in.unknown")
    except StoreUnavailable:
        return await _sign_in_page(request, 503, "error.unavailable")
    _session, value = signer.new(key.key_id, key.is_role_key)
    answer = RedirectResponse(safe_next(form.get("next")), 303)
    answer.set_cookie(
        COOKIE,
        value,
        max_age=signer.max_age,
        path=PATH,
        httponly=True,
        samesite="strict",
        secure=via_https(request),
    )
    answer.delete_cookie(SIGN_IN_COOKIE, path=PATH)
    return answer


async def _too_many(request: Request, window: int) -> Response:
    minutes = max(1, -(-(window + SIGN_IN_WINDOW - _now()) // 60))
    answer = await _sign_in_page(request, 429, "sign_in.too_many", minutes=minutes)
    answer.headers["retry-after"] = str(minutes * 60)
    return answer


def _key_for_console(store: Store, key: str) -> ResolvedKey | None:
    """The active key, if it opens a console (a role key must open someone's calls)."""
    try:
        resolved = access.resolve(store, key)
    except UnknownKey:
        return None
    if resolved.is_role_key and not access.visible_owners(store, resolved, "getByRole"):
        return None
    return resolved


@action(user_only=False)
async def sign_out(request: Request, visitor: Visitor) -> Response:
    answer = RedirectResponse(PATH + "/sign-in", 303)
    answer.delete_cookie(COOKIE, path=PATH)
    return answer


async def choose_language(request: Request) -> Response:
    """Remembers the language (a preference, not a change of data: a plain link)."""
    language = request.path_params["language"]
    answer = RedirectResponse(safe_next(request.query_params.get("next")), 303)
    if language in i18n.LANGUAGES:
        answer.set_cookie(
            LANGUAGE_COOKIE,
            language,
            max_age=LANGUAGE_COOKIE_SECONDS,
            path=PATH,
            samesite="lax",
            secure=via_https(request),
        )
    return answer


def _now() -> int:
    return int(time.time())


def _window_start() -> int:
    now = _now()
    return now - now % SIGN_IN_WINDOW
