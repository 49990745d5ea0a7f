"""TMDB as a Dagster resource, split along its seams (imports point down this list):

- `source.py`: the `TmdbSource` interface every source implements, its results and errors;
- `rate_limit.py`: the token bucket; `http.py`: one session's retries, deadline and backoff;
- `details.py`, `crawl.py`, `changes.py`: what the calls do over HTTP;
- `client.py`: `TmdbApiClient`, the resource that ties them to its settings.

The offline sample (`resources/tmdb_sample.py`) implements the same interface.
"""

from movie_assets.resources.tmdb.changes import change_windows
from movie_assets.resources.tmdb.client import TmdbApiClient
from movie_assets.resources.tmdb.source import (
    MAX_PAGES,
    PAGE_SIZE,
    Changes,
    Crawl,
    CrawlStats,
    Details,
    Pair,
    TmdbAuthError,
    TmdbError,
    TmdbSettingsError,
    TmdbSource,
    TmdbUnreachableError,
    TmdbUnreadableError,
    Window,
)

__all__ = [
    "MAX_PAGES",
    "PAGE_SIZE",
    "Changes",
    "Crawl",
    "CrawlStats",
    "Details",
    "Pair",
    "TmdbApiClient",
    "TmdbAuthError",
    "TmdbError",
    "TmdbSettingsError",
    "TmdbSource",
    "TmdbUnreachableError",
    "TmdbUnreadableError",
    "Window",
    "change_windows",
]
