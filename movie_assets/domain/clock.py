""" "Now" for the whole platform: one function that a test can move, the wall clock otherwise.

Event times, freshness, TTL decisions, sync windows and cursors, scores and retention all
read `now()`, so a test that simulates a year sets the clock instead of sleeping, and
production (nothing set) reads the wall clock exactly as before.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator

BUILT_AT = "built_at"  # materialization metadata: when, by this clock, the value was computed
_set_to: dt.datetime | None = None


def now() -> dt.datetime:
    """The current UTC time: the moment a test set, else the wall clock."""
    return _set_to if _set_to is not None else dt.datetime.now(dt.timezone.utc)


def today() -> dt.date:
    return now().date()


def set_now(moment: dt.datetime | None) -> None:
    """Move the clock to `moment` (timezone-aware), or back to the wall clock with None."""
    global _set_to
    if moment is not None and moment.tzinfo is None:
        raise ValueError(f"the clock takes a timezone-aware time, not {moment!r}")
    _set_to = moment.astimezone(dt.timezone.utc) if moment is not None else None


@contextlib.contextmanager
def clock_at(moment: dt.datetime) -> Iterator[None]:
    """The clock reads `moment` inside the block, whatever it read before."""
    before = _set_to
    set_now(moment)
    try:
        yield
    finally:
        set_now(before)
