"""Asset checks: what must hold for the rows an asset just wrote.

Each check is a plain function over the written frame (testable on its own) plus
its spec. Assets evaluate them on the frame they store, so a check result always
describes exactly the partitions of that run.
"""
from __future__ import annotations

import datetime as dt

import dagster as dg
import pandas as pd


def unique_movie_ids(frame: pd.DataFrame) -> dg.AssetCheckResult:
    dupes = frame.loc[frame["movie_id"].duplicated(), "movie_id"]
    return dg.AssetCheckResult(
        check_name="unique_movie_ids", passed=dupes.empty,
        metadata={"duplicate_ids": len(dupes), "examples": str(dupes.head(5).tolist())},
    )


def release_dates_inside_partition(frame: pd.DataFrame, window: tuple[dt.date, dt.date]) -> dg.AssetCheckResult:
    dates = pd.to_datetime(frame["release_date"]).dt.date
    months = pd.to_datetime(frame["release_month"]).dt.date
    first_of_month = pd.to_datetime(frame["release_date"]).dt.to_period("M").dt.start_time.dt.date
    outside = frame[(dates < window[0]) | (dates >= window[1]) | (months != first_of_month)]
    return dg.AssetCheckResult(
        check_name="release_dates_inside_partition", passed=outside.empty,
        metadata={"rows_outside": len(outside), "window": f"{window[0]}..{window[1]}"},
    )


def ids_and_titles_present(frame: pd.DataFrame) -> dg.AssetCheckResult:
    missing_id = int(frame["movie_id"].isna().sum())
    missing_title = int((frame["title"].isna() | (frame["title"].astype("string").str.strip() == "")).sum())
    return dg.AssetCheckResult(
        check_name="ids_and_titles_present", passed=missing_id == 0 and missing_title == 0,
        metadata={"null_ids": missing_id, "missing_titles": missing_title},
    )


def rows_for_past_months(frame: pd.DataFrame, window: tuple[dt.date, dt.date], today: dt.date | None = None) -> dg.AssetCheckResult:
    """Every month that has already started should have movies; an empty future month is normal."""
    today = today or dt.date.today()
    months = set(pd.to_datetime(frame["release_month"]).dt.date) if len(frame) else set()
    empty_past = []
    month = window[0]
    while month < window[1]:
        if month <= today and month not in months:
            empty_past.append(month.isoformat())
        month = (month + dt.timedelta(days=32)).replace(day=1)
    return dg.AssetCheckResult(
        check_name="rows_for_past_months", passed=not empty_past, severity=dg.AssetCheckSeverity.WARN,
        metadata={"empty_past_months": len(empty_past), "examples": str(empty_past[:5])},
    )


MOVIES_RAW_CHECKS = [
    dg.AssetCheckSpec("unique_movie_ids", asset="movies_raw", description="each movie appears once per release month"),
    dg.AssetCheckSpec("release_dates_inside_partition", asset="movies_raw", description="release_date lies in the partition's month"),
    dg.AssetCheckSpec("ids_and_titles_present", asset="movies_raw", description="no null movie_id, no empty title"),
    dg.AssetCheckSpec("rows_for_past_months", asset="movies_raw", description="months that have begun have movies (warn only)"),
]


def movies_raw_check_results(frame: pd.DataFrame, window: tuple[dt.date, dt.date]) -> list[dg.AssetCheckResult]:
    return [
        unique_movie_ids(frame),
        release_dates_inside_partition(frame, window),
        ids_and_titles_present(frame),
        rows_for_past_months(frame, window),
    ]
