"""One crawl's HTTP to TMDB: rate limit, retries through the bucket, backoff when TMDB fails, a deadline
per request, and errors with every secret masked."""

from __future__ import annotations

import json
import random
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, Protocol, overload

import requests
import urllib3

from movie_assets.resources.tmdb.rate_limit import RateLimiter
from movie_assets.resources.tmdb.source import (
    CrawlStats,
    TmdbAuthError,
    TmdbError,
    TmdbUnreachableError,
    TmdbUnreadableError,
)
from movie_assets.settings import DEFAULT_TMDB_BASE_URL, redact_text

MAX_RETRY_AFTER_S = 60.0
FAILURE_STREAK = 3  # failed attempts in a row (no success between) after which every thread backs off
READ_CHUNK = 65536  # bytes one body read may return; each read waits at most until the request's deadline


class HttpSettings(Protocol):
    """The client settings one session reads (`TmdbApiClient`'s fields)."""

    base_url: str
    api_key: str | None
    read_access_token: str | None
    requests_per_second: float
    max_workers: int
    max_retries: int
    backoff_base_s: float
    timeout_s: float
    request_deadline_s: float


class _DeadlineExceeded(Exception):
    """One attempt ran past `request_deadline_s` (connect to last body byte)."""


class _Interrupted(Exception):
    """The run is stopping (SIGTERM, a failed sibling request): no attempt may start or go on."""


class _BodyCut(Exception):
    """The connection ended before the body its headers announced (a Content-Length longer than the body)."""


_current = threading.local()  # the attempt this thread is making: its connection joins it in `request()`


