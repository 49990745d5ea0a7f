"""Release-month partitions: every partitioned asset is keyed by TMDB `primary_release_date` month."""

import datetime as dt
import os
import warnings

import dagster as dg

from movie_assets.settings import DEFAULT_PARTITION_START

# The design asks for single-run backfills; Dagster flags the parameter as beta at every import.
warnings.filterwarnings("ignore", message="Parameter `backfill_policy`", category=dg.BetaWarning)

release_month_partitions = dg.MonthlyPartitionsDefinition(
    start_date=os.environ.get("MOVIE_PARTITION_START") or DEFAULT_PARTITION_START,
    # Include the running month: movies released so far this month are crawlable now.
    end_offset=1,
)


def month_number(day: dt.date) -> int:
    """Months since year 0: consecutive months are consecutive numbers."""
    return day.year * 12 + day.month - 1


def add_months(day: dt.date, months: int) -> dt.date:
    """The first day of the month `months` after (or before) `day`'s month."""
    total = month_number(day) + months
    return dt.date(total // 12, total % 12 + 1, 1)


def monthly_asset(**kwargs):
    """`@dg.asset` partitioned by release month, backfilled as one run per range (the design's policy)."""
    return dg.asset(partitions_def=release_month_partitions, backfill_policy=dg.BackfillPolicy.single_run(), **kwargs)


def month_window(first_day: dt.date) -> tuple[dt.date, dt.date]:
    """[first day of the month, first day of the next): one release month as a window."""
    return first_day, add_months(first_day, 1)


def months_in(window: tuple[dt.date, dt.date]) -> list[tuple[dt.date, dt.date]]:
    """Split a partition window (one month or a backfill range) into month windows."""
    months, start = [], window[0]
    while start < window[1]:
        end = add_months(start, 1)
        months.append((start, min(end, window[1])))
        start = end
    return months


def partition_window(context: dg.AssetExecutionContext) -> tuple[dt.date, dt.date]:
    """The run's partition window (a month or a backfill range) as dates."""
    window = context.partition_time_window
    return window.start.date(), window.end.date()
