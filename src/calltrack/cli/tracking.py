"""Dynamic call tracking's setup: source rules, a campaign's snippet tag and pool, and the
account settings that make a call unique or target."""

from __future__ import annotations

from functools import partial

import click

from calltrack.cli.base import command_context, emit, fail, json_option, server_option
from calltrack.cli.catalog import campaign, checked, phone_number
from calltrack.store.tracking import SOURCE_TYPES, SourceRule
from calltrack.tracking.rules import check_condition, normalise_domain
from calltrack.tracking.snippet import snippet_tag


@click.group()
def rule() -> None:
    """Source rules of a campaign: which number a visit from a source is shown."""


@rule.command("add")
@click.argument("account_ref", metavar="ACCOUNT")
@click.argument("campaign_id", metavar="CAMPAIGN", type=int)
@click.option("--utm-source", default="", help="utm_source equals this (any case).")
@click.option("--utm-medium", default="", help="utm_medium equals this.")
@click.option("--utm-campaign", default="", help="utm_campaign equals this.")
@click.option("--referrer", default="", help="The referrer is this domain or a subdomain.")
@click.option("--source-type", type=click.Choice(SOURCE_TYPES), default=None)
@click.option("--number", default=None, help="Show this static number of the campaign.")
@click.option("--pool", is_flag=True, help="Show a number of the campaign's pool.")
@json_option
@click.pass_context
def rule_add(
    click_ctx: click.Context,
    account_ref: str,
    campaign_id: int,
    utm_source: str,
    utm_medium: str,
    utm_campaign: str,
    referrer: str,
    source_type: str | None,
    number: str | None,
    pool: bool,
    as_json: bool,
) -> None:
    """Add a rule at the end of the campaign's list (rules are tried top-down; the first
    whose every condition holds wins). Give exactly one of --number and --pool."""
    if (number is None) == (not pool):
        fail("give exactly one of --number N and --pool")
    ctx = command_context(click_ctx, as_json)
    owner = ctx.store.find_account(account_ref)
    conditions = {
        name: checked(partial(check_condition, name), value, "--" + name.replace("_", "-"))
        for name, value in (
            ("utm_source", utm_source),
            ("utm_medium", utm_medium),
            ("utm_campaign", utm_campaign),
        )
    }
    conditions["referrer"] = checked(normalise_domain, referrer, "--referrer") if referrer else ""
    added = ctx.store.add_rule(
        owner.id,
        campaign_id,
        **conditions,
        source_type=source_type or "",
        number=phone_number(number, "--number") if number else "",
    )
    emit(ctx, _rule_json(added), f"rule {added.id} added: {_describe(added)}")


@rule.command("list")
@click.argument("account_ref", metavar="ACCOUNT")
@click.argument("campaign_id", metavar="CAMPAIGN", type=int)
@json_option
@click.pass_context
def rule_list(click_ctx: click.Context, account_ref: str, campaign_id: int, as_json: bool) -> None:
    """The campaign's rules, in the order they are tried."""
    ctx = command_context(click_ctx, as_json)
    owner = ctx.store.find_account(account_ref)
    rules = ctx.store.rules(owner.id, campaign_id)
    text = "\n".join(f"{r.id:>6}  {_describe(r)}" for r in rules)
    emit(ctx, {"rules": [_rule_json(r) for r in rules]}, text or "no rules")


@rule.command("remove")
@click.argument("account_ref", metavar="ACCOUNT")
@click.argument("rule_id", metavar="RULE", type=int)
@json_option
@click.pass_context
def rule_remove(click_ctx: click.Context, account_ref: str, rule_id: int, as_json: bool) -> None:
    """Remove a rule (by the id `rule list` shows)."""
    ctx = command_context(click_ctx, as_json)
    owner = ctx.store.find_account(account_ref)
    ctx.store.remove_rule(owner.id, rule_id)
    emit(ctx, {"id": rule_id, "removed": True}, f"rule {rule_id} removed")


