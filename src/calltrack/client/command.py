"""``calltrack export``: pull every call of a window from a v3 server into a file.

A thin command over ``calltrack.client.export.export_calls``: options in, a progress bar on a
terminal, a one-line summary out, and errors as ``error: ...`` with exit code 1 (130 when
interrupted).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import click
from tqdm import tqdm

from calltrack.client._client import DEFAULT_TIMEZONE, METHODS, Client, Method, time_segment
from calltrack.client._errors import ClientError
from calltrack.client.export import ExportResult, Progress, export_calls
from calltrack.client.writers import FORMATS
from calltrack.words import plural


def _check_date(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        time_segment(value, ZoneInfo("UTC"))  # any zone will do to check the shape
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


def _check_zone(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        ZoneInfo(value)
    except (ValueError, ZoneInfoNotFoundError):
        raise click.BadParameter(f"unknown time zone {value!r}") from None
    return value


@click.command("export")
@click.option("--url", required=True, envvar="CALLTRACK_URL", help="The server, e.g. https://host")
@click.option(
    "--key",
    required=True,
    envvar="CALLTRACK_API_KEY",
    help="API key (or $CALLTRACK_API_KEY, which keeps it out of the process list).",
)
@click.option(
    "--from",
    "start",
    metavar="DATE",
    callback=_check_date,
    help="Start: YYYY-MM-DD, a unix timestamp or 'YYYY-MM-DD HH:MM:SS' (service time zone). "
    "Needed unless --since-last has a state.",
)
@click.option("--to", "end", metavar="DATE", callback=_check_date, help="End (default: now).")
@click.option("--method", type=click.Choice(METHODS), default="get", show_default=True)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Output file; it appears only when the export is complete.",
)
@click.option("--format", "fmt", type=click.Choice(FORMATS), help="Default: from the extension.")
@click.option("--excel", is_flag=True, help="CSV for Excel: UTF-8 BOM and ';' separators.")
@click.option("--resume", is_flag=True, help="Continue an interrupted export of the same file.")
@click.option(
    "--since-last",
    metavar="STATEFILE",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Export only calls after those of the last successful run, and remember this one.",
)
@click.option(
    "--timezone",
    envvar="CALLTRACK_TIMEZONE",
    default=DEFAULT_TIMEZONE,
    show_default=True,
    callback=_check_zone,
    help="The server's time zone (for date-times in --from/--to and --since-last).",
)
@click.option("--retries", default=5, show_default=True, type=click.IntRange(0, 100))
@click.option("--timeout", default=60.0, show_default=True, type=click.FloatRange(min=0.1))
@click.option(
    "--progress/--no-progress", default=None, help="Progress bar (default: on a terminal)."
)
def export(
    url: str,
    key: str,
    start: str | None,
    end: str | None,
    method: Method,
    output: Path,
    fmt: str | None,
    excel: bool,
    resume: bool,
    since_last: Path | None,
    timezone: str,
    retries: int,
    timeout: float,
    progress: bool | None,
) -> None:
    """Export every call from START to END of a v3 server into a CSV, JSONL, XLSX or
    Parquet file, page by page, resumably."""
    shown = sys.stderr.isatty() if progress is None else progress
    bars = [_bar(shown, "export")]

    def on_page(done: Progress) -> None:
        bars[0].set_postfix_str(plural(done.pages, "page"), refresh=False)
        bars[0].update(done.calls - bars[0].n)

    def on_convert(done: int, total: int) -> None:
        if len(bars) == 1:
            bars[0].close()
            bars.append(_bar(shown, f"writing {output.name}", total=total))
        bars[-1].update(done - bars[-1].n)

    part = output.with_name(output.name + ".part")
    try:
        with (
            _log_to(bars[0]),
            Client(url, key, timeout=timeout, retries=retries, timezone=timezone) as client,
        ):
            result = export_calls(
                client,
                output,
                start,
                end,
                method=method,
                fmt=fmt,
                excel=excel,
                resume=resume,
                since_last=since_last,
                on_page=on_page,
                on_convert=on_convert,
            )
    except KeyboardInterrupt:
        failure: tuple[str, int] | None = ("interrupted", 130)
    except (ClientError, ValueError) as exc:
        failure = (str(exc), 1)
    else:
        failure = None
    for bar in bars:
        bar.close()
    if failure is not None:
        _fail(failure[0] + _resume_hint(part), failure[1])
    click.echo(summary(result, since_last))


def _bar(shown: bool, desc: str, total: int | None = None) -> tqdm[NoReturn]:
    """Calls so far and calls/s; with a total (writing a file at the end), a bar."""
    if total is not None:
        return tqdm(total=total, disable=not shown, file=sys.stderr, unit=" calls", desc=desc)
    return tqdm(
        disable=not shown,
        file=sys.stderr,
        unit=" calls",
        desc=desc,
        # "calls: 1" reads right for any count, where "{n_fmt} calls" says "1 calls"
        bar_format="{desc}: calls: {n_fmt}, {postfix} [{elapsed}, {rate_fmt}]",
        postfix="0 pages",
    )


def summary(result: ExportResult, since_last: Path | None = None) -> str:
    """The one line printed when an export is complete."""
    rate = result.run_calls / result.seconds if result.seconds > 0 else 0.0
    text = (
        f"exported {plural(result.calls, 'call')} "
        f"({plural(result.pages, 'page')}) to {result.output} "
        f"[{result.format}] in {result.seconds:.1f} s ({rate:,.0f} calls/s)"
    )
    if result.resumed:
        text += f", resumed: {plural(result.run_calls, 'call')} by this run"
    if result.skipped:
        text += f", {result.skipped:,} seen before and skipped"
    if since_last is not None:
        last = result.last_call_time or "none yet"
        text += f"; {since_last} saved (last call {last})"
    return text


def _resume_hint(part: Path) -> str:
    if part.exists():
        return (
            f"\nthe export is unfinished in {part}: "
            "run the same command with --resume to continue it"
        )
    return ""


def _fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@contextmanager
def _log_to(bar: tqdm[NoReturn]) -> Iterator[None]:
    """Show the client's retry warnings without breaking the progress bar."""
    logger = logging.getLogger("calltrack.client")
    if logger.handlers or logging.getLogger().handlers:
        yield
        return
    handler = _BarHandler(bar)
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


class _BarHandler(logging.Handler):
    def __init__(self, bar: tqdm[NoReturn]) -> None:
        super().__init__(logging.WARNING)
        self.bar = bar

    def emit(self, record: logging.LogRecord) -> None:
        self.bar.write(f"warning: {record.getMessage()}", file=sys.stderr)
