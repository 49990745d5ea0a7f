"""Progress of long steps in the Dagster log: done/total, rate and ETA, at most every few seconds."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Progress:
    """Thread-safe counter that logs `label: done/total (rate/s, ETA)` now and then, and at the end.

    `total` may be an estimate (a crawl's requests before retries): past it the ETA is 0, never negative.
    """

    def __init__(self, label: str, total: int, log: Callable[[str], None], every_s: float = 5.0):
        self.label, self.total, self.log, self.every_s = label, total, log, every_s
        self.done = 0
        self.started = self.last = time.monotonic()
        self._lock = threading.Lock()

    def advance(self, count: int = 1) -> None:
        with self._lock:
            self.done += count
            now = time.monotonic()
            if now - self.last < self.every_s and self.done < self.total:
                return
            self.last = now
        self.log(self.line())

    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.done / elapsed if elapsed > 0 else 0.0

    def eta_s(self) -> float:
        rate = self.rate()
        return max(self.total - self.done, 0) / rate if rate > 0 else 0.0

    def line(self) -> str:
        return f"{self.label}: {self.done:,}/{self.total:,} ({self.rate():,.1f}/s, ETA {duration(self.eta_s())})"


def duration(seconds: float) -> str:
    """12s, 3m05s, 7h41m: an ETA a person reads at a glance."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
