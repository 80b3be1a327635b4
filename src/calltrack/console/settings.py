"""The console's settings page (``/console/settings``, user keys only): what makes the
account's calls unique and target, its keys, its roles and their grants, its webhook endpoints
and its telephony endpoints.

Every action is a POST of a form with the session's CSRF token (``web.action``) and acts on
the signed-in key's own account: an id from a URL is looked up within that account, and
another account's id is answered like a missing one (404), with nothing changed. The work is
the library's, as the CLI does it (``access``, the store, ``hooks.endpoints``). A new secret
(a user key, a grant's role key, a webhook's signing secret, a telephony endpoint's secret)
is the POST's own answer, shown once; other actions redirect back here (303) with a notice;
bad input renders the page with 400 and the reason, nothing changed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Concatenate, Final, ParamSpec, TypeVar
from zoneinfo import ZoneInfo

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from calltrack import access
from calltrack.api.app import service_of
from calltrack.api.tracking import public_url
from calltrack.console.session import COOKIE, PATH
from calltrack.console.web import Endpoint, Visitor, action, error_page, form_of, page, render
from calltrack.errors import Conflict, NotFound
from calltrack.hooks import EVENTS, METHODS
from calltrack.hooks.endpoints import SampleDelivery, add_endpoint, send_test
from calltrack.hooks.targets import RefusedTarget
from calltrack.store import KeyInfo, Store
from calltrack.store.admin import AccountRoles
from calltrack.store.hooks import HookEndpoint, HookStats, LoggedAttempt
from calltrack.store.telephony import PROVIDERS, TelephonyEndpoint
from calltrack.store.tracking import TARGET_SECONDS_MAX, UNIQUE_DAYS_MAX, AccountSettings

T = TypeVar("T")
P = ParamSpec("P")
SETTINGS: Final = PATH + "/settings"
NAME_LIMIT: Final = 200  # characters of a role's name
URL_LIMIT: Final = 2000  # characters of a webhook URL
LOG_LIMIT: Final = 100  # attempts on a webhook's log page
ANSWER_SHOWN: Final = 500  # characters of a test delivery's answer shown

MESSAGES: Final[dict[str, tuple[str, str]]] = {
    "settings.title": ("Settings", "Настройки"),
    "settings.id": ("Id", "Id"),
    "settings.created": ("Created", "Создан"),
    "settings.state": ("State", "Состояние"),
    "settings.active": ("active", "активен"),
    "settings.revoked": ("revoked", "отозван"),
    "settings.revoke": ("Revoke", "Отозвать"),
    "settings.none": ("None yet.", "Пока нет."),
    "settings.copy": ("Copy", "Копировать"),
    "settings.copied": ("Copied", "Скопировано"),
    "settings.back": ("Back to settings", "Назад к настройкам"),
    "settings.not_found": (
        "This account has nothing with that id; nothing was changed.",
        "У этого аккаунта нет ничего с таким id; ничего не изменено.",
    ),
    "settings.shown_once": (
        "Shown only now: it is not stored and will not be shown again. Copy it before you "
        "leave this page.",
        "Показывается только сейчас: он не хранится и больше не будет показан. Скопируйте его, "
        "прежде чем уйти со страницы.",
    ),
    # what makes a call unique and target
    "settings.tracking": ("Unique and target calls", "Уникальные и целевые звонки"),
    "settings.unique_days": ("Unique days", "Дней уникальности"),
    "settings.unique_days_hint": (
        "A call is unique without an earlier call from its number within this many days "
        "(0: every call is unique).",
        "Звонок уникален, если с его номера не звонили раньше в пределах стольких дней "
        "(0: каждый звонок уникален).",
    ),
    "settings.target_seconds": ("Target seconds", "Секунд для целевого"),
    "settings.target_seconds_hint": (
        "A call is target from this many seconds of talk.",
        "Звонок целевой, если разговор длился столько секунд или дольше.",
    ),
    "settings.save": ("Save", "Сохранить"),
    "settings.bad_unique_days": (
        "Unique days: a whole number from 0 to {max} is needed.",
        "Дней уникальности: нужно целое число от 0 до {max}.",
    ),
    "settings.bad_target_seconds": (
        "Target seconds: a whole number from 0 to {max} is needed.",
        "Секунд для целевого: нужно целое число от 0 до {max}.",
    ),
    # keys
    "settings.keys": ("API keys", "API-ключи"),
    "settings.keys_hint": (
        "Keys of this account: user keys, and role keys other accounts granted it. A key is "
        "shown only when issued; here you see its first characters.",
        "Ключи этого аккаунта: ключи пользователя и ключи ролей, выданные ему другими "
        "аккаунтами. Ключ показывается только при выпуске; здесь видны его первые символы.",
    ),
    "settings.key": ("Key", "Ключ"),
    "settings.kind": ("Kind", "Вид"),
    "settings.user_key": ("user key", "ключ пользователя"),
    "settings.role_key": ("role key: {role} of {grantor}", "ключ роли: {role} от {grantor}"),
    "settings.this_key": ("(this session)", "(эта сессия)"),
    "settings.issue_key": ("Issue a user key", "Выпустить ключ пользователя"),
    "settings.key_issued": ("A new user key", "Новый ключ пользователя"),
    "settings.key_issued_hint": (
        "It opens the API (Authorization: Bearer KEY) and this console, like the key you "
        "signed in with.",
        "Он открывает API (Authorization: Bearer КЛЮЧ) и эту консоль, как ключ, с которым вы "
        "вошли.",
    ),
    "settings.revoke_key_confirm": (
        "Revoke the key {hint}…? Whatever uses it is refused from now on.",
        "Отозвать ключ {hint}…? Всё, что его использует, больше не будет допущено.",
    ),
    "settings.revoke_own_key_confirm": (
        "Revoke the key {hint}…, the one you are signed in with? This session ends, and you "
        "will have to sign in with another key.",
        "Отозвать ключ {hint}…, с которым вы вошли? Эта сессия закончится, и войти придётся "
        "с другим ключом.",
    ),
    "settings.revoke_last_key": (
        "It is the account's only active user key: only an administrator (the CLI) can issue "
        "another one afterwards.",
        "Это единственный активный ключ пользователя аккаунта: выпустить другой после этого "
        "сможет только администратор (CLI).",
    ),
    # roles
    "settings.roles": ("Roles", "Роли"),
    "settings.roles_hint": (
        "A role shares this account's calls, read-only, with the accounts it is granted to: "
        "each grant has a role key of its own, shown once.",
        "Роль открывает звонки этого аккаунта только для чтения тем аккаунтам, которым она "
        "выдана: у каждой выдачи свой ключ роли, он показывается один раз.",
    ),
    "settings.role": ("Role", "Роль"),
    "settings.role_name": ("Name of a new role", "Название новой роли"),
    "settings.add_role": ("Add the role", "Добавить роль"),
    "settings.grants": ("Granted to", "Выдана"),
    "settings.no_grant": ("not granted yet", "пока не выдана"),
    "settings.grantee": (
        "Account (name or id) to grant it to",
        "Аккаунт (название или id), которому выдать",
    ),
    "settings.grant": ("Grant", "Выдать"),
    "settings.account_ref": ("{name} (account {id})", "{name} (аккаунт {id})"),
    "settings.revoke_grant_confirm": (
        "Revoke the role {role} from {grantee}? Its role keys stop working at once.",
        "Отозвать роль {role} у {grantee}? Её ключи ролей сразу перестанут работать.",
    ),
    "settings.received": ("Roles granted to this account", "Роли, выданные этому аккаунту"),
    "settings.grantor": ("From", "От кого"),
    "settings.bad_role_name": (
        "The role needs a name of at most {max} characters.",
        "Роли нужно название не длиннее {max} символов.",
    ),
    "settings.role_exists": (
        "The account already has a role with that name.",
        "У аккаунта уже есть роль с таким названием.",
    ),
    "settings.unknown_grantee": (
        "No account is named so or has that id.",
        "Нет аккаунта с таким названием или id.",
    ),
    "settings.grant_to_self": (
        "A role granted to its own account opens nothing: name another account.",
        "Роль, выданная собственному аккаунту, ничего не открывает: укажите другой аккаунт.",
    ),
    "settings.already_granted": (
        "The role is already granted to that account; revoke the grant first.",
        "Роль уже выдана этому аккаунту; сначала отзовите выдачу.",
    ),
    "settings.role_key_issued": (
        "The role key of {role} for {grantee}",
        "Ключ роли {role} для {grantee}",
    ),
    "settings.role_key_issued_hint": (
        "Hand it to the grantee: it opens this account's calls read-only, in the API "
        "(getByRole) and in this console.",
        "Передайте его получателю: он открывает звонки этого аккаунта только для чтения — "
        "в API (getByRole) и в этой консоли.",
    ),
    # webhooks
    "settings.hooks": ("Webhooks", "Вебхуки"),
    "settings.hooks_hint": (
        "Calls are pushed to these URLs as they happen, signed (Standard Webhooks). Plain http "
        "and private addresses only for hosts the operator allowed.",
        "Звонки отправляются на эти адреса по мере того, как происходят, с подписью (Standard "
        "Webhooks). Простой http и частные адреса — только для хостов, разрешённых "
        "администратором.",
    ),
    "settings.hook": ("Endpoint", "Адрес"),
    "settings.url": ("URL", "URL"),
    "settings.method": ("Method", "Метод"),
    "settings.events": ("Events", "События"),
    "settings.add_hook": ("Add the webhook", "Добавить вебхук"),
    "settings.enabled": ("enabled", "включён"),
    "settings.disabled": ("disabled: {reason}", "выключен: {reason}"),
    "settings.last_answer": ("last answer {status}", "последний ответ {status}"),
    "settings.never_tried": ("never tried", "ещё не отправлялся"),
    "settings.no_answer": ("none", "нет"),
    "settings.pending_failed": (
        "{pending} pending, {failed} failed",
        "{pending} в очереди, {failed} не доставлено",
    ),
    "settings.delivered_day": (
        "{count} delivered in the last day, delay p50 {p50} ms, p99 {p99} ms",
        "{count} доставлено за сутки, задержка p50 {p50} мс, p99 {p99} мс",
    ),
    "settings.test": ("Send a test", "Отправить тест"),
    "settings.log": ("Log", "Журнал"),
    "settings.enable": ("Enable", "Включить"),
    "settings.remove": ("Remove", "Удалить"),
    "settings.remove_hook_confirm": (
        "Remove the webhook {url}? Nothing more is sent to it; what waits for it is dropped.",
        "Удалить вебхук {url}? На него больше ничего не будет отправлено; ожидающее "
        "отправки будет отброшено.",
    ),
    "settings.no_events": ("Choose at least one event.", "Выберите хотя бы одно событие."),
    "settings.bad_method": ("Choose a method from the list.", "Выберите метод из списка."),
    "settings.bad_url": ("The URL is refused: {reason}", "URL не принят: {reason}"),
    "settings.long_url": (
        "The URL is longer than {max} characters.",
        "URL длиннее {max} символов.",
    ),
    "settings.hook_added": ("Webhook {id}: its signing secret", "Вебхук {id}: секрет подписи"),
    "settings.hook_added_hint": (
        "Deliveries to {url} are signed with it: verify their webhook-signature header.",
        "Им подписываются отправки на {url}: проверяйте их заголовок webhook-signature.",
    ),
    "settings.tested": ("Test of webhook {id}", "Тест вебхука {id}"),
    "settings.tested_answer": (
        "{method} {url} ({event}, {message}): answered {status} in {ms} ms",
        "{method} {url} ({event}, {message}): ответ {status} за {ms} мс",
    ),
    "settings.tested_error": (
        "{method} {url} ({event}, {message}): no answer in {ms} ms: {error}",
        "{method} {url} ({event}, {message}): нет ответа за {ms} мс: {error}",
    ),
    "settings.tested_hint": (
        "A made-up call (its universalId starts with test-), signed like every delivery; "
        "nothing is recorded.",
        "Выдуманный звонок (его universalId начинается с test-), подписанный, как любая "
        "отправка; ничего не записывается.",
    ),
    "settings.log_title": ("Webhook {id}: latest attempts", "Вебхук {id}: последние попытки"),
    "settings.log_hint": (
        "Newest first, at most {limit}; attempts are kept 30 days. Times in UTC.",
        "Сначала новые, не больше {limit}; попытки хранятся 30 дней. Время в UTC.",
    ),
    "settings.at": ("At", "Когда"),
    "settings.call": ("Call", "Звонок"),
    "settings.event": ("Event", "Событие"),
    "settings.status": ("Answer", "Ответ"),
    "settings.duration": ("ms", "мс"),
    "settings.error": ("Error", "Ошибка"),
    "settings.no_attempts": ("No attempts yet.", "Попыток пока не было."),
    # telephony
    "settings.telephony": ("Telephony endpoints", "Точки приёма телефонии"),
    "settings.telephony_hint": (
        "Where the PBX posts its call events; each endpoint has a secret, shown once.",
        "Куда АТС отправляет события звонков; у каждой точки свой секрет, он показывается "
        "один раз.",
    ),
    "settings.provider": ("Provider", "Провайдер"),
    "settings.secret_hint": ("Secret", "Секрет"),
    "settings.add_endpoint": ("Add an endpoint", "Добавить точку"),
    "settings.bad_provider": ("Choose a provider from the list.", "Выберите провайдера из списка."),
    "settings.revoke_endpoint_confirm": (
        "Revoke telephony endpoint {id}? Its secret is refused from now on.",
        "Отозвать точку телефонии {id}? Её секрет больше не будет приниматься.",
    ),
    "settings.endpoint_added": ("Telephony endpoint {id}", "Точка телефонии {id}"),
    "settings.events_url": ("Events URL", "URL для событий"),
    "settings.endpoint_generic_hint": (
        "The PBX posts its events to this URL with the header Authorization: Bearer SECRET.",
        "АТС отправляет события на этот URL с заголовком Authorization: Bearer СЕКРЕТ.",
    ),
    "settings.endpoint_zadarma_hint": (
        "Give Zadarma this URL for its notifications, and the secret as its API secret.",
        "Укажите в Zadarma этот URL для уведомлений, а секрет — как API secret.",
    ),
    # what a redirect says it did
    "settings.done.saved": ("Saved.", "Сохранено."),
    "settings.done.key_revoked": ("The key is revoked.", "Ключ отозван."),
    "settings.done.role_added": ("The role is added.", "Роль добавлена."),
    "settings.done.grant_revoked": (
        "The grant and its role keys are revoked.",
        "Выдача роли и её ключи отозваны.",
    ),
    "settings.done.hook_enabled": (
        "The webhook is enabled: what waited for it is sent.",
        "Вебхук включён: ожидавшее отправки уходит.",
    ),
    "settings.done.hook_removed": ("The webhook is removed.", "Вебхук удалён."),
    "settings.done.endpoint_revoked": (
        "The telephony endpoint is revoked.",
        "Точка телефонии отозвана.",
    ),
}
DONE: Final = frozenset(key.removeprefix("settings.done.") for key in MESSAGES if ".done." in key)


def routes() -> list[BaseRoute]:
    get, post = ["GET", "HEAD"], ["POST"]
    return [
        Route(SETTINGS, settings_page, methods=get),
        Route(SETTINGS + "/tracking", save_tracking, methods=post),
        Route(SETTINGS + "/keys/issue", issue_key, methods=post),
        Route(SETTINGS + "/keys/{id}/revoke", revoke_key, methods=post),
        Route(SETTINGS + "/roles/add", add_role, methods=post),
        Route(SETTINGS + "/roles/{id}/grant", grant_role, methods=post),
        Route(SETTINGS + "/grants/{id}/revoke", revoke_grant, methods=post),
        Route(SETTINGS + "/hooks/add", add_hook, methods=post),
        Route(SETTINGS + "/hooks/{id}/test", test_hook, methods=post),
        Route(SETTINGS + "/hooks/{id}/enable", enable_hook, methods=post),
        Route(SETTINGS + "/hooks/{id}/remove", remove_hook, methods=post),
        Route(SETTINGS + "/hooks/{id}/log", hook_log_page, methods=get),
        Route(SETTINGS + "/telephony/add", add_telephony, methods=post),
        Route(SETTINGS + "/telephony/{id}/revoke", revoke_telephony, methods=post),
        # A GET of an action's URL (the language switch of a page a POST answered): the page.
        Route(SETTINGS + "/{rest:path}", to_settings, methods=get),
    ]


# -- what the page shows -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyRow:
    info: KeyInfo
    role: str  # for a role key: the role's name
    grantor: str  # and whose it is


@dataclass(frozen=True, slots=True)
class HookRow:
    endpoint: HookEndpoint
    stats: HookStats


@dataclass(frozen=True, slots=True)
class SettingsData:
    tracking: AccountSettings
    keys: list[KeyRow]
    roles: AccountRoles
    hooks: list[HookRow]
    telephony: list[TelephonyEndpoint]

    @property
    def active_user_keys(self) -> int:
        return sum(1 for k in self.keys if k.info.grant_id is None and k.info.revoked_at is None)


def gather(store: Store, account_id: int) -> SettingsData:
    """Everything the page lists of the account (runs in a thread)."""
    roles = store.roles_of(account_id)
    received = {g.id: g for g in roles.received}
    keys = []
    for info in store.list_keys(account_id):
        grant = received.get(info.grant_id) if info.grant_id is not None else None
        keys.append(
            KeyRow(info, grant.role_name if grant else "", grant.account_name if grant else "")
        )
    return SettingsData(
        tracking=store.account_settings(account_id),
        keys=keys,
        roles=roles,
        hooks=[HookRow(e, store.hook_stats(e.id)) for e in store.hooks(account_id)],
        telephony=store.telephony_endpoints(account_id),
    )


@dataclass(frozen=True, slots=True)
class Secret:
    """A secret the page shows once, with what it is for."""

    title: str  # a message, with ``values``
    hint: str
    secret: str
    values: dict[str, object] = field(default_factory=dict)
    url: str = ""  # a telephony endpoint's events URL


@dataclass(frozen=True, slots=True)
class Tested:
    endpoint: HookEndpoint
    sent: SampleDelivery

    @property
    def answer_text(self) -> str:
        return self.sent.answer.body.decode("utf-8", "replace")[:ANSWER_SHOWN]


async def _settings(
    request: Request,
    visitor: Visitor,
    status: int = 200,
    problem: str = "",
    section: str = "",
    values: dict[str, str] | None = None,
    secret: Secret | None = None,
    tested: Tested | None = None,
) -> Response:
    """The settings page: with a problem (400, 404), a secret or a test's answer, or a notice
    of what a redirect here did."""
    service = service_of(request)
    data = await service.in_thread(gather, service.store, visitor.account_id)
    done = request.query_params.get("done", "") if request.method == "GET" else ""
    return render(
        request,
        visitor,
        "settings.html",
        status,
        data=data,
        problem=problem,
        section=section,
        values=values or {},
        secret=secret,
        tested=tested,
        done=done if done in DONE else "",
        events=EVENTS,
        methods=METHODS,
        providers=PROVIDERS,
        server=_server(request),
        when=_when(service.settings.zone),
        unique_max=UNIQUE_DAYS_MAX,
        target_max=TARGET_SECONDS_MAX,
    )


def _when(zone: ZoneInfo) -> Callable[[int | None], str]:
    def when(seconds: int | None) -> str:
        if seconds is None:
            return ""
        return datetime.fromtimestamp(seconds, zone).strftime("%Y-%m-%d %H:%M")

    return when


def _done(notice: str, section: str) -> Response:
    return RedirectResponse(f"{SETTINGS}?done={notice}#{section}", 303)


def _id(request: Request) -> int | None:
    """The id in the URL; None when it is not one (answered like a missing id)."""
    text = str(request.path_params["id"])
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 18 else None


async def _not_found(request: Request, visitor: Visitor, section: str) -> Response:
    return await _settings(request, visitor, 404, visitor.t("settings.not_found"), section)


async def _in_store(
    request: Request,
    visitor: Visitor,
    work: Callable[Concatenate[Store, int, P], T],
    *args: P.args,
    **kwargs: P.kwargs,
) -> T:
    """``work(store, the visitor's account id, *args)`` in a thread: the library's work, always
    on the signed-in key's own account."""
    service = service_of(request)
    return await service.in_thread(
        functools.partial(work, service.store, visitor.account_id, *args, **kwargs)
    )


Act = Callable[[Store, int, int], bool]  # (store, account, id): False when it has no such id


async def _acted(request: Request, visitor: Visitor, act: Act) -> int | None:
    """The URL's id once ``act`` did its work on it; None when the account has no such id."""
    object_id = _id(request)
    if object_id is None or not await _in_store(request, visitor, act, object_id):
        return None
    return object_id


def _on_id(act: Act, section: str, notice: str) -> Endpoint:
    """An action on one of the account's objects by the id in its URL: ``act``, then back to
    the page with ``notice``; 404 with nothing done when the account has no such id."""

    async def on_id(request: Request, visitor: Visitor) -> Response:
        if await _acted(request, visitor, act) is None:
            return await _not_found(request, visitor, section)
        return _done(notice, section)

    on_id.__name__ = on_id.__qualname__ = f"{section}_{notice}"
    return action()(on_id)


def _whole(text: str, most: int) -> int | None:
    """A whole number from 0 to ``most`` typed in a form, or None."""
    text = text.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 9:
        return None
    number = int(text)
    return number if number <= most else None


@page(user_only=True)
async def settings_page(request: Request, visitor: Visitor) -> Response:
    return await _settings(request, visitor)


@page(user_only=True)
async def to_settings(request: Request, visitor: Visitor) -> Response:
    return RedirectResponse(SETTINGS, 303)


# -- unique and target ---------------------------------------------------------------------


@action()
async def save_tracking(request: Request, visitor: Visitor) -> Response:
    form = form_of(request)
    unique = _whole(form.get("unique_days", ""), UNIQUE_DAYS_MAX)
    target = _whole(form.get("target_seconds", ""), TARGET_SECONDS_MAX)
    if unique is None or target is None:
        problem = (
            visitor.t("settings.bad_unique_days", max=UNIQUE_DAYS_MAX)
            if unique is None
            else visitor.t("settings.bad_target_seconds", max=TARGET_SECONDS_MAX)
        )
        return await _settings(request, visitor, 400, problem, "tracking", form)
    service = service_of(request)
    await service.in_thread(service.store.set_account_settings, visitor.account_id, unique, target)
    return _done("saved", "tracking")


# -- keys ------------------------------------------------------------------------------------


@action()
async def issue_key(request: Request, visitor: Visitor) -> Response:
    key = await _in_store(request, visitor, access.issue_user_key)
    shown = Secret("settings.key_issued", "settings.key_issued_hint", key)
    return await _settings(request, visitor, secret=shown, section="keys")


def _revoke_key(store: Store, account_id: int, key_id: int) -> bool:
    """Revoke a key of the account; False when the account has no such key."""
    try:
        info = store.find_key(key_id=key_id)
    except NotFound:
        return False
    if info.account_id != account_id:
        return False
    store.revoke_key(info.id)
    return True


@action()
async def revoke_key(request: Request, visitor: Visitor) -> Response:
    key_id = await _acted(request, visitor, _revoke_key)
    if key_id is None:
        return await _not_found(request, visitor, "keys")
    if key_id == visitor.key.key_id:  # the session's own key: the session ends with it
        answer = RedirectResponse(PATH + "/sign-in", 303)
        answer.delete_cookie(COOKIE, path=PATH)
        return answer
    return _done("key_revoked", "keys")


# -- roles -----------------------------------------------------------------------------------


@action()
async def add_role(request: Request, visitor: Visitor) -> Response:
    form = form_of(request)
    name = form.get("name", "").strip()
    if not name or len(name) > NAME_LIMIT:
        problem = visitor.t("settings.bad_role_name", max=NAME_LIMIT)
        return await _settings(request, visitor, 400, problem, "roles", form)
    service = service_of(request)
    try:
        await service.in_thread(service.store.create_role, visitor.account_id, name)
    except Conflict:
        problem = visitor.t("settings.role_exists")
        return await _settings(request, visitor, 400, problem, "roles", form)
    return _done("role_added", "roles")


@dataclass(frozen=True, slots=True)
class _Granted:
    role: str = ""
    grantee: str = ""
    key: str = ""
    problem: str = ""  # a message when nothing was granted
    status: int = 200


def _grant(store: Store, account_id: int, role_id: int, grantee_ref: str) -> _Granted:
    """Grant one of the account's roles to another account, and issue the grant's role key."""
    try:
        role = store.find_role(role_id)
    except NotFound:
        return _Granted(problem="settings.not_found", status=404)
    if role.grantor_id != account_id:
        return _Granted(problem="settings.not_found", status=404)
    try:
        grantee = store.find_account(grantee_ref) if grantee_ref else None
    except NotFound:
        grantee = None
    if grantee is None:
        return _Granted(problem="settings.unknown_grantee", status=400)
    if grantee.id == account_id:
        return _Granted(problem="settings.grant_to_self", status=400)
    try:
        grant = store.create_grant(role.id, grantee.id)
    except Conflict:
        return _Granted(problem="settings.already_granted", status=400)
    return _Granted(role.name, grantee.name, access.issue_role_key(store, grant))


@action()
async def grant_role(request: Request, visitor: Visitor) -> Response:
    role_id = _id(request)
    if role_id is None:
        return await _not_found(request, visitor, "roles")
    form = form_of(request)
    done = await _in_store(request, visitor, _grant, role_id, form.get("grantee", "").strip())
    if done.problem:
        values = {f"grantee_{role_id}": form.get("grantee", "")}
        return await _settings(
            request, visitor, done.status, visitor.t(done.problem), "roles", values
        )
    shown = Secret(
        "settings.role_key_issued",
        "settings.role_key_issued_hint",
        done.key,
        {"role": done.role, "grantee": done.grantee},
    )
    return await _settings(request, visitor, secret=shown, section="roles")


def _revoke_grant(store: Store, account_id: int, grant_id: int) -> bool:
    """End a grant of one of the account's roles (and its role keys); False when the account
    granted nothing with that id."""
    for _role, grants in store.roles_of(account_id).granted:
        for grant in grants:
            if grant.id == grant_id:
                if grant.revoked_at is None:
                    store.revoke_grant(grant.role_id, grant.account_id)
                return True
    return False


revoke_grant = _on_id(_revoke_grant, "roles", "grant_revoked")


# -- webhooks --------------------------------------------------------------------------------


def _own_hook(store: Store, account_id: int, hook_id: int | None) -> HookEndpoint | None:
    if hook_id is None:
        return None
    try:
        endpoint = store.hook(hook_id)
    except NotFound:
        return None
    return endpoint if endpoint.account_id == account_id else None


@action()
async def add_hook(request: Request, visitor: Visitor) -> Response:
    form = form_of(request)
    url = form.get("url", "").strip()
    events = [event for event in EVENTS if form.get("event_" + event)]
    method = form.get("method", "POST")
    problem = ""
    if not events:
        problem = visitor.t("settings.no_events")
    elif method not in METHODS:
        problem = visitor.t("settings.bad_method")
    elif len(url) > URL_LIMIT:
        problem = visitor.t("settings.long_url", max=URL_LIMIT)
    if problem:
        return await _settings(request, visitor, 400, problem, "hooks", form)
    service = service_of(request)
    try:
        issued = await service.in_thread(
            add_endpoint, service.store, service.settings, visitor.account_id, url, events, method
        )
    except RefusedTarget as exc:
        problem = visitor.t("settings.bad_url", reason=str(exc))
        return await _settings(request, visitor, 400, problem, "hooks", form)
    shown = Secret(
        "settings.hook_added",
        "settings.hook_added_hint",
        issued.secret,
        {"id": issued.endpoint.id, "url": issued.endpoint.url},
    )
    return await _settings(request, visitor, secret=shown, section="hooks")


def _hook_to_test(
    store: Store, account_id: int, hook_id: int | None
) -> tuple[HookEndpoint, tuple[str, ...]] | None:
    endpoint = _own_hook(store, account_id, hook_id)
    if endpoint is None:
        return None
    return endpoint, store.hook_secrets(endpoint.id)


@action()
async def test_hook(request: Request, visitor: Visitor) -> Response:
    """Send a sample call now, as ``calltrack hook test`` does; the page shows the answer."""
    found = await _in_store(request, visitor, _hook_to_test, _id(request))
    if found is None:
        return await _not_found(request, visitor, "hooks")
    endpoint, keys = found
    sent = await send_test(service_of(request).settings, endpoint, keys)
    return await _settings(request, visitor, tested=Tested(endpoint, sent), section="hooks")


def _change_hook(change: str, store: Store, account_id: int, hook_id: int) -> bool:
    endpoint = _own_hook(store, account_id, hook_id)
    if endpoint is None:
        return False
    if change == "enable":
        store.enable_hook(endpoint.id)
    else:
        store.remove_hook(endpoint.id)
    return True


enable_hook = _on_id(functools.partial(_change_hook, "enable"), "hooks", "hook_enabled")
remove_hook = _on_id(functools.partial(_change_hook, "remove"), "hooks", "hook_removed")


def _hook_log(
    store: Store, account_id: int, hook_id: int | None
) -> tuple[HookEndpoint, list[LoggedAttempt]] | None:
    endpoint = _own_hook(store, account_id, hook_id)
    if endpoint is None:
        return None
    return endpoint, store.hook_log(endpoint.id, LOG_LIMIT)


@page(user_only=True)
async def hook_log_page(request: Request, visitor: Visitor) -> Response:
    found = await _in_store(request, visitor, _hook_log, _id(request))
    if found is None:
        return error_page(request, visitor, 404, "settings.not_found")
    endpoint, attempts = found
    return render(
        request,
        visitor,
        "hook_log.html",
        endpoint=endpoint,
        attempts=attempts,
        limit=LOG_LIMIT,
        utc=_utc_ms,
    )


def _utc_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, ZoneInfo("UTC")).strftime("%Y-%m-%d %H:%M:%S")


