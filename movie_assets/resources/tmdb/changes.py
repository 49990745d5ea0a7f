"""TMDB's change feed (`GET /movie/changes`): which movies changed on a range of days."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from movie_assets.domain.movie_records import movie_id_of
from movie_assets.resources.tmdb.http import TmdbHttp
from movie_assets.resources.tmdb.source import CHANGES_MAX_DAYS, CHANGES_PAGE_SIZE, MAX_PAGES, TmdbError


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
        http.stats.add(pages=1, windows=1)
        total_pages = page_count(first.get("total_pages"))
        if total_pages is None:  # a count that is no number: page on until a short page, never guess
            log(f"WARNING TMDB changes {start}..{end}: total_pages {first.get('total_pages')!r} is no number")
            ids.update(_ids(http, first))
            ids.update(_page_until_short(http, params))
            continue
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
            ids.update(_ids(http, page))
        http.stats.add(pages=total_pages - 1)
    log(f"TMDB changes {first_day}..{last_day}: {len(ids)} movies in {http.stats.pages} pages")
    return sorted(ids)


def page_count(value) -> int | None:
    """TMDB's `total_pages` as a number of pages (an int, or a string of digits); None when it is none."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 10:
        value = int(value)
    if value is None:
        return 1
    return value if isinstance(value, int) and value >= 0 else None


def _ids(http: TmdbHttp, page: dict) -> set[int]:
    """The movie ids of one page; items that name no movie are counted (`skipped`), never the end of the sync."""
    results = page.get("results")
    items = results if isinstance(results, list) else []
    named = [movie_id_of(item.get("id")) if isinstance(item, dict) else None for item in items]
    http.stats.add(skipped=named.count(None))
    return {movie_id for movie_id in named if movie_id is not None}


def _page_until_short(http: TmdbHttp, params: dict) -> set[int]:
    """Pages 2.. of a piece whose page count is unusable, until a page holds fewer than a full page (or MAX_PAGES)."""
    ids: set[int] = set()
    for page_number in range(2, MAX_PAGES + 1):
        page = http.get_json("/movie/changes", {**params, "page": page_number})
        http.stats.add(pages=1)
        results = page.get("results")
        ids |= _ids(http, page)
        if not isinstance(results, list) or len(results) < CHANGES_PAGE_SIZE:
            break
    return ids


def _days(first: dt.date, last: dt.date) -> list[dt.date]:
    return [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]
