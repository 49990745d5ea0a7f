"""The token bucket that keeps one crawl's threads inside TMDB's request rate."""

from __future__ import annotations

import threading
import time


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