# -- telephony -------------------------------------------------------------------------------


@action()
async def add_telephony(request: Request, visitor: Visitor) -> Response:
    form = form_of(request)
    provider = form.get("provider", "")
    if provider not in PROVIDERS:
        problem = visitor.t("settings.bad_provider")
        return await _settings(request, visitor, 400, problem, "telephony", form)
    service = service_of(request)
    issued = await service.in_thread(
        service.store.add_telephony_endpoint, visitor.account_id, provider
    )
    shown = Secret(
        "settings.endpoint_added",
        f"settings.endpoint_{provider}_hint",
        issued.secret,
        {"id": issued.endpoint.id},
        url=issued.endpoint.events_url(_server(request)),
    )
    return await _settings(request, visitor, secret=shown, section="telephony")


def _server(request: Request) -> str:
    """Where this service is reached, as the browser reached it (https behind a trusted
    proxy that says so)."""
    return public_url(request, f"{request.url.scheme}://{request.url.netloc}")


def _revoke_telephony(store: Store, account_id: int, endpoint_id: int) -> bool:
    try:
        store.revoke_telephony_endpoint(account_id, endpoint_id)
    except NotFound:
        return False
    return True


revoke_telephony = _on_id(_revoke_telephony, "telephony", "endpoint_revoked")
