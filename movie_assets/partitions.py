"""Release-month partitions: every partitioned asset is keyed by TMDB `primary_release_date` month."""

import datetime as dt
import warnings

import dagster as dg

from movie_assets.domain.sample_span import SAMPLE_MONTHS, SAMPLE_START
from movie_assets.settings import DEFAULT_PARTITION_START, Settings

# The design asks for single-run backfills; Dagster flags the parameter as beta at every import.
warnings.filterwarnings("ignore", message="Parameter `backfill_policy`", category=dg.BetaWarning)

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


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


def consecutive(windows: list[tuple[dt.date, dt.date]]) -> list[list[tuple[dt.date, dt.date]]]:
    """Month windows grouped into stretches that follow each other without a gap."""
    stretches: list[list[tuple[dt.date, dt.date]]] = []
    for window in windows:
        if stretches and stretches[-1][-1][1] == window[0]:
            stretches[-1].append(window)
        else:
            stretches.append([window])
    return stretches


def refuse_reversed_range(start: str, end: str) -> None:
    """Refuse a partition range whose end comes before its start, at once and without retries.

    Dagster validates each end of `--partition-range B...A` on its own, creates the run, and the
    first step dies in a `CheckError` that the retry policy repeats twice. This is the earliest
    point our code sees the pair, so the first partitioned step (its body through
    `partition_window`, or its input through the PostgreSQL IO manager) refuses the run with
    the order to use; `allow_retries=False` keeps the retry policy out of it.
    """
    if end < start:  # keys are ISO dates (YYYY-MM-01): string order is time order
        raise dg.Failure(
            description=(
                f"partition range {start}...{end} is reversed: its end comes before its start. Nothing was run; "
                f"launch it again with the earlier month first: {end}...{start}"
            ),
            metadata={"partition_range": f"{start}...{end}", "use_instead": f"{end}...{start}"},
            allow_retries=False,
        )


def partition_window(
    context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext | dg.OpExecutionContext,
) -> tuple[dt.date, dt.date]:
    """The run's partition window (a month or a backfill range) as dates; a reversed range is refused."""
    tags = context.run.tags
    if RANGE_START_TAG in tags and RANGE_END_TAG in tags:
        refuse_reversed_range(tags[RANGE_START_TAG], tags[RANGE_END_TAG])
    window = context.partition_time_window
    return window.start.date(), window.end.date()


def sample_range() -> tuple[str, str]:
    """(first, last) partition key of the months the TMDB sample covers: the demo's backfill range."""
    return SAMPLE_START.isoformat(), add_months(SAMPLE_START, SAMPLE_MONTHS - 1).isoformat()


def release_months(settings: Settings) -> dg.MonthlyPartitionsDefinition:
    """The release months of the source: the sample's 24, or MOVIE_PARTITION_START up to the running month.

    With the sample every month outside its span stays empty forever, so the UI would show
    "24 / 444 filled" and backfill dialogs open on empty months. An explicit
    MOVIE_PARTITION_START still sets the first month.
    """
    if settings.tmdb_source != "sample":
        # Include the running month: movies released so far this month are crawlable now.
        return dg.MonthlyPartitionsDefinition(
            start_date=settings.partition_start or DEFAULT_PARTITION_START, end_offset=1
        )
    first, last = sample_range()
    start = settings.partition_start or first
    if start > last:  # keys and MOVIE_PARTITION_START are ISO dates: string order is time order
        raise ValueError(
            f"MOVIE_PARTITION_START={start} is after the TMDB sample's last month {last}: unset it, "
            "or set TMDB_API_KEY / TMDB_READ_ACCESS_TOKEN to crawl the API"
        )
    return dg.MonthlyPartitionsDefinition(
        start_date=start, end_date=add_months(SAMPLE_START, SAMPLE_MONTHS).isoformat()
    )


# Built once at import from the process's environment: the code server, daemon, webserver and
# `movie-platform demo` must share TMDB_* and MOVIE_PARTITION_START (compose and `make dev` pass the same env).
release_month_partitions = release_months(Settings.from_env())
