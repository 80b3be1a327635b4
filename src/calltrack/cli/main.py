"""The admin CLI: thin commands over the library.

Each command opens the store, calls one library function, and turns library errors into a
message on stderr and exit code 1. With ``--json`` the last line of output is one JSON object.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click

from calltrack import access
from calltrack.cli.base import (
    CalltrackGroup,
    Context,
    command_context,
    emit,
    fail,
    json_option,
    printable,
)
from calltrack.cli.catalog import campaign, phone
from calltrack.cli.hooks import hook, hooks_group
from calltrack.cli.telephony import call, telephony
from calltrack.cli.tracking import account_settings_command, rule
from calltrack.client.command import export
from calltrack.errors import NotFound
from calltrack.importer import import_file
from calltrack.store.admin import GrantState
from calltrack.words import plural


@click.group(cls=CalltrackGroup)
@click.option(
    "--database",
    metavar="URL",
    help="sqlite:///PATH or postgresql://... (default: $CALLTRACK_DATABASE_URL, "
    "else sqlite:///calltrack.db)",
)
@click.version_option(package_name="calltrack")
@click.pass_context
def main(click_ctx: click.Context, database: str | None) -> None:
    """calltrack: a call-tracking calls store with a CallKeeper v3 export API."""
    click_ctx.obj = Context(database, as_json=False)


# -- accounts -------------------------------------------------------------------------------


@main.group()
def account() -> None:
    """Accounts: the owners of calls."""


@account.command("add")
@click.argument("name")
@json_option
@click.pass_context
def account_add(click_ctx: click.Context, name: str, as_json: bool) -> None:
    """Create an account and its first user key (shown once)."""
    ctx = command_context(click_ctx, as_json)
    if not name.strip():
        fail("the account name is empty")
    created = ctx.store.create_account(name)
    key = access.issue_user_key(ctx.store, created.id)
    emit(
        ctx,
        {"id": created.id, "name": created.name, "api_key": key},
        f"account {created.id} {created.name!r} created; its API key (shown only now): {key}",
    )


@account.command("list")
@json_option
@click.pass_context
def account_list(click_ctx: click.Context, as_json: bool) -> None:
    """List accounts with their call counts."""
    ctx = command_context(click_ctx, as_json)
    counted = [(a, ctx.store.count_calls(a.id)) for a in ctx.store.list_accounts()]
    rows = [{"id": a.id, "name": a.name, "calls": calls} for a, calls in counted]
    text = "\n".join(
        f"{a.id:>6}  {printable(a.name)}  ({plural(calls, 'call')})" for a, calls in counted
    )
    emit(ctx, {"accounts": rows}, text or "no accounts")


# -- keys -----------------------------------------------------------------------------------


@main.group()
def key() -> None:
    """User keys of an account."""


@key.command("issue")
@click.argument("account_ref", metavar="ACCOUNT")
@json_option
@click.pass_context
def key_issue(click_ctx: click.Context, account_ref: str, as_json: bool) -> None:
    """Issue another user key for ACCOUNT (name or id)."""
    ctx = command_context(click_ctx, as_json)
    found = ctx.store.find_account(account_ref)
    new = access.issue_user_key(ctx.store, found.id)
    emit(ctx, {"account_id": found.id, "api_key": new}, f"new key for {found.name!r}: {new}")


@key.command("revoke")
@click.argument("key_ref", metavar="KEY")
@json_option
@click.pass_context
def key_revoke(click_ctx: click.Context, key_ref: str, as_json: bool) -> None:
    """Revoke a key, given the key itself or its id from `key list`."""
    ctx = command_context(click_ctx, as_json)
    if access.is_well_formed(key_ref):
        info = ctx.store.find_key(key_hash=access.hash_key(key_ref))
    elif key_ref.isdigit() and len(key_ref) < 16:
        info = ctx.store.find_key(key_id=int(key_ref))
    else:
        raise NotFound("KEY must be a 16-character key or a key id from `calltrack key list`")
    ctx.store.revoke_key(info.id)
    emit(ctx, {"id": info.id, "revoked": True}, f"key {info.id} ({info.hint}...) revoked")


@key.command("list")
@click.argument("account_ref", metavar="ACCOUNT")
@json_option
@click.pass_context
def key_list(click_ctx: click.Context, account_ref: str, as_json: bool) -> None:
    """List the keys of ACCOUNT: id, first characters, kind, state."""
    ctx = command_context(click_ctx, as_json)
    found = ctx.store.find_account(account_ref)
    keys = [
        {
            "id": k.id,
            "hint": k.hint,
            "kind": "role" if k.grant_id is not None else "user",
            "grant_id": k.grant_id,
            "created_at": k.created_at,
            "revoked": k.revoked_at is not None,
        }
        for k in ctx.store.list_keys(found.id)
    ]
    text = "\n".join(
        f"{k['id']:>6}  {k['hint']}...  {k['kind']:<4}  {'revoked' if k['revoked'] else 'active'}"
        for k in keys
    )
    emit(ctx, {"account_id": found.id, "keys": keys}, text or "no keys")


# -- roles ----------------------------------------------------------------------------------


@main.group()
def role() -> None:
    """Roles: an account sharing its calls with other accounts."""


@role.command("add")
@click.argument("grantor_ref", metavar="GRANTOR")
@click.argument("name", metavar="ROLE_NAME")
@json_option
@click.pass_context
def role_add(click_ctx: click.Context, grantor_ref: str, name: str, as_json: bool) -> None:
    """Create a role over GRANTOR's calls."""
    ctx = command_context(click_ctx, as_json)
    grantor = ctx.store.find_account(grantor_ref)
    created = ctx.store.create_role(grantor.id, name)
    emit(ctx, {"id": created.id}, f"role {created.id} {name!r} of {grantor.name!r} created")


