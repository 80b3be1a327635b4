"""The overview (``/console/``): a period's counts against the previous period, calls per day
by source, and the top sources, campaigns and utm campaigns.

Everything comes from v4's stats, as the store counts them per quarter hour: one query grouped
by day and source (``Store.stats_by_day``) gives the counts, the chart and the sources; one by
campaign and utm campaign both top tables; one the previous period's counts.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from calltrack.api.app import service_of
from calltrack.console.session import PATH
from calltrack.console.web import Visitor, page, render
from calltrack.store import Store
from calltrack.store.changes import CallFilter, StatsRow

MESSAGES: Final = {
    "overview.bad_period": (
        "The period needs two dates, from no later than to, at most {days} days apart.",
        "Для периода нужны две даты, «с» не позже «по», не больше {days} дней.",
    ),
    "overview.other_sources": ("other", "прочие"),
}
PERIODS: Final = {"today": 1, "7d": 7, "30d": 30}
LONGEST_PERIOD: Final = 366  # days of a custom period
CHART_SOURCES: Final = 8  # the chart stacks this many sources, the rest as "other"
TOP: Final = 10  # rows of each top table
COUNTS: Final = ("calls", "answered", "unique", "target", "uniqueTarget")


def routes() -> list[Route]:
    return [Route(PATH + "/", overview_page, methods=["GET", "HEAD"])]


class BadPeriod(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Period:
    """Whole days in the service zone: ``first`` .. ``last``; the previous period is as many
    days just before."""

    name: str  # today, 7d, 30d, custom
    first: date
    last: date

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1

    def previous(self) -> Period:
        length = timedelta(days=self.days)
        return Period(self.name, self.first - length, self.last - length)

    def bounds(self, zone: ZoneInfo) -> tuple[int, int]:
        """Unix seconds of its first and last second."""
        start = datetime(self.first.year, self.first.month, self.first.day, tzinfo=zone)
        after = self.last + timedelta(days=1)
        end = datetime(after.year, after.month, after.day, tzinfo=zone)
        return int(start.timestamp()), int(end.timestamp()) - 1

    def each_day(self) -> list[date]:
        return [self.first + timedelta(days=n) for n in range(self.days)]


def period_of(params: dict[str, str], today: date) -> Period:
    """The period a page asks for: ``period`` (today, 7d, 30d) or ``from``/``to`` dates."""
    name = params.get("period") or ("custom" if params.get("from") else "7d")
    if name in PERIODS:
        return Period(name, today - timedelta(days=PERIODS[name] - 1), today)
    if name != "custom":
        raise BadPeriod(name)
    try:
        first = date.fromisoformat(params.get("from", ""))
        last = date.fromisoformat(params.get("to", "") or params.get("from", ""))
    except ValueError:
        raise BadPeriod("dates") from None
    if last < first or (last - first).days >= LONGEST_PERIOD:
        raise BadPeriod("range")
    return Period("custom", first, last)


@dataclass(frozen=True, slots=True)
class Count:
    name: str
    value: int
    before: int

    @property
    def change(self) -> float | None:
        """Percent against the previous period; None when it had none."""
        if not self.before:
            return None
        return (self.value - self.before) * 100.0 / self.before


@dataclass(slots=True)
class TopRow:
    key: str
    label: str
    counts: list[int] = field(default_factory=lambda: [0] * len(COUNTS))


@dataclass(frozen=True, slots=True)
class Overview:
    counts: list[Count]
    chart: dict[str, object]  # days and a series per source, for the page's script
    sources: list[TopRow]
    campaigns: list[TopRow]
    utm_campaigns: list[TopRow]


def _values(row: StatsRow) -> tuple[int, ...]:
    return row.calls, row.answered, row.unique, row.target, row.unique_target


def _top(rows: list[StatsRow], label: dict[str, str] | None = None) -> list[TopRow]:
    found: dict[str, TopRow] = {}
    for row in rows:
        key = str(row.keys[0]) if row.keys[0] is not None else ""
        top = found.setdefault(key, TopRow(key, (label or {}).get(key, key)))
        for index, value in enumerate(_values(row)):
            top.counts[index] += value
    return sorted(found.values(), key=lambda r: (-r.counts[0], r.key))[:TOP]


def gather(store: Store, owners: tuple[int, ...], period: Period, zone: ZoneInfo) -> Overview:
    """The overview's numbers (runs in a thread): three queries over the counts the store
    keeps: the chart's days by source from the quarter-hour counts (a month of 1M calls: about
    45,000 rows), the top tables and the previous period from the daily ones (thousands)."""
    start, end = period.bounds(zone)
    where = CallFilter(start=start, end=end)
    days = period.each_day()
    by_day_source = store.stats_by_day(
        owners, [_day_bounds(day, zone) for day in days], ("source",)
    )
    before_start, before_end = period.previous().bounds(zone)
    before = store.call_stats(owners, CallFilter(start=before_start, end=before_end), ())
    # Both top tables from one query (SQLite: each grouping of the month's count rows costs
    # about as much as the other; measured, one query grouped by everything cost more).
    campaign_utm = store.call_stats(owners, where, ("campaign", "utm_campaign"))
    names = store.campaign_names(owners) if campaign_utm else {}

    totals = [0] * len(COUNTS)
    for row in by_day_source:
        for index, value in enumerate(_values(row)):
            totals[index] += value
    previous = [0] * len(COUNTS)
    for row in before:
        for index, value in enumerate(_values(row)):
            previous[index] += value
    counts = [Count(n, totals[i], previous[i]) for i, n in enumerate(COUNTS)]

    campaign_labels = {str(key): name for key, name in names.items()}
    return Overview(
        counts=counts,
        chart=_chart(by_day_source, days, zone),
        sources=_top([replace(row, keys=(row.keys[1],)) for row in by_day_source]),
        campaigns=_top([replace(row, keys=row.keys[:1]) for row in campaign_utm], campaign_labels),
        utm_campaigns=_top([replace(row, keys=row.keys[1:]) for row in campaign_utm]),
    )


def _day_bounds(day: date, zone: ZoneInfo) -> tuple[int, int]:
    return Period("day", day, day).bounds(zone)


def _chart(rows: list[StatsRow], days: list[date], zone: ZoneInfo) -> dict[str, object]:
    """Calls per day of the period stacked by source: the biggest sources, then "other".
    ``rows``: keyed by the day's index in ``days``, then the source."""
    per_source: dict[str, list[int]] = defaultdict(lambda: [0] * len(days))
    for row in rows:
        per_source[str(row.keys[1])][int(str(row.keys[0]))] += row.calls
    ranked = sorted(per_source, key=lambda s: (-sum(per_source[s]), s))
    shown = ranked[:CHART_SOURCES]
    series: list[dict[str, object]] = [
        {"name": source, "values": per_source[source]} for source in shown
    ]
    rest = ranked[CHART_SOURCES:]
    if rest:
        other = [sum(per_source[s][i] for s in rest) for i in range(len(days))]
        series.append({"name": "", "other": True, "values": other})
    first_seconds = [
        int(datetime(d.year, d.month, d.day, 12, tzinfo=zone).timestamp()) for d in days
    ]
    return {
        "days": [d.isoformat() for d in days],
        "x": first_seconds,  # noon of each day: the bar sits on its day whatever the zone
        "series": series,
    }


@page()
async def overview_page(request: Request, visitor: Visitor) -> Response:
    service = service_of(request)
    zone = service.settings.zone
    today = datetime.now(zone).date()
    params = dict(request.query_params)
    try:
        period = period_of(params, today)
        problem = ""
    except BadPeriod:
        period = period_of({}, today)
        problem = visitor.t("overview.bad_period", days=LONGEST_PERIOD)
    data = await service.in_thread(gather, service.store, visitor.owners, period, zone)
    previous = period.previous()
    return render(
        request,
        visitor,
        "overview.html",
        400 if problem else 200,
        period=period,
        previous=previous,
        periods=(*PERIODS, "custom"),
        problem=problem,
        data=data,
        count_names=COUNTS,
    )
