"""A local HTTP server that speaks TMDB's wire format, with fault injection.

It is the only stand-in in the suite: the outside world we cannot reach. The
client is exercised over real HTTP: paging (20 per page, at most 500 pages),
error bodies with `status_code`/`status_message`, 401 for a wrong key or token,
404, 429 with `Retry-After`, 5xx, items repeated across pages, and a slow drip (headers,
then one byte of the body every few seconds: a response that never finishes). Hostile
documents too, each off by default: details that contradict the listing, a 404 or a body
cut in the middle for a listed id, a discover page whose `results` is null, a `total_pages`
that lies, a `Retry-After` that is no number of seconds, and a details body that is `null`, a list or
another movie's document.
"""

from __future__ import annotations

import bisect
import datetime as dt
import json
import random
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from movie_assets.resources.tmdb_sample import SampleMovie, current, movies_for_month

DATE_RANGE_ERROR = (20, "Invalid date range: Should be a range no longer than 14 days.")
ERRORS = {
    401: (7, "Invalid API key: You must be granted a valid key."),
    404: (34, "The resource you requested could not be found."),
    422: (22, "Invalid page: Pages start at 1 and max at 500. They are expected to be an integer."),
    429: (25, "Your request count (41) is over the allowed limit of (40)."),
    500: (11, "Internal error: Something went wrong, contact TMDb."),
    503: (9, "Service offline: This service is temporarily offline, try again later."),
}


@dataclass
class Faults:
    """Which faults to inject; counters make them deterministic."""

    throttle_every: int = 0  # every Nth distinct request is first answered 429 with Retry-After
    retry_after_s: int = 1
    error_every: int = 0  # every Nth distinct request is first answered 500/503 ...
    error_attempts: int = 2  # ... this many times before it succeeds
    duplicate_every_page: int = 0  # every Nth page repeats the last item of the previous page
    latency_s: float = 0.0
    latency_max_s: float = 0.0  # when above latency_s: each answer waits a uniform draw in [latency_s, latency_max_s]
    max_requests_per_second: float = 0.0  # a real limit: over it -> 429
    # A slow drip: for these details ids or path prefixes, headers at once, then the body one byte every
    # `drip_every_s` (each byte well inside a read timeout, so only a total deadline ends the request).
    drip_ids: frozenset[int] = frozenset()
    drip_paths: tuple[str, ...] = ()
    drip_every_s: float = 5.0
    # Hostile documents (all off by default):
    details_overrides: dict[int, dict] = field(default_factory=dict)  # these fields in an id's details, not its listing
    not_found_ids: frozenset[int] = frozenset()  # discover lists these ids, their details answer 404
    truncated_ids: frozenset[int] = frozenset()  # details answer 200 with the JSON cut in the middle, every time
    null_results_pages: frozenset[int] = frozenset()  # discover pages answered with `results: null`
    reported_total_pages: int = 0  # discover claims this many pages, whatever it holds (0: the true count)
    throttle_ids: frozenset[int] = frozenset()  # these ids' details are first answered 429 (once each)
    retry_after_text: str = ""  # sent as Retry-After instead of `retry_after_s` when set (e.g. "tomorrow")
    # These ids' details answer 200 with this JSON value instead: `None` (a `null` body), a list, a string,
    # or another movie's document.
    details_bodies: dict[int, object] = field(default_factory=dict)


def _details_id(path: str) -> int:
    """The id in a details path (/3/movie/{id}), else -1."""
    tail = path.rsplit("/", 1)[1] if path.startswith("/3/movie/") else ""
    return int(tail) if tail.isdigit() else -1


def _server_key(movie_id, position: int):
    """The id as the details path finds it (a positive int, or a string of its digits), else a key no path reaches."""
    if isinstance(movie_id, str) and movie_id.isascii() and movie_id.isdigit():
        movie_id = int(movie_id)
    return movie_id if isinstance(movie_id, int) and not isinstance(movie_id, bool) and movie_id > 0 else f"#{position}"


