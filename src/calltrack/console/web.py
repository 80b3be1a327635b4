"""What every console page shares: who is signed in, templates, forms, safe answers.

A page handler is ``async (request, visitor) -> Response``, wrapped by ``page`` (GET/HEAD) or
``action`` (POST: the CSRF token checked before the handler runs), both ``signed_in``. They send
a visitor who is not signed in (or whose key was revoked since) to the sign-in page;
``user_only`` refuses role keys with 403. Templates autoescape everything; every answer carries
a Content Security Policy that allows the console's own scripts and nothing inline.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qsl, quote

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from calltrack import __version__, access
from calltrack.api.app import Service, read_body, service_of
from calltrack.console import i18n
from calltrack.console.session import COOKIE, LANGUAGE_COOKIE, PATH, Session, SessionSigner
from calltrack.errors import StoreUnavailable
from calltrack.store import ResolvedKey, Store

FORM_LIMIT: Final = 64 * 1024  # bytes of a form: the console's forms are a few fields
SECURITY_HEADERS: Final = {
    # Recordings play from wherever the PBX keeps them, over http(s); nothing else leaves.
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "media-src 'self' https: http:; connect-src 'self'; frame-ancestors 'none'; "
        "form-action 'self'; base-uri 'none'; object-src 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}


@dataclass(frozen=True, slots=True)
class Visitor:
    """The signed-in key: whose calls it sees, and what the page may offer it."""

    session: Session
    key: ResolvedKey
    account_id: int  # the key's own account
    account_name: str  # whose calls the console shows: the grantor's, for a role key
    owners: tuple[int, ...]  # accounts whose calls it sees
    csrf: str
    language: str
    t: i18n.Translate

    @property
    def read_only(self) -> bool:
        return self.key.is_role_key


class Console:
    """The console's shared state, kept in ``app.state.console``: templates, messages, and the
    cookie signer (made on first use: its secret may live in the database)."""

    def __init__(self, catalog: i18n.Catalog) -> None:
        self.catalog = catalog
        self.templates = jinja2.Environment(
            loader=jinja2.PackageLoader("calltrack.console", "templates"),
            autoescape=True,  # every template, whatever its name
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.globals["version"] = __version__
        self.templates.filters["thousands"] = _thousands
        self._signer: SessionSigner | None = None

    def signer(self, service: Service) -> SessionSigner:
        """Runs in a thread: the secret may have to be read from (or made in) the store."""
        if self._signer is None:
            settings = service.settings
            secret = settings.console_secret or service.store.shared_secret("console", _new_secret)
            self._signer = SessionSigner(secret, settings.console_session_hours * 3600)
        return self._signer


def _new_secret() -> str:
    from calltrack.console.session import new_secret

    return new_secret()


def _thousands(value: int) -> str:
    return f"{value:,}".replace(",", "\u202f")  # a narrow space reads in both languages


def console_of(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


def language_of(request: Request) -> str:
    return i18n.choose(request.cookies.get(LANGUAGE_COOKIE), request.headers.get("accept-language"))


async def signer_of(request: Request) -> SessionSigner:
    service = service_of(request)
    console = console_of(request)
    if console._signer is not None:  # the common case, without a thread hop
        return console._signer
    return await service.in_thread(console.signer, service)


async def visitor_of(request: Request) -> Visitor | None:
    """The signed-in visitor, or None (no cookie, a bad or expired one, a revoked key)."""
    signer = await signer_of(request)
    session = signer.read(request.cookies.get(COOKIE))
    if session is None:
        return None
    service = service_of(request)
    found = await service.in_thread(_resolve, service.store, session)
    if found is None:
        return None
    key, owners, name = found
    language = language_of(request)
    return Visitor(
        session=session,
        key=key,
        account_id=key.account_id,
        account_name=name,
        owners=owners,
        csrf=signer.csrf_token(session),
        language=language,
        t=console_of(request).catalog.translator(language),
    )


def _resolve(store: Store, session: Session) -> tuple[ResolvedKey, tuple[int, ...], str] | None:
    key = store.resolve_key_id(session.key_id)
    if key is None or key.is_role_key != session.role_key:
        return None
    if key.is_role_key:
        owners = access.visible_owners(store, key, "getByRole")
        if not owners:
            return None  # a role granted to oneself opens nothing
    else:
        owners = [key.account_id]
    names = {int(row[0]): str(row[1]) for row in store.accounts_by_id(owners[:1])}
    return key, tuple(owners), names.get(owners[0], "")


Handler = Callable[[Request, Visitor], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]


def signed_in(handler: Handler, *, user_only: bool, form: bool) -> Endpoint:
    """``handler`` as an endpoint for a signed-in visitor; any other is sent to sign in.

    ``form``: the request is a POSTed form whose CSRF token is checked first (403 and nothing
    done without it), then kept for ``form_of``. ``user_only``: role keys are refused (403),
    after the CSRF check. A store that cannot be reached is a 503 page.
    """

    @functools.wraps(handler)
    async def endpoint(request: Request) -> Response:
        try:
            visitor = await visitor_of(request)
            if visitor is None:
                return to_sign_in(request)
            if form:
                fields = await read_form(request)
                signer = await signer_of(request)
                if fields is None or not signer.csrf_ok(visitor.session, fields.get("csrf")):
                    return error_page(request, visitor, 403, "error.csrf")
                request.state.form = fields
            if user_only and visitor.read_only:
                return error_page(request, visitor, 403, "error.forbidden")
            return await handler(request, visitor)
        except StoreUnavailable:
            return unavailable(request)

    return endpoint


def page(*, user_only: bool = False) -> Callable[[Handler], Endpoint]:
    """A GET page for a signed-in visitor (``user_only``: not for role keys)."""
    return lambda handler: signed_in(handler, user_only=user_only, form=False)


def action(*, user_only: bool = True) -> Callable[[Handler], Endpoint]:
    """A POST of a form: signed in, CSRF token checked (403 and nothing done without it)."""
    return lambda handler: signed_in(handler, user_only=user_only, form=True)


def form_of(request: Request) -> dict[str, str]:
    """The form an ``action`` read (its last value of each field)."""
    form: dict[str, str] = request.state.form
    return form


async def read_form(request: Request) -> dict[str, str] | None:
    """A urlencoded form's fields; None when too large or not a form."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        return None
    body = await read_body(request, FORM_LIMIT)
    if body is None:
        return None
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return dict(parse_qsl(text, keep_blank_values=True))


