"""TMDB's change feed (`GET /movie/changes`): which movies changed on a range of days."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from movie_assets.resources.tmdb.http import TmdbHttp
from movie_assets.resources.tmdb.source import CHANGES_MAX_DAYS, MAX_PAGES, TmdbError


def change_windows(first_day: dt.date, last_day: dt.date) -> list[tuple[dt.date, dt.date]]:
    """[first_day, last_day] as inclusive pieces of at most CHANGES_MAX_DAYS days (TMDB refuses longer ones)."""
    pieces, start = [], first_day
    while start <= last_day:
        end = min(start + dt.timedelta(days=CHANGES_MAX_DAYS - 1), last_day)
        pieces.append((start, end))
        start = end + dt.timedelta(days=1)
    return pieces


def changed_ids(
    http: TmdbHttp, pool: ThreadPoolExecutor, first_day: dt.date, last_day: dt.date, log: Callable[[str], None]
) -> list[int]:
    """Every page of each piece of at most 14 days; ids once each, sorted."""
    ids: set[int] = set()
    pieces = change_windows(first_day, last_day)
    while pieces:
        start, end = pieces.pop(0)
        params = {"start_date": start.isoformat(), "end_date": end.isoformat()}
        first = http.get_json("/movie/changes", {**params, "page": 1})
        total_pages = int(first.get("total_pages") or 1)
        http.stats.add(pages=1, windows=1)
        if total_pages > MAX_PAGES:
            # Past page 500 TMDB answers nothing: read day by day, and refuse a day too big to list.
            if start == end:
                raise TmdbError(
                    f"TMDB lists {total_pages} pages of changes for the single day {start}, more than the "
                    f"{MAX_PAGES} it serves; refusing to sync a truncated day (the cursor stays where it was)."
                )
            pieces[:0] = [(day, day) for day in _days(start, end)]
            continue
        rest = pool.map(
            lambda page, params=params: http.get_json("/movie/changes", {**params, "page": page}),
            range(2, total_pages + 1),
        )
        for page in [first, *rest]:
            ids.update(int(item["id"]) for item in page.get("results") or [] if isinstance(item.get("id"), int))
        http.stats.add(pages=total_pages - 1)
    log(f"TMDB changes {first_day}..{last_day}: {len(ids)} movies in {http.stats.pages} pages")
    return sorted(ids)


def _days(first: dt.date, last: dt.date) -> list[dt.date]:
    return [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]
