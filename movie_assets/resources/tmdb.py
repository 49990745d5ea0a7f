"""TMDB as a Dagster resource: the `TmdbSource` interface and the real API client.

Assets ask for `TmdbSource.crawl(window)` and never learn which one they got: this
client or the offline sample in `tmdb_sample.py`. Both return (discover list item,
details document) pairs; `movie_records` turns them into rows, so the sample walks
the same parsing and validation path as the API.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal, overload

import dagster as dg
import requests
import urllib3
from pydantic import Field

from movie_assets.domain.movie_records import movie_id_of
from movie_assets.domain.progress import Progress
from movie_assets.settings import DEFAULT_TMDB_BASE_URL, redact_text

PAGE_SIZE = 20
MAX_PAGES = 500  # TMDB refuses pages past 500: at most 10,000 results per discover query
MAX_RESULTS = PAGE_SIZE * MAX_PAGES
MAX_RETRY_AFTER_S = 60.0
FAILURE_STREAK = 3  # failed attempts in a row (no success between) after which every thread backs off
CHANGES_MAX_DAYS = 14  # /movie/changes answers 422 for a longer range
CHANGES_PAGE_SIZE = 100
MAX_LISTING_PASSES = 2  # extra passes over the pages when fewer movies were listed than TMDB counted
READ_CHUNK = 65536  # bytes one body read may return; each read waits at most until the request's deadline

Window = tuple[dt.date, dt.date]  # [start, end): end is exclusive
Pair = tuple[dict, dict | None]


class TmdbError(RuntimeError):
    """TMDB answered with an error we cannot retry away."""


class TmdbAuthError(TmdbError):
    """401: the key or token is missing or wrong."""


class TmdbUnreadableError(TmdbError):
    """A 200 whose body never arrived whole inside the deadline, or never parsed, on every attempt.

    It concerns one document: a crawl lets that movie's list item stand in for its details
    (up to `max_missing_details`); the change sync fails instead, since a missing document
    there would read as a deleted movie.
    """


class _DeadlineExceeded(Exception):
    """One attempt ran past `request_deadline_s` (connect to last body byte)."""


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
    """Details documents by id; None where TMDB answers 404 (the movie was deleted)."""

    documents: dict[int, dict | None]
    stats: CrawlStats


def change_windows(first_day: dt.date, last_day: dt.date) -> list[tuple[dt.date, dt.date]]:
    """[first_day, last_day] as inclusive pieces of at most CHANGES_MAX_DAYS days (TMDB refuses longer ones)."""
    pieces, start = [], first_day
    while start <= last_day:
        end = min(start + dt.timedelta(days=CHANGES_MAX_DAYS - 1), last_day)
        pieces.append((start, end))
        start = end + dt.timedelta(days=1)
    return pieces


class TmdbSource(dg.ConfigurableResource, ABC):
    """Where movies come from. `crawl` returns every movie released in [start, end); `changed_ids` and
    `movie_details` are the change sync's two calls."""

    @abstractmethod
    def crawl(self, window: Window, log: Callable[[str], None] = print) -> Crawl: ...

    @abstractmethod
    def changed_ids(self, first_day: dt.date, last_day: dt.date, log: Callable[[str], None] = print) -> Changes:
        """Ids changed on the UTC days [first_day, last_day] (both included, as TMDB's change list counts)."""

    @abstractmethod
    def movie_details(self, movie_ids: list[int], log: Callable[[str], None] = print) -> Details: ...

    @property
    def description(self) -> str:
        return type(self).__name__


class RateLimiter:
    """A token bucket shared by the threads of one crawl: every request and every retry takes a token.

    A retry re-enters the bucket like any request instead of sleeping on its own thread, so a
    crawl keeps TMDB's rate while some requests wait to be retried; `pause` (a 429's
    Retry-After) holds every thread back, including those that had reserved a slot inside it.
    """

    def __init__(self, per_second: float, burst: int = 1):
        self.interval = 1.0 / per_second
        self.burst = burst
        self._next = time.monotonic()
        self._paused_until = 0.0
        self._lock = threading.Lock()

    def acquire(self) -> None:
        while True:
            with self._lock:
                now = time.monotonic()
                self._next = max(self._next, now - self.interval * (self.burst - 1), self._paused_until)
                wait = self._next - now
                self._next += self.interval
            if wait > 0:
                time.sleep(wait)
            if self._paused_until <= time.monotonic():
                return
            # A pause began while this thread waited for its slot: queue again behind the pause.

    def pause(self, seconds: float) -> None:
        """After a 429, hold every thread back, not only the one that was refused."""
        with self._lock:
            self._paused_until = max(self._paused_until, time.monotonic() + seconds)
            self._next = max(self._next, self._paused_until)


