"""Asset checks: what must hold for the rows an asset just wrote.

Each check is a plain function over the written frame (testable on its own) plus
its spec. Assets evaluate them on the frame they store, so a check result always
describes exactly the partitions of that run.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pandas as pd

from movie_assets.partitions import add_months


def unique_movie_ids(frame: pd.DataFrame) -> dg.AssetCheckResult:
    dupes = frame.loc[frame["movie_id"].duplicated(), "movie_id"]
    return dg.AssetCheckResult(
        check_name="unique_movie_ids",
        passed=dupes.empty,
        metadata={"duplicate_ids": len(dupes), "examples": str(dupes.head(5).tolist())},
    )


def release_dates_inside_partition(frame: pd.DataFrame, window: tuple[dt.date, dt.date]) -> dg.AssetCheckResult:
    dates = pd.to_datetime(frame["release_date"]).dt.date
    months = pd.to_datetime(frame["release_month"]).dt.date
    first_of_month = pd.to_datetime(frame["release_date"]).dt.to_period("M").dt.start_time.dt.date
    outside = frame[(dates < window[0]) | (dates >= window[1]) | (months != first_of_month)]
    return dg.AssetCheckResult(
        check_name="release_dates_inside_partition",
        passed=outside.empty,
        metadata={"rows_outside": len(outside), "window": f"{window[0]}..{window[1]}"},
    )


def ids_and_titles_present(frame: pd.DataFrame) -> dg.AssetCheckResult:
    missing_id = int(frame["movie_id"].isna().sum())
    missing_title = int((frame["title"].isna() | (frame["title"].astype("string").str.strip() == "")).sum())
    return dg.AssetCheckResult(
        check_name="ids_and_titles_present",
        passed=missing_id == 0 and missing_title == 0,
        metadata={"null_ids": missing_id, "missing_titles": missing_title},
    )


def rows_for_past_months(
    frame: pd.DataFrame, window: tuple[dt.date, dt.date], today: dt.date | None = None
) -> dg.AssetCheckResult:
    """Every month that has already started should have movies; an empty future month is normal."""
    today = today or dt.date.today()
    months = set(pd.to_datetime(frame["release_month"]).dt.date) if len(frame) else set()
    empty_past = []
    month = window[0]
    while month < window[1]:
        if month <= today and month not in months:
            empty_past.append(month.isoformat())
        month = add_months(month, 1)
    return dg.AssetCheckResult(
        check_name="rows_for_past_months",
        passed=not empty_past,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"empty_past_months": len(empty_past), "examples": str(empty_past[:5])},
    )


MOVIES_RAW_CHECKS = [
    # Blocking: a partition with duplicate ids or missing titles is not backed up or cleaned.
    dg.AssetCheckSpec(
        "unique_movie_ids", asset="movies_raw", blocking=True, description="each movie appears once per release month"
    ),
    dg.AssetCheckSpec(
        "release_dates_inside_partition", asset="movies_raw", description="release_date lies in the partition's month"
    ),
    dg.AssetCheckSpec(
        "ids_and_titles_present", asset="movies_raw", blocking=True, description="no null movie_id, no empty title"
    ),
    dg.AssetCheckSpec(
        "rows_for_past_months", asset="movies_raw", description="months that have begun have movies (warn only)"
    ),
]


def movies_raw_check_results(frame: pd.DataFrame, window: tuple[dt.date, dt.date]) -> list[dg.AssetCheckResult]:
    return [
        unique_movie_ids(frame),
        release_dates_inside_partition(frame, window),
        ids_and_titles_present(frame),
        rows_for_past_months(frame, window),
    ]


# ---- movies_clean ----------------------------------------------------------------
# Share of missing values above which a key column deserves a look (warn, not fail):
# TMDB leaves budget and revenue unknown for most small films.
MISSING_RATIO_LIMITS = {"runtime": 0.2, "vote_average": 0.3, "original_language": 0.01, "budget": 0.75, "revenue": 0.85}


def vote_average_in_range(frame: pd.DataFrame) -> dg.AssetCheckResult:
    votes = pd.to_numeric(frame["vote_average"], errors="coerce")
    bad = int(((votes < 0) | (votes > 10)).sum())
    return dg.AssetCheckResult(check_name="vote_average_in_range", passed=bad == 0, metadata={"outside_0_10": bad})


def non_negative_amounts(frame: pd.DataFrame) -> dg.AssetCheckResult:
    negative = {c: int((pd.to_numeric(frame[c], errors="coerce") < 0).sum()) for c in ("runtime", "budget", "revenue")}
    return dg.AssetCheckResult(check_name="non_negative_amounts", passed=not any(negative.values()), metadata=negative)


def missing_ratio_within_limits(frame: pd.DataFrame) -> dg.AssetCheckResult:
    ratios = {c: float(frame[c].isna().mean()) if len(frame) else 0.0 for c in MISSING_RATIO_LIMITS}
    over = {c: r for c, r in ratios.items() if r > MISSING_RATIO_LIMITS[c]}
    table = pd.DataFrame({"missing": ratios, "limit": MISSING_RATIO_LIMITS}).to_markdown(floatfmt=".2f")
    return dg.AssetCheckResult(
        check_name="missing_ratio_within_limits",
        passed=not over,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"ratios": dg.MetadataValue.md(table), "over_limit": str(sorted(over))},
    )


def row_count_reconciles(frame: pd.DataFrame, raw_rows: int, dropped_rows: int) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name="row_count_reconciles",
        passed=len(frame) == raw_rows - dropped_rows,
        metadata={"clean": len(frame), "raw": raw_rows, "explained_drops": dropped_rows},
    )


MOVIES_CLEAN_CHECKS = [
    dg.AssetCheckSpec("vote_average_in_range", asset="movies_clean", description="vote_average within 0..10"),
    dg.AssetCheckSpec(
        "non_negative_amounts", asset="movies_clean", description="runtime, budget and revenue are not negative"
    ),
    dg.AssetCheckSpec(
        "missing_ratio_within_limits",
        asset="movies_clean",
        description="missing share of key columns under their limits (warn)",
    ),
    dg.AssetCheckSpec(
        "row_count_reconciles", asset="movies_clean", description="clean rows = raw rows - explained drops"
    ),
]


def movies_clean_check_results(frame: pd.DataFrame, raw_rows: int, dropped_rows: int) -> list[dg.AssetCheckResult]:
    return [
        vote_average_in_range(frame),
        non_negative_amounts(frame),
        missing_ratio_within_limits(frame),
        row_count_reconciles(frame, raw_rows, dropped_rows),
    ]
