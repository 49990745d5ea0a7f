"""Progress of long steps in the Dagster log: done/total, rate and ETA, at most every few seconds."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Progress:
    """Thread-safe counter that logs `label: done/total (rate/s, ETA)` now and then, and at the end."""

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
            done, total, elapsed = self.done, self.total, now - self.started
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (total - done) / rate if rate > 0 else 0.0
        self.log(f"{self.label}: {done:,}/{total:,} ({rate:,.1f}/s, ETA {eta:,.0f}s)")