class TmdbApiClient(TmdbSource):
    """Real HTTP against TMDB (or anything that speaks its wire format).

    Time limits, per request: `timeout_s` bounds the connect and each socket read;
    `request_deadline_s` bounds the whole request, connect to last body byte, so a response
    that sends its headers and then one byte every few seconds cannot hold a run (and its
    `tmdb_api` pool slot). An attempt past either is retried, at most `max_retries` times,
    like a 5xx: the retry takes the bucket's next token, and a streak of failures backs every
    thread off (see `_Http`). A details document that never finishes or never parses is missing
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

    def _http(self) -> _Http:
        if not (self.api_key or self.read_access_token):
            raise TmdbAuthError(
                "TMDB credentials are missing: set TMDB_API_KEY (v3 key) or TMDB_READ_ACCESS_TOKEN (v4 read "
                "access token), or set TMDB_SOURCE=sample to use the offline sample."
            )
        return _Http(self)

    def crawl(self, window: Window, log: Callable[[str], None] = print) -> Crawl:
        http = self._http()
        stats = http.stats
        with http.session, _pool(self.max_workers) as pool:
            items = self._discover(http, pool, window, log)
            # Ids are normalized before deduplication (1015 and "1015" are one movie). An item without a
            # valid id gets no details request and is kept on its own (once, however often it was listed),
            # so validation rejects it with a reason.
            unique: dict[int, dict] = {}
            invalid: dict[str, dict] = {}
            for item in items:
                key = _listing_key(item)
                if isinstance(key, int):
                    unique.setdefault(key, item)
                else:
                    invalid.setdefault(key, item)
            stats.add(listed=len(items), duplicates=len(items) - len(unique) - len(invalid))
            log(
                f"TMDB {window[0]}..{window[1]}: {len(unique)} movies listed ({stats.pages} pages, "
                f"{len(items) - len(unique)} duplicates); fetching details"
            )
            details = _fetch_details(
                http, pool, list(unique), f"TMDB details {window[0]:%Y-%m}", log, self.max_missing_details
            )
        stats.add(details_missing=sum(d is None for d in details))
        pairs = list(zip(unique.values(), details, strict=True)) + [(item, None) for item in invalid.values()]
        return Crawl(pairs, stats)

    def changed_ids(self, first_day: dt.date, last_day: dt.date, log: Callable[[str], None] = print) -> Changes:
        """GET /movie/changes for each piece of at most 14 days, every page; ids once each."""
        http = self._http()
        ids: set[int] = set()
        with http.session, _pool(self.max_workers) as pool:
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
        return Changes(sorted(ids), http.stats)

    def movie_details(self, movie_ids: list[int], log: Callable[[str], None] = print) -> Details:
        """GET /movie/{id} once per id; a 404 (deleted movie) is None.

        A document that never finishes or never parses raises `TmdbUnreadableError`: None would
        read as a deletion, so the sync fails and its cursor stays.
        """
        http = self._http()
        with http.session, _pool(self.max_workers) as pool:
            documents = _fetch_details(http, pool, movie_ids, "TMDB details of changed movies", log)
        http.stats.add(details_missing=sum(d is None for d in documents))
        return Details(dict(zip(movie_ids, documents, strict=True)), http.stats)

    def _discover(self, http: _Http, pool: ThreadPoolExecutor, window: Window, log) -> list[dict]:
        """All list items of the window; windows over TMDB's 10,000-result cap are split, never truncated."""
        start, end = window
        params = {
            "primary_release_date.gte": start.isoformat(),
            "primary_release_date.lte": (end - dt.timedelta(days=1)).isoformat(),
            "sort_by": "primary_release_date.asc",
            "include_adult": "false",
            "include_video": "false",
        }
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
            return self._discover(http, pool, (start, middle), log) + self._discover(http, pool, (middle, end), log)
        total_pages = min(int(first.get("total_pages") or 1), MAX_PAGES)
        pages = [first]
        for attempt in range(MAX_LISTING_PASSES):
            needed = range(2, total_pages + 1) if attempt == 0 else range(1, total_pages + 1)
            pages += list(pool.map(lambda page: http.get_json("/discover/movie", {**params, "page": page}), needed))
            http.stats.add(pages=len(needed))
            listed = len({_listing_key(item) for page in pages for item in _results(page)})
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
        return [item for page in pages for item in _results(page)]


def _results(page: dict) -> list[dict]:
    """A discover page's list items: `results: null` or items that are no objects count as none."""
    results = page.get("results") if isinstance(page, dict) else None
    return [item for item in results if isinstance(item, dict)] if isinstance(results, list) else []


