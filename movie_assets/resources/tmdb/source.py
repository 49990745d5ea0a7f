"""What every TMDB source shares: the `TmdbSource` interface, its results, its errors and TMDB's limits.

Assets ask for `TmdbSource.crawl(window)` and never learn which source they got: the API
client (`client.py`) or the offline sample (`resources/tmdb_sample.py`). Both return
(discover list item, details document) pairs; `movie_records` turns them into rows, so the
sample walks the same parsing and validation path as the API.
"""

from __future__ import annotations

import datetime as dt
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

import dagster as dg

from movie_assets.domain.movie_records import UnreadableDocument

PAGE_SIZE = 20
MAX_PAGES = 500  # TMDB refuses pages past 500: at most 10,000 results per discover query
MAX_RESULTS = PAGE_SIZE * MAX_PAGES
CHANGES_MAX_DAYS = 14  # /movie/changes answers 422 for a longer range
CHANGES_PAGE_SIZE = 100

Window = tuple[dt.date, dt.date]  # [start, end): end is exclusive
Pair = tuple[dict, dict | None]


class TmdbError(RuntimeError):
    """TMDB answered with an error we cannot retry away."""


class TmdbSettingsError(TmdbError):
    """A TMDB setting is wrong (credentials, base URL): every retry fails the same way, so none is made."""

    def step_failure(self) -> dg.Failure:
        """The step's failure: at once, with no retry of the step, and with the fix as the last thing printed.

        Dagster prints a failure's cause after the failure's own traceback, so the error rides along as
        the cause without its traceback: the HTTP client's frames say nothing about a wrong setting,
        and a CLI user reads the fix in the last lines, not above four tracebacks.
        """
        failure = dg.Failure(description=str(self), allow_retries=False)
        failure.__cause__ = self.with_traceback(None)
        return failure


class TmdbAuthError(TmdbSettingsError):
    """401: the key or token is missing or wrong."""


class TmdbUnreachableError(TmdbSettingsError):
    """No connection to TMDB_BASE_URL opens (refused, unknown host, no route): unlike a 5xx or a
    timeout, that does not heal in the minutes retries wait."""


class TmdbUnreadableError(TmdbError):
    """A 200 whose body never arrived whole inside the deadline, or never parsed, on every attempt.

    It concerns one document: a crawl lets that movie's list item stand in for its details
    (up to `max_missing_details`); the change sync files it as a reject (`UnreadableDocument`)
    and goes on, never reading it as the 404 of a deleted movie.
    """


@dataclass
class CrawlStats:
    requests: int = 0
    retries: int = 0
    throttled: int = 0
    pages: int = 0
    windows: int = 0
    listed: int = 0
    duplicates: int = 0
    details_missing: int = 0
    missing_listings: int = 0
    unreadable: int = 0  # details documents given up on: never parsed as JSON, or never finished in the deadline
    timed_out: int = 0  # attempts that ran past the request deadline
    skipped: int = 0  # change-list items that name no movie (not an object, an id that is no TMDB id)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    def as_dict(self) -> dict[str, int]:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}


@dataclass
class Crawl:
    pairs: list[Pair]
    stats: CrawlStats


@dataclass
class Changes:
    """Ids TMDB lists as changed in a range of days, and what listing them cost."""

    ids: list[int]
    stats: CrawlStats


@dataclass
class Details:
    """Details documents by id; None where TMDB answers 404 (the movie was deleted), and an
    `UnreadableDocument` where it answered, but never with a whole JSON object."""

    documents: dict[int, dict | None | UnreadableDocument]
    stats: CrawlStats


class TmdbSource(dg.ConfigurableResource, ABC):
    """Where movies come from. `crawl` returns every movie released in [start, end); `changed_ids` and
    `movie_details` are the change sync's two calls."""

    @abstractmethod
    def crawl(self, window: Window, log: Callable[[str], None] = print) -> Crawl: ...

    @abstractmethod
    def count_listed(self, window: Window) -> int:
        """How many movies TMDB lists as released in [start, end): one cheap call, for a crawl's progress and ETA."""

    @abstractmethod
    def changed_ids(self, first_day: dt.date, last_day: dt.date, log: Callable[[str], None] = print) -> Changes:
        """Ids changed on the UTC days [first_day, last_day] (both included, as TMDB's change list counts)."""

    @abstractmethod
    def movie_details(self, movie_ids: list[int], log: Callable[[str], None] = print) -> Details: ...

    @property
    def description(self) -> str:
        return type(self).__name__
