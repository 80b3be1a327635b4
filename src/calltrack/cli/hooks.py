"""`calltrack hook ...`: an account's webhook endpoints; `calltrack hooks run`: a deliverer
on its own (every `calltrack serve` process runs one too)."""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from typing import Any

import anyio
import click

from calltrack.cli.base import command_context, emit, fail, json_option
from calltrack.hooks import EVENTS, METHODS
from calltrack.hooks.deliverer import UNWOKEN_POLL_SECONDS, Deliverer
from calltrack.hooks.endpoints import add_endpoint, send_test
from calltrack.hooks.targets import RefusedTarget
from calltrack.store.hooks import HookEndpoint

EVENT_CHOICE = click.Choice(EVENTS, case_sensitive=False)
# The scheduling priority of the deliverer `serve` starts (a nice value; 0 is the workers').
DELIVERER_NICENESS = 19


@click.group()
def hook() -> None:
    """Where an account's calls are pushed as they happen (secrets are shown once)."""


@hook.command("add")
@click.argument("account_ref", metavar="ACCOUNT")
@click.argument("url")
@click.option("--event", "events", type=EVENT_CHOICE, multiple=True, required=True,
              help="An event to send (repeat for several).")  # fmt: skip
@click.option("--method", type=click.Choice(METHODS, case_sensitive=False), default="POST",
              show_default=True)  # fmt: skip
@json_option
@click.pass_context
def hook_add(
    click_ctx: click.Context,
    account_ref: str,
    url: str,
    events: tuple[str, ...],
    method: str,
    as_json: bool,
) -> None:
    """A new endpoint: its id and signing secret, shown only now."""
    ctx = command_context(click_ctx, as_json)
    owner = ctx.store.find_account(account_ref)
    try:
        issued = add_endpoint(ctx.store, ctx.settings, owner.id, url, events, method)
    except RefusedTarget as exc:
        fail(f"URL: {exc}")
    endpoint = issued.endpoint
    emit(
        ctx,
        {**_described(endpoint), "secret": issued.secret},
        f"webhook endpoint {endpoint.id}: {endpoint.method} {endpoint.url} "
        f"({', '.join(endpoint.events)})\nsigning secret: {issued.secret}\n"
        "(the secret is shown only now)",
    )


@hook.command("list")
@click.argument("account_ref", metavar="ACCOUNT", required=False)
@json_option
@click.pass_context
def hook_list(click_ctx: click.Context, account_ref: str | None, as_json: bool) -> None:
    """Endpoints (of ACCOUNT, or all): state, last answer, deliveries pending and failed,
    and the delay from a call's change to its delivery over the last day (p50/p99)."""
    ctx = command_context(click_ctx, as_json)
    account_id = None if account_ref is None else ctx.store.find_account(account_ref).id
    rows = []
    for endpoint in ctx.store.hooks(account_id):
        stats = ctx.store.hook_stats(endpoint.id)
        rows.append(
            {
                **_described(endpoint),
                "last_status": stats.last_status,
                "last_attempt_at": stats.last_attempt_at,
                "pending": stats.pending,
                "failed": stats.failed,
                "delivered_last_day": stats.delivered_day,
                "delay_p50_ms": stats.delay_p50_ms,
                "delay_p99_ms": stats.delay_p99_ms,
            }
        )
    lines = []
    for r in rows:
        state = "enabled" if r["enabled"] else f"DISABLED: {r['disabled_reason']}"
        last = (
            "never tried"
            if r["last_status"] is None
            else f"last answer {r['last_status'] or 'none'}"
        )
        day = (
            f"{r['delivered_last_day']:,} delivered in the last day, delay p50 "
            f"{_ms(r['delay_p50_ms'])}, p99 {_ms(r['delay_p99_ms'])}"
            if r["delivered_last_day"]
            else "none delivered in the last day"
        )
        lines.append(
            f"{r['id']:>5}  {r['method']} {r['url']}  ({', '.join(r['events'])})\n"
            f"       {state}; {last}; {r['pending']:,} pending, {r['failed']:,} failed; {day}"
        )
    emit(ctx, {"endpoints": rows}, "\n".join(lines) or "no webhook endpoints")


@hook.command("remove")
@click.argument("hook_id", metavar="ID", type=int)
@json_option
@click.pass_context
def hook_remove(click_ctx: click.Context, hook_id: int, as_json: bool) -> None:
    """Remove an endpoint: nothing more is sent to it (its pending deliveries are dropped)."""
    ctx = command_context(click_ctx, as_json)
    ctx.store.remove_hook(hook_id)
    emit(ctx, {"id": hook_id, "removed": True}, f"webhook endpoint {hook_id} removed")


@hook.command("rotate")
@click.argument("hook_id", metavar="ID", type=int)
@json_option
@click.pass_context
def hook_rotate(click_ctx: click.Context, hook_id: int, as_json: bool) -> None:
    """A new signing secret (shown only now); for 24 hours the old one signs too."""
    ctx = command_context(click_ctx, as_json)
    secret = ctx.store.rotate_hook(hook_id)
    emit(
        ctx,
        {"id": hook_id, "secret": secret},
        f"new signing secret of webhook endpoint {hook_id}: {secret}\n(shown only now; for "
        "24 hours deliveries carry signatures by both secrets)",
    )