def _listing_key(item: dict) -> int | str:
    """One listed movie: its normalized id, or for an item without a valid id the item itself.

    Counting raw ids, two id-less movies were one and 1015 and "1015" two: a month with two
    id-less movies paged every page again, warned that one never appeared, and kept each twice.
    """
    movie_id = movie_id_of(item.get("id"))
    return movie_id if movie_id is not None else json.dumps(item, sort_keys=True, default=str)


def _days(first: dt.date, last: dt.date) -> list[dt.date]:
    return [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]


@contextmanager
def _pool(max_workers: int) -> Iterator[ThreadPoolExecutor]:
    """Threads for one call; on failure the requests not yet started are dropped, not waited for."""
    pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="tmdb")
    try:
        yield pool
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _fetch_details(
    http: _Http, pool: ThreadPoolExecutor, movie_ids: list, label: str, log, max_missing: int | None = None
) -> list[dict | None]:
    """Details documents of the ids, in order, fetched by the pool with progress in the log.

    With `max_missing` (a crawl), a document that never finished or never parsed is None and
    counted; one more than `max_missing` fails the call. Without it (the change sync), it fails at once.
    """
    progress = Progress(label, len(movie_ids), log)
    missing: list = []
    lock = threading.Lock()

    def fetch(movie_id):
        try:
            document = http.get_json(f"/movie/{movie_id}", allow_404=True)
        except TmdbUnreadableError as exc:
            if max_missing is None:
                raise
            with lock:
                missing.append(movie_id)
                count = len(missing)
            http.stats.add(unreadable=1)
            if count > max_missing:
                raise TmdbError(
                    f"{label}: {count} details documents never arrived whole (the latest: {exc}); more than the "
                    f"{max_missing} one crawl may lose (max_missing_details), so TMDB looks slow or broken for many "
                    "movies: check TMDB's status, then re-run the partition."
                ) from None
            log(f"WARNING {exc} The movie's list item stands in for its details.")
            document = None
        progress.advance()
        return document

    return list(pool.map(fetch, movie_ids))