@dataclass(eq=False)  # hashed by identity: a set of the attempts in flight
class _Attempt:
    deadline: float
    connection: object | None = None
    expired: bool = False

    def cut(self) -> None:
        """Shut the attempt's socket: a recv blocked on headers that arrive a byte at a time returns at once."""
        self.expired = True
        sock = getattr(self.connection, "sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Watched:
    """Mixed into urllib3's connections: each request names its connection to the attempt of its thread."""

    def request(self, *args, **kwargs):
        attempt = getattr(_current, "attempt", None)
        if attempt is not None:
            attempt.connection = self
        return super().request(*args, **kwargs)  # type: ignore[misc]


class _WatchedHTTPConnection(_Watched, urllib3.connection.HTTPConnection):
    pass


class _WatchedHTTPSConnection(_Watched, urllib3.connection.HTTPSConnection):
    pass


class _WatchedPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class Deadlines:
    """One total deadline per request, connect to last byte, headers included.

    `requests`' timeouts bound each socket read, so headers sent one byte every few seconds held a
    request (and its run, and SIGTERM waiting for it) for as long as the server liked. A reaper
    thread shuts the socket of any attempt past its deadline; the attempt then fails as a timeout.
    """

    TICK_S = 0.2

    def __init__(self) -> None:
        self._attempts: set[_Attempt] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.aborted = False

    def abort(self) -> None:
        """The run is stopping: every attempt in flight is cut now, and no new one starts."""
        with self._lock:
            self.aborted = True
            in_flight = list(self._attempts)
        for attempt in in_flight:
            attempt.cut()

    @contextmanager
    def attempt(self, seconds: float) -> Iterator[_Attempt]:
        attempt = _Attempt(time.monotonic() + seconds)
        with self._lock:
            if self.aborted:
                raise _Interrupted
            self._attempts.add(attempt)
            if self._thread is None:
                self._thread = threading.Thread(target=self._reap, name="tmdb-deadlines", daemon=True)
                self._thread.start()
        _current.attempt = attempt
        try:
            yield attempt
        finally:
            _current.attempt = None
            with self._lock:
                self._attempts.discard(attempt)

    def close(self) -> None:
        self._stop.set()

    def _reap(self) -> None:
        while not self._stop.wait(self.TICK_S):
            now = time.monotonic()
            with self._lock:
                late = [a for a in self._attempts if a.deadline <= now and not a.expired]
            for attempt in late:
                attempt.cut()


@contextmanager
def request_pool(http: TmdbHttp) -> Iterator[ThreadPoolExecutor]:
    """Threads for one call. On failure, or SIGTERM (Dagster raises it in the main thread), the requests
    not yet started are dropped and those in flight are cut: the run stops now, not at their deadlines."""
    pool = ThreadPoolExecutor(max_workers=http.client.max_workers, thread_name_prefix="tmdb")
    try:
        yield pool
    except BaseException:
        http.deadlines.abort()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


class TmdbHttp:
    """One crawl's HTTP session: rate limit, retries through the bucket, backoff when TMDB fails, redacted errors.

    A retry takes the bucket's next token instead of sleeping on its own thread: at the end of a
    month's listing or details, a thread asleep on a fixed backoff left the bucket idle while
    TMDB's limit went unused (0.77x of it with 5% 5xx). Backing off is for a TMDB that fails
    for everyone: a streak of failures, or a 429's Retry-After, pauses the bucket for all threads.
    """

    def __init__(self, client: HttpSettings):
        self.client = client
        self.stats = CrawlStats()
        self.limiter = RateLimiter(client.requests_per_second)
        self._streak = 0  # failed attempts since the last success, over all threads
        self._streak_lock = threading.Lock()
        self.session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=client.max_workers)
        adapter.poolmanager.pool_classes_by_scheme = {"http": _WatchedPool, "https": _WatchedHTTPSPool}
        self.deadlines = Deadlines()
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["Accept"] = "application/json"
        if client.read_access_token:
            self.session.headers["Authorization"] = f"Bearer {client.read_access_token}"

    def __enter__(self) -> TmdbHttp:
        return self

    def __exit__(self, *exc) -> None:
        self.deadlines.close()
        self.session.close()

    @overload
    def get_json(self, path: str, params: dict | None = None, allow_404: Literal[False] = False) -> dict: ...

    @overload
    def get_json(self, path: str, params: dict | None = None, *, allow_404: Literal[True]) -> dict | None: ...

    def get_json(self, path: str, params: dict | None = None, allow_404: bool = False) -> dict | None:
        """The JSON object of the body; None only for a 404, and only when `allow_404` is set.

        A 200 whose body is not a JSON object (cut, HTML, `null`, a list) is read again, then raises
        `TmdbUnreadableError`. A connection that never opens (refused, unknown host) is tried once more,
        then raises `TmdbUnreachableError`: six retries with backoff only delayed the fix for minutes.
        """
        url = self.client.base_url.rstrip("/") + path
        params = dict(params or {})
        if self.client.api_key and not self.client.read_access_token:
            params["api_key"] = self.client.api_key
        unreachable_before = False
        for attempt in range(self.client.max_retries + 1):
            self.limiter.acquire()
            self.stats.add(requests=1)
            try:
                response, body = self._get(url, params)
            except _DeadlineExceeded:
                self.stats.add(timed_out=1)
                problem = "deadline"
            except _BodyCut:
                problem = "200 with a body cut short of its Content-Length"
            except (OSError, urllib3.exceptions.HTTPError) as exc:  # requests' errors are OSErrors
                problem = f"{type(exc).__name__}"
                unreachable = _unreachable(exc)
                if unreachable is not None:
                    if unreachable_before or attempt == self.client.max_retries:
                        raise self._unreachable_error(unreachable, attempt + 1) from None
                    unreachable_before = True
            else:
                if response.status_code == 200:
                    try:
                        document = json.loads(body)
                    except (ValueError, RecursionError):  # a truncated or HTML body: read it again
                        problem = "200 with a body that is not JSON"
                    else:
                        if isinstance(document, dict):
                            self._succeeded()
                            return document
                        # `null`, a list, a string: no TMDB answer is one. Never None, which reads as a 404.
                        problem = "200 with a body that is not a JSON object"
                elif response.status_code == 404 and allow_404:
                    self._succeeded()
                    return None
                elif allow_404 and 400 <= response.status_code < 500 and response.status_code not in (401, 429):
                    # One movie's document refused (400, 403, 422...): that movie's problem, not the crawl's.
                    raise TmdbUnreadableError(
                        self._safe(f"TMDB {response.status_code} for {url}: {_status_message(response, body)}")
                    )
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
                        self._safe(f"TMDB answered {url} {problem.removeprefix('200 ')} on all {attempt + 1} attempts.")
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
        socket may wait only until the deadline; headers that drip are cut by `Deadlines`' reaper.
        """
        with self.deadlines.attempt(self.client.request_deadline_s) as attempt:
            try:
                return self._get_within(url, params, attempt.deadline)
            except (OSError, urllib3.exceptions.HTTPError, _BodyCut):
                if self.deadlines.aborted:
                    raise _Interrupted from None
                if attempt.expired:  # the reaper shut the socket: the deadline passed (headers dripping, say)
                    raise _DeadlineExceeded from None
                raise

    def _get_within(self, url: str, params: dict, deadline: float) -> tuple[requests.Response, bytes]:
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
                except urllib3.exceptions.ProtocolError as exc:  # IncompleteRead: fewer bytes than announced
                    raise _BodyCut(str(exc)) from None
                if not chunk:
                    return response, b"".join(chunks)
                chunks.append(chunk)

    def _unreachable_error(self, reason: str, attempts: int) -> TmdbUnreachableError:
        base_url = self._safe(self.client.base_url)
        return TmdbUnreachableError(
            self._safe(
                f"TMDB is unreachable at {base_url} (TMDB_BASE_URL): {reason}, on {attempts} attempts. Fix: set "
                f"TMDB_BASE_URL to TMDB's API (unset, it is {DEFAULT_TMDB_BASE_URL}) or to a server that speaks "
                "it, or set TMDB_SOURCE=sample for the offline sample; then re-run the partition."
            )
        )

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


def _unreachable(exc: BaseException) -> str | None:
    """Why no connection opened (refused, unknown host, no route), from the error `requests` wraps around
    urllib3's; None for any other error. A connect timeout is not among them: a slow TMDB heals."""
    seen: object = exc
    for _ in range(4):  # requests' ConnectionError -> urllib3's MaxRetryError -> its reason
        if isinstance(seen, urllib3.exceptions.NewConnectionError):
            return str(seen).split(": ", 1)[-1]  # without the connection's repr before it
        if isinstance(seen, urllib3.exceptions.MaxRetryError):
            seen = seen.reason
        elif isinstance(seen, BaseException) and seen.args:
            seen = seen.args[0]
        else:
            return None
    return None


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