def render(
    request: Request,
    visitor: Visitor | None,
    template: str,
    status: int = 200,
    **context: object,
) -> Response:
    """A template as a page, with the visitor, the words of its language and the nav."""
    language = visitor.language if visitor else language_of(request)
    console = console_of(request)
    t = visitor.t if visitor else console.catalog.translator(language)
    body = console.templates.get_template(template).render(
        visitor=visitor,
        t=t,
        language=language,
        languages=i18n.LANGUAGES,
        path=request.url.path,
        query=request.url.query,
        **context,
    )
    if request.method == "HEAD":
        return Response(b"", status, headers=SECURITY_HEADERS, media_type="text/html")
    return HTMLResponse(body, status, headers=SECURITY_HEADERS)


def error_page(
    request: Request, visitor: Visitor | None, status: int, message: str, **values: object
) -> Response:
    """A page that says what went wrong: a message key, with the values it names."""
    return render(request, visitor, "error.html", status, message=message, values=values)


def unavailable(request: Request) -> Response:
    service = service_of(request)
    answer = error_page(request, None, 503, "error.unavailable")
    answer.headers["retry-after"] = str(service.settings.retry_after)
    return answer


def to_sign_in(request: Request) -> Response:
    """To the sign-in page, coming back here after (a path of the console only)."""
    wanted = request.url.path + ("?" + request.url.query if request.url.query else "")
    if request.method != "GET":
        wanted = PATH + "/"
    answer = RedirectResponse(f"{PATH}/sign-in?next={quote(wanted, safe='')}", 303)
    answer.delete_cookie(COOKIE, path=PATH)
    return answer


def safe_next(target: str | None) -> str:
    """Where to go after sign-in: a console path, never another site (``//host``)."""
    if not target or not target.startswith(PATH + "/") or target.startswith("//"):
        return PATH + "/"
    if any(ch in target for ch in "\\\r\n\t"):
        return PATH + "/"
    return target


def now() -> int:
    return int(time.time())