class _Http:
    """One crawl's HTTP session: rate limit, retries through the bucket, backoff when TMDB fails, redacted errors.

    A retry takes the bucket's next token instead of sleeping on its own thread: at the end of a
    month's listing or details, a thread asleep on a fixed backoff left the bucket idle while
    TMDB's limit went unused (0.77x of it with 5% 5xx). Backing off is for a TMDB that fails
    for everyone: a streak of failures, or a 429's Retry-After, pauses the bucket for all threads.
    """

    def __init__(self, client: TmdbApiClient):
        self.client = client
        self.stats = CrawlStats()
        self.limiter = RateLimiter(client.requests_per_second)
        self._streak = 0  # failed attempts since the last success, over all threads
        self._streak_lock = threading.Lock()
        self.session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=client.max_workers)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["Accept"] = "application/json"
        if client.read_access_token:
            self.session.headers["Authorization"] = f"Bearer {client.read_access_token}"

    @overload
    def get_json(self, path: str, params: dict | None = None, allow_404: Literal[False] = False) -> dict: ...

    @overload
    def get_json(self, path: str, params: dict | None = None, *, allow_404: Literal[True]) -> dict | None: ...

    def get_json(self, path: str, params: dict | None = None, allow_404: bool = False) -> dict | None:
        """The JSON body; None only for a 404, and only when `allow_404` is set."""
        url = self.client.base_url.rstrip("/") + path
        params = dict(params or {})
        if self.client.api_key and not self.client.read_access_token:
            params["api_key"] = self.client.api_key
        for attempt in range(self.client.max_retries + 1):
            self.limiter.acquire()
            self.stats.add(requests=1)
            try:
                response, body = self._get(url, params)
            except _DeadlineExceeded:
                self.stats.add(timed_out=1)
                problem = "deadline"
            except (OSError, urllib3.exceptions.HTTPError) as exc:  # requests' errors are OSErrors
                problem = f"{type(exc).__name__}"
            else:
                if response.status_code == 200:
                    try:
                        document = json.loads(body)
                    except ValueError:  # a truncated or HTML body: read it again
                        problem = "200 with a body that is not JSON"
                    else:
                        self._succeeded()
                        return document
                elif response.status_code == 404 and allow_404:
                    self._succeeded()
                    return None
                elif response.status_code == 401:
                    raise TmdbAuthError(
                        self._safe(
                            f"TMDB refused the credentials (401: {_status_message(response, body)}). Set "
                            "TMDB_API_KEY to a valid v3 key or TMDB_READ_ACCESS_TOKEN to a valid v4 read access "
                            "token, or TMDB_SOURCE=sample."
                        )
                    )
                elif response.status_code == 429:
                    self.stats.add(throttled=1)
                    asked = _retry_after(response)
                    if asked is not None and asked > MAX_RETRY_AFTER_S:
                        raise TmdbError(
                            f"TMDB asks to wait {asked:.0f} s (Retry-After) for {self._safe(url)}, over the "
                            f"{MAX_RETRY_AFTER_S:.0f} s cap: the API's limit is spent for now; re-run the partition "
                            "later."
                        )
                    self.limiter.pause(asked if asked is not None else self._backoff(attempt))
                    problem = "429 Too Many Requests"
                elif response.status_code >= 500:
                    problem = f"{response.status_code} {_status_message(response, body)}"
                else:
                    raise TmdbError(
                        self._safe(f"TMDB {response.status_code} for {response.url}: {_status_message(response, body)}")
                    )
            if attempt == self.client.max_retries:
                if problem == "deadline":
                    deadline = self.client.request_deadline_s
                    raise TmdbUnreadableError(
                        self._safe(
                            f"TMDB did not finish {url} within the {deadline:g} s request deadline on any of "
                            f"{attempt + 1} attempts (a response that never finishes). If TMDB is only slow, raise "
                            "request_deadline_s of the tmdb resource; else check TMDB_BASE_URL and TMDB's status, "
                            "then re-run the partition."
                        )
                    )
                if problem.startswith("200"):
                    raise TmdbUnreadableError(
                        self._safe(f"TMDB answered {url} with a body that is not JSON on all {attempt + 1} attempts.")
                    )
                raise TmdbError(
                    self._safe(
                        f"TMDB still failing after {attempt + 1} attempts for {url} ({problem}); "
                        "check TMDB_BASE_URL and TMDB's status, then re-run the partition."
                    )
                )
            if not problem.startswith("429"):
                self._failed()
            self.stats.add(retries=1)  # the retry takes its turn in the bucket (paused after a 429 or a streak)
        raise AssertionError("unreachable")

    def _get(self, url: str, params: dict) -> tuple[requests.Response, bytes]:
        """One attempt: the response and its whole body, or `_DeadlineExceeded` past `request_deadline_s`.

        `requests`' timeout limits each socket read, so a body that drips a byte at a time would
        never time out. The body is read here instead, a chunk at a time, and before each read the
        socket may wait only until the deadline. (Headers that drip remain bounded per read only.)
        """
        deadline = time.monotonic() + self.client.request_deadline_s
        limit = min(self.client.timeout_s, self.client.request_deadline_s)
        response = self.session.get(url, params=params, timeout=(limit, limit), stream=True)
        with response:
            chunks: list[bytes] = []
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise _DeadlineExceeded
                sock = getattr(response.raw.connection, "sock", None)
                if sock is not None:
                    sock.settimeout(min(self.client.timeout_s, remaining))
                try:
                    chunk = response.raw.read1(READ_CHUNK, decode_content=True)
                except (urllib3.exceptions.ReadTimeoutError, TimeoutError):
                    if deadline - time.monotonic() <= 0:
                        raise _DeadlineExceeded from None
                    raise
                if not chunk:
                    return response, b"".join(chunks)
                chunks.append(chunk)

    def _succeeded(self) -> None:
        with self._streak_lock:
            self._streak = 0

    def _failed(self) -> None:
        """One more failed attempt (5xx, connection error, deadline, unreadable body) with no success since.

        A stray failure costs its retry one token and nothing more. From FAILURE_STREAK failures in a
        row, TMDB is failing for everyone: the bucket pauses with exponential backoff for every thread.
        """
        with self._streak_lock:
            self._streak += 1
            streak = self._streak
        if streak >= FAILURE_STREAK:
            self.limiter.pause(self._backoff(streak - FAILURE_STREAK))

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with full jitter, capped at 30 s."""
        return min(30.0, self.client.backoff_base_s * 2**attempt) * random.uniform(0.5, 1.0)

    def _safe(self, text: str) -> str:
        """Any text that leaves the client: URLs, TMDB's echoed messages and bodies, with every secret masked."""
        text = redact_text(text)
        for secret in (self.client.api_key, self.client.read_access_token):
            if secret:
                text = text.replace(secret, "***")
        return text


def _retry_after(response: requests.Response) -> float | None:
    try:
        return max(0.0, float(response.headers.get("Retry-After", "")))
    except ValueError:
        return None


def _status_message(response: requests.Response, body: bytes) -> str:
    try:
        return str(json.loads(body).get("status_message", response.reason))
    except (ValueError, AttributeError):  # not JSON, or JSON that is no object
        return response.reason or ""
