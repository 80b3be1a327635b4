"""`calltrack telephony ...`: the endpoints an account's PBX posts its call events to."""

from __future__ import annotations

import click

from calltrack.cli.base import (
    command_context,
    emit,
    fail,
    json_option,
    server_option,
)
from calltrack.cli.catalog import phone_number
from calltrack.store.telephony import PROVIDERS
from calltrack.telephony.service import simulate_call


@click.group()
def telephony() -> None:
    """Where an account's PBX sends call events (secrets are shown once)."""


@telephony.command("add")
@click.argument("account_ref", metavar="ACCOUNT")
@click.option("--provider", type=click.Choice(PROVIDERS), default="generic", show_default=True)
@server_option
@json_option
@click.pass_context
def telephony_add(
    click_ctx: click.Context, account_ref: str, provider: str, server: str, as_json: bool
) -> None:
    """A new endpoint: the events URL and its secret, shown only now."""
    ctx = command_context(click_ctx, as_json)
    owner = ctx.store.find_account(account_ref)
    issued = ctx.store.add_telephony_endpoint(owner.id, provider)
    url = issued.endpoint.events_url(server)
    how = (
        f"Authorization: Bearer {issued.secret}"
        if provider == "generic"
        else f"the API secret of the Zadarma account's notifications: {issued.secret}"
    )
    emit(
        ctx,
        {"id": issued.endpoint.id, "provider": provider, "url": url, "secret": issued.secret},
        f"events URL: {url}\n{how}\n(the secret is shown only now)",
    )


@telephony.command("list")
@click.argument("account_ref", metavar="ACCOUNT")
@server_option
@json_option
@click.pass_context
def telephony_list(click_ctx: click.Context, account_ref: str, server: str, as_json: bool) -> None:
    """The account's endpoints: id, provider, URL, the secret's first characters, state."""
    ctx = command_context(click_ctx, as_json)
    owner = ctx.store.find_account(account_ref)
    found = ctx.store.telephony_endpoints(owner.id)
    rows = [
        {
            "id": e.id,
            "provider": e.provider,
            "url": e.events_url(server),
            "hint": e.hint,
            "state": "revoked" if e.revoked_at else "active",
        }
        for e in found
    ]
    text = "\n".join(
        f"{r['id']:>5}  {r['provider']:<8} {r['state']:<8} {r['hint']}...  {r['url']}" for r in rows
    )
    emit(ctx, {"endpoints": rows}, text or "no telephony endpoints")


@telephony.command("remove")
@click.argument("account_ref", metavar="ACCOUNT")
@click.argument("endpoint_id", metavar="ID", type=int)
@json_option
@click.pass_context
def telephony_remove(
    click_ctx: click.Context, account_ref: str, endpoint_id: int, as_json: bool
) -> None:
    """Revoke an endpoint: its secret is refused from now on."""
    ctx = command_context(click_ctx, as_json)
    owner = ctx.store.find_account(account_ref)
    ctx.store.revoke_telephony_endpoint(owner.id, endpoint_id)
    emit(ctx, {"id": endpoint_id, "revoked": True}, f"telephony endpoint {endpoint_id} revoked")


@click.group()
def call() -> None:
    """Calls, by hand."""


@call.command("simulate")
@click.option("--to", "called", required=True, help="The tracking number called.")
@click.option("--from", "caller", default="79161234567", show_default=True, help="The caller.")
@click.option("--talk", default=130, show_default=True, type=click.IntRange(0, 86400),
              help="Seconds of talk (0: not answered).")  # fmt: skip
@click.option("--account", "account_ref", help="Whose number, when several accounts have it.")
@json_option
@click.pass_context
def call_simulate(
    click_ctx: click.Context,
    called: str,
    caller: str,
    talk: int,
    account_ref: str | None,
    as_json: bool,
) -> None:
    """Play the PBX: the events of a call to NUMBER that started just now, as a PBX would
    post them, through the same steps as /telephony/generic. Prints the call's record."""
    ctx = command_context(click_ctx, as_json)
    to, source = phone_number(called, "--to"), phone_number(caller, "--from")
    owners = ctx.store.number_owners(to)
    if account_ref is not None:
        owners = [a for a in owners if a == ctx.store.find_account(account_ref).id]
    if len(owners) != 1:
        fail(f"--to: {'no account has' if not owners else 'several accounts have'} the "
             f"number {to}{'' if not owners else '; name one with --account'}")  # fmt: skip
    record = simulate_call(ctx.store, ctx.settings, owners[0], to, source, talk)
    shown = {name: record[name] for name in SHOWN_FIELDS}
    text = "\n".join(f"  {name}: {value}" for name, value in shown.items())
    emit(ctx, record, f"call {record['universalId']} recorded:\n{text}")


SHOWN_FIELDS = (
    "universalId", "callTime", "clientNumber", "callerIdToClient", "status", "duration",
    "utm_source", "utm_medium", "utm_campaign", "entryPoint", "pagesCount", "unique",
)  # fmt: skip
