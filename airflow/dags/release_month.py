"""Which release month an Airflow DAG run covers: the calendar month its data interval spans.

Kept free of Airflow imports so the mapping is unit-tested from the Dagster venv too.
A scheduled run of `0 0 1 * *` covers [1st of a month, 1st of the next); a manual
trigger covers the last complete month before its logical date (Airflow infers that
interval), never the month of the trigger itself.
"""

import datetime as dt


def release_month(interval_start: dt.datetime, interval_end: dt.datetime) -> str:
    """The partition key ("YYYY-MM-01") of a data interval that is exactly one UTC calendar month."""
    start = interval_start.astimezone(dt.timezone.utc)
    end = interval_end.astimezone(dt.timezone.utc)
    first = start.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    next_first = (first + dt.timedelta(days=32)).replace(day=1)
    if start != first or end != next_first:
        raise ValueError(
            f"data interval {start.isoformat()} .. {end.isoformat()} is not one calendar month (UTC): "
            "movie_pipeline_monthly maps one run to one release month, so keep its monthly schedule '0 0 1 * *'"
        )
    return first.date().isoformat()