@role.command("grant")
@click.argument("role_id", type=int)
@click.argument("grantee_ref", metavar="GRANTEE")
@json_option
@click.pass_context
def role_grant(click_ctx: click.Context, role_id: int, grantee_ref: str, as_json: bool) -> None:
    """Grant a role to GRANTEE; prints the grant's role key (shown once)."""
    ctx = command_context(click_ctx, as_json)
    found_role = ctx.store.find_role(role_id)
    grantee = ctx.store.find_account(grantee_ref)
    grant = ctx.store.create_grant(found_role.id, grantee.id)
    role_key = access.issue_role_key(ctx.store, grant)
    emit(
        ctx,
        {"api_key": role_key, "grant_id": grant.id},
        f"role {role_id} granted to {grantee.name!r}; role key (shown only now): {role_key}",
    )


@role.command("revoke")
@click.argument("role_id", type=int)
@click.argument("grantee_ref", metavar="GRANTEE")
@json_option
@click.pass_context
def role_revoke(click_ctx: click.Context, role_id: int, grantee_ref: str, as_json: bool) -> None:
    """End the grant of a role to GRANTEE, and its role keys."""
    ctx = command_context(click_ctx, as_json)
    grantee = ctx.store.find_account(grantee_ref)
    grant = ctx.store.revoke_grant(role_id, grantee.id)
    emit(
        ctx,
        {"grant_id": grant.id, "revoked": True},
        f"role {role_id} revoked from {grantee.name!r}",
    )


@role.command("list")
@click.argument("account_ref", metavar="ACCOUNT")
@json_option
@click.pass_context
def role_list(click_ctx: click.Context, account_ref: str, as_json: bool) -> None:
    """Roles ACCOUNT granted (with their grants) and roles granted to it, with their ids."""
    ctx = command_context(click_ctx, as_json)
    found = ctx.store.find_account(account_ref)
    roles = ctx.store.roles_of(found.id)
    granted = [
        {
            "role_id": own.id,
            "name": own.name,
            "grants": [
                {
                    "grant_id": g.id,
                    "grantee_id": g.account_id,
                    "grantee": g.account_name,
                    "revoked": g.revoked_at is not None,
                }
                for g in grants
            ],
        }
        for own, grants in roles.granted
    ]
    received = [
        {
            "role_id": g.role_id,
            "name": g.role_name,
            "grantor_id": g.account_id,
            "grantor": g.account_name,
            "grant_id": g.id,
            "revoked": g.revoked_at is not None,
        }
        for g in roles.received
    ]
    name = repr(found.name)
    lines = [f"roles {name} granted:" if granted else f"{name} granted no role"]
    for own, grants in roles.granted:
        lines.append(f"  role {own.id} {own.name!r}" + ("" if grants else ": no grant"))
        lines += [
            f"    grant {g.id} to {g.account_name!r} (account {g.account_id}): {_state(g)}"
            for g in grants
        ]
    lines.append(f"roles granted to {name}:" if received else f"no role granted to {name}")
    lines += [
        f"  role {g.role_id} {g.role_name!r} of {g.account_name!r} (account {g.account_id}): "
        f"grant {g.id}, {_state(g)}"
        for g in roles.received
    ]
    result = {"account_id": found.id, "granted": granted, "received": received}
    emit(ctx, result, "\n".join(lines))


