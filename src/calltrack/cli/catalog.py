"""`calltrack campaign ...` and `calltrack phone ...`: the catalog an account keeps."""

from __future__ import annotations

from collections.abc import Callable

import click

from calltrack.cli.base import command_context, emit, fail, json_option, printable
from calltrack.store.catalog import CAMPAIGN_STATUSES
from calltrack.tracking.numbers import check_format, normalise

ALL_TIME = (-(2**62), 2**62)


@click.group()
def campaign() -> None:
    """Calltracking campaigns of an account (also added from imported calls)."""


@campaign.command("add")
@click.argument("account_ref", metavar="ACCOUNT")
@click.argument("campaign_id", type=click.IntRange(1, 2**63 - 1))
@click.argument("name")
@click.option("--site", help="The campaign's site, e.g. https://shop.example.")
@click.option(
    "--status", type=click.Choice(CAMPAIGN_STATUSES), help="active (for a new one), paused..."
)
@click.option(
    "--hold-seconds",
    type=int,
    help="How long a pool number stays with a visit after its last activity (default 600).",
)
@click.option("--stub", help="The number shown when every pool number is held.")
@click.option("--format", "display_format", help='How numbers are shown: "+7 (XXX) XXX-XX-XX".')
@click.option(
    "--replace",
    "replace_numbers",
    multiple=True,
    help="A number of the site's own that the snippet swaps (repeatable).",
)
@click.option("--selector", help="CSS selector of elements whose text and tel: link are swapped.")
@json_option
@click.pass_context
def campaign_add(
    click_ctx: click.Context,
    account_ref: str,
    campaign_id: int,
    name: str,
    site: str | None,
    status: str | None,
    hold_seconds: int | None,
    stub: str | None,
    display_format: str | None,
    replace_numbers: tuple[str, ...],
    selector: str | None,
    as_json: bool,
) -> None:
    """Create a campaign, or update the one with CAMPAIGN_ID (its ctCampaignId).

    Options not given keep their values (a new campaign is active, with no site); a campaign
    gets its snippet's site key here. Nothing changes if any option is bad.
    """
    ctx = command_context(click_ctx, as_json)
    owner = ctx.store.find_account(account_ref)
    numbers = [phone_number(n, "--replace") for n in replace_numbers] or None
    stub_number = phone_number(stub, "--stub") if stub else stub
    if display_format is not None:
        display_format = checked(check_format, display_format, "--format")
    saved = ctx.store.save_campaign(
        owner.id,
        campaign_id,
        name,
        site,
        status,
        hold_seconds=hold_seconds,
        stub=stub_number,
        display_format=display_format,
        replace_numbers=numbers,
        selector=selector,
    )
    emit(
        ctx,
        {"id": campaign_id, "name": name, "site_key": saved.site_key},
        f"campaign {campaign_id} {name!r} saved",
    )


@campaign.command("status")
@click.argument("account_ref", metavar="ACCOUNT")
@click.argument("campaign_id", type=int)
@click.argument("status", type=click.Choice(CAMPAIGN_STATUSES))
@json_option
@click.pass_context
def campaign_status(
    click_ctx: click.Context, account_ref: str, campaign_id: int, status: str, as_json: bool
) -> None:
    """Set a campaign's status."""
    ctx = command_context(click_ctx, as_json)
    owner = ctx.store.find_account(account_ref)
    ctx.store.set_campaign_status(owner.id, campaign_id, status)
    emit(ctx, {"id": campaign_id, "status": status}, f"campaign {campaign_id} is {status}")


@campaign.command("list")
@click.argument("account_ref", metavar="ACCOUNT")
@json_option
@click.pass_context
def campaign_list(click_ctx: click.Context, account_ref: str, as_json: bool) -> None:
    """List an account's campaigns."""
    ctx = command_context(click_ctx, as_json)
    owner = ctx.store.find_account(account_ref)
    rows = [
        {"id": id_, "name": name, "site": site, "status": status}
        for id_, name, site, status, _ in ctx.store.campaigns(owner.id, *ALL_TIME)
    ]
    text = "\n".join(
        f"{r['id']:>8}  {r['status']:<8}  {printable(str(r['name']))}  {printable(str(r['site']))}"
        for r in rows
    )
    emit(ctx, {"campaigns": rows}, text or "no campaigns")


@click.group()
def phone() -> None:
    """Tracking (substitution) numbers of an account."""


@phone.command("add")
@click.argument("account_ref", metavar="ACCOUNT")
@click.argument("number")
@click.option("--campaign", "campaign_id", type=int, default=0, help="Its campaign's id.")
@click.option("--office", default="", help="The office it rings.")
@click.option("--dynamic", is_flag=True, help="A dynamic (per-visitor) number; else static.")
@json_option
@click.pass_context
def phone_add(
    click_ctx: click.Context,
    account_ref: str,
    number: str,
    campaign_id: int,
    office: str,
    dynamic: bool,
    as_json: bool,
) -> None:
    """Add a tracking number."""
    ctx = command_context(click_ctx, as_json)
    owner = ctx.store.find_account(account_ref)
    kind = "dynamic" if dynamic else "static"
    ctx.store.add_phone(owner.id, number, campaign_id, office, kind)
    emit(ctx, {"number": number, "kind": kind}, f"{kind} number {number} added")


@phone.command("remove")
@click.argument("account_ref", metavar="ACCOUNT")
@click.argument("number")
@json_option
@click.pass_context
def phone_remove(click_ctx: click.Context, account_ref: str, number: str, as_json: bool) -> None:
    """Remove a tracking number."""
    ctx = command_context(click_ctx, as_json)
    owner = ctx.store.find_account(account_ref)
    ctx.store.remove_phone(owner.id, number)
    emit(ctx, {"number": number, "removed": True}, f"number {number} removed")


@phone.command("list")
@click.argument("account_ref", metavar="ACCOUNT")
@json_option
@click.pass_context
def phone_list(click_ctx: click.Context, account_ref: str, as_json: bool) -> None:
    """List an account's tracking numbers."""
    ctx = command_context(click_ctx, as_json)
    owner = ctx.store.find_account(account_ref)
    rows = [
        {"number": n, "campaign_id": c, "office": o, "kind": k}
        for n, c, _name, o, k, _ in ctx.store.phones(owner.id, *ALL_TIME)
    ]
    text = "\n".join(
        f"{r['number']}  {r['kind']:<7}  {r['campaign_id']}  {printable(str(r['office']))}"
        for r in rows
    )
    emit(ctx, {"phones": rows}, text or "no numbers")


def checked(check: Callable[[str], str], value: str, option: str) -> str:
    """``check(value)``, or the CLI's error naming the option."""
    try:
        return check(value)
    except ValueError as exc:
        fail(f"{option}: {exc}")


def phone_number(text: str, option: str) -> str:
    """A number written any usual way, as digits; the CLI's error for anything else."""
    return checked(normalise, text, option)
