"""The real TMDB API client (or anything that speaks its wire format): settings and the three calls.

How each call works lives beside it: `crawl.py` (discover and details of a window), `changes.py`
(the change feed), `details.py`, `http.py` (retries, deadline, backoff) and `rate_limit.py`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from pydantic import Field

from movie_assets.resources.tmdb.changes import changed_ids
from movie_assets.resources.tmdb.crawl import count_listed, crawl_window
from movie_assets.resources.tmdb.details import fetch_details
from movie_assets.resources.tmdb.http import TmdbHttp, request_pool
from movie_assets.resources.tmdb.source import Changes, Crawl, Details, TmdbAuthError, TmdbSource, Window
from movie_assets.settings import DEFAULT_TMDB_BASE_URL


class TmdbApiClient(TmdbSource):
    """Real HTTP against TMDB (or anything that speaks its wire format).

    Time limits, per request: `timeout_s` bounds the connect and each socket read;
    `request_deadline_s` bounds the whole request, connect to last body byte, so a response
    that sends its headers and then one byte every few seconds cannot hold a run (and its
    `tmdb_api` pool slot). An attempt past either is retried, at most `max_retries` times,
    like a 5xx: the retry takes the bucket's next token, and a streak of failures backs every
    thread off (see `TmdbHttp`). A details document that never finishes or never parses is missing
    in a crawl (its list item stands in); more than `max_missing_details` of them fail the
    crawl, so a TMDB that is slow for everything fails fast instead of crawling for days.
    Raise `request_deadline_s` in the `tmdb` resource (movie_assets/resources/wiring.py)
    if a slow link needs longer.
    """

    base_url: str = DEFAULT_TMDB_BASE_URL
    api_key: str | None = Field(default=None, description="TMDB v3 API key (sent as the api_key query parameter)")
    read_access_token: str | None = Field(
        default=None, description="TMDB v4 read access token (sent as a Bearer header)"
    )
    requests_per_second: float = Field(
        default=38.0, description="client-side limit: 95% of the 40/s floor of TMDB's 40-50/s"
    )
    max_workers: int = Field(default=8, description="concurrent requests inside one run")
    max_retries: int = 6
    backoff_base_s: float = 0.5
    timeout_s: float = Field(default=15.0, description="limit for the connect and for each socket read")
    request_deadline_s: float = Field(
        default=30.0, gt=0, description="total time one attempt may take, connect to last body byte"
    )
    max_missing_details: int = Field(
        default=20, ge=0, description="details documents a crawl may lose (never finished or never parsed)"
    )

    @property
    def description(self) -> str:
        return f"TMDB API at {self.base_url}"

    def _http(self) -> TmdbHttp:
        if not (self.api_key or self.read_access_token):
            raise TmdbAuthError(
                "TMDB credentials are missing: set TMDB_API_KEY (v3 key) or TMDB_READ_ACCESS_TOKEN (v4 read "
                "access token), or set TMDB_SOURCE=sample to use the offline sample."
            )
        return TmdbHttp(self)

    def crawl(self, window: Window, log: Callable[[str], None] = print) -> Crawl:
        http = self._http()
        with http, request_pool(http) as pool:
            return crawl_window(http, pool, window, log, self.max_missing_details)

    def count_listed(self, window: Window) -> int:
        """One discover request for the whole window: TMDB's `total_results`."""
        http = self._http()
        with http:
            return count_listed(http, window)

    def changed_ids(self, first_day: dt.date, last_day: dt.date, log: Callable[[str], None] = print) -> Changes:
        """GET /movie/changes for each piece of at most 14 days, every page; ids once each."""
        http = self._http()
        with http, request_pool(http) as pool:
            ids = changed_ids(http, pool, first_day, last_day, log)
        return Changes(ids, http.stats)

    def movie_details(self, movie_ids: list[int], log: Callable[[str], None] = print) -> Details:
        """GET /movie/{id} once per id; a 404 (deleted movie) is None.

        A document that never finishes or never parses is an `UnreadableDocument` (a reject in the
        sync): None would read as a deletion, and failing would stop every later sync on it.
        """
        http = self._http()
        with http, request_pool(http) as pool:
            documents = fetch_details(http, pool, movie_ids, "TMDB details of changed movies", log)
        http.stats.add(details_missing=sum(d is None for d in documents))
        return Details(dict(zip(movie_ids, documents, strict=True)), http.stats)