@hook.command("enable")
@click.argument("hook_id", metavar="ID", type=int)
@json_option
@click.pass_context
def hook_enable(click_ctx: click.Context, hook_id: int, as_json: bool) -> None:
    """Turn a disabled endpoint back on: what waited for it is sent."""
    ctx = command_context(click_ctx, as_json)
    ctx.store.enable_hook(hook_id)
    emit(ctx, {"id": hook_id, "enabled": True}, f"webhook endpoint {hook_id} enabled")


@hook.command("test")
@click.argument("hook_id", metavar="ID", type=int)
@json_option
@click.pass_context
def hook_test(click_ctx: click.Context, hook_id: int, as_json: bool) -> None:
    """Send a sample call to the endpoint now, signed, and print its answer (exit code 1
    without a 2xx). Nothing is recorded."""
    ctx = command_context(click_ctx, as_json)
    endpoint = ctx.store.hook(hook_id)
    keys = ctx.store.hook_secrets(hook_id)
    sent = anyio.run(send_test, ctx.settings, endpoint, keys)
    event, message_id, answer = sent.event, sent.message_id, sent.answer
    body = answer.body.decode("utf-8", "replace")
    result = {
        "id": hook_id,
        "event": event,
        "webhook_id": message_id,
        "status": answer.status,
        "duration_ms": answer.duration_ms,
        "error": answer.error,
        "answer": body,
    }
    got = f"answered {answer.status}" if answer.status else f"no answer: {answer.error}"
    text = f"{endpoint.method} {endpoint.url} ({event}, {message_id}): {got}"
    text += f" in {answer.duration_ms} ms"
    if body:
        text += f"\n{body[:500]}"
    emit(ctx, result, text)
    if not sent.ok:
        raise SystemExit(1)


@hook.command("log")
@click.argument("hook_id", metavar="ID", type=int)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@json_option
@click.pass_context
def hook_log(click_ctx: click.Context, hook_id: int, limit: int, as_json: bool) -> None:
    """The endpoint's latest attempts, newest first (kept 30 days)."""
    ctx = command_context(click_ctx, as_json)
    attempts = ctx.store.hook_log(hook_id, limit)
    rows: list[dict[str, Any]] = [
        {
            "at": _when(a.attempted_at),
            "call": a.universal_id,
            "event": a.event,
            "webhook_id": a.message_id,
            "status": a.status,
            "duration_ms": a.duration_ms,
            "error": a.error,
        }
        for a in attempts
    ]
    text = "\n".join(
        f"{r['at']}  {r['status'] or '---':>3}  {r['duration_ms']:>6} ms  {r['event']:<17} "
        f"{r['call']}  {r['error']}".rstrip()
        for r in rows
    )
    emit(ctx, {"attempts": rows}, text or f"no attempts for webhook endpoint {hook_id} yet")


@click.group("hooks")
def hooks_group() -> None:
    """The webhook deliverer."""


@hooks_group.command("run")
@click.option("--parent", type=int, hidden=True,
              help="Stop when this process is gone (`serve` runs its deliverer so).")  # fmt: skip
@click.pass_context
def hooks_run(click_ctx: click.Context, parent: int | None) -> None:
    """Send webhook deliveries until stopped (Ctrl-C), beside or instead of the ones every
    `calltrack serve` runs; as many may run as you like, on any hosts."""
    ctx = command_context(click_ctx, False)
    logging.basicConfig(level=ctx.settings.log_level.upper(), format="%(asctime)s %(message)s")
    ctx.store.ensure_ready()
    if parent is not None and hasattr(os, "nice"):  # Unix
        # Beside `serve`'s workers, deliveries take the CPU that requests leave: a backlog
        # draining at full speed took the pages' core (bench/RESULTS.md, webhooks).
        os.nice(DELIVERER_NICENESS)

    async def run() -> None:
        limiter = anyio.CapacityLimiter(ctx.settings.db_pool_size)

        async def in_thread(func: Any, *args: object) -> Any:
            return await anyio.to_thread.run_sync(func, *args, limiter=limiter)

        async with anyio.create_task_group() as tasks:
            deliverer = Deliverer(ctx.store, ctx.settings, in_thread, UNWOKEN_POLL_SECONDS)
            tasks.start_soon(deliverer.run)
            while parent is None or os.getppid() == parent:  # orphans go too
                await anyio.sleep(1)
            tasks.cancel_scope.cancel()

    click.echo("delivering webhooks (Ctrl-C stops)", err=True)
    try:
        anyio.run(run)
    except KeyboardInterrupt:
        click.echo("stopped", err=True)


def _described(endpoint: HookEndpoint) -> dict[str, Any]:
    return {
        "id": endpoint.id,
        "account_id": endpoint.account_id,
        "url": endpoint.url,
        "method": endpoint.method,
        "events": list(endpoint.events),
        "enabled": endpoint.enabled,
        "disabled_reason": endpoint.disabled_reason,
        "rotating_until": endpoint.rotating_until or None,
    }


def _ms(value: object) -> str:
    return "-" if value is None else f"{value} ms"


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"