@campaign.command("snippet")
@click.argument("account_ref", metavar="ACCOUNT")
@click.argument("campaign_id", metavar="CAMPAIGN", type=int)
@server_option
@json_option
@click.pass_context
def campaign_snippet(
    click_ctx: click.Context, account_ref: str, campaign_id: int, server: str, as_json: bool
) -> None:
    """The <script> tag to paste into every page of the campaign's site."""
    ctx = command_context(click_ctx, as_json)
    owner = ctx.store.find_account(account_ref)
    saved = ctx.store.configure_campaign(owner.id, campaign_id)  # gives it a site key if new
    src, tag = snippet_tag(server, saved.site_key)
    emit(ctx, {"site_key": saved.site_key, "src": src, "tag": tag}, tag)


@campaign.command("pool")
@click.argument("account_ref", metavar="ACCOUNT")
@click.argument("campaign_id", metavar="CAMPAIGN", type=int)
@json_option
@click.pass_context
def campaign_pool(
    click_ctx: click.Context, account_ref: str, campaign_id: int, as_json: bool
) -> None:
    """The pool of dynamic numbers: its size, held now, the peak and the stub hits of the
    last 24 hours, and whether to add numbers."""
    ctx = command_context(click_ctx, as_json)
    owner = ctx.store.find_account(account_ref)
    stats = ctx.store.pool_stats(owner.id, campaign_id)
    result = {
        "size": stats.size,
        "held_now": stats.held_now,
        "peak_held_24h": stats.peak_held,
        "exhausted_hits_24h": stats.exhausted_hits,
        "advice": stats.advice,
    }
    text = (
        f"pool of {stats.size}: {stats.held_now} held now, peak {stats.peak_held} and "
        f"{stats.exhausted_hits} stub hits in the last 24 h\n{stats.advice}"
    )
    emit(ctx, result, text)


def account_settings_command(account: click.Group) -> None:
    """Add ``account settings`` to the account group."""

    @account.command("settings")
    @click.argument("account_ref", metavar="ACCOUNT")
    @click.option(
        "--unique-days",
        type=int,
        help="A call is unique without an earlier call "
        "from its number within this many days (default 180).",
    )
    @click.option(
        "--target-seconds",
        type=int,
        help="A call is target from this many seconds of talk (default 120).",
    )
    @json_option
    @click.pass_context
    def account_settings(
        click_ctx: click.Context,
        account_ref: str,
        unique_days: int | None,
        target_seconds: int | None,
        as_json: bool,
    ) -> None:
        """Show, or change, what makes the account's calls unique and target."""
        ctx = command_context(click_ctx, as_json)
        owner = ctx.store.find_account(account_ref)
        saved = ctx.store.set_account_settings(owner.id, unique_days, target_seconds)
        result = {"unique_days": saved.unique_days, "target_seconds": saved.target_seconds}
        text = (
            f"unique: no earlier call within {saved.unique_days} days; "
            f"target: {saved.target_seconds} seconds of talk or more"
        )
        emit(ctx, result, text)


def _rule_json(rule: SourceRule) -> dict[str, object]:
    return {
        "id": rule.id,
        "position": rule.position,
        "utm_source": rule.utm_source,
        "utm_medium": rule.utm_medium,
        "utm_campaign": rule.utm_campaign,
        "referrer": rule.referrer,
        "source_type": rule.source_type,
        "number": rule.number,
        "pool": not rule.number,
    }


def _describe(rule: SourceRule) -> str:
    conditions = [
        f"{name}={value!r}"
        for name, value in (
            ("utm_source", rule.utm_source),
            ("utm_medium", rule.utm_medium),
            ("utm_campaign", rule.utm_campaign),
            ("referrer", rule.referrer),
            ("source", rule.source_type),
        )
        if value
    ]
    target = f"number {rule.number}" if rule.number else "the pool"
    return f"{' and '.join(conditions) or 'any source'} -> {target}"