@dataclass
class FakeTmdb:
    movies: list[SampleMovie]
    api_key: str = "test-key"
    read_access_token: str = "test-token"
    faults: Faults = field(default_factory=Faults)
    requests: Counter = field(default_factory=Counter)
    seen_urls: list[str] = field(default_factory=list)
    seen_at: list[float] = field(default_factory=list)  # time.monotonic() of each request's arrival

    def __post_init__(self):
        self._lock = threading.Lock()
        self._count = 0
        self._window_start = time.monotonic()
        self._window_count = 0
        # Hostile movies may carry no usable id (None, -5, 7.5, "12"): each is still one movie of the listing.
        self._by_id = {_server_key(m.details.get("id"), n): m for n, m in enumerate(self.movies)}
        self._served: set = set()
        self._sequence: dict = {}
        self._attempts: Counter = Counter()
        self._changes: dict[str, set[int]] = {}  # UTC day -> ids changed that day
        self._index()

    def _index(self) -> None:
        self._sorted = sorted(self._by_id.values(), key=lambda m: (m.details["release_date"], str(m.details.get("id"))))
        self._dates = [m.details["release_date"] for m in self._sorted]

    # ---- TMDB's change list --------------------------------------------------------
    def change(self, day: dt.date, movie_id: int, details: dict | None) -> None:
        """TMDB's truth moves on: `details` replace the movie's (a new movie if unknown), None deletes it.

        The id is listed under `day` in /movie/changes, as TMDB lists every edit per UTC day.
        """
        self.change_many(day, {movie_id: details})

    def change_many(self, day: dt.date, changes: dict[int, dict | None]) -> None:
        """Many changes of one day, indexed once (a simulated day has a hundred)."""
        with self._lock:
            for movie_id, details in changes.items():
                if details is None:
                    self._by_id.pop(movie_id, None)
                else:
                    old = self._by_id.get(movie_id)
                    item = {k: details.get(k) for k in (old.list_item if old else details) if k in details}
                    self._by_id[movie_id] = SampleMovie(list_item=item or dict(details), details=details)
                self._changes.setdefault(day.isoformat(), set()).add(movie_id)
            self._index()

    def catalogue(self) -> dict[int, dict]:
        """Every movie TMDB has now: id -> its details."""
        with self._lock:
            return {m.details["id"]: m.details for m in self._by_id.values()}

    def truth(self, movie_id: int) -> dict | None:
        movie = self._by_id.get(movie_id)
        return movie.details if movie else None

    def _movie_changes(self, query: dict[str, str]) -> tuple[int, dict, dict]:
        """GET /3/movie/changes: ids changed in [start_date, end_date] (UTC days, at most 14), 100 a page."""
        today = dt.datetime.now(dt.timezone.utc).date()
        end = dt.date.fromisoformat(query["end_date"]) if query.get("end_date") else today
        start = dt.date.fromisoformat(query["start_date"]) if query.get("start_date") else end - dt.timedelta(days=1)
        if (end - start).days > 14 or end < start:
            return self._error(422, reason=DATE_RANGE_ERROR)
        page = int(query.get("page", "1"))
        with self._lock:
            ids = sorted(
                {
                    i
                    for day, changed in self._changes.items()
                    if start.isoformat() <= day <= end.isoformat()
                    for i in changed
                }
            )
        total_pages = max(1, -(-len(ids) // 100))
        if not 1 <= page <= max(total_pages, 1):
            return self._error(422)
        results = [{"id": i, "adult": False} for i in ids[(page - 1) * 100 : page * 100]]
        return 200, {"results": results, "page": page, "total_pages": total_pages, "total_results": len(ids)}, {}

    # ---- request handling --------------------------------------------------------
    def handle(self, path: str, query: dict[str, str], headers) -> tuple[int, object, dict]:
        request_key = (
            path,
            query.get("page"),
            query.get("primary_release_date.gte"),
            query.get("primary_release_date.lte"),
            query.get("start_date"),
            query.get("end_date"),
        )
        with self._lock:
            self._count += 1
            number = self._sequence.setdefault(request_key, len(self._sequence) + 1)
            self._attempts[request_key] += 1
            attempt = self._attempts[request_key]
            self.seen_urls.append(path)
            now = time.monotonic()
            self.seen_at.append(now)
            if now - self._window_start >= 1.0:
                self._window_start, self._window_count = now, 0
            self._window_count += 1
            over_limit = (
                self.faults.max_requests_per_second and self._window_count > self.faults.max_requests_per_second
            )
        if self.faults.latency_max_s > self.faults.latency_s:
            time.sleep(random.uniform(self.faults.latency_s, self.faults.latency_max_s))
        elif self.faults.latency_s:
            time.sleep(self.faults.latency_s)
        if not self._authorized(query, headers):
            self.requests["401"] += 1
            return self._error(401)
        # Faults hit chosen requests on their first attempts, so retries always get through.
        throttled = self.faults.throttle_every and number % self.faults.throttle_every == 0 and attempt == 1
        throttled = throttled or (_details_id(path) in self.faults.throttle_ids and attempt == 1)
        if over_limit or throttled:
            self.requests["429"] += 1
            if over_limit:
                self.requests["429 over the limit"] += 1  # provoked by the client, unlike `throttle_every`'s
            return self._error(429, {"Retry-After": self.faults.retry_after_text or str(self.faults.retry_after_s)})
        erroring = self.faults.error_every and number % self.faults.error_every == 0
        if (
            erroring
            and attempt - (1 if self.faults.throttle_every and number % self.faults.throttle_every == 0 else 0)
            <= self.faults.error_attempts
        ):
            self.requests["5xx"] += 1
            return self._error(500 if attempt % 2 else 503)
        if path == "/3/movie/changes":
            self.requests["changes"] += 1
            return self._movie_changes(query)
        if path == "/3/discover/movie":
            self.requests["discover"] += 1
            return self._discover(query)
        if path.startswith("/3/movie/"):
            self.requests["details"] += 1
            movie_id = _details_id(path)
            if movie_id in self.faults.details_bodies:
                self.requests["details body"] += 1
                return 200, self.faults.details_bodies[movie_id], {}
            movie = self._by_id.get(movie_id) if movie_id not in self.faults.not_found_ids else None
            if movie is None:
                return self._error(404)
            return 200, {**movie.details, **self.faults.details_overrides.get(movie_id, {})}, {}
        return self._error(404)

    def truncates(self, path: str) -> bool:
        """Whether this path's 200 body is cut in the middle (see `Faults.truncated_ids`)."""
        cut = _details_id(path) in self.faults.truncated_ids
        if cut:
            with self._lock:
                self.requests["truncated"] += 1
        return cut

    def drips(self, path: str) -> bool:
        """Whether this path's body is sent as a slow drip (see `Faults.drip_ids`)."""
        movie_id = path.rsplit("/", 1)[1] if path.startswith("/3/movie/") else ""
        dripping = (movie_id.isdigit() and int(movie_id) in self.faults.drip_ids) or any(
            path.startswith(prefix) for prefix in self.faults.drip_paths
        )
        if dripping:
            with self._lock:
                self.requests["drip"] += 1
        return dripping

    def _authorized(self, query, headers) -> bool:
        bearer = headers.get("Authorization", "")
        return query.get("api_key") == self.api_key or bearer == f"Bearer {self.read_access_token}"

    def _discover(self, query: dict[str, str]) -> tuple[int, dict, dict]:
        page = int(query.get("page", "1"))
        if not 1 <= page <= 500:
            return self._error(422)
        gte = query.get("primary_release_date.gte", "0000-00-00")
        lte = query.get("primary_release_date.lte", "9999-99-99")
        lo = bisect.bisect_left(self._dates, gte)
        hi = bisect.bisect_right(self._dates, lte)
        matching = self._sorted[lo:hi]
        start = (page - 1) * 20
        every = self.faults.duplicate_every_page
        with self._lock:
            first_time = (gte, lte, page) not in self._served
            self._served.add((gte, lte, page))
        if every and first_time:
            # Popularity shifted while the client paged: from this page on the list moved down
            # by one per shift, so an item repeats and the tail slides past the last page.
            start -= sum(1 for q in range(2, page + 1) if q % every == 0)
        items = [m.list_item for m in matching[start : start + 20]]
        total = len(matching)
        total_pages = self.faults.reported_total_pages or max(1, -(-total // 20))
        results = None if page in self.faults.null_results_pages else items
        body = {"page": page, "results": results, "total_pages": total_pages, "total_results": total}
        return 200, body, {}

    @staticmethod
    def _error(
        status: int, headers: dict | None = None, reason: tuple[int, str] | None = None
    ) -> tuple[int, dict, dict]:
        code, message = reason or ERRORS[status]
        return status, {"success": False, "status_code": code, "status_message": message}, headers or {}


class _QuietServer(ThreadingHTTPServer):
    """A client that hangs up (a killed backfill, a deadline) is not an error worth a traceback."""

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class TmdbTestServer:
    """Runs a FakeTmdb on 127.0.0.1 in a background thread; `base_url` ends in /3 like the API."""

    def __init__(self, fake: FakeTmdb):
        self.fake = fake
        self.stopping = threading.Event()
        fake_ref, stopping = fake, self.stopping

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall between

            def do_GET(self):  # noqa: N802 - http.server's naming
                parts = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
                status, body, headers = fake_ref.handle(parts.path, query, self.headers)
                payload = json.dumps(body).encode()
                if status == 200 and fake_ref.truncates(parts.path):
                    payload = payload[: len(payload) // 2]  # a whole HTTP response whose JSON stops mid-document
                self.send_response(status)
                self.send_header("Content-Type", "application/json;charset=utf-8")
                self.send_header("Content-Length", str(len(payload)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                if status == 200 and fake_ref.drips(parts.path):
                    self._drip(payload)
                else:
                    self.wfile.write(payload)

            def _drip(self, payload: bytes) -> None:
                """One byte every `drip_every_s` until the body is sent, the client hangs up or the server stops."""
                self.close_connection = True
                try:
                    for n in range(len(payload)):
                        if n and stopping.wait(fake_ref.faults.drip_every_s):
                            return
                        self.wfile.write(payload[n : n + 1])
                except OSError:  # the client gave up: what a deadline is for
                    return

            def log_message(self, *args):
                pass

        self.httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/3"

    def __enter__(self) -> TmdbTestServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def crowded_month(month_start: dt.date, count: int) -> list[SampleMovie]:
    """`count` valid movies in one month: more than TMDB's 10,000-result cap when count > 10,000."""
    days = ((month_start + dt.timedelta(days=32)).replace(day=1) - month_start).days
    movies = []
    for i in range(count):
        release = (month_start + dt.timedelta(days=i % days)).isoformat()
        details = {
            "id": 900_000_000 + i,
            "title": f"Crowded {i}",
            "original_title": f"Crowded {i}",
            "release_date": release,
            "original_language": "en",
            "genres": [{"id": 18, "name": "Drama"}],
            "popularity": 1.0,
            "vote_average": 6.0,
            "vote_count": 10,
            "budget": 0,
            "revenue": 0,
            "runtime": 90,
            "status": "Released",
            "adult": False,
            "overview": "",
            "imdb_id": None,
        }
        item = {
            k: details[k]
            for k in (
                "id",
                "title",
                "original_title",
                "release_date",
                "original_language",
                "popularity",
                "vote_average",
                "vote_count",
                "adult",
                "overview",
            )
        }
        item["genre_ids"] = [18]
        movies.append(SampleMovie(item, details))
    return movies


def sample_as_of(months: list[dt.date], day: dt.date) -> list[SampleMovie]:
    """The sample's movies of these release months as the sample source answers them on `day` (crawl and
    details alike): a server given these is the same world as the sample at that moment."""
    return current([m for month in months for m in movies_for_month(month)], day)


def months_of_movies(
    first_month: dt.date, counts: list[int]
) -> tuple[list[SampleMovie], list[tuple[dt.date, dt.date]]]:
    """`counts[n]` valid movies in the n-th month from `first_month`, ids distinct across months; and the months."""
    windows, everything = [], []
    start = first_month
    for number, count in enumerate(counts):
        end = (start + dt.timedelta(days=32)).replace(day=1)
        for movie in crowded_month(start, count):
            movie_id = movie.details["id"] + number * 1_000_000
            movie.details["id"] = movie.list_item["id"] = movie_id
            everything.append(movie)
        windows.append((start, end))
        start = end
    return everything, windows