def _state(item: GrantState) -> str:
    return "active" if item.revoked_at is None else "revoked"


# -- data -----------------------------------------------------------------------------------


@main.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--account", "account_ref", required=True, help="Account name or id.")
@json_option
@click.pass_context
def import_command(click_ctx: click.Context, file: Path, account_ref: str, as_json: bool) -> None:
    """Import calls from a JSON Lines file or a JSON array (all of the file or nothing)."""
    ctx = command_context(click_ctx, as_json)
    owner = ctx.store.find_account(account_ref)
    result = import_file(ctx.store, owner.id, file, ctx.settings.zone)
    emit(
        ctx,
        {"imported": result.imported, "updated": result.updated},
        f"{plural(result.imported, 'call')} imported, {result.updated:,} updated "
        f"into {owner.name!r}",
    )


main.add_command(campaign)
main.add_command(phone)
main.add_command(rule)
main.add_command(telephony)
main.add_command(call)
main.add_command(hook)
main.add_command(hooks_group)
account_settings_command(account)
main.add_command(export)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 256))
@json_option
@click.pass_context
def serve(click_ctx: click.Context, host: str, port: int, workers: int, as_json: bool) -> None:
    """Serve the v3 API over HTTP."""
    ctx = command_context(click_ctx, as_json)
    run_server(ctx, host, port, workers)


def run_server(ctx: Context, host: str, port: int, workers: int) -> None:
    """Run uvicorn on the app factory; workers read their settings from the environment."""
    import uvicorn

    from calltrack.api.http_bounds import BoundedHttpToolsProtocol
    from calltrack.logs import log_config

    settings = ctx.settings
    ctx.store.ensure_ready()  # fail now on a bad setting, not in every worker
    ctx.close()
    os.environ["CALLTRACK_DATABASE_URL"] = settings.database_url
    if ctx.as_json:
        emit(ctx, {"url": f"http://{host}:{port}/api/", "workers": workers}, "")
    deliverer = None
    if settings.hooks_deliverer == "process":
        # One deliverer beside the workers, so that deliveries never share a worker's
        # interpreter with the pages it serves (bench/RESULTS.md, webhook deliveries).
        command = [sys.executable, "-m", "calltrack", "hooks", "run", "--parent", str(os.getpid())]
        deliverer = subprocess.Popen(command, env={**os.environ})  # noqa: S603
        os.environ["CALLTRACK_HOOKS_DELIVERER"] = "off"  # the workers serve only
    try:
        uvicorn.run(
            "calltrack.api.app:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            access_log=False,  # ours redacts keys; see calltrack.api.app.AccessLogMiddleware
            log_config=log_config(settings.log_level),
            timeout_keep_alive=30,
            limit_concurrency=1000,
            http=BoundedHttpToolsProtocol,
        )
    finally:
        if deliverer is not None:
            deliverer.terminate()
            deliverer.wait(timeout=15)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
@click.option("--calls", default=6000, show_default=True, type=click.IntRange(1, 10_000_000))
@click.option("--no-serve", is_flag=True, help="Fill the database and print the keys only.")
@json_option
@click.pass_context
def demo(
    click_ctx: click.Context, host: str, port: int, calls: int, no_serve: bool, as_json: bool
) -> None:
    """Fill the database with demo accounts, roles and calls, print keys and URLs, and serve."""
    from calltrack.demo import build_demo, cli_command, serve_command

    ctx = command_context(click_ctx, as_json)
    site_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104 - a comparison
    result = build_demo(ctx.store, ctx.settings, total_calls=calls, site_host=site_host)
    cli = cli_command()
    serve = serve_command(cli, ctx.database, host, port)
    base_url = None if no_serve else f"http://{host}:{port}"
    text = result.describe(base_url, serve, cli, ctx.database)
    emit(ctx, result.as_dict(base_url, serve), text)
    if not no_serve:
        os.environ["CALLTRACK_DEMO_SITE"] = result.site_key  # the server shows /demo/
        run_server(ctx, host, port, workers=1)
