"""A crawl of one release window: every discover page (split past TMDB's 10,000-result cap, paged again when
the listing came up short), then one details document per listed movie."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from movie_assets.domain.movie_records import movie_id_of
from movie_assets.resources.tmdb.details import fetch_details
from movie_assets.resources.tmdb.http import TmdbHttp
from movie_assets.resources.tmdb.source import MAX_PAGES, MAX_RESULTS, Crawl, TmdbError, Window

MAX_LISTING_PASSES = 2  # extra passes over the pages when fewer movies were listed than TMDB counted


def crawl_window(
    http: TmdbHttp, pool: ThreadPoolExecutor, window: Window, log: Callable[[str], None], max_missing_details: int
) -> Crawl:
    """(list item, details) pairs of every movie released in the window, each movie once."""
    stats = http.stats
    items = discover(http, pool, window, log)
    # Ids are normalized before deduplication (1015 and "1015" are one movie). An item without a
    # valid id gets no details request and is kept on its own (once, however often it was listed),
    # so validation rejects it with a reason.
    unique: dict[int, dict] = {}
    invalid: dict[str, dict] = {}
    for item in items:
        key = listing_key(item)
        if isinstance(key, int):
            unique.setdefault(key, item)
        else:
            invalid.setdefault(key, item)
    stats.add(listed=len(items), duplicates=len(items) - len(unique) - len(invalid))
    log(
        f"TMDB {window[0]}..{window[1]}: {len(unique)} movies listed ({stats.pages} pages, "
        f"{len(items) - len(unique)} duplicates); fetching details"
    )
    fetched = fetch_details(http, pool, list(unique), f"TMDB details {window[0]:%Y-%m}", log, max_missing_details)
    details = [d if isinstance(d, dict) else None for d in fetched]  # with max_missing, never UnreadableDocument
    stats.add(details_missing=sum(d is None for d in details))
    pairs = list(zip(unique.values(), details, strict=True)) + [(item, None) for item in invalid.values()]
    return Crawl(pairs, stats)


def discover(http: TmdbHttp, pool: ThreadPoolExecutor, window: Window, log: Callable[[str], None]) -> list[dict]:
    """All list items of the window; windows over TMDB's 10,000-result cap are split, never truncated."""
    start, end = window
    params = discover_params(window)
    first = http.get_json("/discover/movie", {**params, "page": 1})
    http.stats.add(pages=1, windows=1)
    total_results = int(first.get("total_results") or 0)
    if total_results > MAX_RESULTS:
        days = (end - start).days
        if days <= 1:
            raise TmdbError(
                f"TMDB lists {total_results} movies for the single day {start}, more than the "
                f"{MAX_RESULTS} one query can page through; refusing to store a truncated day."
            )
        middle = start + dt.timedelta(days=days // 2)
        log(f"TMDB {start}..{end}: {total_results} results exceed the {MAX_PAGES}-page cap; splitting at {middle}")
        return discover(http, pool, (start, middle), log) + discover(http, pool, (middle, end), log)
    total_pages = min(int(first.get("total_pages") or 1), MAX_PAGES)
    pages = [first]
    for attempt in range(MAX_LISTING_PASSES):
        needed = range(2, total_pages + 1) if attempt == 0 else range(1, total_pages + 1)
        pages += list(pool.map(lambda page: http.get_json("/discover/movie", {**params, "page": page}), needed))
        http.stats.add(pages=len(needed))
        listed = len({listing_key(item) for page in pages for item in results(page)})
        if listed >= total_results:
            break
        # Paging under a shifting order repeats some items and pushes others past the last page.
        log(
            f"TMDB {start}..{end}: listed {listed} of {total_results} movies; paging again "
            f"({attempt + 2}/{MAX_LISTING_PASSES + 1})"
        )
    else:
        http.stats.add(missing_listings=total_results - listed)
        log(
            f"WARNING TMDB {start}..{end}: {total_results - listed} of {total_results} movies never appeared in "
            "the listing"
        )
    return [item for page in pages for item in results(page)]


def count_listed(http: TmdbHttp, window: Window) -> int:
    """How many movies TMDB lists for the window, from one discover page (its `total_results`)."""
    first = http.get_json("/discover/movie", {**discover_params(window), "page": 1})
    http.stats.add(pages=1)
    return int(first.get("total_results") or 0)


def discover_params(window: Window) -> dict[str, str]:
    start, end = window
    return {
        "primary_release_date.gte": start.isoformat(),
        "primary_release_date.lte": (end - dt.timedelta(days=1)).isoformat(),
        "sort_by": "primary_release_date.asc",
        "include_adult": "false",
        "include_video": "false",
    }


def results(page: dict) -> list[dict]:
    """A discover page's list items: `results: null` or items that are no objects count as none."""
    found = page.get("results") if isinstance(page, dict) else None
    return [item for item in found if isinstance(item, dict)] if isinstance(found, list) else []


def listing_key(item: dict) -> int | str:
    """One listed movie: its normalized id, or for an item without a valid id the item itself.

    Counting raw ids, two id-less movies were one and 1015 and "1015" two: a month with two
    id-less movies paged every page again, warned that one never appeared, and kept each twice.
    """
    movie_id = movie_id_of(item.get("id"))
    return movie_id if movie_id is not None else json.dumps(item, sort_keys=True, default=str)
